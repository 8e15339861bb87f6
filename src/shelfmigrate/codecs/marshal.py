"""A pure-Python, safe reader for CPython ``marshal`` data (Python 2.x and 3.x).

CPython's own :func:`marshal.loads` reads only its own version's format and can
crash the interpreter on crafted input.  This reader is written from the format
itself and never calls it.  It never builds or runs code objects, checks every
declared size against the bytes that are left before it allocates anything,
walks nested containers with an explicit stack (no recursion), and turns every
problem into a :class:`~shelfmigrate.errors.DecodeError` that names the offset.

What comes out:

* ``None``, bools, ints (``i``, ``I``, ``l``), floats, complex numbers, ``str``,
  ``bytes``, tuples, lists, dicts, sets, frozensets and (format version 5,
  Python 3.14) slices.
* ``Ellipsis`` is the ``...`` object and ``StopIteration`` is the class
  ``StopIteration`` (typed JSON writes both as ``{"$const": ...}``).
* A Python 2 ``str`` (``s``, ``t``, ``R``) follows ``py2_str``: ``"auto"`` gives
  text when it is valid UTF-8 and bytes otherwise, ``"bytes"`` gives bytes
  exactly as Python 2 meant it, ``"latin1"`` gives text through Latin-1.  In
  Python 3 data ``s`` is always bytes.  A decoded non-ASCII ``str`` that would
  merge with a ``unicode`` dict key or set member (distinct in Python 2, equal
  once decoded) stays bytes, so nothing is dropped.
* Shared and recursive objects of format versions 3+ (Python 3.4+) come back
  shared and recursive, as CPython builds them, including cycles that run
  through a tuple (``t = ([],); t[0].append(t)``).

The format has no header, so which Python wrote a dump is read from its type
codes (:func:`detect_python`); ``python=2`` or ``python=3`` forces it.  Nor does
it record its format version: :func:`survey` reads a whole stream and reports the
range of versions its type codes prove (:func:`infer_version`), with the object
count, for ``inspect``.

A stream (several ``marshal.dump`` calls into one file) is read to EOF by
:func:`load_stream`.  A damaged dump ends it: marshal has no length prefix or
sync mark, so the next dump cannot be found soundly (almost any byte starts some
valid dump), and guessing would invent records.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import Any

from shelfmigrate.errors import DecodeError, UsageError

__all__ = [
    "MAX_DEPTH",
    "MAX_LONG_DIGITS",
    "MAX_VERSION",
    "describe_version",
    "detect_python",
    "infer_version",
    "load_stream",
    "loads",
    "survey",
]

#: Deepest nesting accepted: CPython's own limit on Linux (MAX_MARSHAL_STACK_DEPTH),
#: so everything CPython can write is readable and nothing deeper is tried.
MAX_DEPTH = 2000

#: Largest ``l`` (long) accepted, in 15-bit digits: 1 MiB of digit data.
MAX_LONG_DIGITS = (1 << 20) // 2

_CHUNK = 1 << 16

_unpack_i = struct.Struct("<i").unpack_from
_unpack_q = struct.Struct("<q").unpack_from
_unpack_d = struct.Struct("<d").unpack_from
_unpack_dd = struct.Struct("<dd").unpack_from
_unpack_H = struct.Struct("<H").unpack_from
_unpack_HH = struct.Struct("<HH").unpack_from
_StructError = struct.error
# Longs of up to _SMALL_LONG digits are read digit by digit with one precompiled unpack.
_SMALL_LONG = 8
_UNPACK_DIGITS = [struct.Struct(f"<{n}H").unpack_from for n in range(_SMALL_LONG + 1)]

# A text float as CPython writes it (repr / "%.17g", inf, nan) and as its reader accepts.
_FLOAT_RE = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)",
    re.IGNORECASE,
)

# ----------------------------------------------------------------------------- type codes

# Kinds of object a type code announces (small ints, tested by the parser in this order,
# the most frequent first).
(
    _K_SASCII,
    _K_INT,
    _K_REF,
    _K_CONST,
    _K_DICT,
    _K_NULL,
    _K_STUPLE,
    _K_LIST,
    _K_UNICODE,
    _K_STRING,
    _K_BFLOAT,
    _K_STR2I,
    _K_STRREF,
    _K_TUPLE,
    _K_LONG,
    _K_ASCII,
    _K_SET,
    _K_FSET,
    _K_INT64,
    _K_FLOAT,
    _K_COMPLEX,
    _K_BCOMPLEX,
    _K_SLICE,
    _K_CODE,
    _K_UNKNOWN,
) = range(25)

# The singletons: None, False, True, StopIteration (the class) and Ellipsis.
_CONSTANTS: list[Any] = [None] * 128
_CONSTANTS[ord("F")] = False
_CONSTANTS[ord("T")] = True
_CONSTANTS[ord("S")] = StopIteration
_CONSTANTS[ord(".")] = Ellipsis

_COMMON_CODES = {
    "0": _K_NULL,
    "N": _K_CONST,
    "F": _K_CONST,
    "T": _K_CONST,
    "S": _K_CONST,
    ".": _K_CONST,
    "i": _K_INT,
    "I": _K_INT64,
    "f": _K_FLOAT,
    "g": _K_BFLOAT,
    "x": _K_COMPLEX,
    "y": _K_BCOMPLEX,
    "l": _K_LONG,
    "s": _K_STRING,
    "u": _K_UNICODE,
    "(": _K_TUPLE,
    "[": _K_LIST,
    "{": _K_DICT,
    "<": _K_SET,
    ">": _K_FSET,
    "c": _K_CODE,
}
# Python 2: 't' is an interned str (bytes) that 'R' can refer back to.
_PY2_CODES = {**_COMMON_CODES, "t": _K_STR2I, "R": _K_STRREF}
# Python 3.4+: any code may carry FLAG_REF (0x80); 't' is interned text.
_PY3_CODES = {
    **_COMMON_CODES,
    "t": _K_UNICODE,
    "r": _K_REF,
    "a": _K_ASCII,
    "A": _K_ASCII,
    "z": _K_SASCII,
    "Z": _K_SASCII,
    ")": _K_STUPLE,
    ":": _K_SLICE,
}
_PY3_ONLY = frozenset(ord(c) for c in "raAzZ):")
_PY2_ONLY = frozenset(ord(c) for c in "R")


def _kind_table(codes: dict[str, int], flagged: bool) -> list[int]:
    table = [_K_UNKNOWN] * 256
    for char, kind in codes.items():
        table[ord(char)] = kind
        if flagged:
            table[ord(char) | 0x80] = kind
    return table


_KINDS2 = _kind_table(_PY2_CODES, flagged=False)
_KINDS3 = _kind_table(_PY3_CODES, flagged=True)

# Where the parser marks the type codes it reads when no caller wants them (a list:
# storing into it is cheaper than into a bytearray).
_SCRATCH = [0] * 256

# Frames of the explicit parse stack (the container being filled).
_F_TOP, _F_LIST, _F_DKEY, _F_DVAL, _F_TUPLE, _F_SET, _F_FSET, _F_SLICE = range(8)

# ----------------------------------------------------------------------------- errors


class _Truncated(DecodeError):
    """The data ended inside an object (a stream reader may fetch more and retry).

    ``need`` is the offset the data must reach for this object to go on, when known.
    """

    def __init__(self, message: str, need: int | None = None):
        super().__init__(message)
        self.need = need


class _Py2Hint(Exception):
    """Raised by a probing parse at a type code that leans to Python 2 (never escapes)."""


def _bad(pos: int, message: str) -> DecodeError:
    return DecodeError(f"bad marshal data at offset {pos}: {message}")


def _truncated(pos: int, what: str = "an object", need: int | None = None) -> _Truncated:
    return _Truncated(
        f"bad marshal data at offset {pos}: data ends inside {what} (truncated)", need
    )


def _too_deep(pos: int) -> DecodeError:
    return _bad(pos, f"containers nested deeper than {MAX_DEPTH} levels")


def _code_name(code: int) -> str:
    char = chr(code & 0x7F)
    shown = repr(char) if char.isprintable() else "unprintable"
    flag = " with FLAG_REF" if code & 0x80 else ""
    return f"0x{code:02x} ({shown}{flag})"


def _unknown(code: int, pos: int, py3: bool) -> DecodeError:
    hint = ""
    if not py3 and (code & 0x80 or code in _PY3_ONLY):
        hint = "; it is a Python 3 code and the data was read as Python 2 (python=3 / --marshal-python 3)"
    elif py3 and code in _PY2_ONLY:
        hint = "; it is a Python 2 code and the data was read as Python 3 (python=2 / --marshal-python 2)"
    return _bad(pos, f"unknown type code {_code_name(code)}{hint}")


def _refuse_code(pos: int) -> DecodeError:
    return DecodeError(
        f"code objects are refused (never built, never run): marshal type code 'c' at offset {pos}"
    )


# ----------------------------------------------------------------------------- recursive tuples


class _Pending:
    """Stands for a tuple (or slice) that is referenced before it can be built.

    CPython creates a tuple before reading its items, so a ``r`` reference inside
    it (through a list or dict: ``t = ([],); t[0].append(t)``) gets the very
    tuple.  Python code cannot build a tuple before its items, so the reader puts
    this placeholder where the reference goes and, once the whole dump is read,
    builds the waiting tuples in dependency order and patches the placeholders.
    """

    __slots__ = ("idx", "items", "build", "value", "done")

    def __init__(self, idx: int):
        self.idx = idx
        self.items: list[Any] | None = None
        self.build: Any = None
        self.value: Any = None
        self.done = False


# A reserved refs slot: a tuple still being read (a reference to it is allowed and
# becomes a _Pending), and a frozenset or slice still being read (a reference to it
# is an error, as in CPython: such a reference cannot come from real data).
_RESERVED_TUPLE = _Pending(-1)
_RESERVED_OTHER = _Pending(-1)


def _make_slice(items: list[Any]) -> slice:
    return slice(items[0], items[1], items[2])


def _resolve(root: Any, deferred: list[_Pending], pos: int) -> Any:
    """Build the deferred tuples (in dependency order) and patch every placeholder."""
    waiting: dict[int, int] = {}
    dependents: dict[int, list[_Pending]] = {}
    ready = []
    for node in deferred:
        count = 0
        for item in node.items or ():
            if type(item) is _Pending and not item.done:
                count += 1
                dependents.setdefault(id(item), []).append(node)
        waiting[id(node)] = count
        if not count:
            ready.append(node)
    while ready:
        node = ready.pop()
        items = [x.value if type(x) is _Pending else x for x in node.items or ()]
        try:
            node.value = node.build(items)
        except TypeError as exc:  # pragma: no cover - slice/tuple construction does not fail
            raise _bad(pos, f"cannot build a deferred container: {exc}") from None
        node.done = True
        for other in dependents.pop(id(node), ()):
            waiting[id(other)] -= 1
            if not waiting[id(other)]:
                ready.append(other)
    if any(not node.done for node in deferred):
        raise _bad(
            pos,
            "a tuple refers to itself with no list or dict in between (Python cannot build that)",
        )
    if type(root) is _Pending:
        root = root.value
    # Patch the placeholders left in lists and dict values (iteratively, each object once).
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind is list:
            for i, item in enumerate(obj):
                if type(item) is _Pending:
                    obj[i] = item = item.value
                todo.append(item)
        elif kind is dict:
            for key, item in obj.items():
                if type(item) is _Pending:
                    obj[key] = item = item.value
                todo.append(item)
        elif kind is tuple:
            todo.extend(obj)
        elif kind is slice:
            todo.extend((obj.start, obj.stop, obj.step))
    return root


# ----------------------------------------------------------------------------- helpers


def _text_float(data: bytes, pos: int) -> tuple[float, int]:
    n = data[pos]
    pos += 1
    end = pos + n
    if end > len(data):
        raise _truncated(pos - 1, "a text float", end)
    raw = data[pos:end]
    if _FLOAT_RE.fullmatch(raw) is None:
        raise _bad(pos - 1, f"not a float: {raw[:40]!r}")
    return float(raw), end


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A TYPE_LONG body at ``pos``: signed digit count, then 15-bit digits (LE u16)."""
    start = pos
    n = _unpack_i(data, pos)[0]
    pos += 4
    if n == 0:
        return 0, pos
    size = -n if n < 0 else n
    if size > MAX_LONG_DIGITS:
        raise _bad(start, f"long of {size} digits is over the limit of {MAX_LONG_DIGITS}")
    end = pos + 2 * size
    if end > len(data):
        raise _truncated(start, f"a long of {size} digits", end)
    if size == 1:
        value = _unpack_H(data, pos)[0]
        top = value
    elif size == 2:
        low, top = _unpack_HH(data, pos)
        value = low | top << 15 if low < 0x8000 else -1
    elif size <= _SMALL_LONG:  # up to 120 bits: one unpack and a short loop beat the bit tricks
        digits = _UNPACK_DIGITS[size](data, pos)
        value = 0
        for digit in reversed(digits):
            if digit >= 0x8000:
                value = -1
                break
            value = value << 15 | digit
        top = digits[-1]
    else:
        raw = data[pos:end]
        top = raw[-2] | raw[-1] << 8
        value = _pack_digits(raw, size)
    if value < 0 or top >= 0x8000:
        raise _bad(start, "digit out of range in long")
    if top == 0:
        raise _bad(start, "unnormalized long data (top digit is zero)")
    return (-value if n < 0 else value), end


