"""The Berkeley DB 3.1-18.x reader (``shelfmigrate.formats.bdb``) against native oracles.

Oracles: every ``fixtures/bdb/<stem>.db`` with a ``<stem>.dump`` (or ``<stem>.subdbs`` and
one ``<stem>.<name>.dump`` per subdatabase) was dumped by the real ``db5.3_dump``
(``fixtures/bdb/README.md``); ``tests/bdb_oracle.py`` parses those dumps.  The small files
of ``fixtures/detect/`` hold the records their README lists (checked with ``db5.3_dump``
when they were made).

Order: btree, recno and queue records must come in exactly the dump's order (key /
record-number order).  For hash files too the comparison is in order: ``db_dump`` walks
the buckets ``0 .. max_bucket`` and each bucket's page chain, the same walk the reader
makes, so the orders agree on every fixture (checked, not assumed: a multiset comparison
would hide a wrong walk).

Some inputs cannot be made by libdb 5.3 on this machine; the helpers marked
"synthesized" below derive them from real files by rewriting documented fields
(FORMATS.md §1): hash v7/v8 files with P_HASH_UNSORTED pages, 18.x external-file (blob)
items and flags, sliced and pre-3.1 meta pages, a queue with extent files, page chain
loops and out-of-range page numbers.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bdb_oracle import load_dump, load_fixture, subdb_names
from typer.testing import CliRunner

import shelfmigrate
from shelfmigrate.cli import app
from shelfmigrate.errors import FormatError, SourceError, UnsupportedFormatError, UsageError
from shelfmigrate.formats.bdb import BerkeleyDBReader
from shelfmigrate.options import ReadOptions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BDB = FIXTURES / "bdb"
DETECT = FIXTURES / "detect"


def _oracle_stems() -> list[str]:
    if not BDB.is_dir():
        return []
    stems = []
    for db in sorted(BDB.glob("*.db")):
        stem = db.with_suffix("")
        if stem.with_suffix(".dump").exists() or stem.with_suffix(".subdbs").exists():
            stems.append(stem.name)
    return stems


ORACLE_STEMS = _oracle_stems()
SINGLE_STEMS = [s for s in ORACLE_STEMS if not (BDB / f"{s}.subdbs").exists()]
SUBDB_STEMS = [s for s in ORACLE_STEMS if (BDB / f"{s}.subdbs").exists()]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"fixture {path.name} is not there")
    return path


def as_pair(record: Any) -> tuple[Any, bytes]:
    """A record as the oracle has it: key bytes (or the record number) and the raw value."""
    assert record.error is None, record.error
    key = record.key
    if isinstance(key, str):
        key = key.encode("utf-8")
    return key, record.raw


def read_pairs(path: Path | str, **options: Any) -> list[tuple[Any, bytes]]:
    with BerkeleyDBReader(path, ReadOptions(**options)) as reader:
        return [as_pair(r) for r in reader.records()]


def copy(tmp_path: Path, path: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or path.name)
    shutil.copyfile(path, target)
    return target


# --------------------------------------------------------------------------- page helpers for synthesized files


class RawFile:
    """A mutable copy of a BDB file with just enough parsing to rewrite documented fields."""

    def __init__(self, path: Path):
        self.path = path
        self.data = bytearray(path.read_bytes())
        self.order = (
            "<"
            if struct.unpack_from("<I", self.data, 12)[0] in (0x061561, 0x053162, 0x042253)
            else ">"
        )
        self.page_size = self.u32(20)

    def u32(self, offset: int) -> int:
        return struct.unpack_from(self.order + "I", self.data, offset)[0]

    def set_u32(self, offset: int, value: int) -> None:
        struct.pack_into(self.order + "I", self.data, offset, value)

    def page_offset(self, pgno: int) -> int:
        return pgno * self.page_size

    def header(self, pgno: int) -> dict[str, int]:
        at = self.page_offset(pgno)
        own, prev, nxt, entries, hf, level, ptype = struct.unpack_from(
            self.order + "8xIIIHHBB", self.data, at
        )
        return {
            "pgno": own,
            "prev": prev,
            "next": nxt,
            "entries": entries,
            "level": level,
            "type": ptype,
        }

    def pages_of_type(self, ptype: int) -> list[int]:
        return [
            p for p in range(1, len(self.data) // self.page_size) if self.header(p)["type"] == ptype
        ]

    def index(self, pgno: int) -> list[int]:
        entries = self.header(pgno)["entries"]
        return list(
            struct.unpack_from(f"{self.order}{entries}H", self.data, self.page_offset(pgno) + 26)
        )

    def save(self) -> Path:
        self.path.write_bytes(bytes(self.data))
        return self.path


def synthesize_hash_unsorted(tmp_path: Path, source: Path, version: int) -> Path:
    """Synthesized: a hash v7/v8 file (BDB 3.1-4.5) from a v9 one.

    Between those versions only the item order inside hash pages changed (§1.1), and the
    page type: P_HASH (13) became P_HASH_UNSORTED (2).  Rewriting the meta version and the
    page types gives the bytes an older library would have written for the same items.
    """
    raw = RawFile(copy(tmp_path, source, f"v{version}-{source.name}"))
    raw.set_u32(16, version)
    for pgno in raw.pages_of_type(13):
        raw.data[raw.page_offset(pgno) + 25] = 2
    return raw.save()


# --------------------------------------------------------------------------- oracle parity


@pytest.mark.parametrize("stem", SINGLE_STEMS)
def test_single_database_fixture_equals_db_dump(stem: str) -> None:
    expected = load_fixture(BDB / stem)[None]
    got = read_pairs(BDB / f"{stem}.db")
    assert got == expected  # same order, hash included (see the module docstring)


@pytest.mark.parametrize("stem", SUBDB_STEMS)
def test_each_subdatabase_equals_db_dump(stem: str) -> None:
    expected = load_fixture(BDB / stem)
    assert list(expected) == subdb_names(BDB / f"{stem}.subdbs")
    for name, records in expected.items():
        with BerkeleyDBReader(BDB / f"{stem}.db", ReadOptions(subdb=name)) as reader:
            got = list(reader.records())
        assert [as_pair(r) for r in got] == records, name
        assert {r.subdb for r in got} <= {None}


@pytest.mark.parametrize("stem", SUBDB_STEMS)
def test_whole_subdatabase_file_names_every_record(stem: str) -> None:
    expected = load_fixture(BDB / stem)
    with BerkeleyDBReader(BDB / f"{stem}.db") as reader:
        got = list(reader.records())
        details = reader.details()
    want = [(name, pair) for name, records in expected.items() for pair in records]
    assert [(r.subdb, as_pair(r)) for r in got] == want
    listed = details["subdatabases"]
    assert [s["name"] for s in listed] == list(expected)
    for entry in listed:
        assert entry["access_method"] in ("btree", "hash", "recno")
        assert entry["meta_page"] > 0


DETECT_CONTENTS = {
    "bdb-hash-le.db": [(b"alpha", b"one"), (b"beta", b"two"), (b"gamma", b"three")],
    "bdb-hash-be.db": [(b"alpha", b"one"), (b"beta", b"two"), (b"gamma", b"three")],
    "bdb-btree-le.db": [(b"alpha", b"one"), (b"beta", b"two"), (b"gamma", b"three")],
    "bdb-btree-be.db": [(b"alpha", b"one"), (b"beta", b"two"), (b"gamma", b"three")],
    "bdb-hash-chksum.db": [(b"alpha", b"one"), (b"beta", b"two"), (b"gamma", b"three")],
    "bdb-recno.db": [(1, b"one"), (2, b"two"), (3, b"three")],
    "bdb-queue.db": [(1, b"one".ljust(16)), (2, b"two".ljust(16)), (3, b"three".ljust(16))],
    "bdb-hash-dup.db": [
        (b"alpha", b"one"),
        (b"alpha", b"uno"),
        (b"beta", b"two"),
        (b"gamma", b"three"),
    ],
    "bdb-btree-dupsort.db": [
        (b"alpha", b"eins"),
        (b"alpha", b"one"),
        (b"alpha", b"uno"),
        (b"beta", b"two"),
        (b"gamma", b"three"),
    ],
    "ndbm-bdb.db": [(b"alpha", b"one")],
}


@pytest.mark.parametrize("name", sorted(DETECT_CONTENTS))
def test_detection_fixtures(name: str) -> None:
    assert read_pairs(need(DETECT / name)) == DETECT_CONTENTS[name]


def test_detection_subdb_fixture() -> None:
    with BerkeleyDBReader(need(DETECT / "bdb-subdb.db")) as reader:
        got = [(r.subdb, as_pair(r)) for r in reader.records()]
    three = [(b"alpha", b"one"), (b"beta", b"two"), (b"gamma", b"three")]
    # db5.3_dump -l lists "extra" then "main" (the master btree's key order)
    assert got == [("extra", p) for p in three] + [("main", p) for p in three]


@pytest.mark.parametrize("version", [7, 8])
@pytest.mark.parametrize("stem", ["hash-le-512", "hash-be-512", "hash-dup-le", "hash-overflow-be"])
def test_hash_v7_v8_unsorted_pages(tmp_path: Path, stem: str, version: int) -> None:
    source = need(BDB / f"{stem}.db")
    path = synthesize_hash_unsorted(tmp_path, source, version)
    with BerkeleyDBReader(path) as reader:
        got = [as_pair(r) for r in reader.records()]
        assert reader.details()["version"] == version
    assert got == load_dump(BDB / f"{stem}.dump")


def test_open_reader_detects_and_reads(tmp_path: Path) -> None:
    with shelfmigrate.open_reader(need(BDB / "btree-le-512.db")) as reader:
        assert reader.format_name == "bdb-btree"
        assert [as_pair(r) for r in reader] == load_dump(BDB / "btree-le-512.dump")


def test_dbm_base_name_resolves_to_name_db(tmp_path: Path) -> None:
    copy(tmp_path, need(DETECT / "ndbm-bdb.db"), "shelf.db")
    with shelfmigrate.open_reader(tmp_path / "shelf") as reader:
        assert [as_pair(r) for r in reader] == [(b"alpha", b"one")]
    with BerkeleyDBReader(tmp_path / "shelf") as reader:
        assert reader.path.endswith("shelf.db")


def test_details_report_the_file() -> None:
    with BerkeleyDBReader(need(BDB / "hash-chksum-le.db")) as reader:
        details = reader.details()
        assert reader.count() is None
    assert details["format"] == "bdb-hash"
    assert details["access_method"] == "hash"
    assert details["byte_order"] == "little"
    assert details["page_size"] == 512
    assert details["checksum"] is True and details["checksums_verified"] is True
    assert details["mode"] == "walk"
    assert "may be stale" in details["cached_counts"]["note"]
    assert details["warnings"] == []
    json.dumps(details)
    with BerkeleyDBReader(need(BDB / "btree-dupsort-be.db")) as reader:
        details = reader.details()
    assert (details["byte_order"], details["duplicates"], details["dupsort"]) == ("big", True, True)
    with BerkeleyDBReader(need(BDB / "recno-fixed.db")) as reader:
        details = reader.details()
    assert details["access_method"] == "recno" and details["fixed_length"] is True


def test_reader_sniffs_values_like_other_dbm_containers() -> None:
    # Python 2 dbhash/bsddb shelves hold pickles, other applications raw bytes
    assert BerkeleyDBReader.auto_values == "sniff"


# --------------------------------------------------------------------------- refusals


REFUSED = [
    (BDB / "encrypted.db", ["encrypted", "db_dump -P"]),
    (BDB / "heap.db", ["heap", "not supported"]),
    (BDB / "compressed.db", ["compressed", "db_load"]),
    (BDB / "partitioned.db", ["partitioned", "nparts=2"]),
    (DETECT / "bdb-hash-encrypted.db", ["encrypted"]),
    (DETECT / "bdb-dbload-encrypted.db", ["encrypted"]),
    (DETECT / "bdb-btree-compress.db", ["compressed"]),
    (DETECT / "bdb-heap.db", ["heap"]),
]


@pytest.mark.parametrize(
    ("path", "words"), REFUSED, ids=lambda v: v.name if isinstance(v, Path) else None
)
def test_refused_files(path: Path, words: list[str]) -> None:
    need(path)
    for open_it in (
        lambda: shelfmigrate.open_reader(path),
        lambda: shelfmigrate.open_reader(path, format="bdb-hash"),
        lambda: BerkeleyDBReader(path),
    ):
        with pytest.raises(UnsupportedFormatError) as caught:
            open_it()
        message = str(caught.value)
        assert path.name in message
        for word in words:
            assert word in message


def _refused_copy(tmp_path: Path, stem: str, edit: Any) -> Path:
    raw = RawFile(copy(tmp_path, need(BDB / f"{stem}.db")))
    edit(raw)
    return raw.save()


SYNTHESIZED_REFUSALS = {
    # Synthesized: an 18.x hash meta (version 10) with external files enabled (blob_threshold @224)
    "blob-threshold": (
        "hash-le-512",
        lambda r: (r.set_u32(16, 10), r.set_u32(224, 1000)),
        ["external-file (blob)"],
    ),
    # Synthesized: an 18.x sliced database (DBMETA_SLICED in metaflags @26)
    "sliced": (
        "btree-le-512",
        lambda r: (r.set_u32(16, 10), r.data.__setitem__(26, 0x08)),
        ["sliced"],
    ),
    # Synthesized: DB 3.0's hash meta version 6
    "pre-3.1": ("hash-le-512", lambda r: r.set_u32(16, 6), ["pre-3.1", "db_upgrade"]),
}


@pytest.mark.parametrize("kind", sorted(SYNTHESIZED_REFUSALS))
def test_synthesized_refusals(tmp_path: Path, kind: str) -> None:
    stem, edit, words = SYNTHESIZED_REFUSALS[kind]
    path = _refused_copy(tmp_path, stem, edit)
    for open_it in (lambda: BerkeleyDBReader(path), lambda: shelfmigrate.open_reader(path)):
        with pytest.raises(UnsupportedFormatError) as caught:
            open_it()
        for word in words:
            assert word in str(caught.value)


def synthesize_queue_extents(tmp_path: Path, source: Path, page_ext: int) -> Path:
    """Synthesized: a queue with extent files, from a queue that holds its pages itself.

    Page ``p`` goes to ``__dbq.NAME.N``, ``N = (p - 1) // page_ext``, at position
    ``(p - 1) % page_ext`` (the layout ``db5.3_load -c extentsize=N`` writes, which
    ``test_native_queue_with_extent_files`` checks); the meta file keeps page 0 only,
    with ``page_ext`` set at offset 92.
    """
    raw = RawFile(source)
    ps = raw.page_size
    pages = len(raw.data) // ps
    folder = tmp_path / "extents"
    folder.mkdir(parents=True)
    main = folder / source.name
    for pgno in range(1, pages):
        number = (pgno - 1) // page_ext
        with open(folder / f"__dbq.{source.name}.{number}", "ab") as handle:
            handle.write(raw.data[pgno * ps : (pgno + 1) * ps])
    raw.set_u32(92, page_ext)
    main.write_bytes(bytes(raw.data[:ps]))
    return main


@pytest.mark.parametrize("stem", ["queue-le", "queue-be"])
def test_queue_with_extent_files(tmp_path: Path, stem: str) -> None:
    path = synthesize_queue_extents(tmp_path, need(BDB / f"{stem}.db"), 2)
    expected = load_dump(BDB / f"{stem}.dump")
    with BerkeleyDBReader(path) as reader:
        assert [as_pair(r) for r in reader.records()] == expected
        assert len(reader.details()["extent_files"]) >= 2
    assert sorted(read_pairs(path, salvage=True)) == sorted(expected)
    # BDB deletes an extent once all its records are consumed: its records are gone
    first_extent = path.parent / f"__dbq.{path.name}.0"
    rec_page = RawFile(path).u32(88)
    first_extent.unlink()
    assert read_pairs(path) == [(k, v) for k, v in expected if k > 2 * rec_page]


def test_queue_extent_files_missing(tmp_path: Path) -> None:
    path = synthesize_queue_extents(tmp_path, need(BDB / "queue-le.db"), 2)
    for extent in path.parent.glob("__dbq.*"):
        extent.unlink()
    with pytest.raises(SourceError, match="none was found"):
        BerkeleyDBReader(path)


@pytest.mark.skipif(
    shutil.which("db5.3_load") is None or shutil.which("db5.3_dump") is None,
    reason="needs the native db5.3_load and db5.3_dump",
)
def test_native_queue_with_extent_files(tmp_path: Path) -> None:
    """A queue made with extent files by the native tool, against its own db5.3_dump."""
    path = tmp_path / "q.db"
    lines = "".join(f"value-{i}\n" for i in range(1, 120)).encode()
    subprocess.run(
        ["db5.3_load", "-T", "-t", "queue", "-c", "re_len=20", "-c", "extentsize=2"]
        + ["-c", "db_pagesize=512", str(path)],
        input=lines,
        check=True,
    )
    dump = tmp_path / "q.dump"
    with open(dump, "wb") as handle:
        subprocess.run(["db5.3_dump", "-k", str(path)], stdout=handle, check=True)
    assert len(list(tmp_path.glob("__dbq.q.db.*"))) == 3
    assert read_pairs(path) == load_dump(dump)


def test_hash_blob_item_is_refused(tmp_path: Path) -> None:
    """Synthesized: an 18.x H_BLOB (type 5) data item on a hash page of a version 10 file."""
    raw = RawFile(copy(tmp_path, need(BDB / "hash-le-512.db")))
    raw.set_u32(16, 10)
    pgno = next(p for p in raw.pages_of_type(13) if raw.header(p)["entries"])
    raw.data[raw.page_offset(pgno) + raw.index(pgno)[1]] = 5
    path = raw.save()
    with pytest.raises(UnsupportedFormatError, match=f"page {pgno}: .*external-file"):
        read_pairs(path)


def test_btree_blob_item_is_refused(tmp_path: Path) -> None:
    """Synthesized: an 18.x B_BLOB (type 4) data item on a btree leaf of a version 10 file."""
    raw = RawFile(copy(tmp_path, need(BDB / "btree-le-512.db")))
    raw.set_u32(16, 10)
    pgno = raw.pages_of_type(5)[0]
    raw.data[raw.page_offset(pgno) + raw.index(pgno)[1] + 2] = 4
    path = raw.save()
    with pytest.raises(UnsupportedFormatError, match=f"page {pgno}: .*external-file"):
        read_pairs(path)


def test_not_a_bdb_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"\x00" * 1024)
    with pytest.raises(FormatError, match="not a Berkeley DB"):
        BerkeleyDBReader(path)


# --------------------------------------------------------------------------- checksums


def test_checksum_mismatch_names_the_page() -> None:
    path = need(BDB / "btree-chksum-be-corrupt.db")
    with pytest.raises(FormatError) as caught:
        read_pairs(path)
    message = str(caught.value)
    assert path.name in message
    assert "checksum mismatch" in message
    raw = RawFile(path)
    leaf = raw.pages_of_type(5)[0]  # the fixture flips a byte in the first btree leaf
    assert f"page {leaf}:" in message


def test_checksum_mismatch_read_without_verification() -> None:
    path = need(BDB / "btree-chksum-be-corrupt.db")
    got = read_pairs(path, verify_checksums=False)
    expected = load_dump(BDB / "btree-chksum-be.dump")
    assert len(got) == len(expected)
    differing = [(g, e) for g, e in zip(got, expected, strict=True) if g != e]
    assert len(differing) == 1  # one flipped bit in one value
    (gk, gv), (ek, ev) = differing[0]
    assert gk == ek and len(gv) == len(ev)
    assert sum(bin(a ^ b).count("1") for a, b in zip(gv, ev, strict=True)) == 1
    with BerkeleyDBReader(path, ReadOptions(verify_checksums=False)) as reader:
        assert reader.details()["checksums_verified"] is False


def test_checksummed_meta_page_is_verified(tmp_path: Path) -> None:
    raw = RawFile(copy(tmp_path, need(BDB / "hash-chksum-le.db")))
    raw.data[300] ^= 0x40  # an unused byte of the meta page: only the checksum notices
    path = raw.save()
    with pytest.raises(FormatError, match="page 0: checksum mismatch"):
        BerkeleyDBReader(path)
    assert read_pairs(path, verify_checksums=False) == load_dump(BDB / "hash-chksum-le.dump")


# --------------------------------------------------------------------------- torn and damaged files


def test_truncated_file_names_the_missing_page() -> None:
    path = need(BDB / "truncated.db")
    with BerkeleyDBReader(path) as reader:
        warnings = reader.details()["warnings"]
        assert any("not a multiple of the page size" in w for w in warnings)
        with pytest.raises(FormatError) as caught:
            list(reader.records())
    message = str(caught.value)
    assert path.name in message and "past the end of the file" in message
    assert "--salvage" in message
    whole = path.stat().st_size // 512
    assert f"page {whole}:" in message


def test_truncated_file_salvage_reads_the_whole_pages() -> None:
    path = need(BDB / "truncated.db")
    with BerkeleyDBReader(path, ReadOptions(salvage=True)) as reader:
        got = [as_pair(r) for r in reader.records()]
        salvage = reader.details()["salvage"]
    expected = load_dump(BDB / "btree-le-512.dump")  # truncated.db is this file, cut short
    assert 0 < len(got) < len(expected)
    assert set(got) <= set(expected)
    assert salvage["pages_skipped"] == 0 and salvage["pages_read"] > 0


def test_torn_tail_after_the_last_used_page_reads_everything(tmp_path: Path) -> None:
    path = copy(tmp_path, need(BDB / "hash-le-512.db"))
    with open(path, "ab") as handle:
        handle.write(b"\x01" * 100)
    with BerkeleyDBReader(path) as reader:
        assert [as_pair(r) for r in reader.records()] == load_dump(BDB / "hash-le-512.dump")
        assert any("torn" in w for w in reader.details()["warnings"])


def test_leaf_chain_loop_is_detected(tmp_path: Path) -> None:
    """Synthesized: the second btree leaf points back at the first."""
    raw = RawFile(copy(tmp_path, need(BDB / "btree-le-512.db")))
    leaves = raw.pages_of_type(5)
    first = next(p for p in leaves if raw.header(p)["prev"] == 0)
    second = raw.header(first)["next"]
    raw.set_u32(raw.page_offset(second) + 16, first)
    path = raw.save()
    with pytest.raises(FormatError, match=f"page {first}: .*second time"):
        read_pairs(path)


def test_hash_bucket_chain_loop_is_detected(tmp_path: Path) -> None:
    """Synthesized: bucket 0's page links to itself."""
    raw = RawFile(copy(tmp_path, need(BDB / "hash-le-512.db")))
    first = raw.u32(96)  # spares[0] + bucket 0
    raw.set_u32(raw.page_offset(first) + 16, first)
    path = raw.save()
    with pytest.raises(FormatError, match=f"page {first}: .*second time"):
        read_pairs(path)


