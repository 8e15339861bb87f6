"""NDBM ``.dir``/``.pag`` pairs: GDBM's compatibility library and classic ndbm / sdbm.

FORMATS.md §4.1 and §4.2.  The source may be named by its base name (what the
application passed to ``dbm_open``) or by either file of the pair.

* gdbm-compat (``libgdbm_compat``, the ``dbm.ndbm`` of many Linux builds): ``.pag`` is
  an ordinary GDBM file, read with :mod:`shelfmigrate.formats.gdbm`; ``.dir`` is a
  16-byte ``"GDBM"`` + version header (GDBM >= 1.15) or a hard link to ``.pag`` (1.8).
* classic ndbm / sdbm (4.3BSD libc ndbm, sdbm, Perl's ``SDBM_File``): ``.pag`` is an
  array of fixed-size pages, each a u16 item count and u16 item offsets (in the
  writer's byte order) with the items packed from the end of the page; odd items are
  keys, even items their values.  Pairs never span pages and a split moves pairs out
  of the old page, so scanning every page in order is the complete enumeration; the
  ``.dir`` bitmap only serves lookups and is not read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

from ..errors import FormatError, RecordError, SourceError
from ..options import ReadOptions
from ..records import NOT_DECODED, Record, key_from_bytes
from .base import Reader
from .gdbm import GdbmReader

DIR_SUFFIX = ".dir"
PAG_SUFFIX = ".pag"
GDBM_DIR_MAGIC = b"GDBM"
GDBM_DIR_SIZE = 16

#: page sizes probed, most common first (PBLKSIZ 1024; Apache's sdbm may use 8192)
PAGE_SIZES = (1024, 4096, 8192, 512)
PROBE_BYTES = 64 << 10
READ_CHUNK_PAGES = 64


def ndbm_files(path: str) -> tuple[str, str, str]:
    """``(base, .dir, .pag)`` for an ndbm pair named by its base name or either file."""
    for suffix in (DIR_SUFFIX, PAG_SUFFIX):
        if path.endswith(suffix):
            base = path[: -len(suffix)]
            if os.path.exists(base + DIR_SUFFIX) or os.path.exists(base + PAG_SUFFIX):
                return base, base + DIR_SUFFIX, base + PAG_SUFFIX
    return path, path + DIR_SUFFIX, path + PAG_SUFFIX


def _require_pair(dir_path: str, pag_path: str) -> None:
    if not os.path.isfile(pag_path):
        raise SourceError(pag_path, "ndbm data file (.pag) is missing or not a regular file")
    if not os.path.isfile(dir_path):
        raise SourceError(dir_path, "ndbm index file (.dir) is missing or not a regular file")


class NdbmGdbmReader(GdbmReader):
    """Reads an ndbm pair made by GDBM's compatibility library (``.pag`` is a GDBM file)."""

    format_name = "ndbm-gdbm"

    def _data_file(self, path: str) -> str:
        self.base, self.dir_path, pag_path = ndbm_files(path)
        _require_pair(self.dir_path, pag_path)
        return pag_path

    def details(self) -> dict[str, Any]:
        info = super().details()
        info["path"] = self.base
        info["files"] = [self.data_path, self.dir_path]
        try:
            with open(self.dir_path, "rb") as fh:
                head = fh.read(64)
            dir_size = os.path.getsize(self.dir_path)
        except OSError as exc:
            raise SourceError(self.dir_path, exc.strerror or str(exc)) from None
        if head[:4] == GDBM_DIR_MAGIC and dir_size == GDBM_DIR_SIZE:
            major, minor, patch = struct.unpack_from(">3I", head, 4)
            info["dir_kind"] = "header"
            info["compat_version"] = f"{major}.{minor}.{patch}"
        elif os.path.samefile(self.dir_path, self.data_path):
            info["dir_kind"] = "hardlink"  # GDBM 1.8 linked .dir to .pag
        else:
            info["dir_kind"] = "other"
        return info