def _pack_digits(raw: bytes, size: int) -> int:
    """sum(d[i] << 15*i) for the little-endian u16 digits in ``raw``; -1 if one is >= 2**15.

    Works on the whole number at once: read as one int (16-bit slots), then close
    the one-bit gaps pairwise (slots of 32, 64, ... bits), so a long of n digits
    costs O(n log n) bit operations in C and a few copies of its size in memory.
    """
    x = int.from_bytes(raw, "little")
    if x & int.from_bytes(b"\x00\x80" * size, "little"):
        return -1
    slot_bytes, gap, count = 2, 1, size  # slot width in bytes, unused bits per slot
    while count > 1:
        pairs = (count + 1) // 2
        even = int.from_bytes((b"\xff" * slot_bytes + b"\x00" * slot_bytes) * pairs, "little")
        low = x & even
        x = low | (x ^ low) >> gap  # odd slots move down next to their even neighbour
        slot_bytes, gap, count = 2 * slot_bytes, 2 * gap, pairs
    return x


def _auto_text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


# ----------------------------------------------------------------------------- the parser


def _parse(
    data: bytes,
    pos: int,
    py3: bool,
    smode: int,
    text: str | None = None,
    probe: bool = False,
    seen: list[int] | None = None,
) -> tuple[Any, int]:
    """Read one object starting at ``pos``; return it and the offset just after it.

    ``smode`` says what ``s``/``t`` strings become: 0 bytes, 1 text when valid
    UTF-8 (Python 2 "auto"), 2 text through Latin-1.  ``text`` is
    ``data.decode("latin-1")`` when the caller has it already: ASCII strings are
    sliced from it (one copy, no decode call per string).  ``probe`` (with
    ``py3``): stop with :class:`_Py2Hint` at the first code that leans to Python 2
    (``t`` without FLAG_REF, ``I``, a small ``l``), so the caller can look closer.
    ``seen`` (a list of 256 ints) gets a 1 at every type code read, FLAG_REF included, for
    :func:`survey`; without it the flags go to a scratch array nobody reads (one
    store per object is cheaper than a test).
    """
    kinds = _KINDS3 if py3 else _KINDS2
    if seen is None:
        seen = _SCRATCH
    end = len(data)
    refs: list[Any] = []  # Python 3: objects flagged with FLAG_REF, in order
    refs_append = refs.append
    strings: list[Any] = []  # Python 2: interned strings ('t'), for 'R'
    # Python 2 with str decoded to text: id -> (text, raw bytes) of each non-ASCII str
    # decoded, so a dict key or set member that now equals a unicode one can stay bytes
    decoded: dict[int, tuple[str, bytes]] = {}
    keyed: dict[tuple[int, str], bytes] = {}  # (container id, text): raw of a decoded key
    collide = not py3 and smode != 0  # can decoding make two Python 2 keys one?
    floods: dict[int, dict[int, int]] = {}  # big dicts and sets: keys per hash value
    stack: list[tuple[int, Any, int, Any]] = []  # the frames below the current one
    pending = False  # a reference to an unfinished tuple was handed out
    deferred: list[_Pending] = []  # tuples waiting for such a reference to be built
    ft, fo, fn, fx = _F_TOP, None, 0, None  # the frame being filled
    start = at = pos
    value: Any = None
    try:
        while True:
            at = pos
            code = data[pos]
            pos += 1
            seen[code] = 1
            k = kinds[code]
            # ---- read one object (only the header when it is a non-empty container)
            if k == _K_SASCII:
                e = pos + 1 + data[pos]
                if e > end:
                    raise _truncated(at, "a string", e)
                if text is None:
                    text = data.decode("latin-1")
                value = text[pos + 1 : e]
                pos = e
                if code & 0x80:
                    refs_append(value)
            elif k == _K_INT:
                value = _unpack_i(data, pos)[0]
                pos += 4
                if code & 0x80:
                    refs_append(value)
            elif k == _K_REF:
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0 or n >= len(refs):
                    raise _bad(at, f"reference {n} to an object not read yet ({len(refs)} so far)")
                value = refs[n]
                if type(value) is _Pending:
                    if value is _RESERVED_OTHER:
                        raise _bad(
                            at, f"reference {n} to a frozenset or slice that is not complete yet"
                        )
                    if value is _RESERVED_TUPLE:
                        value = refs[n] = _Pending(n)
                    pending = True
            elif k == _K_CONST:
                value = _CONSTANTS[code & 0x7F]
            elif k == _K_DICT:
                value = {}
                if code & 0x80:
                    refs_append(value)
                stack.append((ft, fo, fn, fx))
                if len(stack) >= MAX_DEPTH:
                    raise _too_deep(at)
                ft, fo, fn, fx = _F_DKEY, value, 0, None
                continue
            elif k == _K_NULL:
                if ft != _F_DKEY:
                    raise _bad(
                        at, "NULL ('0') where an object is expected (it may only end a dict)"
                    )
                value = fo
                if floods:
                    floods.pop(id(fo), None)
                ft, fo, fn, fx = stack.pop()
            elif k == _K_STUPLE or k == _K_TUPLE:  # noqa: SIM109 (faster than `in`)
                if k == _K_STUPLE:
                    n = data[pos]
                    pos += 1
                else:
                    n = _unpack_i(data, pos)[0]
                    pos += 4
                    if n < 0:
                        raise _bad(at, f"tuple of negative size {n}")
                if n > end - pos:
                    raise _truncated(at, f"a tuple of {n} items", pos + n)
                if n == 0:
                    value = ()
                    if code & 0x80:
                        refs_append(value)
                else:
                    if code & 0x80:
                        idx = len(refs)
                        refs_append(_RESERVED_TUPLE)
                    else:
                        idx = -1
                    stack.append((ft, fo, fn, fx))
                    if len(stack) >= MAX_DEPTH:
                        raise _too_deep(at)
                    ft, fo, fn, fx = _F_TUPLE, [], n, idx
                    continue
            elif k == _K_LIST:
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0:
                    raise _bad(at, f"list of negative size {n}")
                if n > end - pos:
                    raise _truncated(at, f"a list of {n} items", pos + n)
                value = []
                if code & 0x80:
                    refs_append(value)
                if n:
                    stack.append((ft, fo, fn, fx))
                    if len(stack) >= MAX_DEPTH:
                        raise _too_deep(at)
                    ft, fo, fn, fx = _F_LIST, value, n, None
                    continue
            elif k == _K_UNICODE:
                if probe and code == 0x74:  # an unflagged 't'
                    raise _Py2Hint
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0:
                    raise _bad(at, f"string of negative size {n}")
                e = pos + n
                if e > end:
                    raise _truncated(at, f"a string of {n} bytes", e)
                if text is None:
                    text = data.decode("latin-1")
                value = text[pos:e]
                if not value.isascii():
                    try:
                        value = data[pos:e].decode("utf-8", "surrogatepass")
                    except UnicodeDecodeError as exc:
                        raise _bad(at, f"string is not UTF-8 ({exc.reason})") from None
                pos = e
                if code & 0x80:
                    refs_append(value)
            elif k == _K_STRING or k == _K_STR2I:  # noqa: SIM109
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0:
                    raise _bad(at, f"string of negative size {n}")
                e = pos + n
                if e > end:
                    raise _truncated(at, f"a string of {n} bytes", e)
                if smode == 0:
                    value = data[pos:e]
                else:
                    if text is None:
                        text = data.decode("latin-1")
                    value = text[pos:e]
                    if not value.isascii():
                        if smode == 1:
                            value = _auto_text(data[pos:e])
                        if type(value) is str:
                            decoded[id(value)] = (value, data[pos:e])
                pos = e
                if code & 0x80:
                    refs_append(value)
                if k == _K_STR2I:
                    strings.append(value)
            elif k == _K_BFLOAT:
                value = _unpack_d(data, pos)[0]
                pos += 8
                if code & 0x80:
                    refs_append(value)
            elif k == _K_STRREF:
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0 or n >= len(strings):
                    raise _bad(
                        at, f"string reference {n} to a string not read yet ({len(strings)} so far)"
                    )
                value = strings[n]
            elif k == _K_LONG:
                value, pos = _read_long(data, pos)
                if probe and -0x80000000 <= value <= 0x7FFFFFFF:
                    raise _Py2Hint  # Python 3 writes such an int as 'i'
                if code & 0x80:
                    refs_append(value)
            elif k == _K_ASCII:
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0:
                    raise _bad(at, f"string of negative size {n}")
                e = pos + n
                if e > end:
                    raise _truncated(at, f"a string of {n} bytes", e)
                if text is None:
                    text = data.decode("latin-1")
                value = text[pos:e]
                pos = e
                if code & 0x80:
                    refs_append(value)
            elif k == _K_SET or k == _K_FSET:  # noqa: SIM109
                n = _unpack_i(data, pos)[0]
                pos += 4
                if n < 0:
                    raise _bad(at, f"set of negative size {n}")
                if n > end - pos:
                    raise _truncated(at, f"a set of {n} items", pos + n)
                if k == _K_SET:
                    value = set()
                    if code & 0x80:
                        refs_append(value)
                    if n:
                        stack.append((ft, fo, fn, fx))
                        if len(stack) >= MAX_DEPTH:
                            raise _too_deep(at)
                        ft, fo, fn, fx = _F_SET, value, n, None
                        continue
                elif n == 0:
                    value = frozenset()
                    if code & 0x80:
                        refs_append(value)
                else:
                    if code & 0x80:
                        idx = len(refs)
                        refs_append(_RESERVED_OTHER)
                    else:
                        idx = -1
                    stack.append((ft, fo, fn, fx))
                    if len(stack) >= MAX_DEPTH:
                        raise _too_deep(at)
                    ft, fo, fn, fx = _F_FSET, [], n, idx
                    continue
            elif k == _K_INT64:
                if probe:
                    raise _Py2Hint  # Python 3 never writes 'I'
                value = _unpack_q(data, pos)[0]
                pos += 8
                if code & 0x80:
                    refs_append(value)
            elif k == _K_FLOAT:
                value, pos = _text_float(data, pos)
                if code & 0x80:
                    refs_append(value)
            elif k == _K_COMPLEX:
                real, pos = _text_float(data, pos)
                imag, pos = _text_float(data, pos)
                value = complex(real, imag)
                if code & 0x80:
                    refs_append(value)
            elif k == _K_BCOMPLEX:
                real, imag = _unpack_dd(data, pos)
                pos += 16
                value = complex(real, imag)
                if code & 0x80:
                    refs_append(value)
            elif k == _K_SLICE:
                if code & 0x80:
                    idx = len(refs)
                    refs_append(_RESERVED_OTHER)
                else:
                    idx = -1
                stack.append((ft, fo, fn, fx))
                if len(stack) >= MAX_DEPTH:
                    raise _too_deep(at)
                ft, fo, fn, fx = _F_SLICE, [], 3, idx
                continue
            elif k == _K_CODE:
                raise _refuse_code(at)
            else:
                raise _unknown(code, at, py3)

            # ---- hand the finished object to the container being filled (maybe finishing it)
            while True:
                if ft == _F_LIST:
                    fo.append(value)
                    if len(fo) < fn:
                        break
                    value = fo
                elif ft == _F_DKEY:
                    ft, fx = _F_DVAL, value
                    break
                elif ft == _F_DVAL:
                    if pending and type(fx) is _Pending:
                        raise _bad(at, "a dict key refers to a tuple that is not complete yet")
                    try:
                        if collide:
                            fx = _py2_key(fo, fx, decoded, keyed)
                        fo[fx] = value
                        if len(fo) > _FLOOD_WATCH:
                            _watch_hashes(floods, fo, fx, at)
                    except TypeError:
                        raise _bad(at, f"unhashable dict key of type {type(fx).__name__}") from None
                    except RecursionError:
                        raise _bad(at, "dict key too deeply nested to compare") from None
                    ft, fx = _F_DKEY, None
                    break
                elif ft == _F_TOP:
                    if pending:
                        value = _resolve(value, deferred, start)
                    return value, pos
                elif ft == _F_TUPLE:
                    fo.append(value)
                    if len(fo) < fn:
                        break
                    if pending:
                        value = _finish_tuple(fo, fx, refs, deferred, tuple)
                    else:
                        value = tuple(fo)
                        if fx >= 0:
                            refs[fx] = value
                elif ft == _F_SET:
                    if pending and type(value) is _Pending:
                        raise _bad(at, "a set member refers to a tuple that is not complete yet")
                    try:
                        if collide:
                            value = _py2_member(fo, value, decoded, keyed)
                        fo.add(value)
                        if len(fo) > _FLOOD_WATCH:
                            _watch_hashes(floods, fo, value, at)
                    except TypeError:
                        raise _bad(
                            at, f"unhashable set member of type {type(value).__name__}"
                        ) from None
                    except RecursionError:
                        raise _bad(at, "set member too deeply nested to compare") from None
                    fn -= 1
                    if fn:
                        break
                    value = fo
                    if floods:
                        floods.pop(id(fo), None)
                elif ft == _F_FSET:
                    fo.append(value)
                    if len(fo) < fn:
                        break
                    if pending and any(type(x) is _Pending for x in fo):
                        raise _bad(
                            at, "a frozenset member refers to a tuple that is not complete yet"
                        )
                    try:
                        if len(fo) > _FLOOD_WATCH:
                            _check_hashes(fo, at)
                        value = frozenset(fo)
                        if collide and len(value) < len(fo):
                            members: set[Any] = set()
                            scratch: dict[tuple[int, str], bytes] = {}  # dies with members
                            for item in fo:
                                members.add(_py2_member(members, item, decoded, scratch))
                            value = frozenset(members)
                    except TypeError as exc:
                        raise _bad(at, f"unhashable frozenset member ({exc})") from None
                    except RecursionError:
                        raise _bad(at, "frozenset member too deeply nested to compare") from None
                    if fx >= 0:
                        refs[fx] = value
                else:  # _F_SLICE
                    fo.append(value)
                    if len(fo) < 3:
                        break
                    if pending:
                        value = _finish_tuple(fo, fx, refs, deferred, _make_slice)
                    else:
                        value = slice(fo[0], fo[1], fo[2])
                        if fx >= 0:
                            refs[fx] = value
                # the container is complete: it is the value handed to the frame below
                ft, fo, fn, fx = stack.pop()
    except (IndexError, _StructError):
        raise _truncated(at) from None


