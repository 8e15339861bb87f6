"""``gdbm_dump`` output as a source: the ASCII dump and the binary ("flat") dump.

FORMATS.md §3.5.  The ASCII dump is a header of ``#`` comment and ``#:name=value``
meta lines ending with ``# End of header``, then for each record a ``#:len=N`` line
and the key in base64 (lines of up to 76 characters), the same for the value, and a
trailer ``#:count=N`` / ``# End of data``.  Both are read line by line, so memory
stays flat however large the dump.

The binary dump (``gdbm_dump --format=binary``, ``gdbm_export()``) is a text banner
ending in ``\\r\\n!\\r\\n``, then ``length, key, length, value`` to the end of the
file.  GDBM writes each length as a C ``unsigned long`` holding ``htonl(n)``, so its
width and byte order are the writer's: 8 bytes on LP64 (``00 00 00 n`` then four zero
bytes on little-endian machines, four zero bytes then ``00 00 00 n`` on big-endian
ones) and 4 big-endian bytes on 32-bit machines.  The reader probes the first records
under each of the three framings and keeps the one that parses.
"""

from __future__ import annotations

import binascii
import os
import re
import struct
import sys
from collections.abc import Iterator
from typing import IO, Any

from ..errors import FormatError, SourceError
from ..options import ReadOptions
from ..records import NOT_DECODED, Record, key_from_bytes
from .base import Reader

ASCII_MAGIC = b"# GDBM dump file created by"
BINARY_MAGIC = b"!\r\n! GDBM FLAT FILE DUMP"
BINARY_HEADER_END = b"\r\n!\r\n"
MAX_BINARY_HEADER = 4096
MAX_LINE = 1 << 16  # base64 lines are at most 76 characters; meta lines are short
_VERSION = re.compile(rb"GDBM version ([0-9][0-9.]*[0-9])")
_U32BE = struct.Struct(">I")

#: binary length framings: name -> (field width, offset of the u32be inside the field).
#: Order matters: 64-bit big-endian data also parses as 32-bit fields (as alternating
#: empty and real datums), but gdbm_export cannot write an empty datum, so a 32-bit dump
#: never starts its fields with four zero bytes and is never taken for 64-bit.
BINARY_FRAMINGS: dict[str, tuple[int, int]] = {
    "64-bit little-endian": (8, 0),
    "64-bit big-endian": (8, 4),
    "32-bit": (4, 0),
}
PROBE_RECORDS = 64
PROBE_BYTES = 1 << 20


