"""Berkeley DB 3.1 - 18.x files (hash, btree, recno, queue), read in pure Python.

This covers what ``bsddb``/``dbhash``/``bsddb3``/``berkeleydb`` shelves and the
Berkeley-DB-backed ``dbm.ndbm`` write: hash meta versions 7-10, btree 8-10 and
queue 2-4, either byte order (taken from the magic at offset 12), page sizes
512-65536, with or without page checksums, duplicates (on-page sets and off-page
trees, sorted and unsorted), overflow chains and subdatabases (FORMATS.md §1).

How records are found (never by calling the hash function):

* hash: every bucket ``0 .. max_bucket`` from the meta page's ``spares`` table,
  then its chain of pages (§1.9.1) - the order ``db_dump`` prints;
* btree: down the leftmost edge to the first leaf, then along the leaf chain, so
  records come in key order (§1.9.2); recno numbers records by their position,
  deleted placeholders included;
* queue: the fixed slots of the data pages, from ``first_recno`` to ``cur_recno``,
  in this file or in its extent files ``__dbq.NAME.N`` (``page_ext != 0``);
* subdatabases: the master btree on page 0 names each one and the page of its meta
  page (stored big-endian in any file, §1.10); each is then read as above.

Everything read from the file is validated before it is used: page numbers
against the whole pages of the file, index arrays against the page, item lengths,
overflow lengths against ``tlen``, and every chain or tree against a one-bit-per-page
visited map (overflow chains, which pages may share, against a set per chain), so a
damaged file ends in a :class:`FormatError` naming the file and page, never in a hang
or a huge allocation.

``ReadOptions.salvage`` switches to the page-by-page scan of §1.9.3 for damaged files:
pages that fail validation (or their checksum) are skipped and counted in
``details()["salvage"]``.  It is refused for files with subdatabases (their pages are
interleaved and a leaf page does not say which database it belongs to, so records could
not be attributed soundly) and for recno (record numbers come from the tree).

Encrypted, heap, partitioned, compressed, sliced and external-file ("blob")
databases and pre-3.1 files are refused with :class:`UnsupportedFormatError`; the
texts come from :mod:`shelfmigrate.detect` (``bdb_refusal``), shared, not copied.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import gt, mul
from typing import Any

from .. import detect as _detect
from ..errors import (
    FormatError,
    ShelfmigrateError,
    SourceError,
    UnsupportedFormatError,
    UsageError,
)
from ..options import ReadOptions
from ..records import NOT_DECODED, Record
from ._pages import PageBitmap
from .base import Reader

# --------------------------------------------------------------------------- constants

MAGIC_HASH = 0x00061561
MAGIC_BTREE = 0x00053162
MAGIC_QUEUE = 0x00042253
MAGIC_HEAP = 0x00074582

#: lowest and highest meta version this reader understands, per access method
SUPPORTED_VERSIONS = {"hash": (7, 10), "btree": (8, 10), "queue": (2, 4)}

MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 65536
META_SIZE = 512  # meta pages use (and checksum) only their first 512 bytes

# generic meta header (§1.2), offsets from the page start
META_MAGIC = 12
META_CHECKSUM = 492  # u32 checksum of a meta page (20-byte field; 4 bytes used without crypto)
META_HEADER = (
    "8xIIIIBBBxIIIIII"  # pgno .. flags (struct format; the byte order is prefixed per file)
)
# btree meta (§1.3)
BTREE_META = "4xIIII"  # at 72: minkey, re_len, re_pad, root
BTREE_META_AT = 72
BTREE_BLOB_THRESHOLD = 92
# hash meta
HASH_META = "IIIIII32I"  # at 72: max_bucket .. h_charkey, spares[32]
HASH_META_AT = 72
HASH_BLOB_THRESHOLD = 224
HASH_SPARES = 32
# queue meta
QUEUE_META = "IIIIII"  # at 72: first_recno, cur_recno, re_len, re_pad, rec_page, page_ext
QUEUE_META_AT = 72

# metaflags (u8 at 26)
DBMETA_CHKSUM = 0x01
DBMETA_PART_RANGE = 0x02
DBMETA_PART_CALLBACK = 0x04
DBMETA_SLICED = 0x08
# btree flags (u32 at 48)
BTM_DUP = 0x001
BTM_RECNO = 0x002
BTM_FIXEDLEN = 0x008
BTM_RENUMBER = 0x010
BTM_SUBDB = 0x020
BTM_DUPSORT = 0x040
BTM_COMPRESS = 0x080
BTM_SLICED = 0x100
# hash flags
HASHM_DUP = 0x01
HASHM_SUBDB = 0x02
HASHM_DUPSORT = 0x04
HASHM_SLICED = 0x08

# regular page header (§1.4): lsn, pgno, prev_pgno, next_pgno, entries, hf_offset, level, type
PAGE_HEADER = "8xIIIHHBB"  # lsn, pgno, prev, next, entries, hf_offset, level, type
PAGE_HEADER_SIZE = 26
PAGE_TYPE = 25
PAGE_CHECKSUM = 28  # u32 page checksum, when the file has DBMETA_CHKSUM
P_OVERHEAD_PLAIN = 26
P_OVERHEAD_CHECKSUM = 32
QPAGE_PLAIN = 28  # queue data pages have a longer header
QPAGE_CHECKSUM = 48

# page types (§1.5)
P_INVALID = 0
P_DUPLICATE_OLD = 1
P_HASH_UNSORTED = 2
P_IBTREE = 3
P_IRECNO = 4
P_LBTREE = 5
P_LRECNO = 6
P_OVERFLOW = 7
P_HASHMETA = 8
P_BTREEMETA = 9
P_QAMMETA = 10
P_QAMDATA = 11
P_LDUP = 12
P_HASH = 13
P_HEAPMETA = 14
P_HEAP = 15
P_IHEAP = 16
HASH_PAGE_TYPES = (P_HASH_UNSORTED, P_HASH)
INTERNAL_PAGE_TYPES = (P_IBTREE, P_IRECNO)
META_PAGE_TYPES = (P_HASHMETA, P_BTREEMETA, P_QAMMETA, P_HEAPMETA)

# hash items (§1.6): type byte first
H_KEYDATA = 1
H_DUPLICATE = 2
H_OFFPAGE = 3
H_OFFDUP = 4
H_BLOB = 5
H_OFFPAGE_SIZE = 12  # type, 3 pad, u32 pgno, u32 tlen
H_OFFDUP_SIZE = 8  # type, 3 pad, u32 pgno

# btree items (§1.7): u16 len, u8 type (bit 0x80 = deleted)
B_KEYDATA = 1
B_DUPLICATE = 2
B_OVERFLOW = 3
B_BLOB = 4
B_DELETE = 0x80
B_TYPE_MASK = 0x7F
BKEYDATA_HEADER = 3
BOVERFLOW_SIZE = 12  # u16 unused, type, pad, u32 pgno, u32 tlen
BINTERNAL_PGNO = 4
RINTERNAL_PGNO = 0

# queue slots (§1.12)
QAM_VALID = 0x01

MAX_TREE_DEPTH = 64  # a btree of 64 levels would hold more records than any file
RECNO_LIMIT = 1 << 32


def _u32_struct(order: str) -> struct.Struct:
    return struct.Struct(order + "I")


_BE_U32 = struct.Struct(">I")


# --------------------------------------------------------------------------- checksums


class _Checksummer:
    """The page checksum of BDB without crypto: ``h = h * 33 + byte (mod 2**32)``.

    Written out, ``h = sum(byte[i] * 33**(n-1-i))``: a dot product with precomputed
    powers, which ``sum(map(mul, ...))`` evaluates in C instead of a Python loop per byte
    (about 40 ns a byte; pairing bytes through a lookup table measured no faster).  The
    stored checksum bytes count as zero, so their share is subtracted afterwards.
    """

    def __init__(self) -> None:
        self._powers: dict[int, tuple[int, ...]] = {}

    def powers(self, n: int) -> tuple[int, ...]:
        """``33**(n-1-i) mod 2**32`` for ``i`` in ``0 .. n-1``."""
        table = self._powers.get(n)
        if table is None:
            values = [0] * n
            p = 1
            for i in range(n - 1, -1, -1):
                values[i] = p
                p = (p * 33) & 0xFFFFFFFF
            table = self._powers[n] = tuple(values)
        return table

    def __call__(self, data: bytes, n: int, skip: int) -> int:
        """The checksum of ``data[:n]`` with the 4 bytes at ``skip`` taken as zero."""
        powers = self.powers(n)
        total = sum(map(mul, data[:n], powers))
        total -= sum(map(mul, data[skip : skip + 4], powers[skip : skip + 4]))
        return total & 0xFFFFFFFF


_CHECKSUM = _Checksummer()


# --------------------------------------------------------------------------- meta pages


@dataclass
class MetaPage:
    """The fields of one meta page (page 0, or a subdatabase's meta page)."""

    pgno: int
    access_method: str  # "hash", "btree", "recno" or "queue"
    version: int
    page_size: int
    encrypt_alg: int
    page_type: int
    metaflags: int
    flags: int
    last_pgno: int
    nparts: int
    key_count: int
    record_count: int
    am: dict[str, Any] = field(default_factory=dict)

    @property
    def duplicates(self) -> bool:
        if self.access_method == "hash":
            return bool(self.flags & (HASHM_DUP | HASHM_DUPSORT))
        return self.access_method == "btree" and bool(self.flags & (BTM_DUP | BTM_DUPSORT))

    @property
    def dupsort(self) -> bool:
        bit = HASHM_DUPSORT if self.access_method == "hash" else BTM_DUPSORT
        return self.access_method != "queue" and bool(self.flags & bit)

    @property
    def is_master(self) -> bool:
        return self.access_method == "btree" and bool(self.flags & BTM_SUBDB)


def parse_meta(page: bytes, order: str, pgno: int, path: str) -> MetaPage:
    """Parse the meta page ``pgno``; FormatError when it is not a hash/btree/queue meta page."""
    if len(page) < META_SIZE:
        raise FormatError(path, f"page {pgno}: meta page is only {len(page)} bytes")
    u32 = _u32_struct(order)
    magic = u32.unpack_from(page, META_MAGIC)[0]
    kinds = {
        MAGIC_HASH: ("hash", P_HASHMETA),
        MAGIC_BTREE: ("btree", P_BTREEMETA),
        MAGIC_QUEUE: ("queue", P_QAMMETA),
    }
    if magic == MAGIC_HEAP:
        raise UnsupportedFormatError(
            path, f"page {pgno}: {_refusal_text('heap', {}, False, False, False, 0)}"
        )
    if magic not in kinds:
        raise FormatError(path, f"page {pgno}: not a Berkeley DB meta page (magic 0x{magic:08x})")
    am, want_type = kinds[magic]
    (
        own_pgno,
        _magic,
        version,
        page_size,
        encrypt_alg,
        page_type,
        metaflags,
        _free,
        last_pgno,
        nparts,
        key_count,
        record_count,
    ) = struct.unpack_from(order + META_HEADER, page, 0)[:12]
    flags = u32.unpack_from(page, 48)[0]
    meta = MetaPage(
        pgno,
        am,
        version,
        page_size,
        encrypt_alg,
        page_type,
        metaflags,
        flags,
        last_pgno,
        nparts,
        key_count,
        record_count,
    )
    low, high = SUPPORTED_VERSIONS[am]
    old = version < low
    if not old and page_type != want_type:
        raise FormatError(
            path, f"page {pgno}: {am} meta page has page type {page_type} (expected {want_type})"
        )
    if not old and own_pgno != pgno:
        raise FormatError(path, f"page {pgno}: meta page says it is page {own_pgno}")
    blob_threshold = 0
    blob_file_id = 0
    if am == "btree":
        minkey, re_len, re_pad, root = struct.unpack_from(order + BTREE_META, page, BTREE_META_AT)
        meta.am = {"minkey": minkey, "re_len": re_len, "re_pad": re_pad, "root": root}
        if flags & BTM_RECNO:
            meta.access_method = "recno"
        if version >= 10:
            blob_threshold, lo, hi = struct.unpack_from(order + "III", page, BTREE_BLOB_THRESHOLD)
            blob_file_id = lo | hi << 32
    elif am == "hash":
        fields = struct.unpack_from(order + HASH_META, page, HASH_META_AT)
        meta.am = {
            "max_bucket": fields[0],
            "high_mask": fields[1],
            "low_mask": fields[2],
            "ffactor": fields[3],
            "nelem": fields[4],
            "spares": fields[6:],
        }
        if version >= 10:
            blob_threshold, lo, hi = struct.unpack_from(order + "III", page, HASH_BLOB_THRESHOLD)
            blob_file_id = lo | hi << 32
    else:
        names = ("first_recno", "cur_recno", "re_len", "re_pad", "rec_page", "page_ext")
        meta.am = dict(
            zip(names, struct.unpack_from(order + QUEUE_META, page, QUEUE_META_AT), strict=True)
        )
    sliced = bool(metaflags & DBMETA_SLICED) or (
        version >= 10
        and bool(flags & (BTM_SLICED if am == "btree" else HASHM_SLICED if am == "hash" else 0))
    )
    compressed = am == "btree" and bool(flags & BTM_COMPRESS)
    refusal_facts = {
        "encrypted": encrypt_alg != 0,
        "encrypt_alg": encrypt_alg,
        "version": version,
        "nparts": nparts,
        "metaflags": metaflags,
        "blob_file_id": blob_file_id,
    }
    refusal = _refusal_text(
        meta.access_method, refusal_facts, old, sliced, compressed, blob_threshold
    )
    if refusal:
        raise UnsupportedFormatError(path, f"page {pgno}: {refusal}")
    if version > high:
        raise UnsupportedFormatError(
            path,
            f"page {pgno}: Berkeley DB {am} meta version {version} is newer than any this reader knows "
            f"(up to {high}, Berkeley DB 18.x); dump it with that release's `db_dump`",
        )
    if not (page_size & (page_size - 1) == 0 and MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE):
        raise FormatError(
            path, f"page {pgno}: page size {page_size} is not a power of two in 512..65536"
        )
    return meta


def _refusal_text(
    am: str, facts: dict[str, Any], old: bool, sliced: bool, compressed: bool, blob_threshold: int
) -> str | None:
    """The refusal detection gives for these facts (one text for detection and reader)."""
    full = {
        "encrypted": False,
        "encrypt_alg": 0,
        "version": 0,
        "nparts": 0,
        "metaflags": 0,
        **facts,
    }
    return _detect.bdb_refusal(am, full, old, sliced, compressed, blob_threshold)


def _blob_item_refusal(threshold: int) -> str:
    text = _refusal_text("btree", {"blob_file_id": 1}, False, False, False, threshold)
    return text or "external-file (blob) item"


# --------------------------------------------------------------------------- page access


class PageFile:
    """Reads and validates pages of one open Berkeley DB file.

    Knows the byte order, page size, where the index array starts (``P_OVERHEAD``)
    and whether pages carry checksums; checks every page number against the whole
    pages of the file and, when asked, every checksum.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        file_size: int,
        page_size: int,
        order: str,
        checksummed: bool,
        verify: bool,
    ):
        self.path = path
        self.fd = fd
        self.file_size = file_size
        self.page_size = page_size
        self.order = order
        self.npages = file_size // page_size
        self.checksummed = checksummed
        self.verify = verify and checksummed
        self.overhead = P_OVERHEAD_CHECKSUM if checksummed else P_OVERHEAD_PLAIN
        self.queue_overhead = QPAGE_CHECKSUM if checksummed else QPAGE_PLAIN
        self.header = struct.Struct(order + PAGE_HEADER).unpack_from
        self.u16 = struct.Struct(order + "H").unpack_from
        self.u32 = struct.Struct(order + "I").unpack_from
        self.u16_type = struct.Struct(order + "HB").unpack_from
        self.overflow_ref = struct.Struct(order + "II").unpack_from
        self._index_structs: dict[int, Any] = {}
        self._zero_page = bytes(page_size)

    def error(self, pgno: int, message: str) -> FormatError:
        return FormatError(self.path, f"page {pgno}: {message}")

    def read(self, pgno: int, referrer: str = "") -> bytes:
        """Page ``pgno``, checksum verified when the file has checksums and verification is on."""
        if not 0 <= pgno < self.npages:
            whole = f"{self.npages} whole page{'s' if self.npages != 1 else ''} of {self.page_size} bytes"
            why = f" (referenced by {referrer})" if referrer else ""
            tail = self.file_size % self.page_size
            if tail:
                why += (
                    f"; the file ends {tail} bytes into a page, so it was cut short: "
                    "--salvage reads the whole pages"
                )
            raise self.error(
                pgno, f"page number lies past the end of the file, which has {whole}{why}"
            )
        try:
            page = os.pread(self.fd, self.page_size, pgno * self.page_size)
        except OSError as exc:
            raise SourceError(self.path, f"page {pgno}: {exc.strerror or exc}") from None
        if len(page) != self.page_size:
            raise self.error(pgno, "short read (the file shrank while being read)")
        if self.verify:
            self.check(page, pgno)
        return page

    def check(self, page: bytes, pgno: int) -> None:
        """Raise FormatError when the stored checksum of ``page`` does not match its bytes."""
        if page == self._zero_page:
            return  # never-written pages carry no checksum
        if page[PAGE_TYPE] in META_PAGE_TYPES:
            stored = self.u32(page, META_CHECKSUM)[0]
            actual = _CHECKSUM(page, META_SIZE, META_CHECKSUM)
        else:
            stored = self.u32(page, PAGE_CHECKSUM)[0]
            actual = _CHECKSUM(page, self.page_size, PAGE_CHECKSUM)
        if stored != actual:
            raise self.error(
                pgno,
                f"checksum mismatch (stored 0x{stored:08x}, computed 0x{actual:08x}): the page is damaged; "
                "use --no-verify-checksums to read it anyway, or --salvage to skip damaged pages",
            )

    def index(self, page: bytes, pgno: int, entries: int) -> tuple[int, ...]:
        """The index array of an item page, every offset checked to lie in the item area."""
        if not entries:
            return ()
        low = self.overhead + 2 * entries
        if low > self.page_size:
            raise self.error(pgno, f"{entries} index entries do not fit in the page")
        unpack = self._index_structs.get(entries)
        if unpack is None:
            unpack = self._index_structs[entries] = struct.Struct(
                f"{self.order}{entries}H"
            ).unpack_from
        offsets = unpack(page, self.overhead)
        if min(offsets) < low or max(offsets) >= self.page_size:
            raise self.error(
                pgno, f"an index entry points outside the item area [{low}, {self.page_size})"
            )
        return offsets

    def new_visited(self) -> PageBitmap:
        """A one-bit-per-page map for loop detection (1/32768 of the file size)."""
        return PageBitmap(self.npages)

    def visit(self, visited: PageBitmap, pgno: int, what: str) -> None:
        if not visited.add(pgno):
            raise self.error(
                pgno, f"{what} reaches this page a second time (a loop or a cross-linked page)"
            )


def _item_ends(offsets: tuple[int, ...], page_size: int) -> tuple[int, ...] | list[int]:
    """Where each hash item ends: items are packed downward in index order (§1.6).

    When a page is not packed that way (it never is in files BDB writes), each item
    ends at the next higher item start instead.
    """
    if len(offsets) < 2 or all(map(gt, offsets, offsets[1:])):
        return (page_size, *offsets[:-1])
    starts = sorted(set(offsets))
    end_of = dict(zip(starts, [*starts[1:], page_size], strict=True))
    return [end_of[o] for o in offsets]


class QueueExtents:
    """The data pages of a queue whose pages live in extent files (``page_ext != 0``).

    Page ``p`` lies in ``__dbq.NAME.N`` beside the meta file ``NAME``, with
    ``N = (p - 1) // page_ext``, at position ``(p - 1) % page_ext`` of that file (checked
    against files made by ``db5.3_load -c extentsize=N``).  BDB deletes an extent file once
    every record in it is consumed, so a missing extent holds no records; the files are
    listed once, so a damaged ``cur_recno`` never makes the reader probe billions of names.
    Only one extent file is open at a time.
    """

    def __init__(self, pages: PageFile, page_ext: int):
        self.pages = pages
        self.page_ext = page_ext
        folder, base = os.path.split(pages.path)
        prefix = f"__dbq.{base}."
        try:
            names = os.listdir(folder or ".")
        except OSError as exc:
            raise SourceError(folder or ".", exc.strerror or str(exc)) from None
        self.files: dict[int, str] = {}
        for name in names:
            number = name[len(prefix) :]
            if name.startswith(prefix) and number.isdigit() and number.isascii():
                self.files[int(number)] = os.path.join(folder, name)
        self._current: tuple[int, int, int] | None = None  # (extent number, fd, whole pages)

    def numbers(self, first_page: int, last_page: int) -> list[int]:
        """Extent numbers present on disk that hold pages ``first_page .. last_page``."""
        low, high = (first_page - 1) // self.page_ext, (last_page - 1) // self.page_ext
        return sorted(n for n in self.files if low <= n <= high)

    def page_range(self, number: int) -> range:
        """The page numbers extent ``number`` holds on disk (its whole pages, not ``page_ext``)."""
        _fd, whole = self._extent(number)
        start = number * self.page_ext + 1
        return range(start, start + min(whole, self.page_ext))

    def _extent(self, number: int) -> tuple[int, int]:
        if self._current is not None and self._current[0] == number:
            return self._current[1], self._current[2]
        self.close()
        path = self.files[number]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(path, exc.strerror or str(exc)) from None
        size = os.fstat(fd).st_size
        if size % self.pages.page_size:
            os.close(fd)
            raise FormatError(path, f"extent file length {size} is not a whole number of pages")
        self._current = (number, fd, size // self.pages.page_size)
        return fd, self._current[2]

    def read(self, pgno: int, referrer: str = "") -> bytes | None:
        """Page ``pgno`` from its extent file; None when the extent or the page is absent."""
        number, position = divmod(pgno - 1, self.page_ext)
        if number not in self.files:
            return None
        fd, whole = self._extent(number)
        if position >= whole:
            return None  # extents grow page by page: this one was never written
        page_size = self.pages.page_size
        try:
            page = os.pread(fd, page_size, position * page_size)
        except OSError as exc:
            raise SourceError(self.files[number], f"page {pgno}: {exc.strerror or exc}") from None
        if len(page) != page_size:
            raise self.error(pgno, "short read (the file shrank while being read)")
        if self.pages.verify:
            try:
                self.pages.check(page, pgno)
            except FormatError as exc:
                raise self.error(pgno, exc.detail.split(": ", 1)[-1]) from None
        return page

    def error(self, pgno: int, message: str) -> FormatError:
        number = (pgno - 1) // self.page_ext
        return FormatError(self.files.get(number, self.pages.path), f"page {pgno}: {message}")

    def close(self) -> None:
        if self._current is not None:
            os.close(self._current[1])
            self._current = None


# --------------------------------------------------------------------------- the walks


class _Walker:
    """Enumerates the records of one database (the whole file, or one subdatabase)."""

    def __init__(self, pages: PageFile, meta: MetaPage, subdb: str | None):
        self.pages = pages
        self.meta = meta
        self.subdb = subdb
        #: pages of this database's trees and chains seen so far (each belongs to one place)
        self.visited = pages.new_visited()
        #: a queue's extent files, when its pages do not live in the main file
        self.extents: QueueExtents | None = None

    # ---------------------------------------------------------------- shared pieces

    def overflow(self, pgno: int, tlen: int, where: str) -> bytes:
        """The bytes of an overflow chain (§1.8), exactly ``tlen`` of them."""
        pages = self.pages
        if tlen > pages.npages * pages.page_size:
            raise pages.error(
                pgno, f"overflow item of {tlen} bytes ({where}) is longer than the file"
            )
        parts = []
        got = 0
        start = pages.overhead
        limit = pages.page_size - start
        current = pgno
        # Overflow pages may be shared (their entries field is a reference count), so
        # loops are caught per chain; the set grows with the item, which is held anyway.
        chain: set[int] = set()
        while current:
            if current in chain:
                raise pages.error(current, f"overflow chain ({where}) loops back to this page")
            chain.add(current)
            page = pages.read(current, where)
            own, _prev, nxt, _entries, length, _level, ptype = pages.header(page)
            if ptype != P_OVERFLOW or own != current:
                raise pages.error(
                    current, f"expected an overflow page ({where}), found page type {ptype}"
                )
            if length == 0 or length > limit or got + length > tlen:
                raise pages.error(
                    current,
                    f"overflow page holds {length} bytes; the item is {tlen} bytes ({where})",
                )
            parts.append(page[start : start + length])
            got += length
            current = nxt
        if got != tlen:
            raise pages.error(
                pgno, f"overflow chain holds {got} bytes, the item says {tlen} ({where})"
            )
        return b"".join(parts)

    def first_leaf(self, root: int, what: str) -> int:
        """Follow the leftmost children from ``root`` down to the first leaf."""
        pages = self.pages
        current = root
        for _ in range(MAX_TREE_DEPTH):
            page = pages.read(current, what)
            own, _prev, _next, entries, _hf, _level, ptype = pages.header(page)
            if ptype not in INTERNAL_PAGE_TYPES:
                return current
            if own != current:
                raise pages.error(current, f"page says it is page {own} ({what})")
            pages.visit(self.visited, current, what)
            if entries == 0:
                raise pages.error(current, f"internal page without entries ({what})")
            offset = pages.index(page, current, entries)[0]
            field_at = offset + (BINTERNAL_PGNO if ptype == P_IBTREE else RINTERNAL_PGNO)
            if field_at + 4 > pages.page_size:
                raise pages.error(current, f"internal item runs past the page ({what})")
            current = pages.u32(page, field_at)[0]
        raise pages.error(root, f"tree deeper than {MAX_TREE_DEPTH} levels ({what})")

    def leaf_pages(
        self, root: int, leaf_types: tuple[int, ...], what: str
    ) -> Iterator[tuple[int, bytes, int]]:
        """``(pgno, page, entries)`` of every leaf of the tree at ``root``, left to right."""
        pages = self.pages
        current = self.first_leaf(root, what)
        while current:
            page = pages.read(current, what)
            own, _prev, nxt, entries, _hf, _level, ptype = pages.header(page)
            if ptype not in leaf_types or own != current:
                expected = "/".join(str(t) for t in leaf_types)
                raise pages.error(
                    current, f"expected a leaf page of type {expected} ({what}), found type {ptype}"
                )
            pages.visit(self.visited, current, what)
            yield current, page, entries
            current = nxt

    def btree_item(self, page: bytes, pgno: int, offset: int, what: str) -> bytes | None:
        """The bytes of a leaf item (B_KEYDATA / B_OVERFLOW); None when it is deleted."""
        pages = self.pages
        if offset + BKEYDATA_HEADER > pages.page_size:
            raise pages.error(pgno, f"item at offset {offset} runs past the page")
        length, itype = pages.u16_type(page, offset)
        if itype & B_DELETE:
            return None
        itype &= B_TYPE_MASK
        if itype == B_KEYDATA:
            end = offset + BKEYDATA_HEADER + length
            if end > pages.page_size:
                raise pages.error(
                    pgno, f"item at offset {offset} ({length} bytes) runs past the page"
                )
            return page[offset + BKEYDATA_HEADER : end]
        if itype == B_OVERFLOW:
            if offset + BOVERFLOW_SIZE > pages.page_size:
                raise pages.error(pgno, f"overflow reference at offset {offset} runs past the page")
            first, tlen = pages.overflow_ref(page, offset + 4)
            return self.overflow(first, tlen, f"{what} item on page {pgno}")
        if itype == B_BLOB:
            raise UnsupportedFormatError(pages.path, f"page {pgno}: {_blob_item_refusal(0)}")
        raise pages.error(pgno, f"item at offset {offset} has unknown type {itype} ({what})")

    def duplicate_values(self, root: int, where: str) -> Iterator[bytes]:
        """The values of an off-page duplicate tree in stored order (P_LDUP or P_LRECNO leaves)."""
        what = f"duplicate tree of {where}"
        for pgno, page, entries in self.leaf_pages(root, (P_LDUP, P_LRECNO), what):
            for offset in self.pages.index(page, pgno, entries):
                value = self.btree_item(page, pgno, offset, what)
                if value is not None:
                    yield value

    def make_key(self, raw: bytes) -> Any:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    # ---------------------------------------------------------------- hash (§1.6, §1.9.1)

    def walk_hash(self) -> Iterator[Record]:
        """Every record of a hash database, bucket by bucket."""
        pages = self.pages
        am = self.meta.am
        max_bucket, spares = am["max_bucket"], am["spares"]
        if max_bucket >= pages.npages or max_bucket >= 1 << (HASH_SPARES - 1):
            raise pages.error(
                self.meta.pgno,
                f"max_bucket {max_bucket} exceeds the {pages.npages} pages of the file",
            )
        header = pages.header
        for bucket in range(max_bucket + 1):
            # first page of bucket b = b + spares[ceil_log2(b + 1)], and ceil_log2(b + 1) == b.bit_length()
            current = (bucket + spares[bucket.bit_length()]) & 0xFFFFFFFF
            what = f"hash bucket {bucket}"
            if current == 0:
                raise pages.error(self.meta.pgno, f"{what} starts at page 0 (damaged spares table)")
            first = True
            while current:
                page = pages.read(current, what)
                own, _prev, nxt, entries, _hf, _level, ptype = header(page)
                if ptype not in HASH_PAGE_TYPES:
                    if first and ptype == P_INVALID and entries == 0 and own in (0, current):
                        break  # a bucket page allocated by a table doubling but never written
                    raise pages.error(
                        current, f"expected a hash page ({what}), found page type {ptype}"
                    )
                if own != current:
                    raise pages.error(current, f"page says it is page {own} ({what})")
                pages.visit(self.visited, current, what)
                if entries:
                    yield from self.hash_page_records(page, current, entries)
                current = nxt
                first = False

    def hash_page_records(self, page: bytes, pgno: int, entries: int) -> Iterator[Record]:
        """The records of one hash page (key/data item pairs)."""
        pages = self.pages
        if entries & 1:
            raise pages.error(pgno, f"hash page with an odd number of entries ({entries})")
        offsets = pages.index(page, pgno, entries)
        ends = _item_ends(offsets, pages.page_size)
        subdb = self.subdb
        for i in range(0, entries, 2):
            start, end = offsets[i], ends[i]
            if page[start] == H_KEYDATA:
                raw_key = page[start + 1 : end]
            else:
                raw_key = self.hash_big_key(page, pgno, start, end)
            try:
                key = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                key = raw_key
            start, end = offsets[i + 1], ends[i + 1]
            vtype = page[start]
            if vtype == H_KEYDATA:
                yield Record(key, NOT_DECODED, page[start + 1 : end], None, subdb)
            else:
                for value in self.hash_value(page, pgno, start, end, vtype, key):
                    yield Record(key, NOT_DECODED, value, None, subdb)

    def hash_big_key(self, page: bytes, pgno: int, start: int, end: int) -> bytes:
        pages = self.pages
        if page[start] != H_OFFPAGE:
            raise pages.error(pgno, f"hash key item at offset {start} has type {page[start]}")
        if end - start < H_OFFPAGE_SIZE:
            raise pages.error(pgno, f"overflow reference at offset {start} is too short")
        first, tlen = pages.overflow_ref(page, start + 4)
        return self.overflow(first, tlen, f"key on page {pgno}")

    def hash_value(
        self, page: bytes, pgno: int, start: int, end: int, vtype: int, key: Any
    ) -> Iterator[bytes]:
        """The value(s) of a hash data item that is not plain H_KEYDATA."""
        pages = self.pages
        if vtype == H_DUPLICATE:
            u16 = pages.u16
            p = start + 1
            while p < end:
                if p + 2 > end:
                    raise pages.error(pgno, f"duplicate set at offset {start} is cut short")
                (length,) = u16(page, p)
                if p + 4 + length > end:
                    raise pages.error(
                        pgno, f"duplicate set at offset {start} has an item running past it"
                    )
                yield page[p + 2 : p + 2 + length]
                p += length + 4
        elif vtype == H_OFFPAGE:
            if end - start < H_OFFPAGE_SIZE:
                raise pages.error(pgno, f"overflow reference at offset {start} is too short")
            first, tlen = pages.overflow_ref(page, start + 4)
            yield self.overflow(first, tlen, f"value on page {pgno}")
        elif vtype == H_OFFDUP:
            if end - start < H_OFFDUP_SIZE:
                raise pages.error(pgno, f"duplicate tree reference at offset {start} is too short")
            yield from self.duplicate_values(
                pages.u32(page, start + 4)[0], f"key {key!r} on page {pgno}"
            )
        elif vtype == H_BLOB:
            raise UnsupportedFormatError(pages.path, f"page {pgno}: {_blob_item_refusal(0)}")
        else:
            raise pages.error(pgno, f"hash data item at offset {start} has unknown type {vtype}")

    # ---------------------------------------------------------------- btree (§1.7, §1.9.2)

    def walk_btree(self) -> Iterator[Record]:
        """Every record of a btree database, in key order."""
        root = self.meta.am["root"]
        for pgno, page, entries in self.leaf_pages(root, (P_LBTREE,), "btree leaf chain"):
            yield from self.btree_leaf_records(page, pgno, entries)

    def btree_leaf_records(self, page: bytes, pgno: int, entries: int) -> Iterator[Record]:
        """The records of one P_LBTREE page (key/data pairs; B_DELETE data skipped)."""
        pages = self.pages
        if entries & 1:
            raise pages.error(pgno, f"btree leaf with an odd number of entries ({entries})")
        offsets = pages.index(page, pgno, entries)
        page_size = pages.page_size
        u16_type = pages.u16_type
        subdb = self.subdb
        last_key_at = -1
        key: Any = None
        for i in range(0, entries, 2):
            start = offsets[i + 1]
            if start + BKEYDATA_HEADER > page_size:
                raise pages.error(pgno, f"item at offset {start} runs past the page")
            length, dtype = u16_type(page, start)
            if dtype & B_DELETE:
                continue
            key_at = offsets[i]
            if key_at != last_key_at:  # on-page duplicates share one key item
                key = self.make_key(self.btree_key(page, pgno, key_at))
                last_key_at = key_at
            if dtype == B_KEYDATA:
                end = start + BKEYDATA_HEADER + length
                if end > page_size:
                    raise pages.error(
                        pgno, f"item at offset {start} ({length} bytes) runs past the page"
                    )
                yield Record(key, NOT_DECODED, page[start + BKEYDATA_HEADER : end], None, subdb)
            elif dtype == B_DUPLICATE:
                if start + BOVERFLOW_SIZE > page_size:
                    raise pages.error(
                        pgno, f"duplicate reference at offset {start} runs past the page"
                    )
                root = pages.u32(page, start + 4)[0]
                for value in self.duplicate_values(root, f"key {key!r} on page {pgno}"):
                    yield Record(key, NOT_DECODED, value, None, subdb)
            else:
                value = self.btree_item(page, pgno, start, "btree leaf")
                yield Record(key, NOT_DECODED, value, None, subdb)

    def btree_key(self, page: bytes, pgno: int, offset: int) -> bytes:
        """A leaf key item; B_DELETE marks the data item, so a key is read whatever its flag."""
        pages = self.pages
        if offset + BKEYDATA_HEADER > pages.page_size:
            raise pages.error(pgno, f"key item at offset {offset} runs past the page")
        length, itype = pages.u16_type(page, offset)
        if itype & B_TYPE_MASK == B_KEYDATA:
            end = offset + BKEYDATA_HEADER + length
            if end > pages.page_size:
                raise pages.error(
                    pgno, f"key item at offset {offset} ({length} bytes) runs past the page"
                )
            return page[offset + BKEYDATA_HEADER : end]
        if itype & B_TYPE_MASK == B_OVERFLOW:
            if offset + BOVERFLOW_SIZE > pages.page_size:
                raise pages.error(pgno, f"overflow reference at offset {offset} runs past the page")
            first, tlen = pages.overflow_ref(page, offset + 4)
            return self.overflow(first, tlen, f"key on page {pgno}")
        raise pages.error(pgno, f"key item at offset {offset} has type {itype & B_TYPE_MASK}")

    # ---------------------------------------------------------------- recno (§1.9.2, §1.12)

    def walk_recno(self) -> Iterator[Record]:
        """Every record of a recno database, numbered by position (deleted placeholders count)."""
        am = self.meta.am
        fixed = bool(self.meta.flags & BTM_FIXEDLEN)
        re_len, pad = am["re_len"], bytes([am["re_pad"] & 0xFF])
        recno = 0
        subdb = self.subdb
        for pgno, page, entries in self.leaf_pages(am["root"], (P_LRECNO,), "recno leaf chain"):
            for offset in self.pages.index(page, pgno, entries):
                recno += 1
                value = self.btree_item(page, pgno, offset, "recno leaf")
                if value is None:
                    continue
                if fixed and len(value) < re_len:
                    value = value + pad * (re_len - len(value))
                yield Record(recno, NOT_DECODED, value, None, subdb)

    # ---------------------------------------------------------------- queue (§1.12)

    def queue_layout(self) -> tuple[int, int, int]:
        """``(re_len, rec_page, slot size)`` after checking they fit the page."""
        pages = self.pages
        am = self.meta.am
        re_len, rec_page = am["re_len"], am["rec_page"]
        slot = (re_len + 1 + 3) & ~3
        if rec_page == 0 or pages.queue_overhead + rec_page * slot > pages.page_size:
            raise pages.error(
                self.meta.pgno,
                f"queue meta says {rec_page} records of {re_len} bytes per page, which do not fit",
            )
        return re_len, rec_page, slot

    def queue_page_records(self, page: bytes, pgno: int, low: int, high: int) -> Iterator[Record]:
        """Valid records of queue data page ``pgno`` whose numbers lie in ``[low, high)``."""
        re_len, rec_page, slot = self.queue_layout()
        first = (pgno - 1) * rec_page + 1
        at = self.pages.queue_overhead
        subdb = self.subdb
        for i in range(rec_page):
            recno = first + i
            if low <= recno < high and page[at] & QAM_VALID:
                yield Record(recno, NOT_DECODED, page[at + 1 : at + 1 + re_len], None, subdb)
            at += slot

    def queue_page(self, pgno: int) -> bytes | None:
        """A queue data page, or None for a page never written (or in a deleted extent)."""
        pages = self.pages
        source: PageFile | QueueExtents = self.extents or pages
        page = source.read(pgno, "queue")
        if page is None:
            return None
        own, _prev, _next, _entries, _hf, _level, ptype = pages.header(page)
        if ptype == P_INVALID and own in (0, pgno):
            return None
        if ptype != P_QAMDATA:
            raise source.error(pgno, f"expected a queue data page, found page type {ptype}")
        if own != pgno:
            raise source.error(pgno, f"queue data page says it is page {own}")
        return page

    def queue_pages(self, first_page: int, last_page: int) -> Iterator[int]:
        """The page numbers to read for pages ``first_page .. last_page``."""
        if self.extents is None:
            if last_page >= self.pages.npages:
                raise self.pages.error(
                    last_page, "a queue record would lie on this page, past the end of the file"
                )
            yield from range(first_page, last_page + 1)
            return
        for number in self.extents.numbers(first_page, last_page):
            span = self.extents.page_range(number)
            yield from range(max(first_page, span.start), min(last_page + 1, span.stop))

    def walk_queue(self) -> Iterator[Record]:
        """Every valid queue record from ``first_recno`` up to ``cur_recno`` (wrapping at 2**32)."""
        am = self.meta.am
        _re_len, rec_page, _slot = self.queue_layout()
        first, cur = am["first_recno"], am["cur_recno"]
        ranges = [(first, cur)] if first <= cur else [(first, RECNO_LIMIT), (1, cur)]
        for low, high in ranges:
            if low >= high:
                continue
            first_page = (low - 1) // rec_page + 1
            last_page = (high - 2) // rec_page + 1
            for pgno in self.queue_pages(first_page, last_page):
                page = self.queue_page(pgno)
                if page is not None:
                    yield from self.queue_page_records(page, pgno, low, high)

    # ---------------------------------------------------------------- salvage (§1.9.3)

    def salvage_scan(self, stats: dict[str, Any]) -> Iterator[Record]:
        """Page-by-page scan of a single-database file: damaged pages are skipped and counted."""
        pages = self.pages
        am = self.meta.access_method
        extents = self.extents
        if extents is not None:
            numbers = sorted(extents.files)
            page_numbers: Iterator[int] | range = (
                p for n in numbers for p in extents.page_range(n)
            )
        else:
            page_numbers = range(1, pages.npages)
        source: PageFile | QueueExtents = extents or pages
        for pgno in page_numbers:
            try:
                page = source.read(pgno, "salvage scan")
                if page is None:
                    continue
                own, _prev, _next, entries, _hf, _level, ptype = pages.header(page)
                if own != pgno or ptype == P_INVALID:
                    continue  # never-written hole or free page
                if ptype > P_IHEAP or ptype == P_DUPLICATE_OLD:
                    raise source.error(pgno, f"unknown page type {ptype}")
                if am == "hash" and ptype in HASH_PAGE_TYPES:
                    found = list(self.hash_page_records(page, pgno, entries))
                elif am == "btree" and ptype == P_LBTREE:
                    found = list(self.btree_leaf_records(page, pgno, entries))
                elif am == "queue" and ptype == P_QAMDATA:
                    self.queue_layout()
                    found = list(self.queue_page_records(page, pgno, 1, RECNO_LIMIT))
                else:
                    continue
            except UnsupportedFormatError:
                raise
            except ShelfmigrateError as exc:
                stats["pages_skipped"] += 1
                if len(stats["skipped"]) < 20:
                    stats["skipped"].append(str(exc))
                continue
            stats["pages_read"] += 1
            yield from found


# --------------------------------------------------------------------------- the reader


@dataclass
class SubDatabase:
    """One entry of the master database."""

    name: str
    raw_name: bytes
    meta: MetaPage


class BerkeleyDBReader(Reader):
    """Reads a Berkeley DB 3.1-18.x hash, btree, recno or queue database (a shelf when values are pickles)."""

    format_name = "bdb-hash"
    # Python 2 dbhash/bsddb shelves store pickles; other applications raw bytes: sniff per value
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions | None = None):
        super().__init__(path, options)
        if not os.path.exists(self.path):
            self.path = _detect.resolve_paths(self.path).main
        self._fd: int | None = None
        self._walkers: list[_Walker] = []
        detection = self._sniff()
        self.format_name = detection.format  # type: ignore[misc]
        self.warnings: list[str] = list(detection.details.get("warnings", []))
        try:
            pages = self._open()
            # page 0 through the page reader: range check (a torn file may lack it) and checksum
            self.meta = parse_meta(pages.read(0, "the file header"), pages.order, 0, self.path)
            self.extent_files: list[str] = []
            if self.meta.access_method == "queue" and self.meta.am["page_ext"]:
                self._check_extents(pages)
            self.subdatabases = self._list_subdatabases() if self.meta.is_master else []
            self.selected = self._select_subdatabase()
            if self.options.salvage and self.subdatabases:
                raise UnsupportedFormatError(
                    self.path,
                    "--salvage reads single-database files only: in a file with subdatabases the pages of all "
                    "of them are interleaved and a page does not say which one it belongs to; read it without "
                    "--salvage (or with `db_dump -r` per subdatabase)",
                )
            if self.options.salvage and self.meta.access_method == "recno":
                raise UnsupportedFormatError(
                    self.path,
                    "--salvage cannot read a recno database: record numbers come from the tree structure "
                    "that salvage does not trust; read it without --salvage",
                )
        except BaseException:
            self.close()
            raise
        #: salvage counters, shared with details()["salvage"] so a report made earlier sees them fill in
        self.stats: dict[str, Any] = {"pages_read": 0, "pages_skipped": 0, "skipped": []}
        self._details: dict[str, Any] | None = None

    # ---------------------------------------------------------------- opening

    def _sniff(self) -> _detect.Detection:
        detection, hints = _detect.sniff_berkeley_db(self.path)
        if detection is None:
            why = "; ".join(hints) if hints else "no Berkeley DB magic at offset 12"
            raise FormatError(self.path, f"not a Berkeley DB 3.1+ database: {why}")
        if detection.refusal:
            raise UnsupportedFormatError(self.path, f"{detection.description}: {detection.refusal}")
        return detection

    def _open(self) -> PageFile:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(self.path, exc.strerror or str(exc)) from None
        self._fd = fd
        size = os.fstat(fd).st_size
        head = os.pread(fd, 32, 0)
        if len(head) < 32:
            raise FormatError(self.path, "too short for a Berkeley DB meta page")
        order = "<"
        for candidate in "<>":
            if struct.unpack_from(candidate + "I", head, META_MAGIC)[0] in (
                MAGIC_HASH,
                MAGIC_BTREE,
                MAGIC_QUEUE,
            ):
                order = candidate
                break
        page_size = struct.unpack_from(order + "I", head, 20)[0]
        if not (page_size & (page_size - 1) == 0 and MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE):
            raise FormatError(
                self.path, f"page size {page_size} is not a power of two in 512..65536"
            )
        checksummed = bool(head[26] & DBMETA_CHKSUM)
        pages = PageFile(
            self.path, fd, size, page_size, order, checksummed, self.options.verify_checksums
        )
        self._pages = pages
        return pages

    def _check_extents(self, pages: PageFile) -> None:
        extents = QueueExtents(pages, self.meta.am["page_ext"])
        self.extent_files = [extents.files[n] for n in sorted(extents.files)]
        where = f"__dbq.{os.path.basename(self.path)}.N"
        if not extents.files and self.meta.am["first_recno"] != self.meta.am["cur_recno"]:
            raise SourceError(
                self.path,
                f"Berkeley DB queue with extent files (page_ext={self.meta.am['page_ext']}): its records "
                f"live in {where} files next to it, and none was found; copy them next to the file",
            )
        self.warnings = [w for w in self.warnings if "extent files" not in w]

    def _walker(self, pages: PageFile, meta: MetaPage, subdb: str | None) -> _Walker:
        walker = _Walker(pages, meta, subdb)
        if meta.access_method == "queue" and meta.am["page_ext"]:
            walker.extents = QueueExtents(pages, meta.am["page_ext"])
        self._walkers.append(walker)
        return walker

    def _pagefile(self) -> PageFile:
        if self._fd is None:
            self._open()
        return self._pages

    def _list_subdatabases(self) -> list[SubDatabase]:
        pages = self._pages
        walker = _Walker(pages, self.meta, None)
        found = []
        for record in walker.walk_btree():
            raw_name = record.key if isinstance(record.key, bytes) else record.key.encode("utf-8")
            # a name that is not UTF-8 is shown by its latin-1 text (every byte maps to one character)
            name = record.key if isinstance(record.key, str) else raw_name.decode("latin-1")
            value = record.raw or b""
            if len(value) != 4:
                raise pages.error(
                    0, f"master database entry {name!r} holds {len(value)} bytes, not a page number"
                )
            (meta_pgno,) = _BE_U32.unpack(value)  # always big-endian (§1.10)
            if meta_pgno == 0:
                raise pages.error(0, f"subdatabase {name!r} names page 0 as its meta page")
            meta = parse_meta(
                pages.read(meta_pgno, f"subdatabase {name!r}"), pages.order, meta_pgno, self.path
            )
            if meta.access_method == "queue" or meta.page_size != pages.page_size:
                raise pages.error(meta_pgno, f"subdatabase {name!r} has an impossible meta page")
            found.append(SubDatabase(name, raw_name, meta))
        return found

    def _select_subdatabase(self) -> SubDatabase | None:
        wanted = self.options.subdb
        if wanted is None:
            return None
        if not self.subdatabases:
            raise UsageError(f"--subdb {wanted!r}: {self.path} has no subdatabases")
        for sub in self.subdatabases:
            if sub.name == wanted:
                return sub
        names = ", ".join(repr(s.name) for s in self.subdatabases)
        raise UsageError(
            f"--subdb {wanted!r}: {self.path} has no such subdatabase (it has {names})"
        )

    # ---------------------------------------------------------------- records

    def records(self) -> Iterator[Record]:
        pages = self._pagefile()
        try:
            if self.options.salvage:
                yield from self._walker(pages, self.meta, None).salvage_scan(self.stats)
            elif self.selected is not None:
                yield from self._walk(pages, self.selected.meta, None)
            elif self.subdatabases:
                for sub in self.subdatabases:
                    yield from self._walk(pages, sub.meta, sub.name)
            else:
                yield from self._walk(pages, self.meta, None)
        finally:
            self.close()

    def _walk(self, pages: PageFile, meta: MetaPage, subdb: str | None) -> Iterator[Record]:
        walker = self._walker(pages, meta, subdb)
        am = meta.access_method
        if am == "hash":
            return walker.walk_hash()
        if am == "btree":
            return walker.walk_btree()
        if am == "recno":
            return walker.walk_recno()
        return walker.walk_queue()

    # ---------------------------------------------------------------- facts

    def count(self) -> int | None:
        # the meta page's counts are cached and may be stale: not exact, so not returned
        return None

    def details(self) -> dict[str, Any]:
        """Facts about the file. The dict is live: salvage counts fill in while records are read."""
        if self._details is None:
            meta = self.meta
            pages = self._pages
            info: dict[str, Any] = {
                "format": self.format_name,
                "path": self.path,
                "access_method": meta.access_method,
                "version": meta.version,
                "byte_order": "little" if pages.order == "<" else "big",
                "page_size": pages.page_size,
                "pages": pages.npages,
                "file_size": pages.file_size,
                "checksum": pages.checksummed,
                "checksums_verified": pages.verify,
                "duplicates": meta.duplicates,
                "dupsort": meta.dupsort,
                "cached_counts": _cached_counts(meta),
                "mode": "salvage" if self.options.salvage else "walk",
            }
            if self.subdatabases:
                info["subdatabases"] = [
                    {
                        "name": s.name,
                        "access_method": s.meta.access_method,
                        "meta_page": s.meta.pgno,
                        "duplicates": s.meta.duplicates,
                        "cached_counts": _cached_counts(s.meta),
                    }
                    for s in self.subdatabases
                ]
                if self.selected is not None:
                    info["subdb"] = self.selected.name
            if self.extent_files:
                info["extent_files"] = self.extent_files
            if meta.access_method in ("recno", "queue"):
                info["re_len"] = meta.am["re_len"]
                info["fixed_length"] = meta.access_method == "queue" or bool(
                    meta.flags & BTM_FIXEDLEN
                )
            if self.options.salvage:
                info["salvage"] = self.stats
                info["salvage_note"] = (
                    "page-by-page scan (FORMATS.md §1.9.3): damaged pages are skipped and counted; "
                    "records come in page order, and a page orphaned by a crash may return stale records"
                )
            info["warnings"] = self.warnings
            self._details = info
        return self._details

    def close(self) -> None:
        for walker in getattr(self, "_walkers", ()):
            if walker.extents is not None:
                walker.extents.close()
        self._walkers = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cached_counts(meta: MetaPage) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "key_count": meta.key_count,
        "record_count": meta.record_count,
        "note": "cached in the meta page; may be stale (often 0 unless DB->stat ran)",
    }
    if meta.access_method == "hash":
        counts["nelem"] = meta.am["nelem"]
    return counts