def _was_decoded(obj: Any, decoded: dict[int, tuple[str, bytes]]) -> bytes | None:
    """The raw bytes of ``obj`` when it is a non-ASCII Python 2 str decoded to text."""
    entry = decoded.get(id(obj))
    return entry[1] if entry is not None and entry[0] is obj else None


def _py2_key(
    d: dict[Any, Any],
    key: Any,
    decoded: dict[int, tuple[str, bytes]],
    keyed: dict[tuple[int, str], bytes],
) -> Any:
    """The key to store ``key`` under in ``d`` (Python 2 data, str decoded to text).

    In Python 2 a non-ASCII ``str`` and a ``unicode`` never compare equal, so a dict
    may hold both ``'caf\\xc3\\xa9'`` and ``u'caf\\xe9'``; decoded, they would be one
    key.  Nothing is dropped: the decoded ``str`` goes back to ``bytes`` (as the
    pickle reader does), whichever of the two comes first.  Python 2 dicts have no
    order to keep, so a key renamed after the fact moves to the end.  ``keyed``
    remembers which keys of which container are decoded strs, so every step is
    O(1).  A plain duplicate (hand-made data) keeps CPython's rule: the last wins.
    """
    raw = _was_decoded(key, decoded)
    if raw is not None:
        if key in d and keyed.get((id(d), key)) != raw:
            return raw  # a unicode key equal to this text is there already
        keyed[(id(d), key)] = raw
        return key
    if type(key) is str and key in d:
        old_raw = keyed.pop((id(d), key), None)
        if old_raw is not None:  # the key there is a decoded str: back to bytes
            d[old_raw] = d.pop(key)
    return key


