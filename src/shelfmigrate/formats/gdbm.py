"""GDBM files (``dbm.gnu``, ``gdbm``), read without libgdbm: FORMATS.md §3.

Every header variant is read: the "old" pre-1.9 magic 0x13579ace, the standard
0x13579acd (32-bit offsets) / 0x13579acf (64-bit offsets) and the 1.21+ "numsync"
0x13579ad0 / 0x13579ad1, in either byte order, with any block size, in the three
struct layouts that exist (ILP32, LP64, and the i386 large-file layout whose 8-byte
offsets are only 4-byte aligned).  The layout is told by the ``bucket_elems``
equation of §3.3, never guessed from the platform.

Enumeration walks the directory and reads each distinct bucket once (several
directory entries point at one bucket), emitting every slot whose hash value is not
-1.  Key and value lie together at the element's data pointer.  The avail lists
describe free space and are ignored; the hash function is never called.  Every
offset and length is checked against the file size before it is read, so a damaged
file gives a :class:`FormatError` naming the file and offset, never a hang or an
allocation larger than the file.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, RecordError, SourceError, UnsupportedFormatError
from ..options import ReadOptions
from ..records import NOT_DECODED, Record
from .base import Reader

MAGIC_OLD = 0x13579ACE
MAGIC_32 = 0x13579ACD
MAGIC_64 = 0x13579ACF
MAGIC_NUMSYNC_32 = 0x13579AD0
MAGIC_NUMSYNC_64 = 0x13579AD1

#: magic -> (variant name, offset width in bytes or None when the file does not say)
MAGICS: dict[int, tuple[str, int | None]] = {
    MAGIC_OLD: ("old", None),
    MAGIC_32: ("standard", 4),
    MAGIC_64: ("standard", 8),
    MAGIC_NUMSYNC_32: ("numsync", 4),
    MAGIC_NUMSYNC_64: ("numsync", 8),
}

EMPTY_SLOT = -1  # hash_value of an unused bucket element
NUMSYNC_EXTENSION_SIZE = 32  # version s32, numsync u32, pad[6] s32
AVAIL_BLOCK_HEADER = 16  # size s32, count s32, next_block (8 bytes in every layout)


@dataclass(frozen=True)
class Layout:
    """One C struct layout of GDBM's on-disk structures (FORMATS.md §3.2, §3.3)."""

    name: str
    offset_width: int  # bytes in an off_t
    header_size: int  # gdbm_file_header
    bucket_header: int  # hash_bucket without h_table (the H of the bucket_elems equation)
    count_at: int  # offset of the bucket's element count
    table_at: int  # offset of h_table[0]
    element_size: int
    element_format: str  # struct format of one element, without byte order


LAYOUTS: tuple[Layout, ...] = (
    # hash s32, key_start[4], data_pointer u32, key_size s32, data_size s32
    Layout("ILP32", 4, 32, 80, 56, 60, 20, "i4xIii"),
    # data_pointer is u64 at 8 in both 64-bit-offset layouts; the bucket header differs
    Layout("LP64", 8, 40, 136, 108, 112, 24, "i4xQii"),
    Layout("i386-LFS", 8, 40, 108, 80, 84, 24, "i4xQii"),
)

# Header fields after the magic: block_size, dir, dir_size, dir_bits, bucket_size,
# bucket_elems, next_block (offsets as wide as the layout's off_t).
_HEADER_FORMATS = {4: "iIiiiiI", 8: "iQiiiiQ"}

# Directory entries read at a time (keeps memory flat on huge directories).
DIRECTORY_CHUNK = 1 << 16
MAX_DIR_BITS = 40
MAX_WARNINGS = 20
# Dropping mapped pages keeps resident memory flat (the page cache keeps them).
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


