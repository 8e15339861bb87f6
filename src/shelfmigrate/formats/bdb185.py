"""Berkeley DB 1.85 / 1.86 (``dbopen()``) hash, btree and recno files, read-only.

These are the files of glibc's libdb1, old BSD libcs, macOS/BSD ``dbm_open()``
(``NAME.db``) and Python 2's ``bsddb185`` (FORMATS.md §2).  Nothing here ever calls
the hash function: pairs are enumerated by walking the structure the library wrote.

* **Hash** (version 2; 1 is accepted): the 260-byte header is always big-endian; the
  u16 words at the start of every page follow ``lorder``.  Buckets ``0 .. max_bucket``
  are walked in order, each along its chain of overflow pages, which is the order of
  the library's own ``seq()``.  Big pairs (key and value spread over overflow pages)
  are reassembled.  Pages are never scanned sequentially: bucket, overflow and bitmap
  pages look alike.
* **Btree / recno** (version 3): descend from the root (page 1) to the leftmost leaf and
  follow ``nextpg``; freed pages keep stale leaf entries, so they are never scanned
  either.  Overflow keys/values are read from their page chains.  Files written with a
  byte order opposite to the writing host carry a libdb1 bug in items with an overflow
  value (P_BIGDATA) under a key that is not 4 bytes long; such items are repaired
  (``_undo_buggy_swaps``).  Recno pages of such files keep their index and items in
  the writer's order (the library swaps only their headers); the order is found per page.

Every page number, offset, length and chain is validated (visited sets stop loops);
structural damage is a :class:`FormatError` naming the file and page.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

from ..errors import FormatError, RecordError, SourceError, UnsupportedFormatError
from ..records import NOT_DECODED, Record, key_from_bytes
from ._pages import PageBitmap, is_power_of_two
from .base import Reader

HASH_MAGIC = 0x00061561
BTREE_MAGIC = 0x00053162
HASH_MAGIC_BYTES = b"\x00\x06\x15\x61"

# ----------------------------------------------------------------------------- hash

#: magic, version, lorder, bsize, bshift, dsize, ssize, sshift, ovfl_point, last_freed,
#: max_bucket, high_mask, low_mask, ffactor, nkeys, hdrpages, h_charkey (all u32be)
_HASH_HEADER = struct.Struct(">17I")
_HASH_SPARES = struct.Struct(">32i")
_HASH_BITMAPS = struct.Struct(">32H")
HASH_HEADER_SIZE = 260
HASH_SPARES_OFFSET = 68
HASH_BITMAPS_OFFSET = 196
HASH_MIN_BSIZE = 64  # smaller pages cannot hold the header words of a big pair
HASH_MAX_BSIZE = 65536

# Second word of an index pair: what the first word means.
OVFLPAGE = 0  # first word: overflow address of the next page of the chain
PARTIAL_KEY = 1  # a big pair's key continues on the next page
FULL_KEY = 2  # the key (or data) ends here; data starts/continues on the next page
FULL_KEY_DATA = 3  # the key ends here and the data starts (or the data ends) here
REAL_KEY = 4  # anything >= 4: an ordinary pair, the word is its data offset

SPLIT_SHIFT = 11  # overflow address = split point << 11 | page within the split
SPLIT_PAGE_MASK = 0x7FF
LORDER_LITTLE = 1234
LORDER_BIG = 4321

# ----------------------------------------------------------------------------- btree

#: magic, version, psize, free, nrecs, flags
_BTREE_META = {o: struct.Struct(o + "6I") for o in "<>"}
BTREE_VERSION = 3
BTREE_META_SIZE = 24
#: pgno, prevpg, nextpg, flags (u32), lower, upper (u16)
_PAGE_HEADER = {o: struct.Struct(o + "4I2H") for o in "<>"}
PAGE_HEADER_SIZE = 20  # BTDATAOFF; the linp[] index array starts here
P_BINTERNAL = 0x01
P_BLEAF = 0x02
P_OVERFLOW = 0x04
P_RINTERNAL = 0x08
P_RLEAF = 0x10
P_TYPE = 0x1F
P_BIGDATA = 0x01
P_BIGKEY = 0x02
B_NODUPS = 0x20
R_RECNO = 0x80
ROOT_PAGE = 1
_U32 = {o: struct.Struct(o + "I") for o in "<>"}
_U32_PAIR = {o: struct.Struct(o + "II") for o in "<>"}
#: BLEAF item: ksize, dsize (u32), flags (u8), then key and data bytes
_BLEAF = {o: struct.Struct(o + "IIB") for o in "<>"}
BLEAF_HEADER_SIZE = 9
#: RLEAF item: dsize (u32), flags (u8), then the data
_RLEAF = {o: struct.Struct(o + "IB") for o in "<>"}
RLEAF_HEADER_SIZE = 5
#: BINTERNAL/RINTERNAL item: (ksize | nrecs) u32, child pgno u32
INTERNAL_HEADER_SIZE = 8
OVERFLOW_REF_SIZE = 8  # {pgno u32, size u32} replacing an overflow key or value
_OTHER_ORDER = {"<": ">", ">": "<"}
_ORDER_NAME = {"<": "little", ">": "big"}


class BerkeleyDB185Reader(Reader):
    """Reads a Berkeley DB 1.85/1.86 hash, btree or recno file (a shelf when values are pickles)."""

    format_name = "bdb185"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        if self.options.subdb is not None:
            raise UnsupportedFormatError(
                self.path, "Berkeley DB 1.85 files hold one database; they have no subdatabases"
            )
        try:
            self._fd: int | None = os.open(self.path, os.O_RDONLY)
            self.file_size = os.fstat(self._fd).st_size
            head = os.pread(self._fd, HASH_HEADER_SIZE, 0)
        except OSError as exc:
            self.close()
            raise SourceError(self.path, exc.strerror or str(exc)) from None
        self.warnings: list[str] = []
        self._pairs_counted: int | None = None
        try:
            if head[:4] == HASH_MAGIC_BYTES:
                self.format_name = "bdb185-hash"
                self._parse_hash_header(head)
            elif len(head) >= 4 and BTREE_MAGIC in (
                _U32["<"].unpack_from(head)[0],
                _U32[">"].unpack_from(head)[0],
            ):
                self.format_name = "bdb185-btree"
                self._parse_btree_meta(head)
            else:
                raise FormatError(self.path, "not a Berkeley DB 1.85 file (no magic at offset 0)")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ shared

    def _error(self, message: str) -> FormatError:
        return FormatError(self.path, message)

    def _read_page(self, pgno: int) -> bytes:
        """Page ``pgno`` whole; a FormatError if it lies (partly) beyond the end of the file."""
        size = self.page_size
        offset = pgno * size
        if offset + size > self.file_size:
            raise self._error(
                f"page {pgno} lies beyond the end of the file ({self.file_size} bytes, "
                f"page size {size}): truncated or damaged"
            )
        if self._fd is None:
            raise SourceError(self.path, "the reader is closed")
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as exc:
            raise SourceError(self.path, exc.strerror or str(exc), offset=offset) from None
        if len(data) != size:
            raise self._error(f"page {pgno}: short read (file changed while reading?)")
        return data

    def _open(self) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise SourceError(self.path, exc.strerror or str(exc)) from None

    def records(self) -> Iterator[Record]:
        self._open()
        try:
            if self.format_name == "bdb185-hash":
                yield from self._hash_records()
            else:
                yield from self._btree_records()
        finally:
            self.close()

    def count(self) -> int | None:
        """Hash: the header's ``nkeys`` when a walk of the chains confirms it; else None."""
        if self.format_name != "bdb185-hash":
            return None
        if self._pairs_counted is None:
            self._open()
            total = 0
            try:
                for _ in self._hash_walk(collect=False):
                    total += 1
            except FormatError:
                return None  # records() reports the damage where it is met
            self._note_pair_count(total)
        return self.nkeys if self._pairs_counted == self.nkeys else None

    def details(self) -> dict[str, Any]:
        # ``warnings`` is the reader's own list: a count mismatch found while the records
        # are read later still shows in a report that took this dict before reading.
        return {
            "format": self.format_name,
            "path": self.path,
            **self._header_details,
            "file_size": self.file_size,
            "warnings": self.warnings,
        }

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ hash header

    def _parse_hash_header(self, head: bytes) -> None:
        if len(head) < HASH_HEADER_SIZE:
            raise self._error(
                f"DB 1.85 hash header is {HASH_HEADER_SIZE} bytes but the file has {len(head)}"
            )
        (_, version, lorder, bsize, bshift, _dsize, _ssize, _sshift, ovfl_point, _last_freed,
         max_bucket, high_mask, low_mask, ffactor, nkeys, hdrpages, _charkey) = (
            _HASH_HEADER.unpack_from(head)
        )  # fmt: skip
        if version not in (1, 2):
            raise self._error(f"header: unknown DB 1.85 hash version {version}")
        if lorder not in (LORDER_LITTLE, LORDER_BIG):
            raise self._error(f"header: byte order (lorder) {lorder} is neither 1234 nor 4321")
        if not (is_power_of_two(bsize) and HASH_MIN_BSIZE <= bsize <= HASH_MAX_BSIZE):
            raise self._error(f"header: bucket size {bsize} is not a power of two in 64..65536")
        if 1 << bshift != bsize:
            raise self._error(f"header: bucket shift {bshift} does not match bucket size {bsize}")
        self.page_size = bsize
        self.npages = self.file_size // bsize
        if not 1 <= hdrpages <= self.npages or hdrpages * bsize < HASH_HEADER_SIZE:
            raise self._error(
                f"header: {hdrpages} header pages do not fit a {bsize}-byte page size"
            )
        # Every bucket owns its own page, so there are fewer buckets than pages.
        if max_bucket >= self.npages:
            raise self._error(
                f"header: max_bucket {max_bucket} is beyond the {self.npages} pages of the file"
            )
        spares = _HASH_SPARES.unpack_from(head, HASH_SPARES_OFFSET)
        for i in range(max_bucket.bit_length()):
            if not 0 <= spares[i] <= self.npages:
                raise self._error(f"header: spares[{i}] = {spares[i]} is out of range")
        self.lorder = lorder
        self.nkeys = nkeys
        self.max_bucket = max_bucket
        self.hdrpages = hdrpages
        self.spares = spares
        self._word_order = "<" if lorder == LORDER_LITTLE else ">"
        bitmaps = [a for a in _HASH_BITMAPS.unpack_from(head, HASH_BITMAPS_OFFSET) if a]
        self._header_details = {
            "access_method": "hash",
            "version": version,
            "header_byte_order": "big",
            "lorder": lorder,
            "byte_order": "little" if lorder == LORDER_LITTLE else "big",
            "page_size": bsize,
            "nkeys": nkeys,
            "max_bucket": max_bucket,
            "high_mask": high_mask,
            "low_mask": low_mask,
            "ffactor": ffactor,
            "ovfl_point": ovfl_point,
            "hdrpages": hdrpages,
            "bitmap_pages": len(bitmaps),
            "pages": self.npages,
        }
        if self.file_size % bsize:
            self.warnings.append(
                f"file size {self.file_size} is not a multiple of the bucket size {bsize}"
            )

    def _bucket_page(self, bucket: int) -> int:
        if bucket == 0:
            return self.hdrpages
        return bucket + self.hdrpages + self.spares[bucket.bit_length() - 1]

    def _overflow_page(self, addr: int, where: str) -> int:
        split, page_in_split = addr >> SPLIT_SHIFT, addr & SPLIT_PAGE_MASK
        if page_in_split == 0:
            raise self._error(f"{where}: overflow address {addr:#06x} names no page")
        page = self._bucket_page((1 << split) - 1) + page_in_split
        if page >= self.npages:
            raise self._error(
                f"{where}: overflow address {addr:#06x} is page {page}, beyond the "
                f"{self.npages} pages of the file"
            )
        return page

    def _hash_page(self, pgno: int) -> tuple[bytes, tuple[int, ...]]:
        """A hash page and its words ``n, index[1..n], free space, lowest offset``."""
        page = self._read_page(pgno)
        order = self._word_order
        n = struct.unpack_from(order + "H", page)[0]
        if n & 1 or (n + 3) * 2 > self.page_size:
            raise self._error(f"page {pgno}: index count {n} is impossible")
        return page, struct.unpack_from(f"{order}{n + 3}H", page)

    # ------------------------------------------------------------------ hash walk

    def _hash_records(self) -> Iterator[Record]:
        total = 0
        for key, data in self._hash_walk(collect=True):
            total += 1
            yield Record(key_from_bytes(key), NOT_DECODED, data)
        self._note_pair_count(total)

    def _note_pair_count(self, total: int) -> None:
        if self._pairs_counted is None:
            self._pairs_counted = total
            self._header_details["pairs_found"] = total
            if total != self.nkeys:
                self.warnings.append(
                    f"the header counts {self.nkeys} pairs (nkeys) but the buckets hold {total}"
                )

    def _hash_walk(self, collect: bool) -> Iterator[tuple[bytes, bytes]]:
        """Every pair, bucket by bucket along each chain (``collect=False``: no bytes)."""
        visited = PageBitmap(self.npages)
        bsize = self.page_size
        for bucket in range(self.max_bucket + 1):
            pgno = self._bucket_page(bucket)
            if pgno >= self.npages:
                raise self._error(
                    f"bucket {bucket} is page {pgno}, beyond the {self.npages} pages of the file"
                )
            while pgno:
                if not visited.add(pgno):
                    raise self._error(f"page {pgno} is reached twice (a loop in bucket {bucket})")
                page, words = self._hash_page(pgno)
                n = words[0]
                data_floor = (n + 3) * 2
                previous = bsize
                next_pgno = 0
                for i in range(1, n, 2):
                    first, second = words[i], words[i + 1]
                    if second >= REAL_KEY:
                        if not data_floor <= second <= first <= previous:
                            raise self._error(
                                f"page {pgno}: pair {i // 2} has offsets {first}/{second} "
                                f"outside {data_floor}..{previous}"
                            )
                        if collect:
                            yield page[first:previous], page[second:first]
                        else:
                            yield b"", b""
                        previous = second
                    elif second == OVFLPAGE:
                        if i + 1 != n:
                            raise self._error(
                                f"page {pgno}: overflow link in pair {i // 2} is not the last"
                            )
                        next_pgno = self._overflow_page(first, f"page {pgno}")
                    else:
                        if i != 1:
                            raise self._error(
                                f"page {pgno}: a big pair starts at pair {i // 2}, not 0"
                            )
                        key, data, next_pgno = self._big_pair(pgno, page, words, visited, collect)
                        yield key, data
                        break
                pgno = next_pgno

    def _next_big_page(
        self, pgno: int, words: tuple[int, ...], visited: PageBitmap
    ) -> tuple[int, bytes, tuple[int, ...]]:
        n = words[0]
        if n < 4:
            raise self._error(f"page {pgno}: a big pair continues but the page has no link")
        nxt = self._overflow_page(words[n - 1], f"page {pgno}")
        if not visited.add(nxt):
            raise self._error(f"page {nxt} is reached twice (a loop after page {pgno})")
        page, words = self._hash_page(nxt)
        if words[0] < 2 or not PARTIAL_KEY <= words[2] <= FULL_KEY_DATA:
            raise self._error(f"page {nxt}: expected the next piece of a big pair from page {pgno}")
        return nxt, page, words

    def _big_piece(self, pgno: int, page: bytes, words: tuple[int, ...], collect: bool) -> bytes:
        off = words[1]
        if not (words[0] + 3) * 2 <= off <= self.page_size:
            raise self._error(f"page {pgno}: big pair piece at offset {off} is out of range")
        return page[off:] if collect else b""

    def _big_pair(
        self,
        pgno: int,
        page: bytes,
        words: tuple[int, ...],
        visited: PageBitmap,
        collect: bool,
    ) -> tuple[bytes, bytes, int]:
        """Reassemble the big pair starting on ``pgno``: (key, data, next chain page or 0)."""
        key_parts: list[bytes] = []
        data_parts: list[bytes] = []
        # The key: PARTIAL_KEY pages, then a FULL_KEY or FULL_KEY_DATA page.
        while True:
            if words[0] < 2:
                raise self._error(f"page {pgno}: big pair page has no index words")
            tag = words[2]
            key_parts.append(self._big_piece(pgno, page, words, collect))
            if tag == PARTIAL_KEY:
                pgno, page, words = self._next_big_page(pgno, words, visited)
                continue
            break
        data_done = False
        if tag == FULL_KEY_DATA:
            # Data starts on the key's last page, below the key; a free-space word of 0
            # means it continues on the next page (the library keeps >= 1 free byte else).
            n = words[0]
            if n < 4:
                raise self._error(f"page {pgno}: big pair has no data offset")
            start, end = words[n], words[1]
            if not (n + 3) * 2 <= start <= end:
                raise self._error(f"page {pgno}: big pair data offsets {start}/{end} are invalid")
            if collect:
                data_parts.append(page[start:end])
            data_done = words[n + 1] != 0
        elif tag != FULL_KEY:
            raise self._error(f"page {pgno}: unknown big pair tag {tag}")
        while not data_done:
            pgno, page, words = self._next_big_page(pgno, words, visited)
            data_parts.append(self._big_piece(pgno, page, words, collect))
            tag = words[2]
            if tag == FULL_KEY_DATA:
                data_done = True
            elif tag != FULL_KEY:
                raise self._error(f"page {pgno}: unexpected tag {tag} in big pair data")
        next_pgno = 0
        if words[0] > 2:
            next_pgno = self._overflow_page(words[3], f"page {pgno}")
        return b"".join(key_parts), b"".join(data_parts), next_pgno

    # ------------------------------------------------------------------ btree meta

    def _parse_btree_meta(self, head: bytes) -> None:
        if len(head) < BTREE_META_SIZE:
            raise self._error(f"btree meta page is truncated ({len(head)} bytes)")
        order = "<" if _U32["<"].unpack_from(head)[0] == BTREE_MAGIC else ">"
        _, version, psize, free, nrecs, flags = _BTREE_META[order].unpack_from(head)
        if version != BTREE_VERSION:
            raise self._error(f"meta page: unknown DB 1.85 btree version {version}")
        if not (is_power_of_two(psize) and 128 <= psize <= 65536):
            raise self._error(f"meta page: page size {psize} is not a power of two in 128..65536")
        self.page_size = psize
        self.npages = self.file_size // psize
        if self.npages < 2:
            raise self._error(
                f"file of {self.file_size} bytes has no root page (page size {psize})"
            )
        self.order = order
        self.recno = bool(flags & R_RECNO)
        self.btree_flags = flags
        self._header_details = {
            "access_method": "recno" if self.recno else "btree",
            "version": version,
            "byte_order": _ORDER_NAME[order],
            "page_size": psize,
            "flags": flags,
            "duplicates": not flags & B_NODUPS,
            "free_page": free,
            "pages": self.npages,
            "repaired_cross_endian_items": 0,
        }
        if self.recno:
            self._header_details["nrecs"] = nrecs
        if self.file_size % psize:
            self.warnings.append(
                f"file size {self.file_size} is not a multiple of the page size {psize}"
            )
        self._repaired = 0
        self._cross_endian = False
        # bt_ovflsize with the default minkeypage of 2: a key + value larger than this
        # goes to overflow pages (psize - BTDATAOFF) / 2 - (index word + NBLEAFDBT(0, 0)).
        self._default_overflow_threshold = (psize - PAGE_HEADER_SIZE) // 2 - (2 + 12)

    def _btree_page(self, pgno: int, order: str) -> tuple[bytes, int, int, int, int, int]:
        """A btree page and its header: (page, prevpg, nextpg, type, lower, upper)."""
        if not ROOT_PAGE <= pgno < self.npages:
            raise self._error(
                f"page {pgno} is out of range (the file has pages 1..{self.npages - 1})"
            )
        page = self._read_page(pgno)
        own, prevpg, nextpg, flags, lower, upper = _PAGE_HEADER[order].unpack_from(page)
        if own != pgno:
            raise self._error(f"page {pgno}: its header calls it page {own}")
        return page, prevpg, nextpg, flags & P_TYPE, lower, upper

    def _index(self, pgno: int, page: bytes, lower: int, upper: int, order: str) -> tuple[int, ...]:
        if (
            not PAGE_HEADER_SIZE <= lower <= upper <= self.page_size
            or (lower - PAGE_HEADER_SIZE) & 1
        ):
            raise self._error(f"page {pgno}: index bounds lower={lower} upper={upper} are invalid")
        count = (lower - PAGE_HEADER_SIZE) // 2
        return struct.unpack_from(f"{order}{count}H", page, PAGE_HEADER_SIZE)

    # ------------------------------------------------------------------ btree walk

    def _btree_records(self) -> Iterator[Record]:
        internal, leaf = (P_RINTERNAL, P_RLEAF) if self.recno else (P_BINTERNAL, P_BLEAF)
        order = self.order
        pgno = ROOT_PAGE
        seen = PageBitmap(self.npages)
        # Descend along the first entry of each internal page to the leftmost leaf.
        while True:
            page, _, _, ptype, lower, upper = self._btree_page(pgno, order)
            if not seen.add(pgno):
                raise self._error(f"page {pgno} is reached twice while descending the tree")
            if ptype == leaf:
                break
            if ptype != internal:
                raise self._error(
                    f"page {pgno}: page type {ptype:#x} where the tree expects a "
                    f"{'recno' if self.recno else 'btree'} internal or leaf page"
                )
            item_order = order
            if self.recno:
                item_order = self._recno_item_order(pgno, page, lower, upper, internal=True)
            index = self._index(pgno, page, lower, upper, item_order)
            if not index or not upper <= index[0] <= self.page_size - INTERNAL_HEADER_SIZE:
                raise self._error(f"page {pgno}: internal page has no valid first entry")
            pgno = _U32[item_order].unpack_from(page, index[0] + 4)[0]
        # Walk the leaf chain.
        leaves = PageBitmap(self.npages)
        recno = 0
        previous = 0
        while True:
            if not leaves.add(pgno):
                raise self._error(f"leaf page {pgno} is reached twice (a loop in the leaf chain)")
            if self.recno:
                item_order = self._recno_item_order(pgno, page, lower, upper, internal=False)
                index = self._index(pgno, page, lower, upper, item_order)
                for off in index:
                    recno += 1
                    yield self._recno_item(page, off, item_order, recno)
            else:
                index = self._index(pgno, page, lower, upper, order)
                yield from self._bleaf_items(pgno, page, index, upper)
            nextpg = _PAGE_HEADER[order].unpack_from(page)[2]
            if not nextpg:
                break
            previous = pgno
            page, prevpg, _, ptype, lower, upper = self._btree_page(nextpg, order)
            pgno = nextpg
            if ptype != leaf:
                raise self._error(f"page {pgno}: page type {ptype:#x} in the leaf chain")
            if prevpg != previous:
                raise self._error(
                    f"page {pgno}: its previous-page link is {prevpg}, but page {previous} "
                    "links to it"
                )

    def _bleaf_items(
        self, pgno: int, page: bytes, index: tuple[int, ...], upper: int
    ) -> Iterator[Record]:
        order = self.order
        unpack_item = _BLEAF[order].unpack_from
        psize = self.page_size
        host_page: bytes | None = None
        lost: frozenset[int] = frozenset()
        for position, off in enumerate(index):
            if not upper <= off <= psize - BLEAF_HEADER_SIZE:
                raise self._error(f"page {pgno}: item {position} at offset {off} is out of range")
            ksize, dsize, flags = unpack_item(page, off)
            key_at = off + BLEAF_HEADER_SIZE
            if key_at + ksize + dsize > psize:
                raise self._error(
                    f"page {pgno}: item {position} (key {ksize} + data {dsize} bytes at "
                    f"offset {off}) runs past the end of the page"
                )
            if flags & P_BIGDATA and not flags & P_BIGKEY and ksize != 4:
                # libdb1's cross-endian bug may have moved this item's bytes.
                stored = self._overflow_ref(page, key_at + ksize, dsize, order)
                if (
                    stored is None
                    or self._cross_endian
                    or ksize + stored[1] <= self._default_overflow_threshold
                ):
                    if host_page is None:
                        host_page, lost = _undo_buggy_swaps(page, index)
                    repaired = self._repaired_ref(host_page, lost, off)
                    if repaired is not None and self._prefer_repair(stored, repaired[1], ksize):
                        key, ref = repaired
                        yield self._overflow_record(key_from_bytes(key), ref)
                        continue
            try:
                key = self._item_bytes(page, key_at, ksize, flags & P_BIGKEY, order, "key")
            except RecordError as error:
                yield Record(None, error=error)
                continue
            try:
                data = self._item_bytes(
                    page, key_at + ksize, dsize, flags & P_BIGDATA, order, "value"
                )
            except RecordError as error:
                yield Record(key_from_bytes(key), error=error.with_key(key_from_bytes(key)))
                continue
            yield Record(key_from_bytes(key), NOT_DECODED, data)

    def _repaired_ref(
        self, host_page: bytes, lost: frozenset[int], off: int
    ) -> tuple[bytes, tuple[int, int]] | None:
        """Key and overflow reference of a P_BIGDATA item read as its writer had it."""
        writer = _OTHER_ORDER[self.order]
        ksize, dsize, _ = _BLEAF[writer].unpack_from(host_page, off)
        key_at = off + BLEAF_HEADER_SIZE
        ref_at = key_at + ksize
        if ref_at + dsize > self.page_size:
            return None
        key = host_page[key_at:ref_at]
        lost_here = [p for p in lost if key_at <= p < ref_at + dsize]
        if not lost_here:
            ref = self._overflow_ref(host_page, ref_at, dsize, writer)
            return None if ref is None else (key, ref)
        # One byte of the value's size went outside the page: find it from the length of
        # the overflow chain (and, if need be, from the size above which a value goes to
        # overflow pages with the default parameters), when one possibility remains.
        where = lost_here[0] - (ref_at + 4)
        if len(lost_here) != 1 or dsize != OVERFLOW_REF_SIZE or not 0 <= where < 4:
            return None
        first, partial = _U32_PAIR[writer].unpack_from(host_page, ref_at)
        weight = 1 << 8 * (where if writer == "<" else 3 - where)
        partial &= ~(0xFF * weight)
        pages = self._overflow_chain_pages(first)
        if pages is None:
            return None
        per_page = self.page_size - PAGE_HEADER_SIZE
        sizes = [
            partial + b * weight
            for b in range(256)
            if (pages - 1) * per_page < partial + b * weight <= pages * per_page
        ]
        if len(sizes) > 1:  # the value went to overflow pages, so it was not small
            sizes = [n for n in sizes if ksize + n > self._default_overflow_threshold]
        return (key, (first, sizes[0])) if len(sizes) == 1 else None

    def _overflow_chain_pages(self, first: int) -> int | None:
        """How many pages the overflow chain from ``first`` has (None if it is broken)."""
        seen: set[int] = set()
        pgno = first
        while pgno:
            if pgno in seen or not ROOT_PAGE < pgno < self.npages:
                return None
            seen.add(pgno)
            own, _, nextpg, flags, _, _ = _PAGE_HEADER[self.order].unpack_from(
                self._read_page(pgno)
            )
            if own != pgno or flags & P_TYPE != P_OVERFLOW:
                return None
            pgno = nextpg
        return len(seen)

    def _prefer_repair(
        self, as_stored: tuple[int, int] | None, repaired: tuple[int, int], ksize: int
    ) -> bool:
        """Whether to read a P_BIGDATA item through the cross-endian repair.

        Only one reading may be plausible.  When both are (a key under 4 bytes leaves the
        reference half swapped), the one that would have gone to an overflow chain at all
        under the default btree parameters wins; once the file is known to be written
        cross-endian, the repair wins.
        """
        if as_stored is None:
            self._cross_endian = True
        elif not self._cross_endian:
            threshold = self._default_overflow_threshold
            stored_big = ksize + as_stored[1] > threshold
            if stored_big or ksize + repaired[1] <= threshold:
                return False
        self._repaired += 1
        self._header_details["repaired_cross_endian_items"] = self._repaired
        if self._repaired == 1:
            self.warnings.append(
                "repaired overflow-value items written cross-endian by libdb1 (FORMATS.md §2.2)"
            )
        return True

    def _overflow_record(self, key: Any, ref: tuple[int, int]) -> Record:
        try:
            return Record(key, NOT_DECODED, self._overflow_chain(*ref))
        except RecordError as error:
            return Record(key, error=error.with_key(key))

    def _item_bytes(
        self, page: bytes, at: int, size: int, big: int, order: str, what: str
    ) -> bytes:
        if not big:
            return page[at : at + size]
        ref = self._overflow_ref(page, at, size, order)
        if ref is None:
            raise RecordError(f"overflow {what} reference at page offset {at} is damaged")
        return self._overflow_chain(*ref)

    def _overflow_ref(self, page: bytes, at: int, size: int, order: str) -> tuple[int, int] | None:
        """The ``(first page, total size)`` of an overflow reference, if it is plausible."""
        if size != OVERFLOW_REF_SIZE:
            return None
        first, total = _U32_PAIR[order].unpack_from(page, at)
        if not ROOT_PAGE < first < self.npages or total > self.npages * (
            self.page_size - PAGE_HEADER_SIZE
        ):
            return None
        header = self._read_page(first)
        own, _, _, flags, _, _ = _PAGE_HEADER[self.order].unpack_from(header)
        if own != first or flags & P_TYPE != P_OVERFLOW:
            return None
        return first, total

    def _overflow_chain(self, first: int, total: int) -> bytes:
        """``total`` bytes from the overflow chain starting at page ``first``."""
        per_page = self.page_size - PAGE_HEADER_SIZE
        parts: list[bytes] = []
        remaining = total
        pgno = first
        seen: set[int] = set()
        while remaining > 0:
            if pgno in seen or not ROOT_PAGE < pgno < self.npages:
                raise RecordError(f"overflow chain from page {first} breaks at page {pgno}")
            seen.add(pgno)
            page = self._read_page(pgno)
            own, _, nextpg, flags, _, _ = _PAGE_HEADER[self.order].unpack_from(page)
            if own != pgno or flags & P_TYPE != P_OVERFLOW:
                raise RecordError(
                    f"overflow chain from page {first}: page {pgno} is not an overflow page"
                )
            take = min(per_page, remaining)
            parts.append(page[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + take])
            remaining -= take
            pgno = nextpg
        return b"".join(parts)

    # ------------------------------------------------------------------ recno

    def _recno_item_order(
        self, pgno: int, page: bytes, lower: int, upper: int, internal: bool
    ) -> str:
        """The byte order of a recno page's index and items.

        libdb1 swaps only the header of recno pages, so in a file whose ``lorder`` is
        not the writer's host order the rest stays in the writer's order.  The file
        order wins when both orders give a valid page.
        """
        for order in (self.order, _OTHER_ORDER[self.order]):
            if self._recno_page_fits(page, lower, upper, order, internal):
                return order
        raise self._error(f"page {pgno}: recno index and items fit neither byte order")

    def _recno_page_fits(
        self, page: bytes, lower: int, upper: int, order: str, internal: bool
    ) -> bool:
        psize = self.page_size
        if not PAGE_HEADER_SIZE <= lower <= upper <= psize or (lower - PAGE_HEADER_SIZE) & 1:
            return False
        index = struct.unpack_from(
            f"{order}{(lower - PAGE_HEADER_SIZE) // 2}H", page, PAGE_HEADER_SIZE
        )
        for off in index:
            if internal:
                if not upper <= off <= psize - INTERNAL_HEADER_SIZE:
                    return False
                continue
            if not upper <= off <= psize - RLEAF_HEADER_SIZE:
                return False
            dsize, _ = _RLEAF[order].unpack_from(page, off)
            if off + RLEAF_HEADER_SIZE + dsize > psize:
                return False
        return True

    def _recno_item(self, page: bytes, off: int, order: str, recno: int) -> Record:
        dsize, flags = _RLEAF[order].unpack_from(page, off)
        at = off + RLEAF_HEADER_SIZE
        try:
            data = self._item_bytes(page, at, dsize, flags & P_BIGDATA, order, "value")
        except RecordError as error:
            return Record(recno, error=error.with_key(recno))
        return Record(recno, NOT_DECODED, data)