def test_out_of_range_page_number(tmp_path: Path) -> None:
    """Synthesized: a leaf's next_pgno points far past the end of the file."""
    raw = RawFile(copy(tmp_path, need(BDB / "btree-le-512.db")))
    leaf = raw.pages_of_type(5)[0]
    raw.set_u32(raw.page_offset(leaf) + 16, 0x7FFFFFF0)
    path = raw.save()
    with pytest.raises(FormatError, match=f"{path.name}: page {0x7FFFFFF0}: .*past the end"):
        read_pairs(path)


def test_overflow_length_mismatch(tmp_path: Path) -> None:
    """Synthesized: an H_OFFPAGE item whose tlen is one byte more than its chain holds."""
    raw = RawFile(copy(tmp_path, need(BDB / "hash-overflow-le.db")))
    for pgno in raw.pages_of_type(13):
        for offset in raw.index(pgno):
            at = raw.page_offset(pgno) + offset
            if raw.data[at] == 3:
                raw.set_u32(at + 8, raw.u32(at + 8) + 1)
                path = raw.save()
                with pytest.raises(FormatError, match="overflow"):
                    read_pairs(path)
                return
    pytest.fail("no overflow item found")


def test_overflow_chain_loop(tmp_path: Path) -> None:
    """Synthesized: an overflow page of a long chain links back to itself."""
    raw = RawFile(copy(tmp_path, need(BDB / "btree-overflow-be.db")))
    overflow = raw.pages_of_type(7)
    page = next(p for p in overflow if raw.header(p)["next"] and raw.header(p)["prev"] == 0)
    second = raw.header(page)["next"]
    raw.set_u32(raw.page_offset(second) + 16, page)
    path = raw.save()
    with pytest.raises(FormatError, match=f"page {page}: overflow chain .* loops back"):
        read_pairs(path)


