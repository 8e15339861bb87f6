"""The command line (README "Commands" and DESIGN.md "CLI (contract)").

Most tests drive ``shelfmigrate.cli.app`` through typer's CliRunner; two run the
real thing in a subprocess: the ``shelfmigrate`` console script installed next
to ``sys.executable`` and ``python -m shelfmigrate``.

Exit codes: 0 success; 1 records failed or verify found differences; 2 bad
usage or unreadable input, with exactly one line on stderr naming the file and
no traceback, and nothing (not even a temporary file) left at the destination.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import pickle
import pickletools
import random
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import shelfmigrate
from shelfmigrate.cli import app

DUMB = "dumb/py27_shelf_p0"
DUMB_ORACLE = "dumb/py27_shelf_p0.expected.jsonl"
STREAM = "pickles/py311_stream_p4.pkl"
STREAM_ORACLE = "pickles/py311_stream_p4.expected.jsonl"


# ---------------------------------------------------------------------------
# Helpers


def run(*args: Any) -> Any:
    """Invoke the CLI in-process; an exception other than SystemExit is a test failure."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"shelfmigrate {' '.join(map(str, args))} raised {result.exception!r}\n"
            f"stderr: {result.stderr}"
        ) from result.exception
    return result


def canon(value: Any) -> Any:
    """Parsed JSON with types kept apart that ``==`` would mix: 3 vs 3.0, -0.0 vs 0.0, True vs 1."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, list):
        return [canon(v) for v in value]
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    return value


def read_jsonl(path: Path) -> list[Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [canon(json.loads(line)) for line in handle if line.strip()]


def key_bytes(key: Any) -> bytes:
    """The byte form of a typed-JSON key (as a key-value store holds it)."""
    if isinstance(key, dict) and set(key) == {"$bytes"}:
        return base64.b64decode(key["$bytes"])
    if isinstance(key, bytes):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("ascii")
    return key.encode("utf-8")


def oracle_by_key(fixtures_dir: Path, name: str = DUMB_ORACLE) -> dict[bytes, Any]:
    with open(fixtures_dir / name, encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle if line.strip()]
    return {key_bytes(item["key"]): canon(item["value"]) for item in items}


def stderr_line(result: Any) -> str:
    """The one line on stderr (asserting there is exactly one, and no traceback)."""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("shelfmigrate: error: "), lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary outputs left in ``folder``."""
    return sorted(n for n in os.listdir(folder) if ".partial" in n or n.endswith(("-journal",)))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def dumb_src(copy_fixture) -> Path:
    return copy_fixture(DUMB)


# ---------------------------------------------------------------------------
# convert: happy paths


@pytest.mark.parametrize("form", ["", ".dat", ".dir"])
@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.ndjson"])
def test_convert_dumb_shelf_to_json_lines_matches_oracle(
    copy_fixture, fixtures_dir: Path, out: Path, form: str, name: str
) -> None:
    src = copy_fixture(DUMB + form)
    dst = out / name
    result = run("convert", src, dst)
    assert result.exit_code == 0, result.output
    assert "23 of 23 records written" in result.stderr
    assert result.stdout == ""
    if name.endswith(".gz"):
        assert dst.read_bytes()[:2] == b"\x1f\x8b"
    assert read_jsonl(dst) == read_jsonl(fixtures_dir / DUMB_ORACLE)
    assert os.listdir(out) == [name]


def test_convert_pickle_stream_matches_oracle(copy_fixture, fixtures_dir: Path, out: Path) -> None:
    dst = out / "stream.jsonl"
    result = run("convert", copy_fixture(STREAM), dst)
    assert result.exit_code == 0, result.output
    assert read_jsonl(dst) == read_jsonl(fixtures_dir / STREAM_ORACLE)
    assert [line["key"] for line in read_jsonl(dst)] == [("int", i) for i in range(11)]


