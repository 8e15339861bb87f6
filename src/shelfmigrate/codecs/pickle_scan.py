"""A fast pre-scan of a pickle's opcode stream, before any byte reaches the C unpickler.

:func:`scan` walks every opcode of one pickle with its argument (it never decodes
or builds anything) and refuses, with a :class:`DecodeError` naming the opcode
and its offset:

* an unknown opcode ("invalid load key", as the C unpickler says);
* a pickle that ends before its STOP opcode, and any argument or declared length
  (1, 4 and 8-byte lengths, LONG1/LONG4, FRAME) that runs past the end of the
  data: the C unpickler allocates BINBYTES8/BINUNICODE8/BYTEARRAY8 before it
  reads them;
* a memo index (PUT, BINPUT, LONG_BINPUT) larger than the pickle's size: the C
  unpickler grows its memo array to the largest index it sees, so a 9-byte
  LONG_BINPUT could ask for gigabytes.  Every memo entry costs at least one byte
  of the pickle (MEMOIZE), so a legitimate index is never larger than the size;
  picklers number entries 0, 1, 2, ... (Python 2's protocol 0 starts at 1), and
  with this bound the memo array is at most a fixed multiple of the input size.

It returns the offset just past STOP, so callers see trailing data and can cut
one pickle out of a stream.

Speed: this runs on every record, so the walk is a compiled bytes regex that
matches a maximal run of opcodes in C with one ``match()`` call: opcodes without
an argument, fixed-size arguments, text lines, and strings with a 1-byte length
(and 4-byte lengths below 256) written as an alternation over the 256 possible
length bytes.  The Python loop only sees the opcodes where a run stops (STOP,
FRAME, 8-byte lengths, 4-byte lengths of 256 or more, memo indexes that need a
look, damage) and then calls ``match`` again.  Memo indexes that cannot exceed the
bound are matched by the regex too: one pattern per size class (a LONG_BINPUT
with its top bytes zero, a PUT with few enough digits).  Runs are capped at
:data:`_RUN` opcodes per ``match`` so the regex engine's backtracking stack stays
small on huge pickles.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Callable
from typing import Any

from ..errors import DecodeError

__all__ = ["Incomplete", "OPCODE_NAMES", "scan", "scan_stream"]

# opcode byte -> name, for messages (names as in pickletools).
OPCODE_NAMES: dict[int, str] = {
    0x28: "MARK",
    0x2E: "STOP",
    0x30: "POP",
    0x31: "POP_MARK",
    0x32: "DUP",
    0x46: "FLOAT",
    0x49: "INT",
    0x4A: "BININT",
    0x4B: "BININT1",
    0x4C: "LONG",
    0x4D: "BININT2",
    0x4E: "NONE",
    0x50: "PERSID",
    0x51: "BINPERSID",
    0x52: "REDUCE",
    0x53: "STRING",
    0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING",
    0x56: "UNICODE",
    0x58: "BINUNICODE",
    0x61: "APPEND",
    0x62: "BUILD",
    0x63: "GLOBAL",
    0x64: "DICT",
    0x7D: "EMPTY_DICT",
    0x65: "APPENDS",
    0x67: "GET",
    0x68: "BINGET",
    0x69: "INST",
    0x6A: "LONG_BINGET",
    0x6C: "LIST",
    0x5D: "EMPTY_LIST",
    0x6F: "OBJ",
    0x70: "PUT",
    0x71: "BINPUT",
    0x72: "LONG_BINPUT",
    0x73: "SETITEM",
    0x74: "TUPLE",
    0x29: "EMPTY_TUPLE",
    0x75: "SETITEMS",
    0x47: "BINFLOAT",
    0x80: "PROTO",
    0x81: "NEWOBJ",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    0x85: "TUPLE1",
    0x86: "TUPLE2",
    0x87: "TUPLE3",
    0x88: "NEWTRUE",
    0x89: "NEWFALSE",
    0x8A: "LONG1",
    0x8B: "LONG4",
    0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE",
    0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8",
    0x8F: "EMPTY_SET",
    0x90: "ADDITEMS",
    0x91: "FROZENSET",
    0x92: "NEWOBJ_EX",
    0x93: "STACK_GLOBAL",
    0x94: "MEMOIZE",
    0x95: "FRAME",
    0x96: "BYTEARRAY8",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}

# Argument shapes for the Python side of the walk: opcode -> (kind, n, signed).
# kind 0: no argument; 1: n fixed bytes; 2: n newline-ended lines; 3: an n-byte
# little-endian length and that many bytes.
_NONE, _FIXED, _LINES, _COUNTED = 0, 1, 2, 3
_NOARG = b"(012NRabdlst}])euoQ\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98"
_SHAPES: dict[int, tuple[int, int, bool]] = {
    **{c: (_NONE, 0, False) for c in _NOARG + b"."},
    **{c: (_FIXED, 1, False) for c in b"Khq\x80\x82"},
    **{c: (_FIXED, 2, False) for c in b"M\x83"},
    **{c: (_FIXED, 4, False) for c in b"Jjr\x84"},
    **{c: (_FIXED, 8, False) for c in b"G\x95"},
    **{c: (_LINES, 1, False) for c in b"FILPSVgp"},
    **{c: (_LINES, 2, False) for c in b"ci"},
    **{c: (_COUNTED, 1, False) for c in b"UC\x8c\x8a"},
    **{c: (_COUNTED, 4, False) for c in b"XB"},
    **{c: (_COUNTED, 4, True) for c in b"T\x8b"},
    **{c: (_COUNTED, 8, False) for c in b"\x8d\x8e\x96"},
}
assert set(_SHAPES) == set(OPCODE_NAMES)

_STOP = 0x2E
_U64 = struct.Struct("<Q").unpack_from
_PUT = 0x70
_LONG_BINPUT = 0x72
_FRAME = 0x95
_RUN = 2000  # opcodes matched per regex call at most (bounds the engine's stack)
_MAX_PUT_DIGITS = 19


def _class(chars: bytes) -> bytes:
    return b"[" + b"".join(re.escape(bytes([c])) for c in chars) + b"]"


def _counted(width: int) -> bytes:
    """An alternation over the 256 lengths below 256, written in ``width`` bytes."""
    pad = b"\x00" * (width - 1)
    branches = [
        re.escape(bytes([n]) + pad) + (b"." * n if n < 4 else b".{%d}" % n) for n in range(256)
    ]
    return b"(?:" + b"|".join(branches) + b")"


# Possessive repeats (Python 3.11+) skip the engine's backtracking bookkeeping.
_PLUS = b"+" if sys.version_info >= (3, 11) else b""
_NOARG_RUN = _class(_NOARG) + b"*" + _PLUS
_LINE = b"[^\n]*" + _PLUS + b"\n"
# Opcodes with an argument, most common first (the engine tries them in order).
_STRINGS = b"\x8c" + _counted(1)  # SHORT_BINUNICODE: dict keys and most text
_SMALL = _class(b"Khq\x80\x82") + b"."  # BININT1, BINGET, BINPUT, PROTO, EXT1
_TEXT = _class(b"FILPSVg") + _LINE  # protocol 0 text opcodes
_REST = [
    _class(b"XBT\x8b") + _counted(4),
    _class(b"UC\x8a") + _counted(1),
    _class(b"M\x83") + b"..",
    _class(b"Jj\x84") + b".{4}",
    b"G.{8}",
    _class(b"ci") + _LINE + _LINE,
]
_PATTERNS: dict[tuple[int, int], re.Pattern[bytes]] = {}


def _long_binput(bits: int) -> bytes:
    """LONG_BINPUT with an index below ``2 ** bits`` (little-endian, so the high bytes are 0)."""
    if bits >= 32:
        return b"r...."
    whole, rest = divmod(bits, 8)
    top = b"[\x00-%s]" % re.escape(bytes([(1 << rest) - 1])) if rest else b""
    return b"r" + b"." * whole + top + b"\x00" * (4 - whole - (1 if rest else 0))


def _pattern(long_binput_bits: int, put_digits: int) -> re.Pattern[bytes]:
    """The run pattern that also takes the memo indexes that cannot exceed the bound.

    LONG_BINPUT indexes below ``2 ** long_binput_bits`` and PUT indexes of at
    most ``put_digits`` digits are matched here; larger ones stop the run, and
    the Python loop compares them with the bound.

    Each repetition is one opcode with an argument followed by any number of
    opcodes without one (a single-byte class, which the engine runs much faster
    than a repetition of the whole alternation).
    """
    key = (long_binput_bits, put_digits)
    pattern = _PATTERNS.get(key)
    if pattern is None:
        parts = [_STRINGS, _SMALL, _TEXT]
        if put_digits:
            parts.append(b"p[0-9]{1,%d}%s\n" % (put_digits, _PLUS))
        if long_binput_bits:
            parts.append(_long_binput(long_binput_bits))
        parts += _REST
        source = b"%s(?:(?:%s)%s){0,%d}%s" % (
            _NOARG_RUN,
            b"|".join(parts),
            _NOARG_RUN,
            _RUN,
            _PLUS,
        )
        pattern = _PATTERNS[key] = re.compile(source, re.DOTALL)
    return pattern


def _key_for(cap: int) -> tuple[int, int]:
    """The pattern key for a memo index bound of ``cap`` (indexes <= cap are fine)."""
    j = min((cap + 1).bit_length() - 1, 32)  # 2 ** j - 1 <= cap
    k = 0
    while k < _MAX_PUT_DIGITS and 10 ** (k + 1) - 1 <= cap:
        k += 1
    return j, k


# The pattern key for each bit length of the cap (a cap of bit length b is at
# least 2**(b-1)); patterns are compiled on first use.
_KEYS = [_key_for((1 << (b - 1)) if b else 0) for b in range(65)]
_Matcher = Callable[[bytes, int], re.Match[bytes]]
_BY_BITS: list[_Matcher | None] = [None] * 65  # match methods, by bit length of the cap
_NCAP = 4096
_BY_CAP: list[_Matcher | None] = [None] * _NCAP  # exact caps for small pickles
_UNBOUNDED_KEY = (32, _MAX_PUT_DIGITS)


def _matcher(cap: int | None) -> _Matcher:
    if cap is None:
        return _pattern(*_UNBOUNDED_KEY).match  # type: ignore[return-value]
    if cap < _NCAP:
        match = _BY_CAP[cap]
        if match is None:
            match = _BY_CAP[cap] = _pattern(*_key_for(cap)).match  # type: ignore[assignment]
        return match  # type: ignore[return-value]
    bits = min(cap.bit_length(), 64)
    match = _BY_BITS[bits]
    if match is None:
        match = _BY_BITS[bits] = _pattern(*_KEYS[bits]).match  # type: ignore[assignment]
    return match  # type: ignore[return-value]


class Incomplete(Exception):
    """The data ends inside the pickle; more bytes are needed (streams only)."""

    def __init__(self, resume: int, needed: int):
        super().__init__(resume, needed)
        self.resume = resume  # an opcode boundary to go on from
        self.needed = needed  # the data must be at least this long to get further


def _walk(data: Any, start: int, pos: int, cap: int | None, limit: int | None) -> int:
    """The walk behind :func:`scan` and :func:`scan_stream`; returns the end offset.

    ``limit`` is how long the data really is (``len(data)`` when all of it is
    here, more when a stream has bytes not read yet, None when unknown): an
    argument past ``limit`` is refused, one past ``len(data)`` but within
    ``limit`` raises :class:`Incomplete`.  ``cap`` bounds memo indexes (None: no
    bound).
    """
    size = len(data)
    final = limit is not None and limit <= size
    match = _matcher(cap)
    while True:
        pos = match(data, pos).end()
        if pos >= size:
            if not final:
                raise Incomplete(pos, pos + 1)
            if pos == start:
                raise DecodeError("empty value: not a pickle")
            raise DecodeError("truncated pickle (the data ends before STOP)")
        code = data[pos]
        if code == _STOP:
            return pos + 1
        shape = _SHAPES.get(code)
        where = pos - start
        if shape is None:
            raise DecodeError(
                f"malformed pickle: invalid load key, unknown opcode 0x{code:02x} at offset {where}"
            )
        kind, n, signed = shape
        name = OPCODE_NAMES[code]
        arg = end = pos + 1
        if kind == _LINES:
            for _ in range(n):
                newline = data.find(b"\n", end)
                if newline < 0:
                    if not final:
                        raise Incomplete(pos, size + 1)
                    raise DecodeError(
                        f"truncated pickle: {name} at offset {where} has no end of line"
                    )
                end = newline + 1
            if code == _PUT and cap is not None:
                digits = bytes(data[arg : end - 1])
                if not (digits.isdigit() and len(digits) <= _MAX_PUT_DIGITS):
                    raise DecodeError(
                        f"malformed pickle: PUT at offset {where} has a memo index that is "
                        f"not a plain number ({digits[:30]!r})"
                    )
                _check_index(name, where, int(digits), cap)
            pos = end
            continue
        end = arg + n  # kind is _FIXED or _COUNTED (no-argument opcodes always match)
        declared = None
        if end <= size and (kind == _COUNTED or code == _FRAME):
            declared = int.from_bytes(data[arg:end], "little", signed=signed)
            if declared < 0:
                raise DecodeError(
                    f"malformed pickle: {name} at offset {where} declares a negative "
                    f"length ({declared})"
                )
            if kind == _COUNTED:
                end += declared
            elif limit is not None and end + declared > limit:
                raise DecodeError(
                    f"truncated pickle: FRAME at offset {where} declares {declared} bytes "
                    f"but only {limit - end} remain"
                )
        if end > size:
            if not final and (limit is None or end <= limit):
                raise Incomplete(pos, end)
            if declared is not None:
                raise DecodeError(
                    f"truncated pickle: {name} at offset {where} declares {declared} bytes "
                    f"but only {(size if limit is None else limit) - arg - n} remain"
                )
            raise DecodeError(f"truncated pickle: the data ends inside {name} at offset {where}")
        if code == _LONG_BINPUT and cap is not None:
            _check_index(name, where, int.from_bytes(data[arg:end], "little"), cap)
        pos = end


def _check_index(name: str, where: int, index: int, cap: int) -> None:
    if index > cap:
        raise DecodeError(
            f"malformed pickle: {name} at offset {where} stores memo index {index}, "
            f"more than a pickle of {cap} bytes can hold"
        )


def scan(data: bytes, start: int = 0) -> int:
    """Check the opcodes of the pickle at ``data[start:]``; return the offset just past STOP.

    Raises :class:`DecodeError` for an unknown opcode, a missing STOP, an argument
    or declared length past the end of ``data``, or a memo index larger than the
    pickle's size (``len(data) - start``).  Bytes after STOP are not looked at.
    ``data`` is ``bytes`` or ``bytearray``.
    """
    # The common case in one regex call: PROTO and the FRAME that pickle.dumps
    # puts at offset 2, then one run of opcodes that stops at STOP.
    size = len(data)
    cap = size - start
    match = _BY_CAP[cap] if cap < _NCAP else _BY_BITS[min(cap.bit_length(), 64)]
    if match is not None:
        pos = start
        if (
            cap > 11
            and data[start + 2] == _FRAME
            and data[start] == 0x80
            and _U64(data, start + 3)[0] <= cap - 11
        ):
            pos += 11
        pos = match(data, pos).end()
        if pos < size and data[pos] == _STOP:
            return pos + 1
        return _walk(data, start, pos, cap, size)
    return _walk(data, start, start, cap, size)


def scan_stream(data: Any, start: int, resume: int, limit: int | None) -> int:
    """Find where the pickle at ``data[start:]`` ends, in a buffer that may hold only its start.

    Like :func:`scan`, walking on from the opcode boundary ``resume``, but memo
    indexes are not bounded (the caller checks the pickle again with :func:`scan`
    once it is cut out).  ``limit`` is the length the data will have once every
    byte is read (None when unknown); running out of ``data`` before that raises
    :class:`Incomplete`, which says where to resume and how long the data must get.
    """
    return _walk(data, start, resume, None, limit)
