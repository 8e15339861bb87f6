"""Tests for shelfmigrate.detect: real fixtures (fixtures/detect) plus hand-built edge cases."""

from __future__ import annotations

import dataclasses
import gzip
import io
import marshal
import os
import pickle
import random
import shutil
import sqlite3
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfmigrate import detect as detect_mod
from shelfmigrate.detect import (
    FORMAT_BDB185_BTREE,
    FORMAT_BDB185_HASH,
    FORMAT_BDB_BTREE,
    FORMAT_BDB_HASH,
    FORMAT_BDB_HEAP,
    FORMAT_BDB_QUEUE,
    FORMAT_DUMB,
    FORMAT_GDBM,
    FORMAT_GDBM_DUMP_ASCII,
    FORMAT_GDBM_DUMP_BINARY,
    FORMAT_JSONL,
    FORMAT_LEVELDB,
    FORMAT_MARSHAL,
    FORMAT_NDBM_CLASSIC,
    FORMAT_NDBM_GDBM,
    FORMAT_PICKLE,
    FORMAT_SQLITE,
    FORMATS,
    Detection,
    detect,
    resolve_paths,
)
from shelfmigrate.errors import FormatError, SourceError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "detect"


def fx(name: str) -> str:
    return str(FIX / name)


def copy_fixture(tmp_path: Path, name: str, new_name: str | None = None) -> Path:
    dst = tmp_path / (new_name or name)
    shutil.copyfile(FIX / name, dst)
    return dst


def patched(
    tmp_path: Path, name: str, patches: dict[int, bytes], new_name: str = "patched.db"
) -> Path:
    data = bytearray((FIX / name).read_bytes())
    for off, value in patches.items():
        data[off : off + len(value)] = value
    dst = tmp_path / new_name
    dst.write_bytes(bytes(data))
    return dst


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def u32le(n: int) -> bytes:
    return struct.pack("<I", n)


# --------------------------------------------------------------------------- API shape


def test_format_constants_are_the_registry_names():
    assert len(set(FORMATS)) == 17
    assert "bdb-hash" in FORMATS and "ndbm-classic" in FORMATS and "marshal" in FORMATS


def test_detection_is_frozen():
    d = detect(fx("bdb-hash-le.db"))
    assert isinstance(d, Detection)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.format = "x"  # type: ignore[misc]


def test_accepts_pathlike():
    assert detect(FIX / "gdbm-std.gdbm").format == FORMAT_GDBM


# --------------------------------------------------------------------------- Berkeley DB 2.x+ fixtures


@pytest.mark.parametrize(
    ("name", "fmt", "order", "version", "page_size", "description"),
    [
        (
            "bdb-hash-le.db",
            FORMAT_BDB_HASH,
            "little",
            9,
            512,
            "Berkeley DB hash v9, little-endian, page size 512",
        ),
        (
            "bdb-hash-be.db",
            FORMAT_BDB_HASH,
            "big",
            9,
            512,
            "Berkeley DB hash v9, big-endian, page size 512",
        ),
        (
            "bdb-btree-le.db",
            FORMAT_BDB_BTREE,
            "little",
            9,
            512,
            "Berkeley DB btree v9, little-endian, page size 512",
        ),
        (
            "bdb-btree-be.db",
            FORMAT_BDB_BTREE,
            "big",
            9,
            512,
            "Berkeley DB btree v9, big-endian, page size 512",
        ),
        (
            "bdb-recno.db",
            FORMAT_BDB_BTREE,
            "little",
            9,
            512,
            "Berkeley DB recno v9, little-endian, page size 512",
        ),
        (
            "bdb-queue.db",
            FORMAT_BDB_QUEUE,
            "little",
            4,
            512,
            "Berkeley DB queue v4, little-endian, page size 512",
        ),
        (
            "bdb-hash-chksum.db",
            FORMAT_BDB_HASH,
            "little",
            9,
            512,
            "Berkeley DB hash v9, little-endian, page size 512, checksummed",
        ),
        (
            "bdb-hash-dup.db",
            FORMAT_BDB_HASH,
            "little",
            9,
            512,
            "Berkeley DB hash v9, little-endian, page size 512, with duplicates",
        ),
        (
            "bdb-btree-dupsort.db",
            FORMAT_BDB_BTREE,
            "little",
            9,
            512,
            "Berkeley DB btree v9, little-endian, page size 512, with duplicates",
        ),
        (
            "bdb-subdb.db",
            FORMAT_BDB_BTREE,
            "little",
            9,
            512,
            "Berkeley DB btree v9, little-endian, page size 512, with subdatabases",
        ),
        (
            "ndbm-bdb.db",
            FORMAT_BDB_HASH,
            "little",
            9,
            4096,
            "Berkeley DB hash v9, little-endian, page size 4096",
        ),
    ],
)
def test_bdb_fixtures(name, fmt, order, version, page_size, description):
    d = detect(fx(name))
    assert d.format == fmt
    assert d.description == description
    assert d.details["byte_order"] == order
    assert d.details["version"] == version
    assert d.details["page_size"] == page_size
    assert d.refusal is None
    assert d.path == fx(name)
    assert d.details["files"] == [fx(name)]


def test_bdb_recno_is_btree_with_access_method():
    d = detect(fx("bdb-recno.db"))
    assert d.format == FORMAT_BDB_BTREE
    assert d.details["access_method"] == "recno"
    assert "recno" in d.description


