"""The Berkeley DB 1.85/1.86 reader against files made by glibc's libdb1.

Every fixture in ``fixtures/bdb185`` comes with ``STEM.oracle``: the library's own
``seq(R_FIRST/R_NEXT)`` walk of the file, one pair per line as ``KEYHEX VALHEX``
(recno: the record number in decimal; ``-`` for empty).  For the cross-endian btree,
whose 3-byte-key overflow value libdb1 itself reads back wrongly, the oracle is
``btree-cross.put``: what the generator put (see fixtures/bdb185/README.md).

Damaged files are synthesised here from the fixtures, each a clear FormatError (or,
for one damaged record, a record carrying its error while the rest is read).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

import shelfmigrate
from shelfmigrate.cli import app
from shelfmigrate.detect import detect
from shelfmigrate.errors import FormatError, UnsupportedFormatError
from shelfmigrate.formats.bdb185 import BerkeleyDB185Reader
from shelfmigrate.options import ReadOptions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bdb185"
STEMS = [
    "hash-le",
    "hash-be",
    "ndbm",
    "btree-le",
    "btree-be",
    "btree-cross",
    "btree-deleted",
    "recno-le",
    "recno-be",
]
HASH_STEMS = ["hash-le", "hash-be", "ndbm"]


def oracle(stem: str) -> list[tuple[bytes | int, bytes]]:
    """The expected pairs of a fixture, in the library's seq() order."""
    name = f"{stem}.put" if (FIXTURES / f"{stem}.put").exists() else f"{stem}.oracle"
    pairs: list[tuple[bytes | int, bytes]] = []
    for line in (FIXTURES / name).read_text().splitlines():
        key_text, value_text = line.split(" ")
        value = b"" if value_text == "-" else bytes.fromhex(value_text)
        if stem.startswith("recno"):
            pairs.append((int(key_text), value))
        else:
            pairs.append((b"" if key_text == "-" else bytes.fromhex(key_text), value))
    return pairs


def as_bytes(key: object) -> bytes | int:
    if isinstance(key, str):
        return key.encode("utf-8")
    assert isinstance(key, (bytes, int))
    return key


def read_pairs(path: Path | str) -> list[tuple[bytes | int, bytes]]:
    pairs = []
    with BerkeleyDB185Reader(path) as reader:
        for record in reader.records():
            assert record.error is None, record.error
            assert record.raw is not None
            pairs.append((as_bytes(record.key), record.raw))
    return pairs


def copy(tmp_path: Path, stem: str) -> Path:
    target = tmp_path / f"{stem}.db"
    shutil.copyfile(FIXTURES / f"{stem}.db", target)
    return target


# ---------------------------------------------------------------------------
# Every fixture equals its oracle


@pytest.mark.parametrize("stem", STEMS)
def test_fixture_equals_oracle_in_library_order(stem: str) -> None:
    # The bucket walk (hash) and the leaf chain (btree/recno) give seq()'s own order.
    assert read_pairs(FIXTURES / f"{stem}.db") == oracle(stem)


@pytest.mark.parametrize(
    ("stem", "byte_order", "page_size", "hdrpages"),
    [("hash-le", "little", 256, 2), ("hash-be", "big", 512, 1), ("ndbm", "little", 4096, 1)],
)
def test_hash_details_name_both_byte_orders(
    stem: str, byte_order: str, page_size: int, hdrpages: int
) -> None:
    raw = (FIXTURES / f"{stem}.db").read_bytes()
    assert raw[:4] == b"\x00\x06\x15\x61"  # the header is big-endian whatever lorder says
    with BerkeleyDB185Reader(FIXTURES / f"{stem}.db") as reader:
        details = reader.details()
    assert details["format"] == "bdb185-hash"
    assert details["access_method"] == "hash"
    assert details["header_byte_order"] == "big"
    assert details["byte_order"] == byte_order
    assert details["lorder"] == (1234 if byte_order == "little" else 4321)
    assert details["page_size"] == page_size
    assert details["hdrpages"] == hdrpages
    assert details["version"] == 2