def _py2_member(
    s: set[Any],
    member: Any,
    decoded: dict[int, tuple[str, bytes]],
    keyed: dict[tuple[int, str], bytes],
) -> Any:
    """As :func:`_py2_key`, for a set member."""
    raw = _was_decoded(member, decoded)
    if raw is not None:
        if member in s and keyed.get((id(s), member)) != raw:
            return raw
        keyed[(id(s), member)] = raw
        return member
    if type(member) is str and member in s:
        old_raw = keyed.pop((id(s), member), None)
        if old_raw is not None:
            s.discard(member)
            s.add(old_raw)
    return member


# Hash flooding: many keys with one hash value make each insertion into a dict or set
# scan all of them (quadratic time; CPython's own marshal.loads has the same
# weakness).  Big containers count their keys per hash value and refuse a flood.
# str and bytes hashes are salted per process and cannot be aimed, so they are not
# counted (which keeps the counting small for the common big text-keyed dict).
_FLOOD_WATCH = 512  # containers up to this size are never counted
_FLOOD_LIMIT = 1000  # keys allowed to share one hash value in one container


def _flood(at: int) -> DecodeError:
    return _bad(
        at,
        f"more than {_FLOOD_LIMIT} keys with the same hash value in one dict or set "
        "(hash flooding: crafted data)",
    )


