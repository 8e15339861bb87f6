"""Every reader x writer path, read back with the real library (json, gzip, sqlite3, plyvel,
and shelve on Python 3.13 when it is installed)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from test_readers import copy_source, oracle

import shelfmigrate
from shelfmigrate.codecs import typedjson
from shelfmigrate.options import ReadOptions, WriteOptions

SOURCES = [
    ("dumb/py27_shelf_p0", "dumb/py27_shelf_p0"),
    ("dumb/py311_shelf", "dumb/py311_shelf"),
    ("sqlite/py313_dbm_sqlite3_shelf", "sqlite/py313_dbm_sqlite3_shelf"),
    ("pickles/py311_stream_p4.pkl", "pickles/py311_stream_p4"),
    ("pickles/py27_stream_p0.pkl", "pickles/py27_stream_p0"),
    ("sqlite/tutorial_wal.sqlite", "sqlite/tutorial_wal"),
]
IDS = [s[0] for s in SOURCES]


def typed_key(key: object) -> object:
    """A key as typed JSON writes it (keys read back from SQLite or LevelDB)."""
    if isinstance(key, bytes):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return {"$bytes": base64.b64encode(key).decode("ascii")}
    return key


def key_bytes(key: object) -> bytes:
    """A key as a byte-keyed store holds it."""
    return key if isinstance(key, bytes) else str(key).encode("utf-8")


def stored_values(path: Path) -> dict:
    """key bytes -> stored bytes of a source, as the container holds them."""
    with shelfmigrate.open_reader(path, options=ReadOptions(values="raw")) as reader:
        return {key_bytes(r.key): r.raw for r in reader.records()}


def sort_by_key(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: json.dumps(r["key"]))


@pytest.mark.parametrize(("source", "expected"), SOURCES, ids=IDS)
@pytest.mark.parametrize("name", ["out.jsonl", "out.ndjson", "out.jsonl.gz"])
def test_jsonl_output_is_the_oracle(source, expected, name, tmp_path):
    src = copy_source(source, tmp_path)
    dst = tmp_path / name
    report = shelfmigrate.convert(src, dst, progress=False)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(dst, "rt", encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines == oracle(expected)
    assert report.read == report.written == len(lines)


@pytest.mark.parametrize(("source", "expected"), SOURCES, ids=IDS)
def test_sqlite_kv_output_holds_typed_json_queryable_with_json_extract(source, expected, tmp_path):
    src = copy_source(source, tmp_path)
    dst = tmp_path / "out.sqlite"
    shelfmigrate.convert(src, dst, progress=False)
    con = sqlite3.connect(dst)
    rows = con.execute("SELECT key, value FROM records ORDER BY rowid").fetchall()
    assert [{"key": typed_key(k), "value": json.loads(v)} for k, v in rows] == oracle(expected)
    assert con.execute("SELECT count(*) FROM records WHERE json_valid(value)").fetchone()[0] == len(
        rows
    )
    con.close()


def test_sqlite_kv_key_column_type_follows_the_keys(tmp_path):
    src = copy_source("pickles/py311_stream_p4.pkl", tmp_path)
    shelfmigrate.convert(src, tmp_path / "int.sqlite", progress=False)
    con = sqlite3.connect(tmp_path / "int.sqlite")
    declared = con.execute(
        "SELECT type FROM pragma_table_info('records') WHERE name = 'key'"
    ).fetchone()[0]
    assert declared == "INTEGER"
    assert con.execute("SELECT typeof(key) FROM records LIMIT 1").fetchone()[0] == "integer"
    con.close()
    shelfmigrate.convert(
        copy_source("dumb/py311_shelf", tmp_path), tmp_path / "text.sqlite", progress=False
    )
    con = sqlite3.connect(tmp_path / "text.sqlite")
    assert (
        con.execute("SELECT type FROM pragma_table_info('records') WHERE name = 'key'").fetchone()[
            0
        ]
        == "TEXT"
    )
    con.close()


@pytest.mark.parametrize(("layout", "table"), [("dbm.sqlite3", "Dict"), ("sqlitedict", "unnamed")])
@pytest.mark.parametrize(("source", "expected"), SOURCES[:4], ids=IDS[:4])
def test_pickle_layouts_copy_source_pickles_byte_for_byte(
    layout, table, source, expected, tmp_path
):
    src = copy_source(source, tmp_path)
    dst = tmp_path / "out.sqlite"
    shelfmigrate.convert(src, dst, write_options=WriteOptions(layout=layout), progress=False)
    con = sqlite3.connect(dst)
    rows = con.execute(f'SELECT key, value FROM "{table}" ORDER BY rowid').fetchall()
    con.close()
    stored = stored_values(src)
    assert len(rows) == len(oracle(expected))
    for key, value in rows:
        assert value == stored[key_bytes(key)]


def test_dbm_sqlite3_layout_has_python_313_schema(tmp_path):
    dst = tmp_path / "out.sqlite"
    shelfmigrate.convert(
        copy_source("sqlite/tutorial.sqlite", tmp_path),
        dst,
        write_options=WriteOptions(layout="dbm.sqlite3"),
        progress=False,
    )
    con = sqlite3.connect(dst)
    columns = con.execute("PRAGMA table_info(Dict)").fetchall()
    con.close()
    assert [(c[1], c[2], c[3]) for c in columns] == [("key", "BLOB", 1), ("value", "BLOB", 1)]


PYTHON313 = (
    Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    / "versions"
    / "3.13.0"
    / "bin"
    / "python"
)


def python313() -> str:
    for candidate in (str(PYTHON313), shutil.which("python3.13")):
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "import dbm.sqlite3"], capture_output=True)
            if probe.returncode == 0:
                return candidate
    pytest.skip("Python 3.13 is not installed")


def test_python313_shelve_opens_the_dbm_sqlite3_output(tmp_path):
    python = python313()
    src = copy_source("sqlite/tutorial.sqlite", tmp_path)
    dst = tmp_path / "shelf.db"
    shelfmigrate.convert(src, dst, write_options=WriteOptions(layout="dbm.sqlite3"), progress=False)
    script = (
        "import json, shelve, sys\n"
        "with shelve.open(sys.argv[1], 'r') as s:\n"
        "    print(json.dumps({k: s[k] for k in s}))\n"
    )
    out = subprocess.run(
        [python, "-c", script, str(dst)], capture_output=True, text=True, check=True
    ).stdout
    expected = {r["key"]: typedjson.from_jsonable(r["value"]) for r in oracle("sqlite/tutorial")}
    assert json.loads(out) == expected


def test_python313_shelve_reads_byte_copied_pickles(tmp_path):
    python = python313()
    src = copy_source("dumb/py311_shelf", tmp_path)
    dst = tmp_path / "shelf"
    shelfmigrate.convert(
        src,
        dst,
        to_format="sqlite",
        write_options=WriteOptions(layout="dbm.sqlite3"),
        progress=False,
    )
    script = (
        "import shelve, sys\n"
        "with shelve.open(sys.argv[1], 'r') as s:\n"
        "    print(repr((s['text'], s['numbers'], s['tuple'], sorted(s.keys()))))\n"
    )
    out = subprocess.run(
        [python, "-c", script, str(dst)], capture_output=True, text=True, check=True
    ).stdout
    with shelfmigrate.open_reader(src) as reader:
        keys = sorted(r.key for r in reader.records())
    assert out.strip().endswith(repr(keys) + ")")


@pytest.mark.parametrize(("source", "expected"), SOURCES, ids=IDS)
def test_leveldb_output_read_back_with_plyvel(source, expected, tmp_path):
    plyvel = pytest.importorskip("plyvel")
    src = copy_source(source, tmp_path)
    dst = tmp_path / "out.ldb"
    shelfmigrate.convert(src, dst, progress=False)
    db = plyvel.DB(str(dst))
    records = [{"key": typed_key(k), "value": json.loads(v)} for k, v in db.iterator()]
    db.close()
    want = oracle(expected)
    for record in want:  # LevelDB keys are bytes: int keys are their decimal text
        if isinstance(record["key"], int):
            record["key"] = str(record["key"])
    assert sort_by_key(records) == sort_by_key(want)


@pytest.mark.parametrize("encode", ["pickle", "raw"])
def test_leveldb_pickle_and_raw_encodings_keep_the_stored_bytes(encode, tmp_path):
    plyvel = pytest.importorskip("plyvel")
    src = copy_source("dumb/py27_shelf_p2", tmp_path)
    dst = tmp_path / "db"
    shelfmigrate.convert(
        src, dst, to_format="leveldb", write_options=WriteOptions(encode=encode), progress=False
    )
    db = plyvel.DB(str(dst))
    got = dict(db.iterator())
    db.close()
    assert got == stored_values(src)


def test_jsonl_output_reads_back_exactly(tmp_path):
    src = copy_source("dumb/py27_shelf_p0", tmp_path)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shelfmigrate.convert(src, first, progress=False)
    shelfmigrate.convert(first, second, progress=False)
    assert first.read_bytes() == second.read_bytes()


def test_sqlite_kv_output_reads_back_exactly(tmp_path):
    src = copy_source("dumb/py311_shelf", tmp_path)
    shelfmigrate.convert(src, tmp_path / "a.sqlite", progress=False)
    shelfmigrate.convert(tmp_path / "a.sqlite", tmp_path / "b.jsonl", progress=False)
    lines = [json.loads(line) for line in open(tmp_path / "b.jsonl", encoding="utf-8")]
    assert lines == oracle("dumb/py311_shelf")


def test_plain_json_style_is_queryable(tmp_path):
    src = copy_source("dumb/py311_shelf", tmp_path)
    dst = tmp_path / "plain.jsonl"
    shelfmigrate.convert(src, dst, write_options=WriteOptions(json_style="plain"), progress=False)
    text = dst.read_text(encoding="utf-8")
    assert '"$tuple"' not in text and '"$bytes"' not in text
    by_key = {json.loads(line)["key"]: json.loads(line)["value"] for line in text.splitlines()}
    assert isinstance(by_key["tuple"], list)


def _oracle_sorted_for(writer_name: str) -> list[dict]:
    want = oracle("dumb/py311_shelf")
    return sort_by_key(want) if writer_name == "ldb" else want


def _read_back(dst: Path, writer_name: str) -> list[dict]:
    if writer_name == "jsonl":
        return [json.loads(line) for line in open(dst, encoding="utf-8")]
    if writer_name == "sqlite":
        con = sqlite3.connect(dst)
        rows = con.execute("SELECT key, value FROM records ORDER BY rowid").fetchall()
        con.close()
        return [{"key": typed_key(k), "value": json.loads(v)} for k, v in rows]
    plyvel = pytest.importorskip("plyvel")
    db = plyvel.DB(str(dst))
    records = [{"key": typed_key(k), "value": json.loads(v)} for k, v in db.iterator()]
    db.close()
    return sort_by_key(records)


@pytest.mark.parametrize("source_kind", ["jsonl", "ldb", "sqlite"])
@pytest.mark.parametrize("writer_name", ["jsonl", "sqlite", "ldb"])
def test_shelfmigrate_outputs_as_sources_into_every_writer(source_kind, writer_name, tmp_path):
    if "ldb" in (source_kind, writer_name):
        pytest.importorskip("plyvel")
    shelf = copy_source("dumb/py311_shelf", tmp_path)
    src = tmp_path / f"source.{source_kind}"
    shelfmigrate.convert(shelf, src, progress=False)
    dst = tmp_path / f"out.{writer_name}"
    shelfmigrate.convert(src, dst, progress=False)
    got = _read_back(dst, writer_name)
    # A LevelDB source yields its records in key order.
    want = oracle("dumb/py311_shelf")
    if "ldb" in (source_kind, writer_name):
        got, want = sort_by_key(got), sort_by_key(want)
    assert got == want


@pytest.mark.parametrize("writer_name", ["jsonl", "sqlite", "ldb"])
def test_marshal_stream_into_every_writer(writer_name, tmp_path):
    import marshal

    if writer_name == "ldb":
        pytest.importorskip("plyvel")
    src = tmp_path / "dumps.marshal"
    with open(src, "wb") as handle:
        for value in ({"a": (1, 2)}, [b"x", 1.5], "three"):
            marshal.dump(value, handle)
    dst = tmp_path / f"out.{writer_name}"
    shelfmigrate.convert(src, dst, progress=False)
    got = _read_back(dst, writer_name)
    want = [
        {"key": 0, "value": {"a": {"$tuple": [1, 2]}}},
        {"key": 1, "value": [{"$bytes": "eA=="}, 1.5]},
        {"key": 2, "value": "three"},
    ]
    if writer_name == "ldb":
        want = [dict(r, key=str(r["key"])) for r in want]
    assert got == want