@pytest.mark.parametrize("stem", ["hash-le", "hash-be"])
def test_hash_big_pairs_are_reassembled(stem: str) -> None:
    pairs = read_pairs(FIXTURES / f"{stem}.db")
    page = BerkeleyDB185Reader(FIXTURES / f"{stem}.db").page_size
    # keys and values several pages long, big keys with empty and tiny values
    assert any(len(k) > 2 * page for k, _ in pairs if isinstance(k, bytes))
    assert any(len(v) > 3 * page for _, v in pairs)
    assert any(len(k) > page and v == b"" for k, v in pairs if isinstance(k, bytes))
    assert dict(pairs)[b"key0007"] == b"replaced value"
    assert b"key0015" not in dict(pairs)  # deleted


@pytest.mark.parametrize("stem", ["hash-le", "hash-be"])
def test_hash_nkeys_mismatch_is_a_warning_and_count_is_unknown(stem: str) -> None:
    # libdb1 counted one big-pair delete twice: the header says 289, seq() returns 290.
    assert len(oracle(stem)) == 290
    reader = BerkeleyDB185Reader(FIXTURES / f"{stem}.db")
    details = reader.details()
    assert details["nkeys"] == 289
    assert reader.count() is None
    assert any("289" in w and "290" in w for w in details["warnings"])
    reader.close()


def test_hash_count_is_nkeys_when_the_chains_agree() -> None:
    with BerkeleyDB185Reader(FIXTURES / "ndbm.db") as reader:
        assert reader.count() == 47 == len(oracle("ndbm"))
        assert reader.details()["warnings"] == []


def test_warning_found_while_reading_reaches_a_details_dict_taken_before() -> None:
    reader = BerkeleyDB185Reader(FIXTURES / "hash-le.db")
    details = reader.details()
    assert details["warnings"] == []
    assert sum(1 for _ in reader.records()) == 290
    assert len(details["warnings"]) == 1


@pytest.mark.parametrize(("stem", "order"), [("btree-le", "little"), ("btree-be", "big")])
def test_btree_overflow_items_and_duplicates(stem: str, order: str) -> None:
    with BerkeleyDB185Reader(FIXTURES / f"{stem}.db") as reader:
        details = reader.details()
        pairs = [(as_bytes(r.key), r.raw) for r in reader.records()]
    assert details["format"] == "bdb185-btree"
    assert details["access_method"] == "btree"
    assert details["byte_order"] == order
    assert details["duplicates"] is True
    dups = [v for k, v in pairs if k == b"dup"]
    # 150 duplicates (about 30 bytes each) cannot fit one 512-byte leaf: they span leaves
    # (libdb1 does not keep them in insertion order; the order is checked against seq()).
    assert sorted(dups) == [b"dup-value-%03d" % d for d in range(150)]
    assert pairs == oracle(stem)
    assert any(isinstance(k, bytes) and len(k) > 1000 for k, _ in pairs)  # overflow keys
    assert any(len(v) >= 3000 for _, v in pairs)  # overflow values


def test_btree_freed_pages_keep_stale_entries_that_are_not_returned() -> None:
    raw = (FIXTURES / "btree-deleted.db").read_bytes()
    pairs = dict(read_pairs(FIXTURES / "btree-deleted.db"))
    assert len(pairs) == 160
    # The deleted keys are still on the freed pages...
    stale = [i for i in range(100, 350) if b"d%04d" % i in raw]
    assert len(stale) > 20
    # ...but none of them is read.
    assert not any(b"d%04d" % i in pairs for i in range(100, 350))
    assert b"d0100-big" not in pairs
    assert BerkeleyDB185Reader(FIXTURES / "btree-deleted.db").details()["free_page"] != 0


def test_cross_endian_big_data_is_repaired() -> None:
    expected = oracle("btree-cross")  # the PUT list
    library = [tuple(line.split(" ")) for line in (FIXTURES / "btree-cross.oracle").open()]
    # libdb1 itself reads one value (under a 3-byte key, last on its page) back wrongly.
    wrong = [k for (k, v), (_, pv) in zip(library, expected, strict=True) if bytes.fromhex(v) != pv]
    assert wrong == ["583030"]
    with BerkeleyDB185Reader(FIXTURES / "btree-cross.db") as reader:
        pairs = [(as_bytes(r.key), r.raw) for r in reader.records()]
        details = reader.details()
    assert pairs == expected
    assert details["byte_order"] == "big"
    assert details["repaired_cross_endian_items"] == 8  # keys of 3, 5, 7, 8, 12, 13, 20, 60
    assert any("cross-endian" in w for w in details["warnings"])