def test_convert_to_sqlite_kv_layout(dumb_src: Path, fixtures_dir: Path, out: Path) -> None:
    dst = out / "out.sqlite"
    result = run("convert", dumb_src, dst)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(dst) as con:
        rows = con.execute("SELECT key, value FROM records").fetchall()
        nested_b1 = con.execute(
            "SELECT json_extract(value, '$.a.b[1]') FROM records WHERE key = 'nested'"
        ).fetchone()
        nested_c = con.execute(
            "SELECT json_extract(value, '$.a.b[2].c') FROM records WHERE key = 'nested'"
        ).fetchone()
    con.close()
    assert len(rows) == 23
    assert {key_bytes(k): canon(json.loads(v)) for k, v in rows} == oracle_by_key(fixtures_dir)
    assert nested_b1 == (2,)
    assert json.loads(nested_c[0]) == {"$tuple": [3]}
    assert os.listdir(out) == ["out.sqlite"]


def _source_pickles(src: Path) -> dict[bytes, bytes]:
    with shelfmigrate.open_reader(src) as reader:
        return {key_bytes(record.key): record.raw for record in reader}


@pytest.mark.parametrize(
    ("layout", "table", "columns"),
    [
        ("dbm.sqlite3", "Dict", [("key", "BLOB"), ("value", "BLOB")]),
        ("sqlitedict", "unnamed", [("key", "TEXT"), ("value", "BLOB")]),
    ],
)
def test_convert_to_sqlite_pickle_layouts_copy_pickles_byte_for_byte(
    dumb_src: Path, out: Path, layout: str, table: str, columns: list[tuple[str, str]]
) -> None:
    dst = out / "out.sqlite"
    result = run("convert", dumb_src, dst, "--layout", layout)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(dst) as con:
        info = con.execute(f'PRAGMA table_info("{table}")').fetchall()
        rows = con.execute(f'SELECT key, value FROM "{table}"').fetchall()
    con.close()
    assert [(row[1], row[2]) for row in info] == columns
    assert len(rows) == 23
    assert {key_bytes(k): v for k, v in rows} == _source_pickles(dumb_src)


@pytest.mark.parametrize(("name", "extra"), [("leveldb_out", ["--to", "leveldb"]), ("out.ldb", [])])
def test_convert_to_leveldb(
    dumb_src: Path, fixtures_dir: Path, out: Path, name: str, extra: list[str]
) -> None:
    plyvel = pytest.importorskip("plyvel")
    dst = out / name
    result = run("convert", dumb_src, dst, *extra)
    assert result.exit_code == 0, result.output
    assert dst.is_dir()
    db = plyvel.DB(str(dst))
    try:
        stored = {k: canon(json.loads(v)) for k, v in db}
    finally:
        db.close()
    assert stored == oracle_by_key(fixtures_dir)
    assert os.listdir(out) == [name]


# ---------------------------------------------------------------------------
# convert: report, quarantine and the error policy on a hostile pickle stream