def _undo_buggy_swaps(page: bytes, index: tuple[int, ...]) -> tuple[bytes, frozenset[int]]:
    """The leaf page as its cross-endian writer held it in memory (its own byte order).

    libdb1's page-out swaps, item by item, ``ksize`` and ``dsize``, the ``{pgno, size}``
    of an overflow key, and for an overflow value two u32 groups at the fixed item
    offsets 13 and 17 -- right only when the key is 4 bytes long.  Each swap reverses
    4 bytes in place, so replaying the same swaps in reverse order restores the page;
    for keys shorter than 4 bytes the misplaced swap reaches one byte into the next
    item, which the reverse order also undoes.  For such an item at the very end of the
    page that byte went outside the page and the byte it displaced is lost: the
    positions of lost bytes are returned with the page.
    """
    buf = bytearray(page)
    end = len(buf)
    lost: set[int] = set()

    def swap(at: int) -> None:
        if at + 4 <= end:
            buf[at : at + 4] = buf[at : at + 4][::-1]
        elif at < end:
            # Only end - at bytes of the reversed group landed in the page.
            inside = end - at
            group = page[at:end]
            for j in range(4):
                if 3 - j < inside:
                    if at + j < end:
                        buf[at + j] = group[3 - j]
                else:
                    lost.add(at + j)

    for off in reversed(index):
        if off + BLEAF_HEADER_SIZE > end:
            continue
        flags = buf[off + 8]
        if flags & P_BIGDATA:
            base = off + (17 if flags & P_BIGKEY else 13)
            swap(base + 4)
            swap(base)
        if flags & P_BIGKEY:
            swap(off + 13)
            swap(off + 9)
        swap(off + 4)
        swap(off)
    return bytes(buf), frozenset(lost)