def test_native_files_need_no_repair() -> None:
    for stem in ("btree-le", "btree-be", "btree-deleted"):
        reader = BerkeleyDB185Reader(FIXTURES / f"{stem}.db")
        list(reader.records())
        assert reader.details()["repaired_cross_endian_items"] == 0
        assert reader.details()["warnings"] == []


@pytest.mark.parametrize("stem", ["recno-le", "recno-be"])
def test_recno_keys_are_record_numbers(stem: str) -> None:
    with BerkeleyDB185Reader(FIXTURES / f"{stem}.db") as reader:
        assert reader.details()["access_method"] == "recno"
        keys = [r.key for r in reader.records()]
    assert keys == list(range(1, 118))
    assert all(type(k) is int for k in keys)
    # The big-endian tree keeps its index and items in the writer's (little-endian) order.
    assert read_pairs(FIXTURES / "recno-be.db") == oracle("recno-le")


def test_records_can_be_read_twice() -> None:
    reader = BerkeleyDB185Reader(FIXTURES / "btree-le.db")
    first = [r.raw for r in reader.records()]
    assert [r.raw for r in reader.records()] == first == [v for _, v in oracle("btree-le")]


def test_count_of_a_damaged_hash_is_unknown_and_reading_names_the_damage(tmp_path: Path) -> None:
    path = copy(tmp_path, "ndbm")
    order, bsize, hdrpages, _, _ = _hash_layout(path)
    _patch(path, hdrpages * bsize, order + "H", 4095)  # bucket 0: an impossible index count
    reader = BerkeleyDB185Reader(path)
    assert reader.count() is None
    with pytest.raises(FormatError, match=rf"page {hdrpages}: index count 4095 is impossible"):
        list(reader.records())


def test_subdb_option_is_refused() -> None:
    with pytest.raises(UnsupportedFormatError, match="subdatabases"):
        BerkeleyDB185Reader(FIXTURES / "hash-le.db", ReadOptions(subdb="x"))


# ---------------------------------------------------------------------------
# Detection, pipeline and CLI


@pytest.mark.parametrize("stem", STEMS)
def test_detection_and_open_reader(stem: str) -> None:
    path = FIXTURES / f"{stem}.db"
    expected = "bdb185-hash" if stem in HASH_STEMS else "bdb185-btree"
    assert detect(path).format == expected
    reader = shelfmigrate.open_reader(path)
    assert isinstance(reader, BerkeleyDB185Reader)
    assert reader.format_name == expected
    reader.close()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_converts_an_ndbm_shelf_by_its_base_name(tmp_path: Path) -> None:
    src = copy(tmp_path, "ndbm")
    dst = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["convert", str(src.with_suffix("")), str(dst)])
    assert result.exit_code == 0, result.output
    got = {r.key: r.value for r in shelfmigrate.open_reader(dst)}
    assert len(got) == 47
    for key, raw in oracle("ndbm"):
        text = key.decode()
        value = pickle.loads(raw, encoding="latin1")
        if text != "bytes":  # a Python 2 str with non-ASCII bytes: see --py2-str
            assert got[text] == value, text
    assert "item:07" not in got


def test_cli_converts_binary_values_exactly(tmp_path: Path) -> None:
    src = copy(tmp_path, "hash-be")
    dst = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["convert", str(src), str(dst), "--values", "raw"])
    assert result.exit_code == 0, result.output
    got = [(as_bytes(r.key), r.value) for r in shelfmigrate.open_reader(dst)]
    assert got == oracle("hash-be")


