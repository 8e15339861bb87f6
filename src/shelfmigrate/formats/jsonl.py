"""JSON-lines: ``{"key": K, "value": V}`` per line in typed JSON, optionally gzip-compressed.

Records of a Berkeley DB subdatabase carry its name first: ``{"subdb": S, "key": K, "value": V}``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Iterator
from typing import Any

from ..codecs import typedjson
from ..errors import DecodeError, DestinationError, FormatError, SourceError
from ..options import WriteOptions
from ..records import Record
from ._publish import AtomicTarget
from .base import Reader, Writer

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_LEVEL = 6  # gzip's own default of 9 costs 2-3x the time for a few percent


def _open_text(path: str) -> io.TextIOBase:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")


class JsonLinesReader(Reader):
    """Reads JSON-lines written by shelfmigrate (or by hand in the same form)."""

    format_name = "jsonl"
    values_are_decoded = True

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        if not os.path.isfile(self.path):
            raise SourceError(
                self.path, "no such file" if not os.path.exists(self.path) else "not a file"
            )

    def records(self) -> Iterator[Record]:
        lineno = 0
        with _open_text(self.path) as handle:
            try:
                for lineno, line in enumerate(handle, 1):  # noqa: B007 - lineno is used after the loop
                    if line.strip():
                        yield self._record(line, lineno)
            except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
                raise FormatError(self.path, f"cannot read line {lineno + 1}: {exc}") from None

    def _record(self, line: str, lineno: int) -> Record:
        raw = line.rstrip("\n").encode("utf-8")
        try:
            key, value, subdb = typedjson.decode_record_in_subdb(line)
        except DecodeError as exc:
            key = exc.key
            return Record(key, raw=raw, error=DecodeError(f"line {lineno}: {exc.detail}"))
        return Record(key, value=value, raw=raw, subdb=subdb)

    def details(self) -> dict[str, Any]:
        with open(self.path, "rb") as probe:
            compressed = probe.read(2) == GZIP_MAGIC
        return {"format": self.format_name, "path": self.path, "compressed": compressed}


class JsonLinesWriter(Writer):
    """Writes one typed-JSON object per line; ``.gz`` destinations are gzip-compressed."""

    format_name = "jsonl"

    def __init__(self, path: str | os.PathLike[str], options: WriteOptions | None = None):
        super().__init__(path, options)
        self.target = AtomicTarget(self.path, overwrite=self.options.overwrite)
        self.compressed = self.path.endswith(".gz")
        self._handle: Any = None
        self._refs = self.options.refs
        self._style = self.options.json_style

    def open(self) -> None:
        temp = self.target.prepare()
        try:
            if self.compressed:
                raw = gzip.open(temp, "wb", compresslevel=_GZIP_LEVEL)
                self._handle = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            else:
                self._handle = open(temp, "w", encoding="utf-8", newline="\n")
        except OSError as exc:
            self.target.discard()
            raise DestinationError(
                self.path, f"cannot create output: {exc.strerror or exc}"
            ) from None

    def encode(self, record: Record) -> str:
        return (
            typedjson.encode_record(
                record.key, record.value, style=self._style, refs=self._refs, subdb=record.subdb
            )
            + "\n"
        )

    def write_batch(self, items: list[Any]) -> None:
        self._handle.write("".join(items))

    def commit(self) -> None:
        self._handle.close()
        self.target.publish()

    def abort(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
        self.target.discard()
