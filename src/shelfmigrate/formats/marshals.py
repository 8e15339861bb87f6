"""marshal files: one ``marshal.dump`` or several in a row, from Python 2 or 3.

Records are keyed by position (0, 1, 2, ...).  Values are read by the pure-Python
:mod:`shelfmigrate.codecs.marshal`; CPython's own ``marshal.loads`` is never called
on input.  A marshal dump has no length prefix, so a damaged dump ends the stream
with a FormatError naming its offset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..errors import DecodeError, FormatError, SourceError, UsageError
from ..records import Record
from .base import Reader


class MarshalStreamReader(Reader):
    """Reads every marshal dump in a file, in order."""

    format_name = "marshal"
    auto_values = "marshal"

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        if self.options.values not in ("auto", "marshal"):
            raise UsageError(f"--values {self.options.values} does not apply to a marshal file")
        if not os.path.isfile(self.path):
            raise SourceError(
                self.path, "no such file" if not os.path.exists(self.path) else "not a file"
            )

    def records(self) -> Iterator[Record]:
        from ..codecs import marshal

        opts = self.options
        with open(self.path, "rb") as handle:
            stream = marshal.load_stream(handle, python=opts.marshal_python, py2_str=opts.py2_str)
            index = 0
            try:
                for value, _start, _end in stream:
                    yield Record(index, value=value, codec="marshal")
                    index += 1
            except DecodeError as exc:
                raise FormatError(self.path, f"marshal dump number {index}: {exc.detail}") from None

    def details(self) -> dict[str, Any]:
        from ..codecs import marshal

        with open(self.path, "rb") as handle:
            head = handle.read(1 << 16)
        return {
            "format": self.format_name,
            "path": self.path,
            "python": marshal.detect_python(head),
        }