def page_items(page: bytes, shorts: struct.Struct, page_size: int) -> list[int] | None:
    """The item offsets of a valid page ([] for an empty one), or None if it is not valid."""
    (n,) = shorts.unpack_from(page, 0)
    if n == 0:
        return []
    if n % 2 or 2 * (n + 1) > page_size:
        return None
    offsets = struct.unpack_from(f"{shorts.format[0]}{n}H", page, 2)
    previous = page_size
    for offset in offsets:
        if offset > previous:
            return None
        previous = offset
    if previous < 2 * (n + 1):
        return None
    return list(offsets)


def probe_layout(pag_path: str, head: bytes, file_size: int) -> tuple[int, str]:
    """``(page size, byte order)`` under which every page of ``head`` is a valid page."""
    for page_size in PAGE_SIZES:
        if file_size % page_size:
            continue
        usable = len(head) - len(head) % page_size
        for order in "<>":
            shorts = struct.Struct(order + "H")
            nonempty = 0
            for at in range(0, usable, page_size):
                items = page_items(head[at : at + page_size], shorts, page_size)
                if items is None:
                    break
                nonempty += bool(items)
            else:
                if nonempty or page_size == PAGE_SIZES[0]:
                    return page_size, order
    raise FormatError(
        pag_path,
        "not a classic ndbm/sdbm .pag file: no page size and byte order make every page valid",
        offset=0,
    )


class NdbmClassicReader(Reader):
    """Reads a classic ndbm / sdbm ``.dir``/``.pag`` pair (Perl ``SDBM_File`` and kin)."""

    format_name = "ndbm-classic"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions | None = None):
        super().__init__(path, options)
        self.base, self.dir_path, self.pag_path = ndbm_files(self.path)
        _require_pair(self.dir_path, self.pag_path)
        try:
            self.file_size = os.path.getsize(self.pag_path)
            with open(self.pag_path, "rb") as fh:
                head = fh.read(PROBE_BYTES)
        except OSError as exc:
            raise SourceError(self.pag_path, exc.strerror or str(exc)) from None
        if self.file_size == 0:
            self.page_size, self.byte_order = PAGE_SIZES[0], "<"
        else:
            self.page_size, self.byte_order = probe_layout(self.pag_path, head, self.file_size)

    def _pages(self) -> Iterator[tuple[int, bytes]]:
        page_size = self.page_size
        chunk = page_size * READ_CHUNK_PAGES
        try:
            with open(self.pag_path, "rb") as fh:
                at = 0
                while data := fh.read(chunk):
                    for start in range(0, len(data), page_size):
                        yield at + start, data[start : start + page_size]
                    at += len(data)
        except OSError as exc:
            raise SourceError(self.pag_path, exc.strerror or str(exc)) from None

    def records(self) -> Iterator[Record]:
        page_size = self.page_size
        shorts = struct.Struct(self.byte_order + "H")
        not_decoded = NOT_DECODED
        for at, page in self._pages():
            if len(page) != page_size:
                yield Record(
                    None,
                    error=RecordError(
                        f"{self.pag_path}: last page at offset {at} is only {len(page)} bytes "
                        f"(pages are {page_size})"
                    ),
                )
                break
            offsets = page_items(page, shorts, page_size)
            if offsets is None:
                yield Record(
                    None,
                    error=RecordError(
                        f"{self.pag_path}: page {at // page_size} at offset {at} is not a valid "
                        "ndbm page; its items are skipped"
                    ),
                )
                continue
            end = page_size
            for i in range(0, len(offsets), 2):
                key_at, value_at = offsets[i], offsets[i + 1]
                key = page[key_at:end]
                value = page[value_at:key_at]
                end = value_at
                yield Record(key_from_bytes(key), not_decoded, value)

    def count(self) -> int | None:
        shorts = struct.Struct(self.byte_order + "H")
        total = 0
        for _, page in self._pages():
            if len(page) == self.page_size:
                offsets = page_items(page, shorts, self.page_size)
                total += len(offsets or ()) // 2
        return total

    def details(self) -> dict[str, Any]:
        return {
            "format": self.format_name,
            "path": self.base,
            "files": [self.pag_path, self.dir_path],
            "page_size": self.page_size,
            "byte_order": "little" if self.byte_order == "<" else "big",
            "pages": self.file_size // self.page_size,
            "file_size": self.file_size,
            "dir_size": os.path.getsize(self.dir_path),
        }
