"""marshal files: one ``marshal.dump`` or several in a row, from Python 2 or 3.

Records are keyed by position (0, 1, 2, ...).  Values are read by the pure-Python
:mod:`shelfmigrate.codecs.marshal`; CPython's own ``marshal.loads`` is never called
on input.

A damaged dump ends the stream with a FormatError naming the dump and its offset,
after the good dumps before it.  Later dumps are not looked for: marshal has no
length prefix, magic or sync mark, so where the next dump starts is unknown, and
nearly every byte is the start of *some* valid dump (``N``, ``T``, ``i`` and four
bytes ...), so a resynchronising search would invent records.
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
        self._survey: dict[str, Any] | None = None

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

    def survey(self) -> dict[str, Any]:
        """Read the whole file once (values dropped) and describe it; cached."""
        if self._survey is None:
            from ..codecs import marshal

            opts = self.options
            with open(self.path, "rb") as handle:
                self._survey = marshal.survey(
                    handle, python=opts.marshal_python, py2_str=opts.py2_str
                )
        return self._survey

    def count(self) -> int | None:
        """The number of dumps (objects), or ``None`` when a damaged one ends the stream.

        A marshal stream has no index, so this reads the file once (see ``survey``).
        """
        info = self.survey()
        return None if info["error"] else info["objects"]

    def details(self) -> dict[str, Any]:
        info = self.survey()
        details = {"format": self.format_name, "path": self.path, **info}
        details["summary"] = _summary(info)
        return details


def _summary(info: dict[str, Any]) -> str:
    """One line for ``inspect``: format version, Python and object count."""
    python = info["python"]
    who = {2: "Python 2", 3: "Python 3", "mixed": "Python 2 and 3", None: "Python 2 or 3"}[python]
    if info["python_forced"]:
        who += " (forced)"
    elif python is None and "s" in info["type_codes"]:
        who += " (read as 3, 's' strings stay bytes; --marshal-python 2 decodes them)"
    objects = info["objects"]
    if objects:
        plural = "" if objects == 1 else "s"
        text = f"marshal format version {info['marshal_version']}, {who}, {objects} object{plural}"
    else:
        text = "no readable marshal object"
    if info["error"]:
        text += f"; stopped at a damaged dump: {info['error']}"
    return text
