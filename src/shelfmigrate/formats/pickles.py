"""Pickle files: one pickle, or a stream of pickles written by repeated ``pickle.dump`` calls.

Records are keyed by position (0, 1, 2, ...).  Each pickle is decoded by the safe
unpickler as it is read; a pickle that is refused becomes a failed record and
reading goes on after its STOP opcode.  Only a pickle whose end cannot be found
(truncated or malformed) ends the stream, as a FormatError naming the offset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from ..codecs.pickle_scan import Incomplete, scan_stream
from ..errors import DecodeError, FormatError, SourceError, UsageError
from ..records import Record
from .base import Reader

_FIRST_READ = 64 << 10  # most pickles end within this; the scanner asks for more when not


class PickleStreamReader(Reader):
    """Reads every pickle in a file, in order, through the safe unpickler."""

    format_name = "pickle"
    auto_values = "pickle"

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        if self.options.values not in ("auto", "pickle", "raw"):
            raise UsageError(
                f"--values {self.options.values} does not apply to a pickle file (use pickle or raw)"
            )
        if not os.path.isfile(self.path):
            raise SourceError(
                self.path, "no such file" if not os.path.exists(self.path) else "not a file"
            )

    def records(self) -> Iterator[Record]:
        with open(self.path, "rb") as handle:
            if self.options.values == "raw":
                yield from self._raw_records(handle)
            else:
                yield from self._decoded_records(handle)

    def _end_of(self, handle: BinaryIO, start: int) -> int:
        """The end offset of the pickle at ``start``, found by the opcode scanner.

        Reads only as much of the file as the pickle needs (growing the buffer
        while the scanner asks for more); FormatError when it is malformed.
        """
        size = os.fstat(handle.fileno()).st_size
        handle.seek(start)
        data = handle.read(_FIRST_READ)
        resume = 0
        while True:
            try:
                return start + scan_stream(data, 0, resume, size - start)
            except Incomplete as more:
                resume = more.resume
                wanted = max(more.needed, 2 * len(data)) - len(data)
                chunk = handle.read(wanted)
                if not chunk:
                    raise FormatError(
                        self.path, "pickle ends before its STOP opcode", offset=start
                    ) from None
                data += chunk
            except DecodeError as exc:
                raise FormatError(self.path, exc.detail, offset=start) from None

    def _raw_records(self, handle: BinaryIO) -> Iterator[Record]:
        size = os.fstat(handle.fileno()).st_size
        offset = index = 0
        while offset < size:
            end = self._end_of(handle, offset)
            handle.seek(offset)
            raw = handle.read(end - offset)
            yield Record(index, value=raw, raw=raw)
            offset, index = end, index + 1

    def _decoded_records(self, handle: BinaryIO) -> Iterator[Record]:
        from ..codecs import safepickle

        opts = self.options
        size = os.fstat(handle.fileno()).st_size
        offset = index = 0
        while offset < size:
            handle.seek(offset)
            stream = safepickle.load_stream(
                handle, allow=opts.allow, stubs=opts.stubs, py2_str=opts.py2_str
            )
            try:
                for value, start, raw in stream:
                    yield Record(index, value=value, raw=raw, codec="pickle")
                    index += 1
                    offset = start + len(raw)
                return
            except DecodeError as exc:
                end = self._end_of(
                    handle, offset
                )  # the refused pickle starts where the last one ended
                handle.seek(offset)
                raw = handle.read(end - offset)
                yield Record(index, raw=raw, error=DecodeError(exc.detail))
                offset, index = end, index + 1