# --------------------------------------------------------------------------- subdatabase options


def test_subdb_selection_and_errors() -> None:
    path = need(BDB / "subdbs.db")
    names = subdb_names(BDB / "subdbs.subdbs")
    with pytest.raises(UsageError) as caught:
        BerkeleyDBReader(path, ReadOptions(subdb="no-such-name"))
    for name in names:
        assert repr(name) in str(caught.value)
    with pytest.raises(UsageError, match="no subdatabases"):
        BerkeleyDBReader(need(BDB / "hash-le-512.db"), ReadOptions(subdb=names[0]))
    with BerkeleyDBReader(path, ReadOptions(subdb=names[-1])) as reader:
        assert reader.details()["subdb"] == names[-1]


def test_non_utf8_subdatabase_name_is_shown_as_latin1(tmp_path: Path) -> None:
    """Synthesized: the master database's key ``alpha`` rewritten in place to ``alph\\xe9``."""
    raw = RawFile(copy(tmp_path, need(BDB / "subdbs.db")))
    root = raw.u32(88)
    assert raw.header(root)["type"] == 5  # the master btree is one leaf
    start = raw.page_offset(root)
    page = bytes(raw.data[start : start + raw.page_size])
    assert page.count(b"alpha") == 1
    at = start + page.index(b"alpha")
    raw.data[at : at + 5] = b"alph\xe9"
    path = raw.save()
    expected = load_fixture(BDB / "subdbs")
    with BerkeleyDBReader(path) as reader:
        names = [s["name"] for s in reader.details()["subdatabases"]]
        got = {r.subdb for r in reader.records()}
    assert names == ["alph\xe9", *list(expected)[1:]]
    assert got == set(names)
    assert read_pairs(path, subdb="alph\xe9") == expected["alpha"]


