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
from ..records import Record, key_from_bytes
from .base import Reader

DIR_SUFFIX = ".dir"
DAT_SUFFIX = ".dat"
BAK_SUFFIX = ".bak"

_LINE = re.compile(
    r"""(?P<prefix>[bBuU]?)(?P<quote>['"])(?P<body>(?:\\.|(?!(?P=quote))[^\\\n])*)(?P=quote)"""
    r""",\s*\(\s*(?P<pos>\d+)[lL]?\s*,\s*(?P<size>\d+)[lL]?\s*\)\s*"""
)
# Bits per .dir line in the duplicate-key filter: 32 keeps false positives near 3%.
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


def _split_line(line: str) -> tuple[str, str, str] | None:
    """Fast split of a well-formed line into (key literal, pos text, size text), else None."""
    cut = line.rfind(", (")
    tail = line[cut + 3 :].rstrip()
    if cut < 2 or not tail.endswith(")"):
        return None
    pos_text, sep, size_text = tail[:-1].partition(", ")
    if not sep:
        return None
    return line[:cut], pos_text.rstrip("lL"), size_text.rstrip("lL")


def parse_dir_line(line: str, *, path: str = "", lineno: int = 0) -> tuple[bytes, int, int]:
    """Parse one ``.dir`` line into ``(key bytes, position, size)``; FormatError if malformed."""
    parts = _split_line(line)
    if parts is not None:
        literal, pos_text, size_text = parts
        quote, body = literal[0], literal[1:-1]
        # The common case: a plain quoted key with no escapes, as repr() writes most keys.
        if (
            quote in "'\""
            and literal[-1] == quote
            and quote not in body
            and "\\" not in body
            and pos_text.isascii()
            and pos_text.isdigit()
            and size_text.isascii()
            and size_text.isdigit()
        ):
            return body.encode("latin-1"), int(pos_text), int(size_text)
    return _parse_dir_line_strictly(line, path, lineno)


def _parse_dir_line_strictly(line: str, path: str, lineno: int) -> tuple[bytes, int, int]:
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
        self._fd: int | None = None

    def _lines(self) -> Iterator[tuple[int, str]]:
        with open(self.dir_path, encoding="latin-1", newline="\n") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    yield lineno, line

    def _entries(self) -> Iterator[tuple[int, bytes, int, int]]:
        for lineno, line in self._lines():
            key, pos, size = parse_dir_line(line, path=self.dir_path, lineno=lineno)
            yield lineno, key, pos, size

    def _superseded_lines(self) -> set[int]:
        """Line numbers whose key occurs again later (the later line wins).

        A bit filter over hashes of the key literals finds candidate duplicates in
        one pass, in 32 bits per key; only candidates are compared exactly, in a
        second pass.  One writer spells one key with one literal, so comparing
        literals is comparing keys.
        """
        lines = max(1, self.count() or 1)
        nbits = 1 << max(16, (lines * _FILTER_BITS_PER_KEY - 1).bit_length())
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

    def records(self) -> Iterator[Record]:
        superseded = self._superseded_lines()
        try:
            fd = os.open(self.dat_path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(self.dat_path, exc.strerror or str(exc)) from None
        self._fd = fd
        try:
            dat_size = os.fstat(fd).st_size
            pread = os.pread
            for lineno, key_bytes, pos, size in self._entries():
                if lineno in superseded:
                    continue
                key: Any = key_from_bytes(key_bytes)
                if pos + size > dat_size:
                    error = RecordError(
                        f"value at offset {pos}, {size} bytes, lies beyond the end of "
                        f"{self.dat_path} ({dat_size} bytes)",
                        key=key,
                    )
                    yield Record(key, raw=None, error=error)
                    continue
                yield Record(key, raw=pread(fd, size, pos))
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