def test_cli_inspect_describes_the_file(tmp_path: Path) -> None:
    src = copy(tmp_path, "btree-le")
    result = CliRunner().invoke(app, ["inspect", str(src), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "bdb185-btree"
    assert info["source"]["access_method"] == "btree"
    assert info["source"]["page_size"] == 512


# ---------------------------------------------------------------------------
# Damaged files


def _hash_layout(path: Path) -> tuple[str, int, int, tuple[int, ...], int]:
    raw = path.read_bytes()
    _, _, lorder, bsize = struct.unpack_from(">4I", raw)
    hdrpages = struct.unpack_from(">I", raw, 60)[0]
    spares = struct.unpack_from(">32i", raw, 68)
    max_bucket = struct.unpack_from(">I", raw, 40)[0]
    return ("<" if lorder == 1234 else ">"), bsize, hdrpages, spares, max_bucket


def _bucket_page(bucket: int, hdrpages: int, spares: tuple[int, ...]) -> int:
    return bucket + hdrpages + (spares[bucket.bit_length() - 1] if bucket else 0)


def _find_overflow_link(path: Path) -> tuple[int, int]:
    """(file offset of the overflow address word, bucket page) of some bucket's chain."""
    order, bsize, hdrpages, spares, max_bucket = _hash_layout(path)
    raw = path.read_bytes()
    for bucket in range(max_bucket + 1):
        page = _bucket_page(bucket, hdrpages, spares)
        base = page * bsize
        n = struct.unpack_from(order + "H", raw, base)[0]
        if n >= 2 and struct.unpack_from(order + "H", raw, base + 2 * n)[0] == 0:
            return base + 2 * (n - 1), page
    raise AssertionError("no bucket with an overflow page")


def _patch(path: Path, offset: int, fmt: str, *values: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(bytes(data))


def test_hash_overflow_address_beyond_the_file(tmp_path: Path) -> None:
    path = copy(tmp_path, "hash-le")
    at, page = _find_overflow_link(path)
    _patch(path, at, "<H", 0x07FF)  # split 0, page 2047
    with pytest.raises(FormatError, match=rf"hash-le\.db: page {page}: overflow address 0x07ff"):
        list(BerkeleyDB185Reader(path).records())


def test_hash_loop_in_an_overflow_chain(tmp_path: Path) -> None:
    path = copy(tmp_path, "hash-le")
    at, page = _find_overflow_link(path)
    # Point the link at the bucket page itself; its address is split 0, page 0 -> invalid,
    # so loop through the first overflow address instead: make the next page link back.
    order, bsize, hdrpages, spares, _ = _hash_layout(path)
    raw = path.read_bytes()
    addr = struct.unpack_from("<H", raw, at)[0]
    split, in_split = addr >> 11, addr & 0x7FF
    target = _bucket_page((1 << split) - 1, hdrpages, spares) + in_split
    # The overflow page links to itself: its first pair becomes an overflow link to addr.
    _patch(path, target * bsize, "<3H", 2, addr, 0)
    with pytest.raises(FormatError, match=rf"page {target} is reached twice"):
        list(BerkeleyDB185Reader(path).records())


def test_hash_big_pair_loop(tmp_path: Path) -> None:
    path = copy(tmp_path, "hash-be")
    order, bsize, hdrpages, spares, _ = _hash_layout(path)
    raw = bytearray(path.read_bytes())
    # Find a PARTIAL_KEY page reached by the walk and make its continuation itself.
    reader = BerkeleyDB185Reader(path)
    found = None
    for pgno in range(hdrpages, reader.npages):
        try:
            page, words = reader._hash_page(pgno)
        except FormatError:  # a bitmap page
            continue
        if words[0] == 4 and words[2] == 1:
            found = pgno, words
            break
    reader.close()
    assert found is not None
    pgno, words = found
    # Overflow address of this page: search the address that maps to it.
    addr = next(
        (s << 11) | p
        for s in range(32)
        for p in range(1, 0x800)
        if _bucket_page((1 << s) - 1, hdrpages, spares) + p == pgno
    )
    struct.pack_into(">H", raw, pgno * bsize + 6, addr)
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=rf"page {pgno} is reached twice"):
        list(BerkeleyDB185Reader(path).records())


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (12, 1000, "bucket size 1000 is not a power of two"),
        (16, 9, "bucket shift 9 does not match"),
        (8, 3412, "lorder"),
        (4, 7, "version 7"),
        (40, 1 << 30, "max_bucket"),
        (60, 0, "header pages"),
    ],
)
def test_hash_bad_header_fields(tmp_path: Path, offset: int, value: int, message: str) -> None:
    path = copy(tmp_path, "hash-le")
    _patch(path, offset, ">I", value)
    with pytest.raises(FormatError, match=message) as info:
        BerkeleyDB185Reader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("stem", ["hash-le", "btree-le", "recno-le"])