# --------------------------------------------------------------------------- salvage


SALVAGE_STEMS = [s for s in SINGLE_STEMS if not s.startswith("recno")]


@pytest.mark.parametrize("stem", SALVAGE_STEMS)
def test_salvage_equals_walk_on_intact_files(stem: str) -> None:
    path = BDB / f"{stem}.db"
    with BerkeleyDBReader(path, ReadOptions(salvage=True)) as reader:
        got = [as_pair(r) for r in reader.records()]
        details = reader.details()
    assert sorted(got, key=repr) == sorted(load_dump(BDB / f"{stem}.dump"), key=repr)
    assert details["mode"] == "salvage"
    assert details["salvage"]["pages_skipped"] == 0


def test_salvage_recovers_around_a_damaged_internal_page(tmp_path: Path) -> None:
    raw = RawFile(copy(tmp_path, need(BDB / "btree-le-512.db")))
    root = raw.u32(88)
    assert raw.header(root)["type"] == 3  # the fixture's root is an internal page
    raw.data[raw.page_offset(root) + 25] = 0x55  # no such page type
    path = raw.save()
    with pytest.raises(FormatError, match=f"page {root}:"):
        read_pairs(path)
    with BerkeleyDBReader(path, ReadOptions(salvage=True)) as reader:
        details = reader.details()  # taken before reading: it fills in as records are read
        got = [as_pair(r) for r in reader.records()]
    assert sorted(got) == sorted(load_dump(BDB / "btree-le-512.dump"))
    assert details["salvage"]["pages_skipped"] == 1
    assert f"page {root}" in details["salvage"]["skipped"][0]