def test_bdb_queue_details():
    d = detect(fx("bdb-queue.db"))
    assert d.details["re_len"] == 16
    assert d.details["page_ext"] == 0
    assert d.details["access_method"] == "queue"


def test_bdb_flags_details():
    assert detect(fx("bdb-hash-chksum.db")).details["checksum"] is True
    assert detect(fx("bdb-hash-le.db")).details["checksum"] is False
    dup = detect(fx("bdb-hash-dup.db")).details
    assert dup["duplicates"] is True and dup["dupsort"] is False
    dupsort = detect(fx("bdb-btree-dupsort.db")).details
    assert dupsort["duplicates"] is True and dupsort["dupsort"] is True
    sub = detect(fx("bdb-subdb.db")).details
    assert sub["subdatabases"] is True and sub["duplicates"] is False
    hash_le = detect(fx("bdb-hash-le.db")).details
    assert hash_le["magic"] == "0x00061561"
    assert hash_le["nelem"] == 3


@pytest.mark.parametrize("name", ["bdb-hash-encrypted.db", "bdb-dbload-encrypted.db"])
def test_bdb_encrypted_is_refused(name):
    d = detect(fx(name))
    assert d.format in (FORMAT_BDB_HASH, FORMAT_BDB_BTREE)
    assert d.details["encrypted"] is True
    assert d.details["encrypt_alg"] == 1
    assert d.details["checksum"] is True
    assert d.refusal is not None
    assert "encrypted" in d.refusal and "db_dump -P" in d.refusal and "db_load" in d.refusal
    assert "encrypted (AES)" in d.description


def test_bdb_heap_is_refused():
    d = detect(fx("bdb-heap.db"))
    assert d.format == FORMAT_BDB_HEAP
    assert d.details["version"] == 1
    assert d.refusal is not None and "heap databases are not supported" in d.refusal


def test_bdb_compressed_is_refused():
    d = detect(fx("bdb-btree-compress.db"))
    assert d.format == FORMAT_BDB_BTREE
    assert d.details["compressed"] is True
    assert d.refusal is not None and "compressed" in d.refusal


# --------------------------------------------------------------------------- Berkeley DB 2.x+ hand-patched


@pytest.mark.parametrize(
    ("name", "version"),
    [("bdb-hash-le.db", 6), ("bdb-hash-le.db", 5), ("bdb-btree-le.db", 7), ("bdb-queue.db", 1)],
)
def test_bdb_pre_31_is_refused(tmp_path, name, version):
    d = detect(patched(tmp_path, name, {16: u32le(version)}))
    assert d.refusal is not None
    assert "pre-3.1 Berkeley DB" in d.refusal and "db_upgrade" in d.refusal
    assert d.details["version"] == version


def test_bdb_partitioned_is_refused(tmp_path):
    d = detect(patched(tmp_path, "bdb-btree-le.db", {36: u32le(3)}))
    assert d.refusal is not None and "partitioned" in d.refusal
    d = detect(patched(tmp_path, "bdb-hash-le.db", {26: b"\x02"}))
    assert d.refusal is not None and "partitioned" in d.refusal


def test_bdb_sliced_and_blob_v10_are_refused(tmp_path):
    d = detect(patched(tmp_path, "bdb-btree-le.db", {16: u32le(10), 48: u32le(0x100)}))
    assert d.refusal is not None and "sliced" in d.refusal
    d = detect(patched(tmp_path, "bdb-hash-le.db", {26: b"\x08"}))
    assert d.refusal is not None and "sliced" in d.refusal
    d = detect(patched(tmp_path, "bdb-btree-le.db", {16: u32le(10), 92: u32le(4096)}))
    assert d.refusal is not None and "blob" in d.refusal and d.details["blob_threshold"] == 4096
    d = detect(patched(tmp_path, "bdb-hash-le.db", {16: u32le(10), 224: u32le(1000)}))
    assert d.refusal is not None and "blob" in d.refusal
    # a v10 file without any of those features is fine
    d = detect(patched(tmp_path, "bdb-hash-le.db", {16: u32le(10)}))
    assert d.refusal is None and d.details["version"] == 10


def test_bdb_truncated_meta_page(tmp_path):
    p = write(tmp_path, "short.db", (FIX / "bdb-hash-le.db").read_bytes()[:100])
    with pytest.raises(FormatError, match="truncated"):
        detect(p)


def test_bdb_bad_page_size_and_type(tmp_path):
    with pytest.raises(FormatError, match="page size 1000 is invalid"):
        detect(patched(tmp_path, "bdb-hash-le.db", {20: u32le(1000)}))
    with pytest.raises(FormatError, match="page type 9"):
        detect(patched(tmp_path, "bdb-hash-le.db", {25: b"\x09"}))


def test_bdb_rename_magic(tmp_path):
    with pytest.raises(FormatError, match="rename"):
        detect(patched(tmp_path, "bdb-hash-le.db", {12: u32le(0x00030800)}))


def test_bdb_torn_tail_is_a_warning(tmp_path):
    p = write(tmp_path, "torn.db", (FIX / "bdb-hash-le.db").read_bytes() + b"\0" * 100)
    d = detect(p)
    assert d.format == FORMAT_BDB_HASH and "torn" in d.details["warnings"][0]


def test_bdb_queue_extents(tmp_path):
    p = patched(tmp_path, "bdb-queue.db", {92: u32le(4)}, new_name="q.db")
    (tmp_path / "__dbq.q.db.0").write_bytes(b"\0" * 512)
    d = detect(p)
    assert d.details["page_ext"] == 4
    assert d.details["extent_files"] == [str(tmp_path / "__dbq.q.db.0")]
    assert str(tmp_path / "__dbq.q.db.0") in d.details["files"]