@dataclass(frozen=True)
class GdbmHeader:
    """The parsed, validated file header."""

    magic: int
    variant: str
    byte_order: str  # "<" or ">"
    layout: Layout
    block_size: int
    dir_offset: int
    dir_size: int
    dir_bits: int
    bucket_size: int
    bucket_elems: int
    next_block: int
    file_size: int
    numsync_version: int | None = None
    numsync: int | None = None

    def details(self) -> dict[str, Any]:
        """JSON-able facts for ``inspect``."""
        info: dict[str, Any] = {
            "magic": f"0x{self.magic:08x}",
            "variant": self.variant,
            "byte_order": "little" if self.byte_order == "<" else "big",
            "offset_width": self.layout.offset_width * 8,
            "layout": self.layout.name,
            "block_size": self.block_size,
            "dir_offset": self.dir_offset,
            "dir_size": self.dir_size,
            "dir_bits": self.dir_bits,
            "dir_entries": 1 << self.dir_bits,
            "bucket_size": self.bucket_size,
            "bucket_elems": self.bucket_elems,
            "next_block": self.next_block,
            "file_size": self.file_size,
        }
        if self.variant == "numsync":
            info["numsync_version"] = self.numsync_version
            info["numsync"] = self.numsync
        return info


def _layout_problem(
    fields: tuple[int, ...], width: int, file_size: int, layout: Layout
) -> str | None:
    """Why ``fields`` are not a valid header for ``layout`` (None when they are)."""
    block_size, dir_off, dir_size, dir_bits, bucket_size, bucket_elems, _next = fields
    if block_size < layout.header_size + AVAIL_BLOCK_HEADER:
        return f"block size {block_size} is too small for a {layout.header_size}-byte header"
    if not 0 <= dir_bits <= MAX_DIR_BITS or dir_size != (1 << dir_bits) * width:
        return f"directory size {dir_size} does not match dir_bits {dir_bits}"
    if dir_off <= 0 or dir_off + dir_size > file_size:
        return (
            f"directory at offset {dir_off} ({dir_size} bytes) lies beyond the end "
            f"of the file ({file_size} bytes)"
        )
    if bucket_size <= layout.bucket_header or bucket_size > file_size:
        return f"bucket size {bucket_size} is implausible"
    expected = (bucket_size - layout.bucket_header) // layout.element_size + 1
    if bucket_elems != expected:
        return f"bucket_elems {bucket_elems} does not fit bucket size {bucket_size}"
    return None


def read_header(path: str, head: bytes, file_size: int) -> GdbmHeader:
    """Parse and validate the header at the start of ``head`` (the file's first bytes).

    Raises :class:`FormatError` when ``head`` does not start with a GDBM magic or the
    header fields do not describe a readable file (the message says which field).
    """
    if len(head) < 4:
        raise FormatError(path, f"file is {file_size} bytes, too short for a GDBM header", offset=0)
    for order in "<>":
        (magic,) = struct.unpack_from(order + "I", head, 0)
        if magic in MAGICS:
            break
    else:
        raise FormatError(path, f"no GDBM magic (first bytes {head[:4].hex(' ')})", offset=0)
    variant, width = MAGICS[magic]
    widths = (width,) if width else (8, 4)
    problems: list[str] = []
    found: list[tuple[Layout, tuple[int, ...]]] = []
    for w in widths:
        layouts = [lay for lay in LAYOUTS if lay.offset_width == w]
        if len(head) < layouts[0].header_size:
            problems.append(f"truncated header ({len(head)} bytes)")
            continue
        fields = struct.unpack_from(order + _HEADER_FORMATS[w], head, 4)
        for layout in layouts:
            problem = _layout_problem(fields, w, file_size, layout)
            if problem is None:
                found.append((layout, fields))
            else:
                problems.append(problem)
    if not found:
        # the problem of the first layout tried names the field that is wrong
        raise FormatError(path, f"bad GDBM header: {problems[0]}", offset=0)
    if len(found) > 1:
        raise UnsupportedFormatError(
            path,
            "old (pre-1.9) GDBM header fits both 32- and 64-bit offsets; cannot tell which",
            offset=0,
        )
    layout, fields = found[0]
    block_size, dir_off, dir_size, dir_bits, bucket_size, bucket_elems, next_block = fields
    numsync_version = numsync = None
    if variant == "numsync":
        at = layout.header_size
        if len(head) < at + 8:
            raise FormatError(path, "truncated numsync header extension", offset=at)
        numsync_version, numsync = struct.unpack_from(order + "iI", head, at)
    return GdbmHeader(
        magic=magic,
        variant=variant,
        byte_order=order,
        layout=layout,
        block_size=block_size,
        dir_offset=dir_off,
        dir_size=dir_size,
        dir_bits=dir_bits,
        bucket_size=bucket_size,
        bucket_elems=bucket_elems,
        next_block=next_block,
        file_size=file_size,
        numsync_version=numsync_version,
        numsync=numsync,
    )