def test_salvage_ignores_a_damaged_meta_field(tmp_path: Path) -> None:
    raw = RawFile(copy(tmp_path, need(BDB / "hash-le-512.db")))
    raw.set_u32(72, 0x00FFFFFF)  # max_bucket
    path = raw.save()
    with pytest.raises(FormatError, match="page 0: max_bucket"):
        read_pairs(path)
    assert sorted(read_pairs(path, salvage=True)) == sorted(load_dump(BDB / "hash-le-512.dump"))


def test_salvage_skips_a_page_with_a_bad_checksum() -> None:
    path = need(BDB / "btree-chksum-be-corrupt.db")
    with BerkeleyDBReader(path, ReadOptions(salvage=True)) as reader:
        got = [as_pair(r) for r in reader.records()]
        skipped = reader.details()["salvage"]["pages_skipped"]
    expected = load_dump(BDB / "btree-chksum-be.dump")
    assert skipped == 1
    assert 0 < len(got) < len(expected)
    assert set(got) <= set(expected)


@pytest.mark.parametrize(("stem", "word"), [("subdbs", "subdatabases"), ("recno-var", "recno")])
def test_salvage_refused_where_unsound(stem: str, word: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=word):
        BerkeleyDBReader(need(BDB / f"{stem}.db"), ReadOptions(salvage=True))