def _watch_hashes(floods: dict[int, dict[int, int]], container: Any, key: Any, at: int) -> None:
    kind = type(key)
    if kind is str or kind is bytes:
        return
    counts = floods.get(id(container))
    if counts is None:
        counts = floods[id(container)] = {}
    h = hash(key)
    n = counts.get(h, 0) + 1
    if n > _FLOOD_LIMIT:
        raise _flood(at)
    counts[h] = n


def _check_hashes(items: list[Any], at: int) -> None:
    counts: dict[int, int] = {}
    for item in items:
        kind = type(item)
        if kind is not str and kind is not bytes:
            h = hash(item)
            n = counts[h] = counts.get(h, 0) + 1
            if n > _FLOOD_LIMIT:
                raise _flood(at)


def _finish_tuple(
    items: list[Any], idx: int, refs: list[Any], deferred: list[_Pending], build: Any
) -> Any:
    """Build a finished tuple (or slice) once placeholders exist, or defer it if it holds one."""
    if any(type(x) is _Pending for x in items):
        node = refs[idx] if idx >= 0 else None
        if node is None or node is _RESERVED_TUPLE or node is _RESERVED_OTHER:
            node = _Pending(idx)
            if idx >= 0:
                refs[idx] = node
        node.items = items
        node.build = build
        deferred.append(node)
        return node
    value = build(items)
    if idx >= 0:
        placeholder = refs[idx]
        if type(placeholder) is _Pending and placeholder.idx >= 0:
            placeholder.value = value
            placeholder.done = True
        refs[idx] = value
    return value