# --------------------------------------------------------------------------- Berkeley DB 1.85


@pytest.mark.parametrize(
    ("name", "fmt", "order", "description"),
    [
        (
            "db185-hash-le.db",
            FORMAT_BDB185_HASH,
            "little",
            "Berkeley DB 1.85 hash v2, pages little-endian, bucket size 512",
        ),
        (
            "db185-hash-be.db",
            FORMAT_BDB185_HASH,
            "big",
            "Berkeley DB 1.85 hash v2, pages big-endian, bucket size 512",
        ),
        (
            "db185-btree-le.db",
            FORMAT_BDB185_BTREE,
            "little",
            "Berkeley DB 1.85 btree v3, little-endian, page size 512",
        ),
        (
            "db185-btree-be.db",
            FORMAT_BDB185_BTREE,
            "big",
            "Berkeley DB 1.85 btree v3, big-endian, page size 512",
        ),
    ],
)
def test_bdb185_fixtures(name, fmt, order, description):
    d = detect(fx(name))
    assert d.format == fmt
    assert d.description == description
    assert d.details["byte_order"] == order
    assert d.details["page_size"] == 512
    assert d.refusal is None


def test_bdb185_hash_header_details():
    d = detect(fx("db185-hash-le.db")).details
    assert d["header_byte_order"] == "big"
    assert d["version"] == 2 and d["lorder"] == 1234 and d["nkeys"] == 3
    assert detect(fx("db185-hash-be.db")).details["lorder"] == 4321


def test_bdb185_btree_recno_flag(tmp_path):
    d = detect(fx("db185-btree-le.db"))
    assert d.details["access_method"] == "btree" and d.details["duplicates"] is False
    d = detect(patched(tmp_path, "db185-btree-le.db", {20: u32le(0xA0)}))
    assert d.details["access_method"] == "recno" and "recno" in d.description


def test_bdb185_invalid_headers(tmp_path):
    with pytest.raises(FormatError, match="DB 1.85 hash"):
        detect(patched(tmp_path, "db185-hash-le.db", {4: struct.pack(">I", 7)}))
    with pytest.raises(FormatError, match="DB 1.85 hash magic .* truncated"):
        detect(write(tmp_path, "t.db", (FIX / "db185-hash-le.db").read_bytes()[:40]))
    with pytest.raises(FormatError, match="DB 1.85 btree"):
        detect(patched(tmp_path, "db185-btree-le.db", {4: u32le(9)}))


# --------------------------------------------------------------------------- GDBM


def test_gdbm_fixtures():
    d = detect(fx("gdbm-std.gdbm"))
    assert d.format == FORMAT_GDBM
    assert (
        d.description
        == "GDBM file (standard header), 64-bit offsets, little-endian, block size 512"
    )
    assert d.details["variant"] == "standard"
    assert d.details["offset_width"] == 64
    assert d.details["layout"] == "LP64"
    assert d.details["block_size"] == 512
    assert d.details["magic"] == "0x13579acf"

    d = detect(fx("gdbm-numsync.gdbm"))
    assert (
        d.description == "GDBM file (numsync header), 64-bit offsets, little-endian, block size 512"
    )
    assert d.details["variant"] == "numsync" and d.details["magic"] == "0x13579ad1"
    assert "numsync" in d.details

    d = detect(fx("gnu-shelf"))
    assert (
        d.format == FORMAT_GDBM
        and d.details["block_size"] == 4096
        and d.details["bucket_elems"] == 166
    )


_LAYOUTS = {"ILP32": (4, 80, 20), "LP64": (8, 136, 24), "i386-LFS": (8, 108, 24)}