# --------------------------------------------------------------------------- CLI end to end


def run(*args: Any) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"raised {result.exception!r}: {result.stderr}") from result.exception
    return result


def jsonl_pairs(path: Path) -> list[tuple[Any, Any, bytes]]:
    """``(subdb, key bytes or int, raw value)`` of a ``--values raw`` JSON-lines output."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        key = item["key"]
        if isinstance(key, dict):
            key = base64.b64decode(key["$bytes"])
        elif isinstance(key, str):
            key = key.encode("utf-8")
        pairs.append((item.get("subdb"), key, base64.b64decode(item["value"]["$bytes"])))
    return pairs


@pytest.mark.parametrize("stem", ["hash-be-8192", "btree-dup-le", "queue-le", "recno-var"])
def test_cli_convert_to_json_lines(tmp_path: Path, stem: str) -> None:
    dst = tmp_path / "out.jsonl"
    result = run("convert", need(BDB / f"{stem}.db"), dst, "--values", "raw")
    assert result.exit_code == 0, result.output
    assert jsonl_pairs(dst) == [(None, k, v) for k, v in load_dump(BDB / f"{stem}.dump")]


def test_cli_subdatabases(tmp_path: Path) -> None:
    src = need(BDB / "subdbs.db")
    expected = load_fixture(BDB / "subdbs")
    dst = tmp_path / "all.jsonl"
    result = run("convert", src, dst, "--values", "raw")
    assert result.exit_code == 0, result.output
    assert jsonl_pairs(dst) == [(name, k, v) for name, recs in expected.items() for k, v in recs]

    name = list(expected)[1]
    one = tmp_path / "one.jsonl"
    result = run("convert", src, one, "--values", "raw", "--subdb", name)
    assert result.exit_code == 0, result.output
    assert jsonl_pairs(one) == [(None, k, v) for k, v in expected[name]]

    result = run("convert", src, tmp_path / "bad.jsonl", "--subdb", "nope")
    assert result.exit_code == 2
    assert "nope" in result.stderr and all(repr(n) in result.stderr for n in expected)
    assert not (tmp_path / "bad.jsonl").exists()

    result = run("inspect", src, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert [s["name"] for s in info["source"]["subdatabases"]] == list(expected)


def test_cli_checksum_option(tmp_path: Path) -> None:
    src = need(BDB / "btree-chksum-be-corrupt.db")
    result = run("convert", src, tmp_path / "a.jsonl", "--values", "raw")
    assert result.exit_code == 2
    assert "checksum mismatch" in result.stderr and src.name in result.stderr
    result = run("convert", src, tmp_path / "b.jsonl", "--values", "raw", "--no-verify-checksums")
    assert result.exit_code == 0, result.output
    assert len(jsonl_pairs(tmp_path / "b.jsonl")) == len(load_dump(BDB / "btree-chksum-be.dump"))


def test_cli_salvage_is_labelled_in_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    dst = tmp_path / "out.jsonl"
    result = run(
        "convert",
        need(BDB / "hash-le-512.db"),
        dst,
        "--values",
        "raw",
        "--salvage",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    source = json.loads(report.read_text())["source"]
    assert source["mode"] == "salvage"
    assert source["salvage"]["pages_skipped"] == 0
    assert source["salvage"]["pages_read"] > 0


def test_cli_says_on_stderr_that_a_torn_file_was_salvaged(tmp_path: Path) -> None:
    result = run("convert", need(BDB / "truncated.db"), tmp_path / "out.jsonl", "--salvage")
    assert result.exit_code == 0, result.output
    assert "warning: file size 21192 is not a multiple of the page size" in result.stderr
    assert "salvage mode" in result.stderr


@pytest.mark.parametrize("protocol", [0, 2])
def test_cli_python2_dbhash_shelf_to_sqlite(tmp_path: Path, protocol: int) -> None:
    src = need(BDB / f"py2-shelf-p{protocol}.db")
    oracle_path = need(FIXTURES / f"dumb/py27_shelf_p{protocol}.expected.jsonl")
    dst = tmp_path / "out.sqlite"
    result = run("convert", src, dst)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(dst) as con:
        rows = con.execute("SELECT key, value FROM records").fetchall()
    con.close()

    def key_bytes(key: Any) -> bytes:
        if isinstance(key, dict):
            return base64.b64decode(key["$bytes"])
        return key if isinstance(key, bytes) else key.encode("utf-8")

    expected = {}
    for line in oracle_path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        expected[key_bytes(item["key"])] = item["value"]
    got = {key_bytes(k): json.loads(v) for k, v in rows}
    assert got == expected


def test_cli_base_name(tmp_path: Path) -> None:
    copy(tmp_path, need(DETECT / "ndbm-bdb.db"), "legacy.db")
    dst = tmp_path / "out.jsonl"
    result = run("convert", tmp_path / "legacy", dst, "--values", "raw")
    assert result.exit_code == 0, result.output
    assert jsonl_pairs(dst) == [(None, b"alpha", b"one")]
    assert sorted(os.listdir(tmp_path)) == ["legacy.db", "out.jsonl"]


def test_forcing_the_heap_format_still_gives_the_reason(tmp_path: Path) -> None:
    heap = need(FIXTURES / "detect/bdb-heap.db")
    result = run("convert", "--from", "bdb-heap", heap, tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert "heap databases are not supported" in result.stderr
    assert "db_load -t btree" in result.stderr