def _open(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise SourceError(path, exc.strerror or str(exc)) from None


_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def strict_base64_portable(text: bytes) -> bytes:
    """Base64 with nothing but the alphabet and correct padding, on any Python."""
    if not _BASE64.fullmatch(text):
        raise binascii.Error("not strict base64: a character outside the alphabet or bad padding")
    return binascii.a2b_base64(text)


def _strict_base64(text: bytes) -> bytes:
    if sys.version_info >= (3, 11):  # strict_mode is new in 3.11
        return binascii.a2b_base64(text, strict_mode=True)
    return strict_base64_portable(text)


class GdbmAsciiDumpReader(Reader):
    """Reads the ASCII output of ``gdbm_dump`` (a shelf's dump when values are pickles)."""

    format_name = "gdbm-dump-ascii"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions | None = None):
        super().__init__(path, options)
        self.meta: dict[str, str] = {}
        self.gdbm_version: str | None = None
        self.data_start = 0
        self._read_header()

    def _read_header(self) -> None:
        with _open(self.path) as fh:
            first = fh.readline(MAX_LINE)
            if not first.startswith(ASCII_MAGIC):
                raise FormatError(self.path, "not a GDBM ASCII dump (no header line)", offset=0)
            m = _VERSION.search(first)
            self.gdbm_version = m.group(1).decode("ascii") if m else None
            while True:
                at = fh.tell()
                line = fh.readline(MAX_LINE)
                if not line:
                    raise FormatError(
                        self.path, "dump header has no '# End of header' line", offset=at
                    )
                if line.startswith(b"# End of header"):
                    self.data_start = fh.tell()
                    return
                if line.startswith(b"#:"):
                    for item in line[2:].rstrip(b"\r\n").split(b","):
                        name, eq, value = item.partition(b"=")
                        if eq:
                            self.meta[name.decode("latin-1")] = value.decode("latin-1")
                elif not line.startswith(b"#"):
                    raise FormatError(
                        self.path, f"unexpected line in the dump header: {line[:60]!r}", offset=at
                    )

    def _data(self) -> Iterator[bytes]:
        """Each datum (key, value, key, value, ...) in order; checks the trailer's count."""
        path = self.path
        with _open(path) as fh:
            fh.seek(self.data_start)
            expected: int | None = None  # length announced by the last #:len line
            expected_at = 0
            chunks: list[bytes] = []
            b64_left = 0
            pos = self.data_start
            count: int | None = None
            data_items = 0
            for line in iter(lambda: fh.readline(MAX_LINE), b""):
                at = pos
                pos += len(line)
                if line.startswith(b"#"):
                    if expected is not None:
                        yield self._finish(chunks, expected, expected_at)
                        data_items += 1
                        expected = None
                    if line.startswith(b"#:len="):
                        expected = self._number(line[6:], at)
                        expected_at = at
                        chunks = []
                        b64_left = 4 * (expected // 3 + 1) + 4
                    elif line.startswith(b"#:count="):
                        count = self._number(line[8:], at)
                    elif line.startswith(b"# End of data"):
                        break
                    continue
                if expected is None:
                    if line.strip():
                        raise FormatError(path, "base64 data without a '#:len=' line", offset=at)
                    continue
                chunk = line.strip()
                chunks.append(chunk)
                b64_left -= len(chunk)
                if b64_left < 0:
                    raise FormatError(
                        path, f"more base64 data than '#:len={expected}' announces", offset=at
                    )
            else:
                if expected is not None:
                    yield self._finish(chunks, expected, expected_at)
                    data_items += 1
                raise FormatError(
                    path, "dump ends without '# End of data' (truncated?)", offset=pos
                )
            if data_items % 2:
                raise FormatError(path, "dump ends with a key that has no value", offset=pos)
            if count is not None and count != data_items // 2:
                raise FormatError(
                    path,
                    f"trailer says {count} records but the dump holds {data_items // 2}",
                    offset=pos,
                )

    def _number(self, text: bytes, at: int) -> int:
        text = text.strip()
        if not text.isdigit():
            raise FormatError(self.path, f"bad number {text[:20]!r}", offset=at)
        return int(text)

    def _finish(self, chunks: list[bytes], expected: int, at: int) -> bytes:
        try:
            data = _strict_base64(b"".join(chunks)) if chunks else b""
        except binascii.Error as exc:
            raise FormatError(self.path, f"bad base64 data ({exc})", offset=at) from None
        if len(data) != expected:
            raise FormatError(
                self.path,
                f"'#:len={expected}' but the base64 data holds {len(data)} bytes",
                offset=at,
            )
        return data

    def records(self) -> Iterator[Record]:
        data = self._data()
        for key in data:
            value = next(data, None)
            if value is None:  # _data raises before this for an odd count
                break
            yield Record(key_from_bytes(key), NOT_DECODED, value)

    def count(self) -> int | None:
        return None

    def details(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "format": self.format_name,
            "path": self.path,
            "files": [self.path],
            "file_size": os.path.getsize(self.path),
            "gdbm_version": self.gdbm_version,
        }
        for name in ("version", "file", "format"):
            if name in self.meta:
                info["dump_version" if name == "version" else f"dump_{name}"] = self.meta[name]
        return info


class GdbmBinaryDumpReader(Reader):
    """Reads ``gdbm_dump --format=binary`` / ``gdbm_export()`` output."""

    format_name = "gdbm-dump-binary"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions | None = None):
        super().__init__(path, options)
        try:
            self.size = os.path.getsize(self.path)
        except OSError as exc:
            raise SourceError(self.path, exc.strerror or str(exc)) from None
        with _open(self.path) as fh:
            head = fh.read(MAX_BINARY_HEADER)
            if not head.startswith(BINARY_MAGIC):
                raise FormatError(self.path, "not a GDBM binary dump (no banner)", offset=0)
            end = head.find(BINARY_HEADER_END)
            if end < 0:
                raise FormatError(self.path, "GDBM binary dump banner has no end marker", offset=0)
            self.data_start = end + len(BINARY_HEADER_END)
            m = _VERSION.search(head[:end])
            self.gdbm_version = m.group(1).decode("ascii") if m else None
            fh.seek(self.data_start)
            self.framing = self._choose_framing(fh.read(PROBE_BYTES))

    def _fits(self, probe: bytes, framing: str) -> bool:
        """Whether the first records of ``probe`` parse under ``framing``."""
        width, at = BINARY_FRAMINGS[framing]
        pos = 0
        remaining = self.size - self.data_start
        for _ in range(2 * PROBE_RECORDS):
            if pos == remaining:
                return True
            if pos + width > len(probe):
                return True  # the probe window ended; nothing contradicted this framing
            field = probe[pos : pos + width]
            if width == 8 and field[4 - at : 8 - at] != b"\0\0\0\0":
                return False
            (n,) = _U32BE.unpack_from(field, at)
            pos += width + n
            if pos > remaining:
                return False
        return True

    def _choose_framing(self, probe: bytes) -> str:
        for framing in BINARY_FRAMINGS:
            if self._fits(probe, framing):
                return framing
        raise FormatError(
            self.path,
            "record lengths fit none of the binary dump framings (corrupt or truncated)",
            offset=self.data_start,
        )

    def records(self) -> Iterator[Record]:
        width, at = BINARY_FRAMINGS[self.framing]
        path = self.path
        end = self.size
        unpack = _U32BE.unpack_from
        with _open(path) as fh:
            fh.seek(self.data_start)
            pos = self.data_start

            def datum() -> bytes | None:
                nonlocal pos
                field = fh.read(width)
                if not field:
                    return None
                if len(field) != width:
                    raise FormatError(path, "truncated length field", offset=pos)
                (n,) = unpack(field, at)
                if pos + width + n > end:
                    raise FormatError(
                        path,
                        f"datum of {n} bytes runs past the end of the file ({end} bytes)",
                        offset=pos,
                    )
                data = fh.read(n)
                if len(data) != n:
                    raise FormatError(path, "file shrank while it was read", offset=pos)
                pos += width + n
                return data

            while True:
                key_at = pos
                key = datum()
                if key is None:
                    return
                value = datum()
                if value is None:
                    raise FormatError(path, "dump ends with a key that has no value", offset=key_at)
                yield Record(key_from_bytes(key), NOT_DECODED, value)

    def details(self) -> dict[str, Any]:
        return {
            "format": self.format_name,
            "path": self.path,
            "files": [self.path],
            "file_size": self.size,
            "gdbm_version": self.gdbm_version,
            "header_size": self.data_start,
            "length_fields": self.framing,
        }