def gdbm_file(magic: int, order: str = "<", layout: str = "LP64", block_size: int = 512) -> bytes:
    """A GDBM header built from FORMATS.md §3.2/3.3 (no records)."""
    width, h, e = _LAYOUTS[layout]
    dir_bits = (block_size // width).bit_length() - 1
    dir_size = (1 << dir_bits) * width
    elems = (block_size - h) // e + 1
    fmt = order + ("iiIiiiiI" if width == 4 else "iiQiiiiQ")
    hdr = struct.pack(
        fmt, magic, block_size, block_size, dir_size, dir_bits, block_size, elems, 3 * block_size
    )
    if magic in (0x13579AD0, 0x13579AD1):
        hdr += struct.pack(order + "iI", 1, 5) + bytes(24)
    return hdr.ljust(3 * block_size, b"\0")


@pytest.mark.parametrize(
    ("magic", "order", "layout", "variant", "width", "text"),
    [
        (
            0x13579ACD,
            "<",
            "ILP32",
            "standard",
            32,
            "GDBM file (standard header), 32-bit offsets, little-endian",
        ),
        (
            0x13579ACF,
            ">",
            "LP64",
            "standard",
            64,
            "GDBM file (standard header), 64-bit offsets, big-endian",
        ),
        (
            0x13579ACD,
            ">",
            "ILP32",
            "standard",
            32,
            "GDBM file (standard header), 32-bit offsets, big-endian",
        ),
        (
            0x13579ACF,
            "<",
            "i386-LFS",
            "standard",
            64,
            "GDBM file (standard header), 64-bit offsets (i386 large-file layout), little-endian",
        ),
        (0x13579AD0, "<", "ILP32", "numsync", 32, "GDBM file (numsync header), 32-bit offsets"),
        (
            0x13579AD1,
            ">",
            "LP64",
            "numsync",
            64,
            "GDBM file (numsync header), 64-bit offsets, big-endian",
        ),
        (0x13579ACE, "<", "LP64", "old", 64, "GDBM file (old pre-1.9 header), 64-bit offsets"),
        (0x13579ACE, "<", "ILP32", "old", 32, "GDBM file (old pre-1.9 header), 32-bit offsets"),
    ],
)
def test_gdbm_hand_built_variants(tmp_path, magic, order, layout, variant, width, text):
    d = detect(write(tmp_path, "g.gdbm", gdbm_file(magic, order, layout)))
    assert d.format == FORMAT_GDBM
    assert d.details["variant"] == variant
    assert d.details["offset_width"] == width
    assert d.details["layout"] == layout
    assert d.details["byte_order"] == ("little" if order == "<" else "big")
    assert d.description.startswith(text)
    assert d.description.endswith("block size 512")
    if variant == "numsync":
        assert d.details["numsync"] == 5


def test_gdbm_implausible_and_odd_headers(tmp_path):
    with pytest.raises(FormatError, match="header fields are implausible"):
        detect(write(tmp_path, "g1", struct.pack("<I", 0x13579ACF) + b"\xff" * 60))
    data = bytearray(gdbm_file(0x13579ACF))
    struct.pack_into("<i", data, 28, 99)  # bucket_elems that fits no layout
    d = detect(write(tmp_path, "g2", bytes(data)))
    assert d.format == FORMAT_GDBM and d.details["layout"] is None
    assert "bucket_elems" in d.details["warnings"][0]


def test_gdbm_truncated_header(tmp_path):
    with pytest.raises(FormatError, match="GDBM magic .* truncated"):
        detect(write(tmp_path, "g", (FIX / "gdbm-std.gdbm").read_bytes()[:20]))


def test_gdbm_dumps():
    d = detect(fx("gdbm-dump.ascii"))
    assert d.format == FORMAT_GDBM_DUMP_ASCII
    assert d.details["version"] == "1.1" and d.details["format"] == "standard"
    assert d.details["gdbm_version"] == "1.23"
    d = detect(fx("gdbm-dump.bin"))
    assert d.format == FORMAT_GDBM_DUMP_BINARY
    assert d.details["gdbm_version"] == "1.23"
    assert d.details["header_size"] == (FIX / "gdbm-dump.bin").read_bytes().index(b"\r\n!\r\n") + 5


# --------------------------------------------------------------------------- ndbm pairs


def test_ndbm_gdbm_compat():
    for arg in ("ndbm-gdbm", "ndbm-gdbm.pag", "ndbm-gdbm.dir"):
        d = detect(fx(arg))
        assert d.format == FORMAT_NDBM_GDBM
        assert d.path == fx("ndbm-gdbm.pag")
        assert d.details["compat_version"] == "1.23.0"
        assert d.details["dir_kind"] == "header"
        assert sorted(d.details["files"]) == sorted([fx("ndbm-gdbm.pag"), fx("ndbm-gdbm.dir")])
        assert d.details["offset_width"] == 64


def test_ndbm_gdbm_18_hardlink(tmp_path):
    copy_fixture(tmp_path, "ndbm-gdbm.pag", "old.pag")
    copy_fixture(tmp_path, "ndbm-gdbm.pag", "old.dir")
    d = detect(tmp_path / "old")
    assert d.format == FORMAT_NDBM_GDBM and d.details["dir_kind"] == "hardlink"


def test_ndbm_classic_sdbm():
    for arg in ("sdbm", "sdbm.pag", "sdbm.dir"):
        d = detect(fx(arg))
        assert d.format == FORMAT_NDBM_CLASSIC
        assert d.path == fx("sdbm.pag")
        assert d.details["page_size"] == 1024
        assert d.details["byte_order"] == "little"
        assert d.details["nonempty_pages_checked"] == 1
    assert (
        d.description
        == "classic ndbm/sdbm database (.dir/.pag), 1024-byte pages, little-endian, 1 page"
    )


def test_ndbm_classic_big_endian(tmp_path):
    page = bytearray((FIX / "sdbm.pag").read_bytes())
    (n,) = struct.unpack_from("<H", page, 0)
    words = struct.unpack_from(f"<{n + 1}H", page, 0)
    struct.pack_into(f">{n + 1}H", page, 0, *words)
    write(tmp_path, "be.pag", bytes(page))
    write(tmp_path, "be.dir", b"")
    d = detect(tmp_path / "be")
    assert d.format == FORMAT_NDBM_CLASSIC and d.details["byte_order"] == "big"


def test_ndbm_classic_empty_and_sparse(tmp_path):
    write(tmp_path, "e.pag", b"")
    write(tmp_path, "e.dir", b"")
    d = detect(tmp_path / "e")
    assert d.format == FORMAT_NDBM_CLASSIC and d.details["pages"] == 0
    # a hole (page 0 all zero) before a real page
    write(tmp_path, "s.pag", b"\0" * 1024 + (FIX / "sdbm.pag").read_bytes())
    write(tmp_path, "s.dir", b"\x02")
    d = detect(tmp_path / "s")
    assert d.details["pages"] == 2 and d.details["nonempty_pages_checked"] == 1


def test_ndbm_pag_garbage(tmp_path):
    write(tmp_path, "x.pag", random.Random(7).randbytes(1024))
    write(tmp_path, "x.dir", b"")
    with pytest.raises(FormatError, match="not a recognised ndbm .pag"):
        detect(tmp_path / "x")


def test_ndbm_gdbm_dir_but_pag_not_gdbm(tmp_path):
    copy_fixture(tmp_path, "ndbm-gdbm.dir", "y.dir")
    write(tmp_path, "y.pag", b"\x01" * 1024)
    with pytest.raises(FormatError, match="GDBM ndbm-compat index"):
        detect(tmp_path / "y")


# --------------------------------------------------------------------------- dbm.dumb


@pytest.mark.parametrize("stem", ["dumb-py3", "dumb-py2"])
def test_dumb_fixtures(stem):
    for arg in (stem, stem + ".dat", stem + ".dir", stem + ".bak"):
        d = detect(fx(arg))
        assert d.format == FORMAT_DUMB
        assert d.path == fx(stem + ".dat")
        assert d.details["entries"] == 2
        assert d.details["files"] == [fx(stem + ".dat"), fx(stem + ".dir"), fx(stem + ".bak")]
        assert d.details["index"] == fx(stem + ".dir")
    assert "2 entries" in d.description


def test_dumb_bak_only_and_py2_longs(tmp_path):
    write(tmp_path, "d.dat", b"one" + b"\0" * 509 + b"two")
    write(tmp_path, "d.bak", b"'k', (0L, 3L)\n'k2', (512L, 3L)\n")
    d = detect(tmp_path / "d")
    assert d.format == FORMAT_DUMB
    assert d.details["index"] == str(tmp_path / "d.bak")
    assert d.details["entries"] == 2
    assert "missing" in d.details["warnings"][0]


def test_dumb_empty_index(tmp_path):
    write(tmp_path, "e.dat", b"")
    write(tmp_path, "e.dir", b"")
    d = detect(tmp_path / "e")
    assert d.format == FORMAT_DUMB and d.details["entries"] == 0


def test_dumb_long_first_key(tmp_path):
    key = "k" * 10000
    write(tmp_path, "l.dat", b"v")
    write(tmp_path, "l.dir", f"{key!r}, (0, 1)\n".encode())
    assert detect(tmp_path / "l").details["entries"] == 1


def test_dumb_bad_index(tmp_path):
    write(tmp_path, "b.dat", b"x")
    write(tmp_path, "b.dir", b"hello world\n")
    with pytest.raises(FormatError, match="not a dbm.dumb index"):
        detect(tmp_path / "b")
    write(tmp_path, "c.dat", b"x")
    write(tmp_path, "c.dir", b"'k', 'not a tuple'\n")
    with pytest.raises(FormatError, match="not a dbm.dumb index"):
        detect(tmp_path / "c")


def test_dumb_dat_without_index(tmp_path):
    write(tmp_path, "n.dat", b"some values")
    with pytest.raises(SourceError, match="without its index"):
        detect(tmp_path / "n")


def test_dumb_dir_without_dat(tmp_path):
    write(tmp_path, "m.dir", b"'k', (0, 3)\n")
    with pytest.raises(SourceError, match=r"without its data file .*m\.dat"):
        detect(tmp_path / "m")


# --------------------------------------------------------------------------- SQLite


def test_sqlite_dbm_sqlite3_fixture(tmp_path):
    d = detect(fx("dbm-sqlite3"))
    assert d.format == FORMAT_SQLITE
    assert d.details["layout"] == "dbm.sqlite3"
    assert d.details["tables"] == ["Dict"]
    assert d.details["page_size"] == 4096
    assert d.details["text_encoding"] == "utf-8"
    assert d.details["journal"] == "wal"
    assert d.details["wal"] is False
    # sniffing a WAL-mode file must leave nothing behind (no -shm / -wal)
    p = copy_fixture(tmp_path, "dbm-sqlite3", "shelf")
    assert detect(p).details["layout"] == "dbm.sqlite3"
    assert sorted(os.listdir(tmp_path)) == ["shelf"]


def test_sqlite_other_fixtures():
    d = detect(fx("sqlitedict.sqlite"))
    assert d.details["layout"] == "sqlitedict" and d.details["tables"] == ["unnamed"]
    d = detect(fx("kv.sqlite"))
    assert d.details["layout"] == "kv" and d.details["tables"] == ["records"]


def make_sqlite(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def test_sqlite_layouts(tmp_path):
    make_sqlite(tmp_path / "j.db", "CREATE TABLE data (key TEXT PRIMARY KEY, value TEXT)")
    assert detect(tmp_path / "j.db").details["layout"] == "json-table"
    make_sqlite(tmp_path / "t.db", "CREATE TABLE people (name TEXT, age INTEGER, city TEXT)")
    d = detect(tmp_path / "t.db")
    assert d.details["layout"] == "table" and d.details["tables"] == ["people"]
    assert [c["name"] for c in d.details["columns"]["people"]] == ["name", "age", "city"]
    make_sqlite(tmp_path / "e.db", "PRAGMA user_version = 3")
    d = detect(tmp_path / "e.db")
    assert d.details["tables"] == [] and d.details["layout"] == "table"
    make_sqlite(
        tmp_path / "two.db",
        "CREATE TABLE a (key TEXT PRIMARY KEY, value BLOB)",
        "CREATE TABLE b (key TEXT PRIMARY KEY, value BLOB)",
    )
    assert detect(tmp_path / "two.db").details["layout"] == "sqlitedict"
    # Dict table without the UNIQUE/NOT NULL constraints is not dbm.sqlite3
    make_sqlite(tmp_path / "d.db", "CREATE TABLE Dict (key BLOB, value BLOB)")
    assert detect(tmp_path / "d.db").details["layout"] == "table"


def test_sqlite_wal(tmp_path):
    p = tmp_path / "w.db"
    con = sqlite3.connect(p)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE Dict (key BLOB UNIQUE NOT NULL, value BLOB NOT NULL)")
    con.execute("INSERT INTO Dict VALUES (x'01', x'02')")
    con.commit()
    try:
        assert (tmp_path / "w.db-wal").exists()
        d = detect(p)
        assert d.details["wal"] is True
        assert str(tmp_path / "w.db-wal") in d.details["files"]
        assert d.details["layout"] == "dbm.sqlite3"  # the table only exists in the WAL so far
        assert "-wal" in d.description
    finally:
        con.close()


def test_sqlite_damaged(tmp_path):
    p = write(tmp_path, "bad.db", (FIX / "kv.sqlite").read_bytes()[:100])
    with pytest.raises(FormatError, match="SQLite header found"):
        detect(p)
    p = write(tmp_path, "tiny.db", b"SQLite format 3\x00" + b"\0" * 20)
    with pytest.raises(FormatError, match="SQLite magic"):
        detect(p)


# --------------------------------------------------------------------------- LevelDB


def test_leveldb_fixture():
    d = detect(fx("leveldb"))
    assert d.format == FORMAT_LEVELDB
    assert d.path == fx("leveldb")
    assert d.details["manifest"] == "MANIFEST-000002"
    names = [os.path.basename(p) for p in d.details["files"]]
    assert "CURRENT" in names and "MANIFEST-000002" in names and "000003.log" in names
    assert d.details["log_files"] == 1


def test_directory_not_leveldb(tmp_path):
    with pytest.raises(FormatError, match="is a directory, not a LevelDB database"):
        detect(tmp_path)
    (tmp_path / "CURRENT").write_text("MANIFEST-000009\n")
    with pytest.raises(FormatError, match="MANIFEST-000009, which is missing"):
        detect(tmp_path)
    (tmp_path / "CURRENT").write_text("garbage")
    with pytest.raises(FormatError, match="is a directory, not a LevelDB database"):
        detect(tmp_path)


# --------------------------------------------------------------------------- JSON lines


def test_jsonl_fixtures():
    d = detect(fx("records.jsonl"))
    assert d.format == FORMAT_JSONL and d.details["compressed"] is False
    d = detect(fx("records.jsonl.gz"))
    assert d.format == FORMAT_JSONL and d.details["compressed"] is True


def test_jsonl_variants(tmp_path):
    assert detect(write(tmp_path, "a", b'\n\n  {"key": 1, "value": null}\n')).format == FORMAT_JSONL
    assert (
        detect(write(tmp_path, "b", b'\xef\xbb\xbf{"key": "k", "value": 2}')).format == FORMAT_JSONL
    )
    long_line = b'{"key": "k", "value": "' + b"x" * 200_000 + b'"}\n{"key": 2, "value": 3}\n'
    assert detect(write(tmp_path, "c", long_line)).format == FORMAT_JSONL
    gz = gzip.compress(b'{"key": "k", "value": [1]}\n')
    assert detect(write(tmp_path, "d.gz", gz)).details["compressed"] is True


def test_json_but_not_jsonl(tmp_path):
    with pytest.raises(FormatError, match='no "key" and "value"'):
        detect(write(tmp_path, "a.jsonl", b'{"k": 1, "v": 2}\n'))
    with pytest.raises(FormatError, match="not JSON lines"):
        detect(write(tmp_path, "b.json", b'{\n  "key": 1,\n  "value": 2\n}\n'))
    with pytest.raises(FormatError, match="gzip-compressed data that is not JSON lines"):
        detect(write(tmp_path, "c.gz", gzip.compress(b"hello\n")))
    with pytest.raises(FormatError, match="gzip data that cannot be decompressed"):
        detect(write(tmp_path, "d.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 40))


def test_text_that_is_not_jsonl():
    with pytest.raises(FormatError, match="text that is not JSON lines") as exc:
        detect(fx("plain.txt"))
    assert "first bytes 6a 75 73 74" in str(exc.value)


# --------------------------------------------------------------------------- pickle


@pytest.mark.parametrize(
    ("name", "protocol", "stream"),
    [
        ("pickle-py2-p0.pkl", 0, False),
        ("pickle-py2-p1.pkl", 1, False),
        ("pickle-py2-p2.pkl", 2, False),
        ("pickle-py3-p4.pkl", 4, False),
        ("pickles-py3-p5.pkl", 5, True),
    ],
)
def test_pickle_fixtures(name, protocol, stream):
    d = detect(fx(name))
    assert d.format == FORMAT_PICKLE
    assert d.details["protocol"] == protocol
    assert d.details["stream"] is stream
    if stream:
        assert d.details["pickles_in_prefix"] == 3


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_larger_than_window(tmp_path, protocol):
    data = pickle.dumps(list(range(40000)), protocol=protocol)
    assert len(data) > detect_mod.PICKLE_WINDOW
    d = detect(write(tmp_path, "big.pkl", data))
    assert d.format == FORMAT_PICKLE and d.details["protocol"] == protocol


def test_pickle_stream_built_here(tmp_path):
    buf = io.BytesIO()
    for i in range(5):
        pickle.dump({"i": i}, buf, protocol=0)
    d = detect(write(tmp_path, "s.pkl", buf.getvalue()))
    assert d.details["stream"] is True and d.details["pickles_in_prefix"] == 5


def test_not_pickles(tmp_path):
    with pytest.raises(FormatError):
        detect(write(tmp_path, "t.pkl", pickle.dumps({"a": 1}, protocol=5)[:-1]))  # no STOP
    with pytest.raises(FormatError):
        detect(write(tmp_path, "i.txt", b"I like cheese\n"))
    with pytest.raises(FormatError):
        detect(write(tmp_path, "s.pkl", b"\x80\x09junk"))
    with pytest.raises(FormatError):  # stack underflow: 's' SETITEM with nothing on the stack
        detect(write(tmp_path, "u.pkl", b"Ns."))


# --------------------------------------------------------------------------- marshal


def test_marshal_fixtures():
    d = detect(fx("marshal-py3.bin"))
    assert d.format == FORMAT_MARSHAL
    assert d.details["python"] == 3 and d.details["flag_ref"] is True
    assert d.details["values_checked"] == 2 and d.details["complete"] is True
    d = detect(fx("marshal-py2.bin"))
    assert d.format == FORMAT_MARSHAL
    assert d.details["python"] == 2 and d.details["flag_ref"] is False
    assert "Python 2" in d.description


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2, 3], "b": (1.5, None, True)},
        [f"item-{i}" for i in range(500)],  # longer than the window: bounded look
        ("x", b"bytes", 2**80, -(2**70), frozenset({1, 2})),
        [],
        {},
    ],
)
def test_marshal_built_here(tmp_path, value):
    d = detect(write(tmp_path, "m.bin", marshal.dumps(value)))
    assert d.format == FORMAT_MARSHAL