# ----------------------------------------------------------------------------- detection


def _scan(data: bytes, pos: int, single: bool) -> int | None:
    """Which Python wrote the dump(s) at ``pos``, judged by the type codes seen.

    Reads type codes and sizes only.  Python 3 marks (FLAG_REF, ``r a A z Z ) :``)
    decide at once, and so do Python 2 marks (``R``; ``I`` and ``l`` holding an
    int that fits in 32 bits, which Python 3 never writes).  An unflagged ``t``
    (interned string) leans to Python 2 unless a Python 3 mark follows.  Stops
    quietly at anything malformed.
    """
    end = len(data)
    weak2 = False
    stack: list[int] = []  # items left in each open container; -1: a dict (ends at '0')
    try:
        while pos < end or stack:
            code = data[pos]
            pos += 1
            if code & 0x80 or code in _PY3_ONLY:
                return 3
            char = chr(code)
            children = 0
            if char in "NTFS.":
                pass
            elif char == "i":
                pos += 4
            elif char == "g":
                pos += 8
            elif char == "y":
                pos += 16
            elif char == "I" or char == "R":
                return 2
            elif char == "l":
                n = _unpack_i(data, pos)[0]
                size = abs(n)
                if size <= 3:
                    value = _read_long(data, pos)[0]
                    if -(2**31) <= value < 2**31:
                        return 2
                pos += 4 + 2 * size
            elif char in "stu":
                n = _unpack_i(data, pos)[0]
                if n < 0:
                    break
                pos += 4 + n
                if char == "t":
                    weak2 = True
            elif char == "f":
                pos += 1 + data[pos]
            elif char == "x":
                pos += 1 + data[pos]
                pos += 1 + data[pos]
            elif char in "([<>":
                children = _unpack_i(data, pos)[0]
                pos += 4
                if children < 0 or children > end - pos:
                    break
            elif char == "{":
                children = -1
            elif char == "0":
                if not stack or stack[-1] != -1:
                    break
                stack.pop()
            else:  # code objects, '?' and unknown codes: nothing more to learn
                break
            if pos > end:
                break
            if children:
                if len(stack) >= MAX_DEPTH:
                    break
                stack.append(children)
                continue
            # one object done: count it off the open containers
            while stack and stack[-1] > 0:
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
            if not stack and single:
                break
    except (IndexError, _StructError, DecodeError):
        pass
    return 2 if weak2 else None


def detect_python(data: bytes) -> int | None:
    """2 or 3 when the type codes say which Python wrote ``data``, else ``None``.

    Python 3 (3.4+, format versions 3-5) writes FLAG_REF bits, ``r`` references and
    the ``a A z Z )`` short forms; Python 2 writes ``R`` string references, ``t``
    interned strings without FLAG_REF, ``I`` and small ``l`` ints.  Data with none
    of these (Python 2 format version 0, Python 3 with versions 0-2, or simply no
    strings) is ``None``: the reader then takes it as Python 3, where ``s`` is bytes,
    which is also exactly what a Python 2 ``str`` is.  Every dump in ``data`` is
    looked at, up to the first that decides.
    """
    data = bytes(data)
    return _scan(data, 0, single=False)


# ----------------------------------------------------------------------------- public API


_SMODES = {"bytes": 0, "auto": 1, "latin1": 2}


def _check_options(python: int | None, py2_str: str) -> int:
    """Validate the options; return the ``s`` string mode for Python 2 data."""
    if python is not None and python != 2 and python != 3:
        raise UsageError(f"python must be 2, 3 or None (detect), not {python!r}")
    smode = _SMODES.get(py2_str) if type(py2_str) is str else None
    if smode is None:
        raise UsageError(f"py2_str must be one of auto, bytes, latin1, not {py2_str!r}")
    return smode


def _which_python(data: bytes, pos: int, single: bool) -> int | None:
    code = data[pos]
    if code & 0x80 or code in _PY3_ONLY:
        return 3
    return _scan(data, pos, single)


