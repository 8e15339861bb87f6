"""Walk the opcodes of a pickle without decoding or building anything.

Used to find where one pickle of a stream ends (so a refused pickle can be
skipped) and by detection.  Unlike ``pickletools.genops`` it never decodes
arguments, so Python 2 protocol 0 strings with non-ASCII bytes do not trip it.
"""

from __future__ import annotations

import pickletools
from collections.abc import Iterator

# Argument sizes as pickletools describes them (negative values are markers).
_UP_TO_NEWLINE = pickletools.UP_TO_NEWLINE
_LENGTH_PREFIXED = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_TWO_LINES = "stringnl_noescape_pair"  # GLOBAL and INST: module and name, one line each


class PickleWalkError(ValueError):
    """The bytes are not a complete, well-formed sequence of pickle opcodes."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset


def _arg_shapes() -> dict[int, tuple[str, int, int, bool]]:
    """opcode byte -> (name, kind, size, signed); kind 0 none, 1 fixed, 2 line(s), 3 prefixed."""
    shapes: dict[int, tuple[str, int, int, bool]] = {}
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")[0]
        arg = op.arg
        if arg is None:
            shapes[code] = (op.name, 0, 0, False)
        elif arg.n >= 0:
            shapes[code] = (op.name, 1, arg.n, False)
        elif arg.n == _UP_TO_NEWLINE:
            shapes[code] = (op.name, 2, 2 if arg.name == _TWO_LINES else 1, False)
        else:
            width, signed = _LENGTH_PREFIXED[arg.n]
            shapes[code] = (op.name, 3, width, signed)
    return shapes


_SHAPES = _arg_shapes()


def iter_opcodes(data: bytes, start: int = 0) -> Iterator[tuple[str, int, int, int]]:
    """Yield ``(opcode name, offset, argument start, argument end)`` up to and including STOP."""
    size = len(data)
    pos = start
    while True:
        if pos >= size:
            raise PickleWalkError("pickle ends before its STOP opcode", pos)
        shape = _SHAPES.get(data[pos])
        if shape is None:
            raise PickleWalkError(f"unknown pickle opcode 0x{data[pos]:02x}", pos)
        name, kind, n, signed = shape
        arg_start = pos + 1
        if kind == 0:
            arg_end = arg_start
        elif kind == 1:
            arg_end = arg_start + n
        elif kind == 2:
            arg_end = arg_start
            for _ in range(n):
                newline = data.find(b"\n", arg_end)
                if newline < 0:
                    raise PickleWalkError(f"{name} argument has no end of line", pos)
                arg_end = newline + 1
        else:
            length = int.from_bytes(data[arg_start : arg_start + n], "little", signed=signed)
            if length < 0:
                raise PickleWalkError(f"{name} has a negative length", pos)
            arg_end = arg_start + n + length
        if arg_end > size:
            raise PickleWalkError(f"{name} argument runs past the end of the data", pos)
        yield name, pos, arg_start, arg_end
        if name == "STOP":
            return
        pos = arg_end


def pickle_end(data: bytes, start: int = 0) -> int:
    """The offset just past the STOP opcode of the pickle that starts at ``start``."""
    end = start
    for _name, _pos, _arg_start, arg_end in iter_opcodes(data, start):
        end = arg_end
    return end