def test_marshal_tiny_dumps_are_not_claimed(tmp_path):
    for value in ((), "", 7):
        with pytest.raises(FormatError):
            detect(write(tmp_path, "tiny", marshal.dumps(value)))


def test_marshal_py3_short_strings(tmp_path):
    d = detect(write(tmp_path, "m.bin", marshal.dumps(["abc", "déf"])))
    assert d.details["python"] == 3


def test_marshal_conservative(tmp_path):
    with pytest.raises(FormatError):  # truncated container
        detect(write(tmp_path, "a", marshal.dumps([1, 2, 3, 4, 5])[:-3]))
    # a code object is claimed, with a refusal that says why
    code = detect(write(tmp_path, "b", marshal.dumps(compile("x = 1", "f", "exec"))))
    assert code.format == "marshal" and "code objects are refused" in (code.refusal or "")
    with pytest.raises(FormatError):  # list count larger than the file
        detect(write(tmp_path, "c", b"[\xff\xff\x00\x00i\x01\x00\x00\x00"))
    with pytest.raises(FormatError):  # dict without its terminating NULL at end of file
        detect(write(tmp_path, "d", b"{i\x01\x00\x00\x00i\x02\x00\x00\x00"))
    with pytest.raises(FormatError):  # a reference to nothing
        detect(write(tmp_path, "e", b"[\x02\x00\x00\x00r\x05\x00\x00\x00N"))