def _load_one(
    data: bytes,
    pos: int,
    python: int | None,
    smode: int,
    text: str | None,
    last: int | None,
    single: bool,
    seen: list[int] | None = None,
) -> tuple[Any, int, int | None]:
    """One object at ``pos``: (value, end, the Python it was read as, or ``last``).

    With ``python=None`` the dump is read as Python 3 (what data with no mark of
    either is taken for), stopping at the first code that leans to Python 2 to
    look at the whole dump (:func:`_scan`).  ``last`` is the decision made for
    the previous dump of a stream: after Python 2, a dump with no mark is Python 2.
    """
    if python is None and last == 2:
        python = _which_python(data, pos, single) or 2
    if python is not None:
        py3 = python == 3
        value, end = _parse(data, pos, py3, 0 if py3 else smode, text, False, seen)
        return value, end, python
    code = data[pos]
    probe = not (code & 0x80 or code in _PY3_ONLY)
    try:
        value, end = _parse(data, pos, True, 0, text, probe, seen)
    except (_Py2Hint, DecodeError) as exc:
        if not probe:
            raise
        if _scan(data, pos, single) == 2:
            value, end = _parse(data, pos, False, smode, text, False, seen)
            return value, end, 2
        if isinstance(exc, _Py2Hint):
            value, end = _parse(data, pos, True, 0, text, False, seen)
            return value, end, 3
        raise
    return value, end, 3 if not probe else last


def loads(data: bytes, *, python: int | None = None, py2_str: str = "auto") -> object:
    """Read exactly one marshalled object from ``data``; trailing bytes are an error.

    ``python`` forces the interpretation (2 or 3); ``None`` reads it from the type
    codes (:func:`detect_python`; Python 3 when they do not tell).  ``py2_str``
    decides what a Python 2 ``str`` becomes: ``"auto"``, ``"bytes"`` or ``"latin1"``.
    Raises :class:`DecodeError` for anything malformed, hostile or refused.
    """
    smode = 1 if py2_str == "auto" and python is None else _check_options(python, py2_str)
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise DecodeError("bad marshal data at offset 0: empty (no object)")
    value, end, _ = _load_one(data, 0, python, smode, None, None, False)
    if end != len(data):
        raise DecodeError(
            f"bad marshal data at offset {end}: {len(data) - end} trailing bytes after the object"
        )
    return value


def load_stream(
    data_or_file: Any, *, python: int | None = None, py2_str: str = "auto"
) -> Iterator[tuple[object, int, int]]:
    """Read consecutive marshal dumps (several ``marshal.dump`` calls) until EOF.

    ``data_or_file`` is bytes-like or a binary file object; a file is read in
    chunks, so memory follows the largest dump, not the file.  Yields
    ``(value, start, end)``: the byte offsets of each dump (file positions for a
    file that can tell them, else counted from where reading began).  With
    ``python=None`` each dump is judged by its own type codes; one that does not
    tell takes the last decision made (else Python 3).  A bad dump raises
    :class:`DecodeError` with its offset and ends the stream.
    """
    smode = _check_options(python, py2_str)
    return ((value, start, end) for value, start, end, _ in _stream(data_or_file, python, smode))


def _stream(
    data_or_file: Any, python: int | None, smode: int, seen: list[int] | None = None
) -> Iterator[tuple[object, int, int, int | None]]:
    """Yield (value, start, end, the Python the dump was read as) for each dump."""
    if hasattr(data_or_file, "read"):
        return _stream_file(data_or_file, python, smode, seen)
    data = data_or_file if type(data_or_file) is bytes else bytes(data_or_file)
    return _stream_bytes(data, python, smode, seen)


def _stream_bytes(
    data: bytes, python: int | None, smode: int, seen: list[int] | None
) -> Iterator[tuple[object, int, int, int | None]]:
    pos = 0
    last = None
    text = data.decode("latin-1")
    while pos < len(data):
        value, end, last = _load_one(data, pos, python, smode, text, last, True, seen)
        yield value, pos, end, last
        pos = end


# ----------------------------------------------------------------------------- survey

#: Highest marshal format version each Python writes: 2 for Python 2.5-2.7, 4 for
#: Python 3.4-3.13, 5 for Python 3.14 (slices).
MAX_VERSION = {2: 2, 3: 5}

# What a type code proves about the format version of the dump holding it:
# (codes, lowest version that writes them, why).  Python 3's FLAG_REF is checked apart.
_LOWER_BOUNDS = (
    (":", 5, "slices ':' (version 5, Python 3.14+)"),
    ("aAzZ)", 4, "short/ASCII forms 'a A z Z )' (version \u22654)"),
    ("r", 3, "'r' references (version \u22653)"),
    ("gy", 2, "binary floats 'g'/'y' (version \u22652)"),
    ("tR", 1, "interned strings 't'/'R' (version \u22651)"),
)
# Text floats are what versions 0 and 1 write; version 2 and later write binary ones.
_TEXT_FLOATS = "fx"


def _codes_in(seen: list[int], chars: str) -> bool:
    return any(seen[ord(c)] or seen[ord(c) | 0x80] for c in chars)


def infer_version(seen: list[int], python: int | None) -> tuple[int, int, list[str]]:
    """The marshal format versions a dump may have been written at, from its type codes.

    ``seen`` (256 ints) is non-zero at each type code the dump holds (FLAG_REF bit
    included); ``python`` is the Python it was read as (2, 3 or ``None``).  Returns
    ``(lowest, highest, evidence)``.  The bytes carry no version number: each
    feature proves a *lowest* version (FLAG_REF or ``r``: 3, ``a A z Z )``: 4, ...)
    and text floats (``f``/``x``) prove *at most* 1.  A dump holding none of these
    (say, only ints and lists) could be any version, and a newer writer may choose
    an older form (an object referenced once carries no FLAG_REF), so the range is
    what the bytes prove, never a guess.  ``lowest > highest`` means the features
    contradict each other (hand-made data).
    """
    low, high = 0, MAX_VERSION.get(python or 3, 5)
    evidence = []
    if any(seen[128:]):
        low = 3
        evidence.append("FLAG_REF (version \u22653, Python 3.4+)")
    for chars, version, why in _LOWER_BOUNDS:
        if _codes_in(seen, chars):
            evidence.append(why)
            low = max(low, version)
    if _codes_in(seen, _TEXT_FLOATS):
        evidence.append("text floats 'f'/'x' (version \u22641)")
        high = min(high, 1)
    return low, high, evidence


