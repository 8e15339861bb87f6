"""dbm.dumb (Python 3) and dumbdbm (Python 2): ``NAME.dir`` index + ``NAME.dat`` values.

The ``.dir`` file is Latin-1 text, one line per key: ``<str literal>, (<pos>, <size>)``.
We parse it with a strict pattern (never ``eval``/``literal_eval``) and read each
value with one ``pread`` on a single open ``.dat`` (the stdlib reopens the file per
key).  When a key occurs on several lines the last line wins, as in the library.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from typing import Any

from ..errors import FormatError, RecordError, SourceError
from ..records import NOT_DECODED, Record, key_from_bytes
from .base import Reader

DIR_SUFFIX = ".dir"
DAT_SUFFIX = ".dat"
BAK_SUFFIX = ".bak"

_LINE = re.compile(
    r"""(?P<prefix>[bBuU]?)(?P<quote>['"])(?P<body>(?:\\.|(?!(?P=quote))[^\\\n])*)(?P=quote)"""
    r""",\s*\(\s*(?P<pos>\d+)[lL]?\s*,\s*(?P<size>\d+)[lL]?\s*\)\s*"""
)
# Duplicate-key detection: exact up to this many index lines (about 10 MB of hashes),
# then a bit filter of 32 bits per key, which keeps false positives near 3%.
_EXACT_FILTER_LINES = 200_000
_FILTER_BITS_PER_KEY = 32
_READ_CHUNK = 1 << 20


def dumb_files(path: str) -> tuple[str, str, str]:
    """The ``(base, .dat, .dir)`` paths for a dumb database named as base, ``.dat`` or ``.dir``."""
    base = path
    for suffix in (DAT_SUFFIX, DIR_SUFFIX, BAK_SUFFIX):
        if path.endswith(suffix) and os.path.exists(path[: -len(suffix)] + DAT_SUFFIX):
            base = path[: -len(suffix)]
            break
    return base, base + DAT_SUFFIX, base + DIR_SUFFIX


# The common line: a quoted key with no escapes, as repr() writes most keys.
_PLAIN_LINE = re.compile(r"""(?:'([^'\\\n]*)'|"([^"\\\n]*)"), \((\d+), (\d+)\)\s*""", re.ASCII)


def parse_dir_line(line: str, path: str = "", lineno: int = 0) -> tuple[bytes, int, int]:
    """Parse one ``.dir`` line into ``(key bytes, position, size)``; FormatError if malformed."""
    match = _LINE.fullmatch(line.rstrip("\r\n"))
    if match is None:
        raise FormatError(path, f"line {lineno} is not a dbm.dumb index entry: {line[:80]!r}")
    body = match["body"]
    try:
        if "\\" in body:
            # The body is a Python string literal written in Latin-1; unicode_escape reads
            # its escapes and maps every other byte to the same code point.
            body = codecs.decode(body.encode("latin-1"), "unicode_escape")
        key = body.encode("utf-8") if match["prefix"] in ("u", "U") else body.encode("latin-1")
    except (UnicodeError, ValueError) as exc:
        raise FormatError(path, f"line {lineno}: bad key literal ({exc})") from None
    return key, int(match["pos"]), int(match["size"])


def _key_literal(line: str) -> str:
    """The key literal of a line, as written (what the duplicate filter compares)."""
    return line[: line.rfind(", (")]


class _DatWindow:
    """Reads values from ``.dat`` through a window, since they mostly lie in index order.

    A value inside the current window is a slice; a value just past it moves the
    window forward; any other jump reads exactly the value, so random layouts cost
    one ``pread`` per value and never a whole window.
    """

    WINDOW = 256 << 10

    def __init__(self, fd: int):
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.start = 0
        self.data = b""

    def read(self, pos: int, size: int) -> bytes | None:
        end = pos + size
        if end > self.size:
            return None
        start = self.start
        if start <= pos and end <= start + len(self.data):
            return self.data[pos - start : end - start]
        if start <= pos < start + 2 * self.WINDOW and size < self.WINDOW:
            self.start = pos
            self.data = os.pread(self.fd, self.WINDOW, pos)
            return self.data[:size]
        return os.pread(self.fd, size, pos)


class DumbReader(Reader):
    """Reads a dbm.dumb / dumbdbm database (a shelf when its values are pickles)."""

    format_name = "dumb"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        self.base, self.dat_path, self.dir_path = dumb_files(self.path)
        if not os.path.exists(self.dir_path):
            hint = ""
            if os.path.exists(self.base + BAK_SUFFIX):
                hint = f"; a backup index {self.base + BAK_SUFFIX} exists: copy it to {self.dir_path} to recover"
            raise SourceError(self.dir_path, f"dbm.dumb index file is missing{hint}")
        if not os.path.exists(self.dat_path):
            raise SourceError(self.dat_path, "dbm.dumb data file is missing")
        for side in (self.dat_path, self.dir_path):
            if not os.path.isfile(side):
                raise SourceError(side, "is not a regular file")
        self._fd: int | None = None

    def _lines(self) -> Iterator[tuple[int, str]]:
        with open(self.dir_path, encoding="latin-1", newline="\n") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    yield lineno, line

    def _superseded_lines(self) -> set[int]:
        """Line numbers whose key occurs again later (the later line wins).

        One pass collects candidate duplicates: exactly (a set of key hashes) for an
        index of up to ``_EXACT_FILTER_LINES`` lines, and in bounded memory (a bit
        filter of 32 bits per key) beyond.  Only when there are candidates does a
        second pass compare them exactly.  One writer spells one key with one literal,
        so comparing literals is comparing keys.
        """
        lines = max(1, self.count() or 1)
        if lines <= _EXACT_FILTER_LINES:
            candidates = self._colliding_hashes_exactly()
            mask = -1
        else:
            nbits = 1 << (lines * _FILTER_BITS_PER_KEY - 1).bit_length()
            mask = nbits - 1
            candidates = self._colliding_hashes_in_bits(nbits)
        if not candidates:
            return set()
        last_line: dict[str, int] = {}
        superseded: set[int] = set()
        for lineno, line in self._lines():
            literal = _key_literal(line)
            if hash(literal) & mask in candidates:
                previous = last_line.get(literal)
                if previous is not None:
                    superseded.add(previous)
                last_line[literal] = lineno
        return superseded

    def _colliding_hashes_exactly(self) -> set[int]:
        seen: set[int] = set()
        candidates: set[int] = set()
        for _, line in self._lines():
            h = hash(_key_literal(line))
            if h in seen:
                candidates.add(h)
            else:
                seen.add(h)
        return candidates

    def _colliding_hashes_in_bits(self, nbits: int) -> set[int]:
        mask = nbits - 1
        seen = bytearray(nbits >> 3)
        candidates: set[int] = set()
        for _, line in self._lines():
            h = hash(_key_literal(line)) & mask
            byte, bit = h >> 3, 1 << (h & 7)
            if seen[byte] & bit:
                candidates.add(h)
            else:
                seen[byte] |= bit
        return candidates

    def records(self) -> Iterator[Record]:
        superseded = self._superseded_lines()
        try:
            fd = os.open(self.dat_path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(self.dat_path, exc.strerror or str(exc)) from None
        self._fd = fd
        try:
            dat = _DatWindow(fd)
            plain_line = _PLAIN_LINE.fullmatch
            for lineno, line in self._lines():
                if superseded and lineno in superseded:
                    continue
                # The plain-line fast path runs once per record; parse_dir_line handles the rest.
                match = plain_line(line)
                if match is not None:
                    single, double, pos_text, size_text = match.groups()
                    body = single if single is not None else double
                    key: Any = body if body.isascii() else key_from_bytes(body.encode("latin-1"))
                    pos, size = int(pos_text), int(size_text)
                else:
                    key_bytes, pos, size = parse_dir_line(line, self.dir_path, lineno)
                    key = key_from_bytes(key_bytes)
                raw = dat.read(pos, size)
                if raw is None:
                    error = RecordError(
                        f"value at offset {pos}, {size} bytes, lies beyond the end of "
                        f"{self.dat_path} ({dat.size} bytes)",
                        key=key,
                    )
                    yield Record(key, error=error)
                else:
                    yield Record(key, NOT_DECODED, raw)
        except OSError as exc:
            raise SourceError(self.dat_path, exc.strerror or str(exc)) from None
        finally:
            self.close()

    def count(self) -> int | None:
        total = 0
        last = b"\n"
        with open(self.dir_path, "rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                total += chunk.count(b"\n")
                last = chunk[-1:]
        return total + (last != b"\n")

    def details(self) -> dict[str, Any]:
        files = [
            p for p in (self.dat_path, self.dir_path, self.base + BAK_SUFFIX) if os.path.exists(p)
        ]
        return {
            "format": self.format_name,
            "path": self.base,
            "files": files,
            "entries": self.count(),
            "data_size": os.path.getsize(self.dat_path),
        }

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