class _Gadget:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def hostile_stream(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """Three pickles: a dict, one whose load would run ``touch CANARY``, a list."""
    canary = tmp_path / "canary"
    evil = pickle.dumps(_Gadget(f"touch {canary}"), protocol=2)
    assert b"system" in evil
    src = tmp_path / "hostile.pkl"
    src.write_bytes(pickle.dumps({"a": 1}, protocol=2) + evil + pickle.dumps([1, 2, 3], protocol=2))
    return src, canary, evil


def test_convert_skip_quarantine_and_report(tmp_path: Path, out: Path) -> None:
    src, canary, evil = hostile_stream(tmp_path)
    dst, quarantine, report = out / "h.jsonl", tmp_path / "q.jsonl", tmp_path / "r.json"
    result = run(
        "convert", src, dst, "--on-error", "skip", "--quarantine", quarantine, "--report", report
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "2 of 3 records written" in result.stderr
    assert not canary.exists()
    assert read_jsonl(dst) == [
        canon({"key": 0, "value": {"a": 1}}),
        canon({"key": 2, "value": [1, 2, 3]}),
    ]

    lines = quarantine.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    failed = json.loads(lines[0])
    assert set(failed) == {"key", "raw", "error"}
    assert failed["key"] == 1
    assert base64.b64decode(failed["raw"]["$bytes"]) == evil
    assert "posix.system" in failed["error"] or "os.system" in failed["error"]
    assert "refused" in failed["error"]

    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["status"] != "ok"
    assert data["source"]["format"] == "pickle"
    assert data["destination"]["format"] == "jsonl"
    assert Path(data["destination"]["path"]).name == "h.jsonl"
    assert data["values"] == "pickle"
    assert data["records"] == {"read": 3, "written": 2, "failed": 1}
    assert isinstance(data["duration_s"], float) and data["duration_s"] >= 0
    assert data["records_per_s"] is None or data["records_per_s"] > 0
    assert not canary.exists()
    assert leftovers(out) == []


def test_convert_default_on_error_fail_leaves_nothing(tmp_path: Path, out: Path) -> None:
    src, canary, _ = hostile_stream(tmp_path)
    dst, report = out / "h.jsonl", tmp_path / "r.json"
    result = run("convert", src, dst, "--report", report)
    assert result.exit_code == 1, result.output
    line = stderr_line(result)
    assert "record 1" in line and "system" in line
    assert not canary.exists()
    assert not dst.exists()
    assert os.listdir(out) == []
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["status"] == "aborted"
    assert data["records"]["written"] == 0
    assert data["records"]["failed"] == 1


def test_convert_happy_report(dumb_src: Path, out: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run("convert", dumb_src, out / "o.sqlite", "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["status"] == "ok"
    assert data["source"]["format"] == "dumb"
    assert data["destination"]["format"] == "sqlite"
    assert data["values"] == "pickle"
    assert data["records"] == {"read": 23, "written": 23, "failed": 0}
    assert data["records_per_s"] > 0


# ---------------------------------------------------------------------------
# convert: bad input and bad usage -> exit 2, one line, nothing at DST


def _truncated_stream(tmp_path: Path, fixtures_dir: Path) -> Path:
    data = (fixtures_dir / STREAM).read_bytes()

    def end_of_pickle(start: int) -> int:  # genops stops after the STOP opcode
        return start + 1 + [pos for _, _, pos in pickletools.genops(data[start:])][-1]

    first_end = end_of_pickle(0)
    second_end = end_of_pickle(first_end)
    assert second_end - first_end > 4
    cut = (first_end + second_end) // 2
    path = tmp_path / "truncated.pkl"
    path.write_bytes(data[:cut])
    return path


def _truncated_dir(tmp_path: Path, copy_fixture) -> Path:
    dat = copy_fixture(DUMB + ".dat", "cut")
    index = dat.with_suffix(".dir")
    text = index.read_bytes()
    index.write_bytes(text[: text.index(b"\n", 60) - 3])  # end in the middle of a line
    return dat.with_suffix("")


def _not_leveldb_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "somedir"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    return folder


BAD_SOURCES = {
    "empty file": (lambda t, f, c: _write(t / "empty.bin", b""), "empty"),
    "random bytes": (
        lambda t, f, c: _write(t / "noise.bin", random.Random(2024).randbytes(4096)),
        "not a recognised format",
    ),
    "truncated pickle stream": (lambda t, f, c: _truncated_stream(t, f), "offset"),
    "truncated .dir": (lambda t, f, c: _truncated_dir(t, c), "cut.dir"),
    "missing path": (lambda t, f, c: t / "no-such-shelf", "no such file"),
    "directory that is not LevelDB": (lambda t, f, c: _not_leveldb_dir(t), "LevelDB"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_convert_bad_source(
    case: str, tmp_path: Path, fixtures_dir: Path, copy_fixture, out: Path
) -> None:
    make, fragment = BAD_SOURCES[case]
    src = make(tmp_path, fixtures_dir, copy_fixture)
    dst = out / "out.jsonl"
    result = run("convert", src, dst)
    assert result.exit_code == 2, result.output
    line = stderr_line(result)
    assert src.name in line
    assert fragment in line
    assert not dst.exists()
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    ("fixture", "fragments"),
    [
        ("detect/bdb-heap.db", ["Berkeley DB heap", "not supported"]),
        ("detect/bdb-hash-encrypted.db", ["encrypted"]),
    ],
)
def test_convert_recognised_but_unreadable(
    fixtures_dir: Path, out: Path, fixture: str, fragments: list[str]
) -> None:
    src = fixtures_dir / fixture
    dst = out / "out.jsonl"
    result = run("convert", src, dst)
    assert result.exit_code == 2, result.output
    line = stderr_line(result)
    assert src.name in line
    for fragment in fragments:
        assert fragment in line
    assert os.listdir(out) == []


def test_convert_existing_destination_needs_overwrite(
    dumb_src: Path, fixtures_dir: Path, out: Path
) -> None:
    dst = out / "out.jsonl"
    dst.write_text("precious\n")
    result = run("convert", dumb_src, dst)
    assert result.exit_code == 2, result.output
    line = stderr_line(result)
    assert "out.jsonl" in line and "--overwrite" in line
    assert dst.read_text() == "precious\n"
    assert os.listdir(out) == ["out.jsonl"]

    result = run("convert", dumb_src, dst, "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_jsonl(dst) == read_jsonl(fixtures_dir / DUMB_ORACLE)
    assert os.listdir(out) == ["out.jsonl"]


def test_convert_overwrite_replaces_leveldb_directory(dumb_src: Path, out: Path) -> None:
    plyvel = pytest.importorskip("plyvel")
    dst = out / "out.ldb"
    assert run("convert", dumb_src, dst).exit_code == 0
    result = run("convert", dumb_src, dst)
    assert result.exit_code == 2 and "out.ldb" in stderr_line(result)
    assert run("convert", dumb_src, dst, "--overwrite").exit_code == 0
    db = plyvel.DB(str(dst))
    try:
        assert sum(1 for _ in db) == 23
    finally:
        db.close()
    assert os.listdir(out) == ["out.ldb"]


def test_convert_destination_folder_missing(dumb_src: Path, out: Path) -> None:
    dst = out / "missing" / "out.jsonl"
    result = run("convert", dumb_src, dst)
    assert result.exit_code == 2, result.output
    line = stderr_line(result)
    assert "out.jsonl" in line and "does not exist" in line
    assert os.listdir(out) == []


def test_convert_destination_under_a_file(dumb_src: Path, out: Path) -> None:
    # A path below a regular file can never be written, even by root (for whom
    # os.access says every folder is writable).
    blocker = out / "somefile"
    blocker.write_text("x")
    dst = blocker / "out.jsonl"
    result = run("convert", dumb_src, dst)
    assert result.exit_code == 2, result.output
    assert "out.jsonl" in stderr_line(result)
    assert os.listdir(out) == ["somefile"]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root can write into a read-only folder, so it cannot be simulated",
)
def test_convert_destination_folder_not_writable(dumb_src: Path, out: Path) -> None:
    locked = out / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("convert", dumb_src, locked / "out.jsonl")
        assert result.exit_code == 2, result.output
        line = stderr_line(result)
        assert "out.jsonl" in line and "not writable" in line
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_convert_unknown_destination_extension(dumb_src: Path, out: Path) -> None:
    result = run("convert", dumb_src, out / "out.txt")
    assert result.exit_code == 2, result.output
    line = stderr_line(result)
    assert "out.txt" in line and "--to" in line
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    ("option", "value", "dst_name"),
    [
        ("--on-error", "maybe", "o.jsonl"),
        ("--values", "yaml", "o.jsonl"),
        ("--layout", "foo", "o.sqlite"),
    ],
)
def test_convert_bad_option_values(
    dumb_src: Path, out: Path, option: str, value: str, dst_name: str
) -> None:
    result = run("convert", dumb_src, out / dst_name, option, value)
    assert result.exit_code == 2, result.output
    line = stderr_line(result)
    assert option in line and repr(value) in line
    assert os.listdir(out) == []


# Regressions: bugs in src/ that these tests found (now fixed), and one still open.


def _sqlite_with_bad_schema_text(copy_fixture) -> Path:
    src = copy_fixture("sqlite/tutorial.sqlite", "badschema.sqlite")
    data = src.read_bytes()
    at = data.index(b"PRIMARY")
    src.write_bytes(data[: at + 3] + b"\xca" + data[at + 4 :])  # PRIMARY -> PRI\xcaARY
    return src


@pytest.mark.parametrize("command", ["convert", "convert --from sqlite", "inspect"])
def test_damaged_sqlite_schema_is_exit_2(copy_fixture, out: Path, command: str) -> None:
    src = _sqlite_with_bad_schema_text(copy_fixture)
    if command == "inspect":
        args = ["inspect", src]
    else:
        args = ["convert", src, out / "o.jsonl", *command.split()[1:]]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, repr(result.exception)
    assert "badschema.sqlite" in stderr_line(result)


def test_json_lines_with_invalid_utf8_is_exit_2(tmp_path: Path, out: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"key": "a", "value": 1}\n{"key": "b", "value": "\xff"}\n')
    result = CliRunner().invoke(app, ["convert", str(src), str(out / "o.jsonl")])
    assert result.exit_code == 2, repr(result.exception)
    assert "bad.jsonl" in stderr_line(result)
    assert os.listdir(out) == []


def test_json_table_null_value_is_a_record_error(tmp_path: Path, out: Path) -> None:
    src = tmp_path / "nulls.sqlite"
    con = sqlite3.connect(src)
    con.execute("CREATE TABLE t (key TEXT, value TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [("a", '"x"'), ("b", None), ("c", "[1]")])
    con.commit()
    con.close()
    result = CliRunner().invoke(
        app, ["convert", str(src), str(out / "o.jsonl"), "--on-error", "skip"]
    )
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    # Either the NULL is a failed record (exit 1) or it is read as JSON null (exit 0).
    assert result.exit_code in (0, 1)
    assert f"{3 - result.exit_code} of 3 records written" in result.stderr


def test_oversized_bytearray8_gives_one_stderr_line(tmp_path: Path, out: Path) -> None:
    src = tmp_path / "big.pkl"
    src.write_bytes(
        pickle.dumps({}, protocol=2)
        + b"\x80\x02c__main__\nNew\n\x96"
        + struct.pack("<Q", 1 << 60)
        + b"."
    )
    result = run("convert", src, out / "o.jsonl")
    assert result.exit_code == 2
    assert "big.pkl" in stderr_line(result)


# ---------------------------------------------------------------------------
# inspect


def test_inspect_dumb_shelf_text(dumb_src: Path) -> None:
    result = run("inspect", dumb_src)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "dbm.dumb" in text
    assert "records: 23" in text
    assert "values: pickle" in text
    assert "pickle protocols" in text and "0 (23)" in text
    assert "Python 2" in text


def test_inspect_dumb_shelf_json(dumb_src: Path) -> None:
    result = run("inspect", dumb_src, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "dumb"
    assert info["records"] == 23
    assert info["values"] == "pickle"
    assert info["sample"]["pickle_protocols"] == {"0": 23}
    assert info["python2"] is True


@pytest.mark.parametrize("as_json", [False, True])
def test_inspect_bdb_big_endian(fixtures_dir: Path, as_json: bool) -> None:
    src = fixtures_dir / "detect/bdb-hash-be.db"
    result = run("inspect", src, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    if as_json:
        info = json.loads(result.stdout)
        description = info["description"]
        assert info["format"] == "bdb-hash"
        assert info["readable"] is True
        assert info["source"]["byte_order"] == "big"
    else:
        description = result.stdout
        assert "cannot be read" not in description
    assert "Berkeley DB hash" in description
    assert "big-endian" in description


def test_inspect_sqlite_copy(copy_fixture) -> None:
    src = copy_fixture("sqlite/tutorial_wal.sqlite")
    before = sorted(os.listdir(src.parent))
    assert "tutorial_wal.sqlite-wal" in before

    text = run("inspect", src)
    assert text.exit_code == 0, text.output
    assert "SQLite" in text.stdout and "records: 5" in text.stdout

    result = run("inspect", src, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "sqlite"
    assert info["records"] == 5  # two of them live only in the -wal file
    assert info["values"] == "json"
    assert info["python2"] is False
    assert sorted(os.listdir(src.parent)) == before


def test_inspect_missing_file(tmp_path: Path) -> None:
    result = run("inspect", tmp_path / "ghost.db")
    assert result.exit_code == 2
    assert "ghost.db" in stderr_line(result)


# ---------------------------------------------------------------------------
# verify


@pytest.fixture
def converted(dumb_src: Path, out: Path) -> Path:
    dst = out / "v.sqlite"
    assert run("convert", dumb_src, dst).exit_code == 0
    return dst


def test_verify_same(dumb_src: Path, converted: Path) -> None:
    result = run("verify", dumb_src, converted)
    assert result.exit_code == 0, result.output
    assert "same" in result.stdout and "23" in result.stdout


def test_verify_missing_row(dumb_src: Path, converted: Path) -> None:
    with sqlite3.connect(converted) as con:
        assert con.execute("DELETE FROM records WHERE key = 'nested'").rowcount == 1
    con.close()
    result = run("verify", dumb_src, converted)
    assert result.exit_code == 1, result.output
    assert "different" in result.stdout
    assert "'nested'" in result.stdout
    assert "only in source" in result.stdout


def test_verify_changed_value(dumb_src: Path, converted: Path) -> None:
    with sqlite3.connect(converted) as con:
        assert (
            con.execute("UPDATE records SET value = '\"changed\"' WHERE key = 'ascii'").rowcount
            == 1
        )
    con.close()
    result = run("verify", dumb_src, converted)
    assert result.exit_code == 1, result.output
    assert "'ascii'" in result.stdout
    assert "changed" in result.stdout


def test_verify_json_lines_against_stream(copy_fixture, out: Path) -> None:
    src = copy_fixture(STREAM)
    dst = out / "s.jsonl.gz"
    assert run("convert", src, dst).exit_code == 0
    result = run("verify", src, dst)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------
# formats, --version


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(title) + 1
    names = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        names.append(line.split()[0])
    return names


def test_formats() -> None:
    result = run("formats")
    assert result.exit_code == 0, result.output
    readers = _section(result.stdout, "readers:")
    writers = _section(result.stdout, "writers:")
    assert {"dumb", "sqlite", "leveldb", "jsonl", "pickle", "marshal"} <= set(readers)
    assert {"jsonl", "sqlite", "leveldb"} <= set(writers)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"shelfmigrate {shelfmigrate.__version__}"


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code in (0, 2)
    assert "convert" in result.output


# ---------------------------------------------------------------------------
# The real programs


def _console_script() -> Path:
    folder = Path(sys.executable).parent
    for name in ("shelfmigrate", "shelfmigrate.exe"):
        if (folder / name).exists():
            return folder / name
    pytest.skip(f"no shelfmigrate console script next to {sys.executable}")


def test_console_script(dumb_src: Path, fixtures_dir: Path, out: Path, tmp_path: Path) -> None:
    script = _console_script()
    dst = out / "o.jsonl"
    done = subprocess.run(
        [str(script), "convert", str(dumb_src), str(dst)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert read_jsonl(dst) == read_jsonl(fixtures_dir / DUMB_ORACLE)

    empty = _write(tmp_path / "empty.db", b"")
    done = subprocess.run(
        [str(script), "convert", str(empty), str(out / "e.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "empty.db" in lines[0], lines
    assert sorted(os.listdir(out)) == ["o.jsonl"]


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shelfmigrate", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"shelfmigrate {shelfmigrate.__version__}"
    missing = subprocess.run(
        [sys.executable, "-m", "shelfmigrate", "inspect", str(tmp_path / "nothing.here")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert len(missing.stderr.splitlines()) == 1 and "nothing.here" in missing.stderr