# --------------------------------------------------------------------------- generic errors


def test_empty_file(tmp_path):
    with pytest.raises(FormatError, match="empty file"):
        detect(write(tmp_path, "empty", b""))


def test_blank_lines_only(tmp_path):
    with pytest.raises(FormatError, match="not a recognised format"):
        detect(write(tmp_path, "blank", b"\n\n   \n"))


def test_missing_path(tmp_path):
    with pytest.raises(SourceError, match="no such file or directory") as exc:
        detect(tmp_path / "nothing")
    assert "NAME.db" in str(exc.value)
    assert not isinstance(exc.value, FormatError)


def test_random_bytes(tmp_path):
    data = random.Random(1234).randbytes(4096)
    with pytest.raises(FormatError, match="not a recognised format") as exc:
        detect(write(tmp_path, "r", data))
    assert f"first bytes {data[:4].hex(' ')}" in str(exc.value)


def test_truncated_to_a_few_bytes(tmp_path):
    for name in ("bdb-hash-le.db", "gdbm-std.gdbm", "db185-btree-le.db", "dbm-sqlite3"):
        for n in (1, 3, 15):
            with pytest.raises(FormatError):
                detect(write(tmp_path, "cut", (FIX / name).read_bytes()[:n]))


def test_permission_denied(tmp_path, monkeypatch):
    p = write(tmp_path, "locked", b"\x80\x04N.")

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(detect_mod, "_open_binary", refuse)
    with pytest.raises(SourceError, match="permission denied") as exc:
        detect(p)
    assert not isinstance(exc.value, FormatError)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads everything")