def _os_error(path: str, exc: OSError) -> SourceError:
    return SourceError(path, exc.strerror or str(exc))


class GdbmFile:
    """An open GDBM file: header, directory walk and bucket reads, all bounds-checked.

    The file is read through one read-only ``mmap``: records lie scattered over the
    whole file (each bucket's data wherever free space was when it was stored), and
    a slice of a mapping costs a fraction of a ``pread`` call.  Every offset is
    checked against the size the header was validated with before it is sliced.
    Every ``RELEASE_EVERY`` buckets the pages already read are dropped from the
    mapping, so that resident memory stays flat, and the size is checked again: a
    file truncated under the reader would make a mapped read fault, so this narrows
    that window to a few buckets (GDBM itself maps its files the same way).
    """

    HEAD_READ = 4096
    #: buckets between two releases of the mapped pages (and checks of the file size)
    RELEASE_EVERY = 16

    def __init__(self, path: str):
        self.path = path
        self.mm: mmap.mmap | None = None
        try:
            self.fd: int | None = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise _os_error(path, exc) from None
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(path, "not a regular file")
            head = os.pread(self.fd, self.HEAD_READ, 0)
            self.header = read_header(path, head, st.st_size)
            self.mm = mmap.mmap(self.fd, st.st_size, access=mmap.ACCESS_READ)
        except OSError as exc:
            self.close()
            raise _os_error(path, exc) from None
        except BaseException:
            self.close()
            raise
        h = self.header
        order = h.byte_order
        self._dir_entry = struct.Struct(order + ("I" if h.layout.offset_width == 4 else "Q"))
        self._count = struct.Struct(order + "i")
        self._table = struct.Struct(order + h.layout.element_format * h.bucket_elems)
        #: problems that do not stop the walk (bucket counts that disagree ...)
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        """Keep a warning (at most ``MAX_WARNINGS``; the rest are only counted)."""
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        elif len(self.warnings) == MAX_WARNINGS:
            self.warnings.append("more warnings were left out")

    def close(self) -> None:
        """Close the mapping and the file (idempotent)."""
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _check_size(self) -> None:
        try:
            size = os.fstat(self.fd).st_size  # type: ignore[arg-type]
        except OSError as exc:
            raise _os_error(self.path, exc) from None
        if size < self.header.file_size:
            raise SourceError(
                self.path,
                f"the file shrank from {self.header.file_size} to {size} bytes while it was read",
            )

    def _release(self) -> None:
        """Check the file did not shrink, and drop the pages read so far from the mapping."""
        self._check_size()
        if _MADV_DONTNEED is not None and self.mm is not None:
            self.mm.madvise(_MADV_DONTNEED)

    def bucket_offsets(self) -> Iterator[int]:
        """Each distinct bucket offset, in directory order, checked to lie inside the file."""
        h = self.header
        entry = self._dir_entry
        width = entry.size
        seen: set[int] = set()
        last = -1
        limit = h.file_size - h.bucket_size
        total = 1 << h.dir_bits
        for first in range(0, total, DIRECTORY_CHUNK):
            n = min(DIRECTORY_CHUNK, total - first)
            chunk_at = h.dir_offset + first * width
            self._check_size()
            data = self.mm[chunk_at : chunk_at + n * width]  # type: ignore[index]
            for i, (offset,) in enumerate(entry.iter_unpack(data)):
                if offset == last:  # the common case: runs of entries share a bucket
                    continue
                last = offset
                if offset in seen:
                    continue
                if not 0 < offset <= limit:
                    raise FormatError(
                        self.path,
                        f"directory entry {first + i} points at offset {offset}, outside the "
                        f"file (a {h.bucket_size}-byte bucket must end by {h.file_size})",
                        offset=chunk_at + i * width,
                    )
                seen.add(offset)
                if len(seen) % self.RELEASE_EVERY == 0:
                    self._release()
                yield offset

    def stored_count(self) -> int:
        """Sum of the buckets' element counts (what gdbm_count would report)."""
        h = self.header
        total = 0
        for offset in self.bucket_offsets():
            (count,) = self._count.unpack_from(self.mm, offset + h.layout.count_at)  # type: ignore[arg-type]
            if not 0 <= count <= h.bucket_elems:
                raise FormatError(
                    self.path, f"bucket element count {count} is out of range", offset=offset
                )
            total += count
        return total

    def bucket_count(self) -> int:
        """Number of distinct buckets the directory references."""
        return sum(1 for _ in self.bucket_offsets())

    def records(self) -> Iterator[Record]:
        """Every live pair as a :class:`Record`, in directory order.

        A slot whose data would lie outside the file comes as a record carrying a
        :class:`RecordError` (its key is unknown); the walk goes on.
        """
        h = self.header
        mm = self.mm
        assert mm is not None
        file_size = h.file_size
        count_at, table_at = h.layout.count_at, h.layout.table_at
        element_size = h.layout.element_size
        unpack_table = self._table.unpack_from
        unpack_count = self._count.unpack_from
        not_decoded = NOT_DECODED
        for bucket_at in self.bucket_offsets():
            (count,) = unpack_count(mm, bucket_at + count_at)
            table = unpack_table(mm, bucket_at + table_at)
            live = 0
            slot = -1
            # the flat table is (hash, pointer, key_size, data_size) * bucket_elems
            for hash_value, pointer, key_size, data_size in zip(
                table[0::4], table[1::4], table[2::4], table[3::4], strict=True
            ):
                slot += 1
                if hash_value == EMPTY_SLOT:
                    continue
                split = pointer + key_size
                end = split + data_size
                if key_size < 0 or data_size < 0 or pointer <= 0 or end > file_size:
                    yield Record(
                        None,
                        error=self._bad_slot(
                            bucket_at + table_at + slot * element_size, table, slot
                        ),
                    )
                    continue
                live += 1
                key_bytes = mm[pointer:split]
                try:
                    key: str | bytes = key_bytes.decode("utf-8")
                except UnicodeDecodeError:
                    key = key_bytes
                yield Record(key, not_decoded, mm[split:end])
            if live != count:
                self.warn(
                    f"bucket at offset {bucket_at} says {count} elements but has {live} live slots"
                )

    def _bad_slot(self, slot_at: int, table: tuple[int, ...], slot: int) -> RecordError:
        pointer, key_size, data_size = table[4 * slot + 1 : 4 * slot + 4]
        return RecordError(
            f"{self.path}: bucket element at offset {slot_at} points at offset {pointer} "
            f"with key size {key_size} and data size {data_size}, outside the file "
            f"({self.header.file_size} bytes)"
        )


