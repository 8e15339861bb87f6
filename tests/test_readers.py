"""Every reader against the committed fixtures: the records must equal the oracle written by
the interpreter that made each file (see fixtures/README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import shelfmigrate
from shelfmigrate.codecs import typedjson
from shelfmigrate.options import ReadOptions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# (source as a user names it, oracle, read options)
CASES = [
    ("dumb/py27_shelf_p0", "dumb/py27_shelf_p0", {}),
    ("dumb/py27_shelf_p2.dat", "dumb/py27_shelf_p2", {}),
    ("dumb/py36_shelf.dir", "dumb/py36_shelf", {}),
    ("dumb/py311_shelf", "dumb/py311_shelf", {}),
    ("pickles/py27_stream_p0.pkl", "pickles/py27_stream_p0", {}),
    ("pickles/py27_stream_p1.pkl", "pickles/py27_stream_p1", {}),
    ("pickles/py27_stream_p2.pkl", "pickles/py27_stream_p2", {}),
    ("pickles/py311_stream_p4.pkl", "pickles/py311_stream_p4", {}),
    ("pickles/py38_stream_p5.pkl", "pickles/py38_stream_p5", {}),
    ("pickles/py311_single.pkl", "pickles/py311_single", {}),
    ("sqlite/py313_dbm_sqlite3_shelf", "sqlite/py313_dbm_sqlite3_shelf", {}),
    ("sqlite/sqlitedict.sqlite", "sqlite/sqlitedict", {"table": "unnamed"}),
    ("sqlite/sqlitedict.sqlite", "sqlite/sqlitedict.users", {"table": "users"}),
    ("sqlite/tutorial.sqlite", "sqlite/tutorial", {}),
    ("sqlite/tutorial_wal.sqlite", "sqlite/tutorial_wal", {}),
    ("sqlite/plain_table.sqlite", "sqlite/plain_table", {}),
]


def copy_source(relative: str, tmp_path: Path) -> Path:
    """Copy a fixture (with its side files) so a test can never change the committed one."""
    source = FIXTURES / relative
    stem = source.name
    for suffix in (".dat", ".dir", ".bak"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    for sibling in source.parent.iterdir():
        name = sibling.name
        related = name == stem or name.startswith((stem + ".", stem + "-"))
        if related and not name.endswith(".expected.jsonl"):
            shutil.copy2(sibling, tmp_path / name)
    return tmp_path / source.name


def oracle(name: str) -> list[dict]:
    with open(FIXTURES / f"{name}.expected.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_all(path: Path, **options) -> list[dict]:
    """Records of a source as JSON objects, decoded the way convert decodes them."""
    from shelfmigrate.pipeline import ValueDecoder

    reader = shelfmigrate.open_reader(path, options=ReadOptions(**options))
    decoder = ValueDecoder(reader, reader.options)
    out = []
    with reader:
        for record in reader.records():
            assert record.error is None, record.error
            decoder(record)
            out.append(json.loads(typedjson.encode_record(record.key, record.value)))
    return out


@pytest.mark.parametrize(
    ("source", "expected", "options"), CASES, ids=[c[0] + ":" + c[1] for c in CASES]
)
def test_reader_gives_the_oracle_records(source, expected, options, tmp_path):
    path = copy_source(source, tmp_path)
    assert read_all(path, **options) == oracle(expected)


def test_dumb_shelf_reads_the_same_from_base_name_dat_and_dir(tmp_path):
    base = copy_source("dumb/py27_shelf_p0", tmp_path)
    forms = [read_all(Path(str(base) + suffix)) for suffix in ("", ".dat", ".dir")]
    assert forms[0] == forms[1] == forms[2] == oracle("dumb/py27_shelf_p0")


def values_by_key(records: list[dict]) -> dict:
    return {r["key"]: r["value"] for r in records if isinstance(r["key"], str)}


def test_py2_str_policies_change_only_python2_str(tmp_path):
    path = copy_source("dumb/py27_shelf_p0", tmp_path)
    by_key = values_by_key(read_all(path, py2_str="bytes"))
    # The Latin-1 byte string stays bytes under every policy but latin1.
    assert by_key["latin1_str"] == {"$bytes": "Y2Fm6Q=="}
    assert by_key["utf8_str"] == {"$bytes": "Y2Fmw6k="}
    latin1 = values_by_key(read_all(path, py2_str="latin1"))
    assert latin1["latin1_str"] == "café"
    assert latin1["utf8_str"] == "cafÃ©"
    auto = values_by_key(read_all(path))
    assert auto["latin1_str"] == {"$bytes": "Y2Fm6Q=="}
    assert auto["utf8_str"] == "café"


def test_values_raw_yields_the_stored_bytes_without_decoding(tmp_path):
    path = copy_source("dumb/py311_shelf", tmp_path)
    records = read_all(path, values="raw")
    dat = (tmp_path / "py311_shelf.dat").read_bytes()
    first = records[0]["value"]["$bytes"]
    import base64

    assert base64.b64decode(first) in dat
    assert base64.b64decode(first).startswith(b"\x80\x04")


def test_sqlite_wal_rows_are_read_and_no_side_file_is_left(tmp_path):
    path = copy_source("sqlite/tutorial_wal.sqlite", tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    wal_bytes = (tmp_path / "tutorial_wal.sqlite-wal").read_bytes()
    assert len(read_all(path)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "tutorial_wal.sqlite-wal").read_bytes() == wal_bytes


def test_sqlite_without_its_wal_has_fewer_rows(tmp_path):
    path = copy_source("sqlite/tutorial_wal.sqlite", tmp_path)
    (tmp_path / "tutorial_wal.sqlite-wal").unlink()
    assert len(read_all(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tutorial_wal.sqlite"]


def test_sqlite_with_several_tables_asks_for_table(tmp_path):
    path = copy_source("sqlite/sqlitedict.sqlite", tmp_path)
    with pytest.raises(
        shelfmigrate.UsageError, match=r"several tables \(unnamed, users\).*--table"
    ):
        shelfmigrate.open_reader(path)


def test_sqlite_any_table_with_key_and_value_columns(tmp_path):
    path = copy_source("sqlite/plain_table.sqlite", tmp_path)
    records = read_all(path, key_column="name", value_column="qty")
    assert records[0] == {"key": "widget", "value": 3}
    assert [r["key"] for r in records] == [r["value"]["name"] for r in oracle("sqlite/plain_table")]


def test_sqlite_unknown_column_is_a_usage_error(tmp_path):
    path = copy_source("sqlite/plain_table.sqlite", tmp_path)
    with pytest.raises(shelfmigrate.UsageError, match="no column 'nope'"):
        shelfmigrate.open_reader(path, options=ReadOptions(key_column="nope"))


def test_sqlite_table_without_integer_primary_key_uses_rowid(tmp_path):
    import sqlite3

    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE people (name TEXT, age INTEGER)")
    con.executemany("INSERT INTO people VALUES (?, ?)", [("ann", 31), ("bob", None)])
    con.commit()
    con.close()
    assert read_all(path) == [
        {"key": 1, "value": {"name": "ann", "age": 31}},
        {"key": 2, "value": {"name": "bob", "age": None}},
    ]


def test_marshal_stream_reader_keys_dumps_by_position(tmp_path):
    import marshal

    path = tmp_path / "dumps.marshal"
    with open(path, "wb") as handle:
        for value in ({"a": (1, 2)}, [b"x", 1.5], "three"):
            marshal.dump(value, handle)
    assert read_all(path) == [
        {"key": 0, "value": {"a": {"$tuple": [1, 2]}}},
        {"key": 1, "value": [{"$bytes": "eA=="}, 1.5]},
        {"key": 2, "value": "three"},
    ]


def test_leveldb_reader_reads_every_pair_in_key_order(tmp_path):
    plyvel = pytest.importorskip("plyvel")
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(b"b", b'{"$tuple": [1]}')
    db.put(b"a", b"[1, 2]")
    db.close()
    assert read_all(tmp_path / "db") == [
        {"key": "a", "value": [1, 2]},
        {"key": "b", "value": {"$tuple": [1]}},
    ]


def test_dumb_database_of_marshal_values_with_values_marshal(tmp_path):
    import dbm.dumb
    import marshal

    with dbm.dumb.open(str(tmp_path / "m"), "n") as db:
        db[b"a"] = marshal.dumps({"x": (1, 2.5)})
        db[b"b"] = marshal.dumps([None, b"raw"])
    assert read_all(tmp_path / "m", values="marshal") == [
        {"key": "a", "value": {"x": {"$tuple": [1, 2.5]}}},
        {"key": "b", "value": [None, {"$bytes": "cmF3"}]},
    ]


def test_dumb_database_of_json_values_with_values_json(tmp_path):
    import dbm.dumb

    with dbm.dumb.open(str(tmp_path / "j"), "n") as db:
        db[b"a"] = b'{"$not_a_tag": 1}'
    assert read_all(tmp_path / "j", values="json") == [
        {"key": "a", "value": {"$dict": [["$not_a_tag", 1]]}}
    ]


def test_auto_values_are_decided_by_the_first_stored_value_not_a_null(tmp_path):
    import pickle
    import sqlite3

    path = tmp_path / "kv.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE store (key BLOB, value BLOB)")
    con.executemany(
        "INSERT INTO store VALUES (?, ?)",
        [(b"none", None), (b"a", pickle.dumps((1, 2))), (b"b", pickle.dumps({"x": b"y"}))],
    )
    con.commit()
    con.close()
    assert read_all(path) == [
        {"key": "none", "value": None},
        {"key": "a", "value": {"$tuple": [1, 2]}},
        {"key": "b", "value": {"x": {"$bytes": "eQ=="}}},
    ]


def test_leveldb_source_is_left_exactly_as_it_was(tmp_path):
    plyvel = pytest.importorskip("plyvel")
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    for i in range(50):
        db.put(f"k{i}".encode(), b"[1]")
    db.close()

    def snapshot() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (tmp_path / "db").iterdir()}

    before = snapshot()
    assert len(read_all(tmp_path / "db")) == 50
    assert snapshot() == before