def describe_version(low: int, high: int, python: int | None = None) -> str:
    """``"2"``, ``"≥3"``, ``"0-1"``, ``"any (0-5)"`` or ``"inconsistent"`` for a range."""
    top = MAX_VERSION.get(python or 3, 5)
    if low > high:
        return "inconsistent"
    if low == high:
        return str(low)
    if high == top:
        return f"any (0-{top})" if low == 0 else f"\u2265{low}"
    return f"{low}-{high}"


_SURVEY_MEMO = 4096  # distinct kinds of dump remembered by survey()


def _judge_dump(seen: list[int], which: int | None) -> tuple[str, str, list[str], int]:
    """(Python it was read as, version label, evidence, lowest version) of one dump."""
    read_as = which if which in (2, 3) else None
    if read_as != 2 and (any(seen[128:]) or _codes_in(seen, "raAzZ):")):
        read_as = 3
    low, high, why = infer_version(seen, read_as)
    return str(read_as) if read_as else "undecided", describe_version(low, high, read_as), why, low


def survey(
    data_or_file: Any, *, python: int | None = None, py2_str: str = "auto"
) -> dict[str, Any]:
    """Read every dump of a stream (values built and dropped) and describe it.

    Returns a JSON-able dict: ``objects`` (dumps read), ``python`` (2, 3,
    ``"mixed"`` or ``None`` when no dump tells), ``type_codes`` (sorted, FLAG_REF
    folded), ``flag_ref``, ``marshal_version`` (the range the type codes prove,
    over all dumps, e.g. ``"≥4"``; ``"mixed: ..."`` when dumps differ),
    ``marshal_versions`` (dumps per range), ``highest_version_feature`` (the
    highest lowest-version any dump proves), ``version_evidence``, and ``error``
    (``None``, or the message of the damaged dump that ended the stream, after
    ``objects`` good ones).  Memory follows the largest dump, as for
    :func:`load_stream`.
    """
    smode = _check_options(python, py2_str)
    seen = [0] * 256
    clean = [0] * 256
    every = 0  # every type code of every dump: byte i of this int is 1 for code i
    memo: dict[tuple[bytes, int | None], tuple[str, str, list[str], int]] = {}
    objects = 0
    pythons: dict[str, int] = {}
    versions: dict[str, int] = {}
    evidence: set[str] = set()
    highest = 0
    error = None
    stream = _stream(data_or_file, python, smode, seen)
    try:
        for _value, _start, _end, which in stream:
            objects += 1
            signature = bytes(seen)  # the dump's type codes: dumps alike are judged once
            every |= int.from_bytes(signature, "little")
            judged = memo.get((signature, which))
            if judged is None:
                judged = _judge_dump(seen, which)
                if len(memo) < _SURVEY_MEMO:
                    memo[(signature, which)] = judged
            key, label, why, low = judged
            pythons[key] = pythons.get(key, 0) + 1
            versions[label] = versions.get(label, 0) + 1
            evidence.update(why)
            highest = max(highest, low)
            seen[:] = clean
    except DecodeError as exc:
        error = exc.detail
    codes = [i for i in range(256) if every >> (8 * i) & 1]
    decided = [p for p in pythons if p != "undecided"]
    if python is not None:
        which_python: int | str | None = python
    elif len(decided) == 1:
        which_python = int(decided[0])
    else:
        which_python = "mixed" if decided else None
    if len(versions) == 1:
        version = next(iter(versions))
    else:
        version = "mixed: " + ", ".join(
            f"{label} ({n} dump{'s' if n != 1 else ''})" for label, n in sorted(versions.items())
        )
    return {
        "objects": objects,
        "python": which_python,
        "python_forced": python is not None,
        "dumps_by_python": pythons,
        "type_codes": sorted({chr(i & 0x7F) for i in codes}),
        "flag_ref": any(i & 0x80 for i in codes),
        "marshal_version": version if objects else None,
        "marshal_versions": versions,
        "highest_version_feature": highest if objects else None,
        "version_evidence": sorted(evidence),
        "error": error,
    }


def _file_position(f: Any) -> tuple[int, int | None]:
    """Where reading starts in ``f`` and where the file ends, when the file can tell."""
    try:
        if not f.seekable():
            return 0, None
        here = f.tell()
        size = f.seek(0, 2)
        f.seek(here)
        return here, size
    except (AttributeError, OSError, ValueError):
        return 0, None


def _read(f: Any, size: int) -> bytes:
    chunk = f.read(size)
    if isinstance(chunk, str):
        raise UsageError("marshal data is read from a binary file (open it with 'rb')")
    return bytes(chunk or b"")


def _stream_file(
    f: Any, python: int | None, smode: int, seen: list[int] | None
) -> Iterator[tuple[object, int, int, int | None]]:
    base, file_end = _file_position(f)  # base: file offset of buf[0]
    buf = b""
    text = ""
    pos = 0  # offset in buf of the next dump
    eof = False
    last = None
    while True:
        if pos >= len(buf):
            if eof:
                return
            base += len(buf)
            buf, pos = _read(f, _CHUNK), 0
            if not buf:
                return
            text = buf.decode("latin-1")
        try:
            value, end, which = _load_one(buf, pos, python, smode, text, last, True, seen)
        except _Truncated as exc:
            need = exc.need
            if eof or (need is not None and file_end is not None and base + need > file_end):
                raise DecodeError(_shift_offset(str(exc), base)) from None
            # keep the unread part and read as much again as this dump already
            # holds: the buffer doubles, so a huge dump is read in few steps, and
            # a size the data only declares (a hostile 2**31) never becomes a read
            # of that size (a pipe cannot say how much is left)
            want = max(_CHUNK, len(buf) - pos)
            chunk = _read(f, want)
            if not chunk:
                eof = True
            base += pos
            buf, pos = buf[pos:] + chunk, 0
            text = buf.decode("latin-1")
            continue
        except DecodeError as exc:
            raise DecodeError(_shift_offset(str(exc), base)) from None
        last = which
        yield value, base + pos, base + end, which
        pos = end


_OFFSET_RE = re.compile(r"offset (\d+)")


def _shift_offset(message: str, base: int) -> str:
    """Turn an offset inside the read buffer into a file offset in an error message."""
    if not base:
        return message
    return _OFFSET_RE.sub(lambda m: f"offset {int(m.group(1)) + base}", message, count=1)