def test_permission_denied_real(tmp_path):
    p = write(tmp_path, "locked", b"\x80\x04N.")
    p.chmod(0)
    with pytest.raises(SourceError, match="permission denied"):
        detect(p)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(SourceError, match="not a regular file"):
        detect(tmp_path / "pipe")


def test_lone_gdbm_compat_dir(tmp_path):
    copy_fixture(tmp_path, "ndbm-gdbm.dir", "only.dir")
    with pytest.raises(SourceError, match=r"only\.pag"):
        detect(tmp_path / "only")


def test_lone_pag_hint(tmp_path):
    copy_fixture(tmp_path, "sdbm.pag", "lone.pag")
    with pytest.raises(FormatError, match=r"lone \.pag"):
        detect(tmp_path / "lone.pag")


# --------------------------------------------------------------------------- resolve_paths


def test_resolve_name_to_db(tmp_path):
    copy_fixture(tmp_path, "ndbm-bdb.db", "shelf.db")
    r = resolve_paths(tmp_path / "shelf")
    assert r.kind == "file" and r.main == str(tmp_path / "shelf.db")
    d = detect(tmp_path / "shelf")
    assert d.format == FORMAT_BDB_HASH
    assert d.path == str(tmp_path / "shelf.db")
    assert d.details["resolved_from"] == str(tmp_path / "shelf")


