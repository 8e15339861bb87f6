"""Records that name their subdatabase (Berkeley DB files holding several) keep the name
in every output that can hold it, and are refused plainly by those that cannot.

The source here is a JSON-lines file with ``"subdb"`` members, which is exactly what
``convert`` writes from a Berkeley DB file with subdatabases; the Berkeley DB reader's own
tests convert the real files.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import shelfmigrate
from shelfmigrate.cli import app
from shelfmigrate.errors import UsageError
from shelfmigrate.options import ReadOptions, WriteOptions

LINES = [
    {"subdb": "main", "key": "alpha", "value": {"$bytes": "b25l"}},
    {"subdb": "main", "key": "beta", "value": [1, 2]},
    {"subdb": "extra", "key": "alpha", "value": "other"},
    {"subdb": "numbers", "key": 1, "value": {"$tuple": [1, "x"]}},
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "subdbs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES), encoding="utf-8")
    return path


def test_jsonl_round_trip_keeps_subdatabase_names(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "copy.jsonl"
    report = shelfmigrate.convert(source, dst)
    assert report.written == 4
    assert [json.loads(line) for line in dst.read_text().splitlines()] == LINES


def test_sqlite_kv_has_a_subdb_column_and_keeps_equal_keys_apart(
    source: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "out.sqlite"
    shelfmigrate.convert(source, dst)
    with sqlite3.connect(dst) as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(records)")]
        rows = con.execute("SELECT subdb, key, value FROM records ORDER BY rowid").fetchall()
    assert columns == ["subdb", "key", "value"]
    assert rows == [
        ("main", "alpha", '{"$bytes":"b25l"}'),
        ("main", "beta", "[1,2]"),
        ("extra", "alpha", '"other"'),
        ("numbers", 1, '{"$tuple":[1,"x"]}'),
    ]


def test_sqlite_kv_with_subdbs_reads_back_and_selects_one(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.sqlite"
    shelfmigrate.convert(source, dst)
    with shelfmigrate.open_reader(dst) as reader:
        back = [(r.subdb, r.key) for r in reader.records()]
    assert back == [("main", "alpha"), ("main", "beta"), ("extra", "alpha"), ("numbers", 1)]
    with shelfmigrate.open_reader(dst, options=ReadOptions(subdb="main")) as reader:
        assert [(r.subdb, r.key) for r in reader.records()] == [(None, "alpha"), (None, "beta")]
    assert shelfmigrate.verify(source, dst).same


def test_verify_tells_subdatabases_apart(source: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.jsonl"
    lines = [dict(line) for line in LINES]
    lines[2]["subdb"] = "main2"
    moved.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = shelfmigrate.verify(source, moved)
    assert not result.same
    assert result.only_in_source == result.only_in_destination == 1
    assert any("in subdatabase 'extra'" in line for line in result.examples)


def test_duplicate_key_within_one_subdatabase_is_named(tmp_path: Path) -> None:
    src = tmp_path / "dups.jsonl"
    rows = [LINES[0], LINES[1], {"subdb": "main", "key": "alpha", "value": 2}]
    src.write_text("".join(json.dumps(line) + "\n" for line in rows), encoding="utf-8")
    with pytest.raises(shelfmigrate.errors.DuplicateKeyError, match="in subdatabase 'main'"):
        shelfmigrate.convert(src, tmp_path / "out.sqlite")
    shelfmigrate.convert(
        src, tmp_path / "list.sqlite", write_options=WriteOptions(duplicates="list")
    )
    with sqlite3.connect(tmp_path / "list.sqlite") as con:
        value = con.execute("SELECT value FROM records WHERE key = 'alpha'").fetchone()[0]
    assert json.loads(value) == [{"$bytes": "b25l"}, 2]


@pytest.mark.parametrize(
    ("name", "write_options"),
    [
        ("out.sqlite", WriteOptions(layout="dbm.sqlite3")),
        ("out.sqlite", WriteOptions(layout="sqlitedict")),
        ("out.ldb", WriteOptions()),
    ],
)
def test_single_keyspace_outputs_refuse_subdatabases(
    source: Path, tmp_path: Path, name: str, write_options: WriteOptions
) -> None:
    dst = tmp_path / name
    with pytest.raises(UsageError, match="--subdb NAME"):
        shelfmigrate.convert(source, dst, write_options=write_options)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subdbs.jsonl"]


def test_cli_refusal_is_one_line_with_exit_2(source: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["convert", str(source), str(tmp_path / "out.sqlite"), "--layout", "dbm.sqlite3"]
    )
    assert result.exit_code == 2
    assert "subdatabases" in result.output
    assert "Traceback" not in result.output


def test_subdb_member_must_be_text(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"subdb": 3, "key": "a", "value": 1}\n', encoding="utf-8")
    report = shelfmigrate.convert(src, tmp_path / "out.jsonl", on_error="skip")
    assert report.failed == 1
    assert "subdb" in report.errors[0]


def test_shelfmigrate_verify_stays_the_function() -> None:
    # Loading the verify submodule must not replace the function on the package.
    code = (
        "import shelfmigrate, shelfmigrate.cli, shelfmigrate.verification\n"
        "first = shelfmigrate.verify\n"
        "assert callable(first) and shelfmigrate.verify is first, shelfmigrate.verify\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_duplicate_named_is_the_real_one_not_the_first_of_the_batch(tmp_path: Path) -> None:
    src = tmp_path / "late_dup.jsonl"
    rows = [{"key": f"k{i}", "value": i} for i in range(50)] + [{"key": "k7", "value": "again"}]
    src.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(shelfmigrate.errors.DuplicateKeyError, match="key 'k7' more than once"):
        shelfmigrate.convert(src, tmp_path / "out.sqlite")