class GdbmReader(Reader):
    """Reads a GDBM file (``dbm.gnu`` / ``gdbm``; a shelf when its values are pickles)."""

    format_name = "gdbm"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions | None = None):
        super().__init__(path, options)
        self.data_path = self._data_file(self.path)
        self._file: GdbmFile | None = GdbmFile(self.data_path)
        self._warnings: list[str] = []

    def _data_file(self, path: str) -> str:
        """The file that holds the GDBM data (the path itself for a plain GDBM file)."""
        return path

    def _open(self) -> GdbmFile:
        if self._file is None:
            self._file = GdbmFile(self.data_path)
        return self._file

    @property
    def header(self) -> GdbmHeader:
        """The validated file header."""
        return self._open().header

    def records(self) -> Iterator[Record]:
        gdbm = self._open()
        try:
            yield from gdbm.records()
        finally:
            self._warnings = list(gdbm.warnings)
            self.close()

    def count(self) -> int | None:
        try:
            return self._open().stored_count()
        except FormatError:
            return None

    def details(self) -> dict[str, Any]:
        gdbm = self._open()
        info: dict[str, Any] = {"format": self.format_name, "path": self.path}
        info["files"] = [self.data_path]
        info.update(gdbm.header.details())
        warnings = self._warnings or list(gdbm.warnings)
        try:
            info["buckets"] = gdbm.bucket_count()
            info["entries"] = gdbm.stored_count()
        except FormatError as exc:
            warnings.append(str(exc))
        if warnings:
            info["warnings"] = warnings
        return info

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
