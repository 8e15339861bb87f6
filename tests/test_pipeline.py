"""The conversion pipeline: error policy, duplicates, references, atomic output, the report."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import shelfmigrate
from shelfmigrate.errors import DuplicateKeyError, EncodeError, RecordError
from shelfmigrate.options import WriteOptions


def write_jsonl(path: Path, records: list[tuple[object, object]]) -> Path:
    from shelfmigrate.codecs import typedjson

    with open(path, "w", encoding="utf-8") as handle:
        for key, value in records:
            handle.write(typedjson.encode_record(key, value) + "\n")
    return path


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def duplicated(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "dups.jsonl", [("a", 1), ("b", 2), ("a", (3, "x")), ("c", 4), ("a", None)]
    )


@pytest.mark.parametrize("name", ["out.sqlite", "out.ldb"])
def test_duplicate_keys_are_refused_naming_the_options(duplicated, tmp_path, name):
    with pytest.raises(
        DuplicateKeyError, match=r"key 'a' more than once.*--duplicates list.*--duplicates last"
    ):
        shelfmigrate.convert(duplicated, tmp_path / name, progress=False)
    assert files_in(tmp_path) == ["dups.jsonl"]


def test_jsonl_destination_keeps_every_duplicate_pair(duplicated, tmp_path):
    shelfmigrate.convert(duplicated, tmp_path / "out.jsonl", progress=False)
    assert (tmp_path / "out.jsonl").read_text() == duplicated.read_text()


def test_duplicates_last_keeps_the_last_value_in_sqlite(duplicated, tmp_path):
    shelfmigrate.convert(
        duplicated,
        tmp_path / "out.sqlite",
        write_options=WriteOptions(duplicates="last"),
        progress=False,
    )
    con = sqlite3.connect(tmp_path / "out.sqlite")
    assert dict(con.execute("SELECT key, value FROM records")) == {"a": "null", "b": "2", "c": "4"}
    con.close()


def test_duplicates_list_groups_values_in_source_order_in_sqlite(duplicated, tmp_path):
    options = WriteOptions(duplicates="list", batch_size=2)  # duplicates across batches too
    shelfmigrate.convert(duplicated, tmp_path / "out.sqlite", write_options=options, progress=False)
    con = sqlite3.connect(tmp_path / "out.sqlite")
    rows = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM records")}
    con.close()
    assert rows == {"a": [1, {"$tuple": [3, "x"]}, None], "b": [2], "c": [4]}


@pytest.mark.parametrize("layout", ["dbm.sqlite3", "sqlitedict"])
def test_duplicates_list_in_pickle_layouts(duplicated, tmp_path, layout):
    import pickle

    table = "Dict" if layout == "dbm.sqlite3" else "unnamed"
    options = WriteOptions(duplicates="list", layout=layout, batch_size=2)
    shelfmigrate.convert(duplicated, tmp_path / "out.sqlite", write_options=options, progress=False)
    con = sqlite3.connect(tmp_path / "out.sqlite")
    rows = {
        bytes(k) if isinstance(k, bytes) else k.encode(): pickle.loads(v)
        for k, v in con.execute(f'SELECT key, value FROM "{table}"')
    }
    con.close()
    assert rows == {b"a": [1, (3, "x"), None], b"b": [2], b"c": [4]}


@pytest.mark.parametrize(
    ("encode", "load"), [("json", json.loads), ("pickle", __import__("pickle").loads)]
)
def test_duplicates_list_and_last_in_leveldb(duplicated, tmp_path, encode, load):
    plyvel = pytest.importorskip("plyvel")
    for policy, expected_a in (("list", [1, [3, "x"], None]), ("last", None)):
        dst = tmp_path / f"{policy}-{encode}.ldb"
        options = WriteOptions(duplicates=policy, encode=encode, batch_size=2)
        shelfmigrate.convert(duplicated, dst, write_options=options, progress=False)
        db = plyvel.DB(str(dst))
        value = load(db.get(b"a"))
        db.close()
        if encode == "json" and policy == "list":
            expected_a = [1, {"$tuple": [3, "x"]}, None]
        if encode == "pickle" and policy == "list":
            expected_a = [1, (3, "x"), None]
        assert value == expected_a


def test_a_reference_cycle_is_a_record_error_unless_refs_keep(tmp_path):
    import pickle

    cyclic: list = [1]
    cyclic.append(cyclic)
    src = tmp_path / "cycle.pkl"
    src.write_bytes(pickle.dumps(cyclic) + pickle.dumps("fine"))
    report = shelfmigrate.convert(src, tmp_path / "skip.jsonl", on_error="skip", progress=False)
    assert (report.read, report.written, report.failed) == (2, 1, 1)
    assert "cycle" in report.errors[0] and "--refs keep" in report.errors[0]
    shelfmigrate.convert(
        src, tmp_path / "keep.jsonl", write_options=WriteOptions(refs="keep"), progress=False
    )
    first = json.loads((tmp_path / "keep.jsonl").read_text().splitlines()[0])
    assert first == {"key": 0, "value": {"$list": [1, {"$ref": 1}], "$id": 1}}


def test_fail_policy_stops_and_leaves_nothing(tmp_path):
    import pickle

    cyclic: list = []
    cyclic.append(cyclic)
    src = tmp_path / "cycle.pkl"
    src.write_bytes(pickle.dumps("fine") + pickle.dumps(cyclic))
    with pytest.raises(EncodeError) as caught:
        shelfmigrate.convert(
            src, tmp_path / "out.sqlite", progress=False, report=tmp_path / "r.json"
        )
    assert caught.value.key == 1
    assert files_in(tmp_path) == ["cycle.pkl", "r.json"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "aborted"
    assert report["records"] == {"read": 2, "written": 0, "failed": 1}


def test_report_file_describes_the_run(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [(i, {"n": i}) for i in range(10)])
    report = shelfmigrate.convert(
        src, tmp_path / "out.sqlite", report=tmp_path / "r.json", progress=False
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == report.to_dict()
    assert data["status"] == "ok"
    assert data["source"]["format"] == "jsonl"
    assert data["destination"]["format"] == "sqlite"
    assert data["records"] == {"read": 10, "written": 10, "failed": 0}
    assert data["duration_s"] > 0 and data["records_per_s"] > 0


def test_writer_failure_midway_leaves_no_destination_and_no_temp(tmp_path):
    # The 5th key is a tuple: a SQLite key column cannot hold it, so the run fails after
    # the first batches were written to the temporary file.
    src = write_jsonl(tmp_path / "in.jsonl", [(i, i) for i in range(4)] + [((1, 2), "x")])
    with pytest.raises(RecordError, match="tuple"):
        shelfmigrate.convert(
            src, tmp_path / "out.sqlite", write_options=WriteOptions(batch_size=2), progress=False
        )
    assert files_in(tmp_path) == ["in.jsonl"]


def test_overwrite_replaces_an_existing_leveldb_directory(tmp_path):
    pytest.importorskip("plyvel")
    src = write_jsonl(tmp_path / "in.jsonl", [("k", 1)])
    dst = tmp_path / "db"
    shelfmigrate.convert(src, dst, to_format="leveldb", progress=False)
    with pytest.raises(shelfmigrate.DestinationError, match="already exists"):
        shelfmigrate.convert(src, dst, to_format="leveldb", progress=False)
    shelfmigrate.convert(
        src, dst, to_format="leveldb", write_options=WriteOptions(overwrite=True), progress=False
    )
    assert files_in(tmp_path) == ["db", "in.jsonl"]


def test_open_reader_is_lazy(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [(i, i) for i in range(3)])
    reader = shelfmigrate.open_reader(src)
    records = reader.records()
    src.unlink()  # nothing has been read yet ...
    with pytest.raises(FileNotFoundError):
        next(records)


def test_progress_is_off_when_stderr_is_not_a_terminal(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [(i, i) for i in range(3)])
    shelfmigrate.convert(src, tmp_path / "out.jsonl")
    assert capsys.readouterr().err == ""


def test_progress_bar_goes_to_stderr_when_asked(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [(i, i) for i in range(3)])
    shelfmigrate.convert(src, tmp_path / "out.jsonl", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "3/" in captured.err or "3rec" in captured.err.replace(" ", "")


def test_deep_nesting_is_a_record_error_not_a_crash(tmp_path):
    depth = 100_000
    data = b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."
    src = tmp_path / "deep.pkl"
    src.write_bytes(data)
    report = shelfmigrate.convert(src, tmp_path / "out.jsonl", on_error="skip", progress=False)
    assert (report.read, report.failed) == (1, 1)
    assert "deep" in report.errors[0] or "depth" in report.errors[0]
    assert os.path.exists(tmp_path / "out.jsonl")