def test_truncated_file_is_a_format_error_naming_the_page(tmp_path: Path, stem: str) -> None:
    path = copy(tmp_path, stem)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(FormatError, match=r"page \d+"):
        list(BerkeleyDB185Reader(path).records())


def test_truncated_header_is_a_format_error(tmp_path: Path) -> None:
    path = copy(tmp_path, "hash-le")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FormatError, match="260"):
        BerkeleyDB185Reader(path)


def _btree_pages(path: Path) -> tuple[str, int, bytearray]:
    raw = bytearray(path.read_bytes())
    order = "<" if struct.unpack_from("<I", raw)[0] == 0x053162 else ">"
    psize = struct.unpack_from(order + "I", raw, 8)[0]
    return order, psize, raw


def _first_leaf(order: str, psize: int, raw: bytearray) -> int:
    pgno = 1
    while True:
        flags, lower = struct.unpack_from(order + "IH", raw, pgno * psize + 12)
        if flags & 0x1F in (0x02, 0x10):
            return pgno
        first = struct.unpack_from(order + "H", raw, pgno * psize + 20)[0]
        pgno = struct.unpack_from(order + "I", raw, pgno * psize + first + 4)[0]


def test_btree_leaf_chain_loop(tmp_path: Path) -> None:
    path = copy(tmp_path, "btree-le")
    order, psize, raw = _btree_pages(path)
    leaf = _first_leaf(order, psize, raw)
    struct.pack_into(order + "I", raw, leaf * psize + 8, leaf)  # nextpg = itself
    path.write_bytes(bytes(raw))
    # The self-link breaks the chain's back links first; either way the page is named.
    with pytest.raises(FormatError, match=rf"btree-le\.db: page {leaf}\b"):
        list(BerkeleyDB185Reader(path).records())


def test_btree_child_page_out_of_range(tmp_path: Path) -> None:
    path = copy(tmp_path, "btree-le")
    order, psize, raw = _btree_pages(path)
    first = struct.unpack_from(order + "H", raw, psize + 20)[0]
    struct.pack_into(order + "I", raw, psize + first + 4, 99999)
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="page 99999 is out of range"):
        list(BerkeleyDB185Reader(path).records())


def test_btree_bad_page_size(tmp_path: Path) -> None:
    path = copy(tmp_path, "btree-be")
    _patch(path, 8, ">I", 1000)
    with pytest.raises(FormatError, match="page size 1000"):
        BerkeleyDB185Reader(path)


def test_btree_overflow_chain_loop_fails_only_that_record(tmp_path: Path) -> None:
    path = copy(tmp_path, "btree-le")
    order, psize, raw = _btree_pages(path)
    # The first overflow page whose chain continues: make it point to itself.
    for pgno in range(2, len(raw) // psize):
        own, _, nextpg, flags = struct.unpack_from(order + "4I", raw, pgno * psize)
        if flags & 0x1F == 0x04 and nextpg:
            struct.pack_into(order + "I", raw, pgno * psize + 8, pgno)
            break
    else:
        raise AssertionError("no multi-page overflow chain")
    path.write_bytes(bytes(raw))
    records = list(BerkeleyDB185Reader(path).records())
    failed = [r for r in records if r.error is not None]
    assert len(failed) == 1
    assert "overflow chain" in str(failed[0].error)
    assert len(records) == len(oracle("btree-le"))


def test_not_a_db185_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"\x00" * 600)
    with pytest.raises(FormatError, match="not a Berkeley DB 1.85 file"):
        BerkeleyDB185Reader(path)