def test_resolve_name_to_dumb(tmp_path):
    for ext in (".dat", ".dir"):
        copy_fixture(tmp_path, "dumb-py3" + ext, "s" + ext)
    r = resolve_paths(str(tmp_path / "s"))
    assert r.kind == "dumb"
    assert r.main == str(tmp_path / "s.dat")
    assert r.files == (str(tmp_path / "s.dat"), str(tmp_path / "s.dir"))
    for arg in ("s", "s.dat", "s.dir"):
        d = detect(tmp_path / arg)
        assert d.format == FORMAT_DUMB and d.path == str(tmp_path / "s.dat")


def test_resolve_name_to_pag_dir(tmp_path):
    for ext in (".pag", ".dir"):
        copy_fixture(tmp_path, "sdbm" + ext, "n" + ext)
    r = resolve_paths(tmp_path / "n")
    assert r.kind == "ndbm" and r.main == str(tmp_path / "n.pag")
    assert detect(tmp_path / "n").format == FORMAT_NDBM_CLASSIC
    assert resolve_paths(tmp_path / "n.dir").main == str(tmp_path / "n.pag")


def test_resolve_existing_name_wins(tmp_path):
    copy_fixture(tmp_path, "gdbm-std.gdbm", "x")
    copy_fixture(tmp_path, "ndbm-bdb.db", "x.db")
    assert resolve_paths(tmp_path / "x").main == str(tmp_path / "x")
    assert detect(tmp_path / "x").format == FORMAT_GDBM


def test_resolve_pag_dir_before_db(tmp_path):
    for ext in (".pag", ".dir"):
        copy_fixture(tmp_path, "ndbm-gdbm" + ext, "y" + ext)
    copy_fixture(tmp_path, "ndbm-bdb.db", "y.db")
    assert resolve_paths(tmp_path / "y").kind == "ndbm"


def test_resolve_directory_and_missing(tmp_path):
    assert resolve_paths(tmp_path).kind == "directory"
    with pytest.raises(SourceError, match="no such file or directory"):
        resolve_paths(tmp_path / "missing")


def test_dat_given_directly_without_index_is_sniffed(tmp_path):
    p = write(tmp_path, "payload.dat", pickle.dumps([1, 2], protocol=2))
    assert resolve_paths(p).kind == "file"
    assert detect(p).format == FORMAT_PICKLE


# --------------------------------------------------------------------------- robustness


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=700))
def test_arbitrary_bytes_never_crash(data):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "blob")
        with open(p, "wb") as fh:
            fh.write(data)
        try:
            found = detect(p)
        except FormatError:
            return
        assert found.format in FORMATS


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(
        [
            "bdb-hash-le.db",
            "bdb-btree-be.db",
            "gdbm-std.gdbm",
            "db185-hash-le.db",
            "pickle-py2-p0.pkl",
        ]
    ),
    st.integers(min_value=1, max_value=600),
)
def test_truncated_fixtures_never_crash(name, n):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "cut")
        with open(p, "wb") as fh:
            fh.write((FIX / name).read_bytes()[:n])
        try:
            found = detect(p)
        except FormatError:
            return
        assert found.format in FORMATS


def test_sqlite_wal_that_cannot_be_applied(tmp_path, monkeypatch):
    """If the live -wal cannot be applied (read-only folder, say), read the main file and warn."""
    p = tmp_path / "w.db"
    con = sqlite3.connect(p)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE t (a)")
    con.commit()
    real = detect_mod._read_sqlite_schema
    seen = []

    def flaky(uri):
        seen.append(uri)
        if "immutable=1" not in uri:
            raise sqlite3.OperationalError("unable to open database file")
        return real(uri)

    monkeypatch.setattr(detect_mod, "_read_sqlite_schema", flaky)
    try:
        d = detect(p)
    finally:
        con.close()
    assert d.format == FORMAT_SQLITE and d.details["wal"] is True
    assert "could not be applied" in d.details["warnings"][0]
    assert len(seen) == 2


def test_resolve_name_db_directory(tmp_path):
    shutil.copytree(FIX / "leveldb", tmp_path / "store.db")
    assert resolve_paths(tmp_path / "store").kind == "directory"
    assert detect(tmp_path / "store").format == FORMAT_LEVELDB


@pytest.mark.parametrize("version", ["py27", "py36", "py311", "py313"])
def test_a_marshal_code_object_is_claimed_and_refused(version: str) -> None:
    found = detect(FIX.parent / "marshal" / f"{version}_code.marshal")
    assert found.format == "marshal"
    assert found.refusal is not None and "code objects are refused" in found.refusal
    assert found.details["python"] == (2 if version == "py27" else 3)


def test_deeply_nested_marshal_is_still_marshal(tmp_path) -> None:
    value: list = [1]
    for _ in range(60):
        value = [value]
    path = tmp_path / "nested.marshal"
    path.write_bytes(marshal.dumps(value, 4))
    assert detect(path).format == "marshal"
