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

Limits (every scan): a pickle over :data:`MAX_PICKLE` bytes (1 GiB) and any
string/bytes value whose declared length or text line is over :data:`MAX_VALUE`
(256 MiB) are refused.  A *strict* scan (``scan(data, 0, True)``, the loader's)
also refuses:

* a second PROTO with a different value (PICKLE_SECURITY.md section 5, rule 5;
  the same value again is allowed), and NEXT_BUFFER/READONLY_BUFFER (out-of-band
  buffers).  Both stop a regex run (PROTO at offset 0 is skipped before the
  run), so they cost nothing on pickles without them;
* a LONG4 body over :data:`MAX_LONG_BYTES` (64 KiB, ~158,000 digits) and a text
  INT/LONG over :data:`MAX_TEXT_DIGITS` digits (100,000) or not plain decimal.
  The run pattern only takes INT/LONG lines of up to 640 characters (the lowest
  value ``sys.set_int_max_str_digits`` accepts), so a longer one is always seen
  here; :func:`rewrite_text_ints` turns such opcodes into same-size LONG4 so the
  loader reads a legitimate 5000-digit Python 2 long whatever the host's
  ``int()`` digit limit (that setting is process-wide, so it is never raised).

Structure (:func:`check_structure`): a Python walk of the stack effects (an
open MARK at STOP, SETITEM(S)/APPEND(S)/ADDITEMS on the wrong kind of object,
stack underflow, memo misses, nesting deeper than :data:`MAX_DEPTH`, 1000, by
depth tracked when an item is built or filled).  It costs about 7 us on a
small pickle (the whole fast load is about 2 us), so it does not run on every
pickle.  A strict scan reads the opcodes with a *structured* run pattern (see
"The structured run" below) that proves, in the same single regex call, that
no MARK is left open at STOP and that every SETITEM/SETITEMS applies to a dict
(or an object made by a global), for what picklers write (dicts, lists,
tuples, sets, nested three MARK groups deep, ...; protocol 0 values by the
text grammar, nested four levels deep).  When that run cannot prove it
(another shape, a deeper nesting), the *skeleton proof* (see "The skeleton
proof" below) tries: the opcode bytes alone, walked in Python, with the
verdict kept per skeleton (the strict scan then puts :data:`BY_SKELETON` in
``seen``).  It returns ``-end`` and asks for the walk when neither proves it,
for a BYTEARRAY8 opcode, and for more tuple opcodes than MAX_DEPTH
(:func:`tuple_bound`; hashing a 1,000,000-deep tuple as a dict key overflows
the C stack, and a tuple's depth is fixed when it is built); it returns
``-end`` without asking for the walk for more container opcodes than
MAX_DEPTH (:func:`nesting_bound`, byte counts: below that, nothing can nest
deeper), when only the loaded value's depth must be measured.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import DecodeError

__all__ = [
    "Incomplete",
    "OPCODE_NAMES",
    "check_structure",
    "nesting_bound",
    "rewrite_text_ints",
    "scan",
    "scan_stream",
    "shuffle_stack",
    "tuple_bound",
]

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
# No-argument opcodes the run pattern takes (NEXT_BUFFER and READONLY_BUFFER stop
# a run, so that a strict scan sees them).
_NOARG_MATCHED = _NOARG[:-2]
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
_PROTO = 0x80
_INT = 0x49
_LONG = 0x4C
_LONG4 = 0x8B
_BYTEARRAY8 = 0x96
_U64 = struct.Struct("<Q").unpack_from
_PUT = 0x70
_LONG_BINPUT = 0x72
_FRAME = 0x95
_RUN = 2000  # opcodes matched per regex call at most (bounds the engine's stack)
_MAX_PUT_DIGITS = 19

# Limits (strict scans; see "Limits" in the module docstring).
MAX_PICKLE = 1 << 30  # bytes in one pickle
MAX_VALUE = 256 << 20  # bytes (or characters of a text line) in one string/bytes value
MAX_LONG_BYTES = 64 << 10  # LONG4 body
MAX_TEXT_DIGITS = 100_000  # INT/LONG text digits
MAX_DEPTH = 1000  # levels of nested containers
# Text INT/LONG lines longer than this stop the regex run and are looked at in
# Python: 640 is the smallest value sys.set_int_max_str_digits accepts, so a
# line the regex takes is never refused by the host's int() limit.
_SHORT_INT = 640


def _class(chars: Iterable[int]) -> bytes:
    """A regex class of the byte values ``chars`` (bytes, or any iterable of ints)."""
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars)) + b"]"


def _counted(width: int, body: bytes = b".") -> bytes:
    """Any length below 256 in ``width`` little-endian bytes, then that many ``body`` items."""
    pad = b"\x00" * (width - 1)
    branches = [
        re.escape(bytes([n]) + pad) + (body * n if n < 4 else body + b"{%d}" % n)
        for n in range(256)
    ]
    return b"(?:" + b"|".join(branches) + b")"


# Possessive repeats (Python 3.11+) skip the engine's backtracking bookkeeping.
_PLUS = b"+" if sys.version_info >= (3, 11) else b""
_NOARG_RUN = _class(_NOARG_MATCHED) + b"*" + _PLUS
_LINE = b"[^\n]*" + _PLUS + b"\n"
# Opcodes with an argument, most common first (the engine tries them in order).
_STRINGS = b"\x8c" + _counted(1)  # SHORT_BINUNICODE: dict keys and most text
_SMALL = _class(b"Khq\x82") + b"."  # BININT1, BINGET, BINPUT, EXT1 (PROTO stops a run)
# protocol 0 text opcodes: INT/LONG lines up to _SHORT_INT bytes, others up to MAX_VALUE
# (also as two alternatives of their own, which the engine dispatches on
# their first byte)
_TEXTS = [
    _class(b"FPSVg") + b"[^\n]{0,%d}" % MAX_VALUE + _PLUS + b"\n",
    b"[IL][^\n]{0,%d}" % _SHORT_INT + _PLUS + b"\n",
]
_TEXT = (
    b"(?:"
    + _class(b"FPSVg")
    + b"[^\n]{0,%d}" % MAX_VALUE
    + _PLUS
    + b"\n|[IL][^\n]{0,%d}" % _SHORT_INT
    + _PLUS
    + b"\n)"
)
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


# --------------------------------------------------------------------------
# The structured run: the same tokens, read with their MARK structure (strict scans)
#
# A strict scan (the loader's) reads the pickle with a second kind of run
# pattern, :func:`_structure_pattern`, which takes the same opcodes and
# arguments (and memo index bounds) as the run above, but only in a grammar
# that proves the two things the C unpickler does not check and
# :func:`check_structure` refuses: a MARK still open at STOP, and
# SETITEM/SETITEMS on anything but a dict or an object (a list gets an index
# assigned: ``]K\x05a K\x00 K\x09 s`` loads as ``[9]``).  When the structured
# run reaches STOP both are proven and nothing more runs; otherwise the scan
# returns ``-end`` and the loader runs the exact walk (about 7 us on a small
# pickle).  Only opcodes of the pickle itself are ever matched (one regex
# call from an opcode boundary, every token whole), so no byte of an argument
# is ever read as an opcode.
#
# The grammar, and why it is sound ("T" is a *maker*: EMPTY_DICT, REDUCE,
# NEWOBJ or NEWOBJ_EX, which push a new dict or object; PUTs and MEMOIZE may
# follow any opcode, they do not touch the stack):
#
# * MARK is only taken as the opening of a group ``( BODY CONSUMER`` whose
#   BODY is read one level deeper (STRUCTURE_DEPTH levels at most), and the
#   MARK consumers (TUPLE, LIST, DICT, FROZENSET, OBJ, INST, APPENDS,
#   SETITEMS, ADDITEMS, POP_MARK) only as the closing of a group; neither is
#   taken anywhere else.  So MARKs and consumers pair up like brackets, as
#   many of each.  The C unpickler pops one MARK per consumer or fails
#   ("could not find MARK"), and POP removes a MARK only when nothing is above
#   it; after such a POP some consumer would find no MARK and the load fails.
#   So a pickle this grammar takes and the C unpickler loads has no MARK open
#   at STOP, and the C unpickler pairs MARKs and consumers as the grammar does.
# * SETITEMS is only taken as the consumer of a group whose MARK directly
#   follows a T (``T ( ... SETITEMS``).  Its target is the item right below
#   its MARK (the C unpickler's fence keeps it there): the new dict or object,
#   which check_structure accepts.  The body is copied into this group and
#   into the group for any other MARK (no SETITEMS), so each level has two
#   copies of the level below (2**STRUCTURE_DEPTH copies of the innermost).
# * SETITEM is only taken as ``T K V SETITEM`` (K and V one opcode each,
#   pushing one item), then more ``K V SETITEM`` (the target stays on top),
#   also after a DICT group (``( ... DICT K V SETITEM``, protocol 0 and 1),
#   and as ``T K [maker] ( FLAT ) SETITEM`` where the group has no group
#   inside and leaves exactly one new item: SETITEMS after EMPTY_DICT,
#   APPENDS or ADDITEMS after EMPTY_LIST or EMPTY_SET, or a value-building
#   consumer (TUPLE, LIST, FROZENSET, OBJ, DICT) with no maker before the
#   MARK.  Which maker it was is captured in two groups that the alternative
#   always sets (to the maker or to nothing); the consumer tests them with
#   back references: ``(?!(?P=d0))`` fails exactly when d0 is empty, since
#   the consumer byte never starts a non-empty capture (``}``, ``]``, \x8f).
# * Everything else is a single opcode with no effect on MARKs and no SETITEM,
#   taken as the flat run takes it.  Anything the grammar does not take
#   (deeper groups, SETITEM in another shape, a string of 256 bytes or more)
#   ends the structured run, and the flat walk and the exact walk decide (a
#   string or a memo index the run patterns cannot take is first replaced, in
#   a copy, by an opcode of the same length and stack effect, and the copy is
#   read again: see :func:`_masked`).
STRUCTURE_DEPTH = 3  # levels of MARK groups the structured run reads
# Past this size the structured run is not tried (Python 3.10 has no possessive
# repeats, so the engine keeps a backtracking frame per opcode there: small
# pickles only); the exact walk decides.
_STRUCTURE_MAX = MAX_PICKLE if sys.version_info >= (3, 11) else 64 << 10
_DICT_MAKERS = b"}R\x81\x92"  # EMPTY_DICT, REDUCE, NEWOBJ, NEWOBJ_EX: a new dict or object
_FILLED_MAKERS = b"]\x8f"  # EMPTY_LIST, EMPTY_SET (filled by APPENDS/ADDITEMS)
_CONSUMERS = b"tld\x91oeu\x901"  # (INST, 'i', has arguments)
# The flat run's no-argument opcodes that are plain tokens here: no MARK, no
# consumer, no SETITEM, and none of the makers above (those are read with
# what follows them first).
_PLAIN_NOARG = bytes(
    c for c in _NOARG_MATCHED if c not in b"(s" + _CONSUMERS + _DICT_MAKERS + _FILLED_MAKERS
)
_STRUCT_PATTERNS: dict[tuple[int, int], re.Pattern[bytes]] = {}


def _structure_pattern(long_binput_bits: int, put_digits: int) -> re.Pattern[bytes]:
    """The structured run pattern for a memo bound (see the comment above)."""
    key = (long_binput_bits, put_digits)
    pattern = _STRUCT_PATTERNS.get(key)
    if pattern is not None:
        return pattern
    memo_parts = [b"\x94", b"q."]
    args = [_STRINGS, _class(b"Khq\x82") + b".", *_TEXTS]
    if put_digits:
        put = b"p[0-9]{1,%d}%s\n" % (put_digits, _PLUS)
        memo_parts.append(put)
        args.append(put)
    if long_binput_bits:
        memo_parts.append(_long_binput(long_binput_bits))
        args.append(_long_binput(long_binput_bits))
    # Opcodes with an argument, as the flat run takes them (memo PUTs
    # included; INST is a consumer here).  Every alternative starts with a
    # byte or a class, so the engine skips the others at once.
    args += [*_REST[:-1], b"c" + _LINE + _LINE]
    memos = b"(?:" + b"|".join(memo_parts) + b")*" + _PLUS
    # One opcode that pushes one item (K and V of SETITEM).
    one_args = [
        _class(b"\x8cUC\x8a") + _counted(1),
        _class(b"Kh\x82") + b".",
        *_TEXTS,
        *_REST[:1],
        *_REST[2:-1],
        b"c" + _LINE + _LINE,
    ]
    one = b"(?:" + _class(b"N\x88\x89)]}\x8f") + b"|" + b"|".join(one_args) + b")"
    pair = b"(?:" + memos + one + b"){2}" + memos + b"s"  # K V SETITEM
    pairs = b"(?:" + pair + b")*" + _PLUS
    # Protocol 0 and 1 values that are MARK groups with single opcodes inside
    # (LIST then APPENDs, DICT then K V SETITEMs, a TUPLE): each MARK is
    # consumed right away by the LIST, DICT or TUPLE of the same alternative,
    # and each leaves one item.  The V of K V SETITEM after DICT.
    value0 = b"|".join(
        [
            one,
            b"\\(l" + memos + b"(?:" + one + memos + b"a" + memos + b")*" + _PLUS,
            b"\\(d" + memos + b"(?:" + pair + memos + b")*" + _PLUS,
            b"\\((?:" + memos + one + b")*" + _PLUS + memos + b"t",
        ]
    )
    pairs0 = b"(?:" + memos + one + memos + b"(?:" + value0 + b")" + memos + b"s)*" + _PLUS
    maker = _class(_DICT_MAKERS)
    run = _class(_PLAIN_NOARG + _FILLED_MAKERS) + b"*" + _PLUS
    flat_dict = maker + b"(?:" + pair + b")+" + _PLUS  # T K V SETITEM, more on T
    lone = maker + b"(?!" + memos + b"\\()"  # a maker as a plain opcode (REDUCE, {} as a value)
    # The innermost level (inside STRUCTURE_DEPTH groups) and the value of
    # ``T K ( ... ) SETITEM`` take no SETITEM: fewer copies of the
    # arguments, the pattern is large (2**STRUCTURE_DEPTH copies of it).
    body = flat = run + b"(?:(?:" + b"|".join([*args, lone]) + b")" + run + b")*" + _PLUS
    then_mark = b"(?=" + memos + b"\\()"
    for level in range(1, STRUCTURE_DEPTH + 1):
        # SETITEM after a group only in the two outer levels (records, and
        # the items of a list of records): each copy costs compile time.
        outer = level >= STRUCTURE_DEPTH - 1
        consumers = [
            _class(b"e\x90tl\x91o1"),
            # (protocol 0 dicts: the text grammar reads them where it runs)
            b"d" + pairs0 if outer and not _PLUS else b"d",
            b"i" + _LINE + _LINE,
        ]
        d, f = b"d@", b"f@"  # numbered below, one number per copy of the group
        groups = [
            # A MARK right after a maker: SETITEMS may consume it.
            maker + memos + b"\\(" + body + b"[ude\x90tl\x91o1]",
            # T K, a group with no group inside that leaves one new item,
            # SETITEM on T (a dict with one item whose value is a container):
            # the maker of the container the group fills is captured, in d
            # (EMPTY_DICT) or f (EMPTY_LIST, EMPTY_SET), or both are empty;
            # the consumer must fit (see the comment above).
            maker
            + memos
            + one
            + memos
            + b"(?P<%s>}%s|)(?P<%s>[\\]\x8f]%s|)" % (d, then_mark, f, then_mark)
            + memos
            + b"\\("
            + flat
            + b"(?:(?!(?P=%s))u|(?!(?P=%s))[e\x90]|(?=(?P=%s))(?=(?P=%s))[tl\x91od])" % (d, f, d, f)
            + memos
            + b"s"
            + pairs,
            # Any other MARK: no SETITEMS.
            b"\\(" + body + b"(?:" + b"|".join(consumers) + b")",
        ]
        repeat = b"{0,%d}" % _RUN if level == STRUCTURE_DEPTH else b"*"
        # Most frequent first (the engine tries them in order): strings, small
        # ints and memo PUTs, then the groups, then the rest.
        alternatives = [*args[:2], groups[2], groups[0], *args[2:], *groups[1:2] * outer]
        alternatives += [flat_dict, lone]
        body = run + b"(?:(?:" + b"|".join(alternatives) + b")" + run + b")" + repeat + _PLUS
    # The body of a level is copied into both groups of the next one: give
    # each copy of the captures its own names (copies neither nest nor overlap).
    pieces = body.split(b"(?P<d@>")
    numbered = [pieces[0]]
    for number, piece in enumerate(pieces[1:]):
        tag = b"%d>" % number
        numbered.append(
            b"(?P<d" + tag + piece.replace(b"d@", b"d%d" % number).replace(b"f@", b"f%d" % number)
        )
    # At offset 0 (only: ``\A`` never matches at a later ``pos``) the run also
    # takes PROTO and the FRAME that pickle.dumps puts after it, so the loader's
    # inline scan is one call; a later PROTO or FRAME still stops the run.
    header = b"(?:\\A\x80.(?:\x95.{8})?)?" + _PLUS
    pattern = _STRUCT_PATTERNS[key] = re.compile(header + b"".join(numbered), re.DOTALL)
    return pattern


# The text grammar: protocol 0, as Python 2's and 3's picklers write it.
#
# Protocol 0 fills dicts and lists one item at a time (``(d`` then ``K V
# SETITEM`` per item, ``(l`` then ``V APPEND``), so a value nested in a value
# is what a MARK-group grammar reads worst.  This grammar reads one whole
# value, nested TEXT_DEPTH levels deep, and each alternative is one value: it
# pushes exactly one item and reaches nothing below it:
#
# * a scalar line (INT, LONG, FLOAT, STRING, UNICODE), NONE, a memo GET, a GLOBAL;
# * ``( DICT`` then ``KEY V SETITEM`` (the target is the new dict; KEY is a
#   scalar or a tuple of scalars), ``( LIST`` then ``V APPEND``;
# * ``GLOBAL ( V... TUPLE REDUCE``, ``( V... TUPLE`` or ``( V... INST``;
# * any of these, then optionally ``V BUILD`` (the state: BUILD keeps its
#   target; BUILD on a value that takes none is the C unpickler's refusal).
#
# Memo PUTs may follow each value.  Every MARK is consumed in the alternative
# that opened it, and the pickle is one value and STOP, so no MARK is open at
# STOP.  Each level holds five copies of the level below.  It is a pattern of
# its own (:func:`_text_pattern`), tried on pickles that do not start with
# PROTO instead of the binary run, and only with possessive repeats (3.11+):
# a reading that fits is never taken back, so no input makes it backtrack.
TEXT_DEPTH = 4  # levels of nested values the text grammar reads


def _text_value(put_digits: int, depth: int) -> bytes:
    """The text grammar (see above) for a memo PUT bound, ``depth`` levels deep."""
    memos = b"(?:p[0-9]{1,%d}%s\n)*%s" % (put_digits, _PLUS, _PLUS) if put_digits else b""
    lines2 = _LINE + _LINE
    scalar = b"(?:" + b"|".join([*_TEXTS, b"N"]) + b")"
    key = b"(?:" + scalar + b"|\\((?:" + scalar + memos + b")*" + _PLUS + b"t)"

    def value(level: int) -> bytes:
        if level == 0:
            return b"(?:" + scalar + b"|c" + lines2 + b")"
        # (A GLOBAL that a MARK follows is read as a REDUCE's: the repeats are
        # possessive, so the first reading that fits must be the right one.)
        leaf = b"(?:" + scalar + b"|c" + lines2 + b"(?!" + memos + b"\\())"
        inner = value(level - 1)
        items = b"\\((?:" + inner + memos + b")*" + _PLUS
        # No alternative ends with memo PUTs (the caller's come next): a run of
        # PUTs is taken in one place only.  No capture groups either: the
        # engine saves every group set so far at each repeat, so groups here,
        # tried first, would slow down the whole run.
        return (
            b"(?:"
            + b"|".join(
                [
                    leaf,
                    b"\\(d(?:" + memos + key + memos + inner + memos + b"s)*" + _PLUS,
                    b"\\(l(?:" + memos + inner + memos + b"a)*" + _PLUS,
                    b"c" + lines2 + memos + items + b"t" + memos + b"R",
                    items + b"(?:t|i" + lines2 + b")",
                ]
            )
            + b"(?:"
            + memos
            + inner
            + memos
            + b"b)?"
            + _PLUS
            + b")"
        )

    return value(depth) + memos


_TEXT_PATTERNS: dict[int, re.Pattern[bytes]] = {}


def _text_pattern(put_digits: int) -> re.Pattern[bytes]:
    """The text grammar's whole-value pattern for a memo PUT bound (match it where
    the pickle starts; it ends just before the STOP)."""
    pattern = _TEXT_PATTERNS.get(put_digits)
    if pattern is None:
        source = _text_value(put_digits, TEXT_DEPTH) + b"(?=\\.)"
        pattern = _TEXT_PATTERNS[put_digits] = re.compile(source, re.DOTALL)
    return pattern


# First bytes that only a binary pickle starts with (PROTO; protocol 1's empty
# containers, binary ints, floats and strings), by byte value: those pickles
# take the binary run, the others the text grammar.
BINARY_FIRST = bytes(c == _PROTO or c in b"}])KJMGUTX" for c in range(256))

_SBY_CAP: list[_Matcher | None] = [None] * _NCAP  # structured run, by exact cap
_TBY_CAP: list[_Matcher | None] = [None] * _NCAP  # text grammar, by exact cap


# The structured run takes memo indexes up to the largest of these within the
# pickle's size (a bigger one, still within the size, stops the run and the
# masked re-read takes it): a few patterns, each about half a second to
# compile, instead of one per index bound.  Picklers number memo entries from
# 0 and each costs a few bytes, so the index rarely gets past the bound.
_STRUCTURE_CAPS = (0, 9, 99, 999, 9999, 99999, 999999, 1 << 24, MAX_PICKLE)


def _text_matcher(cap: int, compile: bool = True) -> _Matcher | None:
    """The text grammar for a pickle of ``cap`` bytes (None: not compiled, and ``compile``
    is False; or no possessive repeats, Python 3.10)."""
    if not _PLUS:
        return None
    digits = _key_for(max(c for c in _STRUCTURE_CAPS if c <= cap))[1]
    pattern = _TEXT_PATTERNS.get(digits)
    if pattern is None:
        if not compile:
            return None
        pattern = _text_pattern(digits)
    match = pattern.match
    if cap < _NCAP:
        _TBY_CAP[cap] = match  # type: ignore[assignment]
    return match  # type: ignore[return-value]


def _structure_matcher(cap: int, compile: bool = True) -> _Matcher | None:
    """The structured run for a pickle of ``cap`` bytes (None: not compiled, and ``compile`` is False)."""
    key = _key_for(max(c for c in _STRUCTURE_CAPS if c <= cap))
    pattern = _STRUCT_PATTERNS.get(key)
    if pattern is None:
        if not compile:
            return None
        pattern = _structure_pattern(*key)
    match = pattern.match
    if cap < _NCAP:
        _SBY_CAP[cap] = match  # type: ignore[assignment]
    return match  # type: ignore[return-value]


class Incomplete(Exception):
    """The data ends inside the pickle; more bytes are needed (streams only)."""

    def __init__(self, resume: int, needed: int):
        super().__init__(resume, needed)
        self.resume = resume  # an opcode boundary to go on from
        self.needed = needed  # the data must be at least this long to get further


def _walk(
    data: Any,
    start: int,
    pos: int,
    cap: int | None,
    limit: int | None,
    strict: bool = False,
    ints: list[tuple[int, int]] | None = None,
    seen: list[tuple[int, int]] | None = None,
    stops: list[tuple[int, int]] | None = None,
) -> int:
    """The walk behind :func:`scan` and :func:`scan_stream`; returns the end offset.

    ``limit`` is how long the data really is (``len(data)`` when all of it is
    here, more when a stream has bytes not read yet, None when unknown): an
    argument past ``limit`` is refused, one past ``len(data)`` but within
    ``limit`` raises :class:`Incomplete`.  ``cap`` bounds memo indexes (None: no
    bound).  ``strict`` adds the loader's refusals (a second PROTO, out-of-band
    buffers, text INT/LONG digits).  Size limits apply always.  ``ints``
    collects ``(offset, end)`` of text INT/LONG opcodes longer than the regex
    takes (see :func:`rewrite_text_ints`), ``seen`` those of BYTEARRAY8,
    ``stops`` those of every opcode the run pattern does not take.
    """
    size = len(data)
    final = limit is not None and limit <= size
    match = _matcher(cap)
    while True:
        pos = match(data, pos).end()
        if pos - start > MAX_PICKLE:
            raise DecodeError(
                f"pickle over a limit: more than {MAX_PICKLE} bytes in one pickle (the size limit)"
            )
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
        if kind == _NONE:  # NEXT_BUFFER, READONLY_BUFFER
            if strict:
                raise DecodeError(
                    f"refused pickle: {name} at offset {where}: out-of-band buffers "
                    f"(NEXT_BUFFER/READONLY_BUFFER) are not supported"
                )
            pos = end
            continue
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
            elif code in (_INT, _LONG):
                if strict and end - arg > _SHORT_INT:
                    _check_text_int(data, pos, end, where, name)
                    if ints is not None:
                        ints.append((pos, end))
            elif n == 1 and end - 1 - arg > MAX_VALUE:
                raise DecodeError(
                    f"pickle over a limit: {name} at offset {where} has a {end - 1 - arg}-byte "
                    f"line, more than the {MAX_VALUE}-byte limit for one value"
                )
            if stops is not None:
                stops.append((pos, end))
            pos = end
            continue
        end = arg + n  # kind is _FIXED or _COUNTED
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
                if declared is not None:
                    _check_declared(code, name, where, declared, strict)
                raise Incomplete(pos, end)
            if declared is not None:
                raise DecodeError(
                    f"truncated pickle: {name} at offset {where} declares {declared} bytes "
                    f"but only {(size if limit is None else limit) - arg - n} remain"
                )
            raise DecodeError(f"truncated pickle: the data ends inside {name} at offset {where}")
        if declared is not None:
            _check_declared(code, name, where, declared, strict)
            if code == _BYTEARRAY8 and seen is not None:
                seen.append((pos, end))
        elif code == _LONG_BINPUT and cap is not None:
            _check_index(name, where, int.from_bytes(data[arg:end], "little"), cap)
        elif code == _PROTO and strict and pos != start:
            first = data[start + 1] if data[start] == _PROTO else None
            if data[arg] != first:
                was = "no PROTO (protocol 0 or 1)" if first is None else f"protocol {first}"
                raise DecodeError(
                    f"refused pickle: a second PROTO at offset {where} switches from {was} "
                    f"to protocol {data[arg]}"
                )
        if stops is not None:
            stops.append((pos, end))
        pos = end


def _check_declared(code: int, name: str, where: int, declared: int, strict: bool) -> None:
    if code == _LONG4:
        if strict and declared > MAX_LONG_BYTES:
            raise DecodeError(
                f"pickle over a limit: LONG4 at offset {where} declares a {declared}-byte int, "
                f"more than the {MAX_LONG_BYTES}-byte limit (too large)"
            )
    elif code == _FRAME:
        if declared > MAX_PICKLE:
            raise DecodeError(
                f"pickle over a limit: FRAME at offset {where} declares {declared} bytes, "
                f"more than the {MAX_PICKLE}-byte limit for one pickle"
            )
    elif declared > MAX_VALUE:
        raise DecodeError(
            f"pickle over a limit: {name} at offset {where} declares {declared} bytes, "
            f"more than the {MAX_VALUE}-byte limit for one value"
        )


def _check_text_int(data: Any, pos: int, end: int, where: int, name: str) -> None:
    """A text INT/LONG longer than the regex takes: plain digits, at most MAX_TEXT_DIGITS."""
    text = bytes(data[pos + 1 : end - 1])
    if text[:1] in (b"-", b"+"):
        text = text[1:]
    if name == "LONG" and text.endswith(b"L"):
        text = text[:-1]
    if not (text.isdigit() and text.isascii()):
        raise DecodeError(
            f"malformed pickle: {name} at offset {where} is not a plain decimal number "
            f"({text[:30]!r}...)"
        )
    if len(text) > MAX_TEXT_DIGITS:
        raise DecodeError(
            f"pickle over a limit: {name} at offset {where} has {len(text)} digits, "
            f"more than the {MAX_TEXT_DIGITS}-digit limit"
        )


def _int_from_digits(digits: bytes) -> int:
    """``int(digits)`` for any length, without the host's int/str digit limit."""
    if len(digits) <= 600:  # below every allowed sys.set_int_max_str_digits value
        return int(digits)
    low = len(digits) // 2
    return _int_from_digits(digits[:-low]) * 10**low + _int_from_digits(digits[-low:])


def rewrite_text_ints(data: bytes) -> bytes:
    """``data`` with every long text INT/LONG replaced by an equal LONG4 of the same size.

    The host's ``int()`` refuses more than ``sys.get_int_max_str_digits()``
    digits (4300 by default), and that setting is process-wide, so it is not
    raised.  Instead each INT/LONG opcode longer than 640 characters (already
    checked by a strict :func:`scan`: plain digits, at most MAX_TEXT_DIGITS) is
    parsed here and written back as LONG4 in place: the LONG4 body is padded
    with sign bytes to exactly the text's length, so offsets, FRAME lengths and
    memo bounds are unchanged, and the C unpickler reads the same stream.
    """
    ints: list[tuple[int, int]] = []
    _walk(data, 0, 0, len(data), len(data), True, ints)
    if not ints:
        return data
    out = bytearray(data)
    for pos, end in ints:
        text = bytes(data[pos + 1 : end - 1])
        negative = text[:1] == b"-"
        if text[:1] in (b"-", b"+"):
            text = text[1:]
        if data[pos] == _LONG and text.endswith(b"L"):
            text = text[:-1]
        value = _int_from_digits(text)
        if negative:
            value = -value
        body = end - pos - 5
        out[pos:end] = (
            b"\x8b" + body.to_bytes(4, "little") + value.to_bytes(body, "little", signed=True)
        )
    return bytes(out)


def _check_index(name: str, where: int, index: int, cap: int) -> None:
    if index > cap:
        raise DecodeError(
            f"malformed pickle: {name} at offset {where} stores memo index {index}, "
            f"more than a pickle of {cap} bytes can hold"
        )


# ``resume`` values of :func:`scan` besides an offset.
RUN_STRUCTURED = -1  # run the structured run first (compiling its pattern if need be)
SKIP_STRUCTURED = -2  # do not (shapes it did not take lately): flat walk and skeleton proof
# Run it when its pattern is compiled already, else do as SKIP_STRUCTURED: the
# pattern takes about half a second to compile, which only a long run of
# records pays back (it saves about 2 us a record over the skeleton proof).
RUN_IF_COMPILED = -3
# The entry of ``seen`` that says the skeleton proof (not the structured run) proved the structure.
BY_SKELETON = (-2, -2)


def scan(
    data: bytes,
    start: int = 0,
    strict: bool = False,
    seen: list[tuple[int, int]] | None = None,
    resume: int = RUN_IF_COMPILED,
) -> int:
    """Check the opcodes of the pickle at ``data[start:]``; return the offset just past STOP.

    Raises :class:`DecodeError` for an unknown opcode, a missing STOP, an argument
    or declared length past the end of ``data``, or a memo index larger than the
    pickle's size (``len(data) - start``), and for anything over the size limits
    (see the module docstring).  With ``strict`` (the loader), also for a second
    PROTO with a different value, NEXT_BUFFER/READONLY_BUFFER and a text INT/LONG
    that is not plain digits or has more than MAX_TEXT_DIGITS digits.

    A strict scan returns ``-end`` (negative) when more checks are due, and then
    ``seen`` (a list, when given) says whether the loader must run
    :func:`check_structure` before loading: it gets an entry other than
    :data:`BY_SKELETON` when neither the structured run (see "The structured
    run" above) nor the skeleton proof proved the MARK structure and the fill
    targets, for a BYTEARRAY8 (its ``(offset, end)``) and when
    :func:`tuple_bound` is over MAX_DEPTH; it has no such entry when only the
    loaded value's depth must be measured (more container opcodes than
    MAX_DEPTH, :func:`nesting_bound`).  :data:`BY_SKELETON` in ``seen`` says
    the skeleton proof was needed.  ``resume`` is where the caller's own
    structured run stopped (an offset), :data:`RUN_STRUCTURED` (run it here) or
    :data:`SKIP_STRUCTURED` (go straight to the flat walk and the skeleton
    proof).  Bytes after STOP are not looked at.  ``data`` is ``bytes`` or
    ``bytearray``.
    """
    size = len(data)
    cap = size - start
    if cap > MAX_PICKLE:
        raise DecodeError(
            f"pickle over a limit: {cap} bytes, more than the {MAX_PICKLE}-byte limit for one pickle"
        )
    if strict:
        return _strict_scan(data, start, cap, seen, resume)
    match = _BY_CAP[cap] if cap < _NCAP else _BY_BITS[min(cap.bit_length(), 64)]
    if match is not None:
        pos = _after_header(data, start, cap)
        pos = match(data, pos).end()
        if pos < size and data[pos] == _STOP:
            return pos + 1
    else:
        pos = start
    return _walk(data, start, pos, cap, size)


def _after_header(data: Any, start: int, cap: int) -> int:
    """Past PROTO and the FRAME that pickle.dumps puts at offset 2 (when it fits)."""
    pos = start
    if cap > 2 and data[start] == _PROTO:
        pos += 2
        if cap > 11 and data[pos] == _FRAME and _U64(data, pos + 1)[0] <= cap - 11:
            pos += 9
    return pos


_UNPROVEN = (-1, -1)  # the entry of ``seen`` that asks for check_structure


def _depth_checks(data: Any, end: int, seen: list[tuple[int, int]] | None) -> int:
    """A strict scan's result for a pickle whose structure is proven (see :func:`scan`)."""
    if nesting_bound(data) <= MAX_DEPTH:
        return end
    if seen is not None and tuple_bound(data) > MAX_DEPTH:
        seen.append(_UNPROVEN)
    return -end


def _strict_scan(
    data: Any, start: int, cap: int, seen: list[tuple[int, int]] | None, resume: int
) -> int:
    """:func:`scan` with ``strict``: the structured run, then the flat walk and
    the skeleton proof from where it stops (see :func:`scan` for ``resume``)."""
    size = len(data)
    pos = first = _after_header(data, start, cap)
    match = None
    if _PLUS and cap and not BINARY_FIRST[data[start]]:
        # Protocol 0 (or a protocol 1 pickle that starts as protocol 0 could):
        # one whole value by the text grammar (unless the caller tried it:
        # ``resume`` is an offset), or the flat walk and the skeleton proof;
        # the binary run is not tried.  (Python 3.10 has no text grammar: its
        # binary run reads flat protocol 0 dicts.)
        end = resume  # (an offset past 0 is where the caller's text grammar match ended)
        if resume in (RUN_STRUCTURED, RUN_IF_COMPILED):
            text = _TBY_CAP[cap] if cap < _NCAP else None
            if text is None:
                text = _text_matcher(cap, resume == RUN_STRUCTURED)
            found = None if text is None else text(data, start)
            end = -1 if found is None else found.end()
        if start < end < size and data[end] == _STOP:
            return end + 1 if cap <= MAX_DEPTH else _depth_checks(data, end + 1, seen)
        resume = SKIP_STRUCTURED
    if resume != SKIP_STRUCTURED and cap <= _STRUCTURE_MAX:
        match = _SBY_CAP[cap] if cap < _NCAP else None
        if match is None:
            match = _structure_matcher(cap, resume != RUN_IF_COMPILED)
        if match is not None:
            pos = _structured(match, data, pos if resume < 0 else resume, size)
            if pos < size and data[pos] == _STOP:
                return pos + 1 if cap <= MAX_DEPTH else _depth_checks(data, pos + 1, seen)
    # The structured run stopped (or was not tried): the flat walk checks the
    # rest, from where the run stopped (an opcode boundary, between items).
    arrays: list[tuple[int, int]] = []
    stops: list[tuple[int, int]] = []
    end = _walk(data, start, pos, cap, size, True, seen=arrays, stops=stops)
    if not arrays:
        # A run stopped at an opcode no run pattern takes (a string of 256
        # bytes or more, a large memo index, ...): read the structure again
        # with each of those replaced by an opcode of the same length and the
        # same stack effect that the runs take.
        masked = _masked(data, stops) if stops else data
        if masked is not None:
            if match is not None and stops and _structured(match, masked, first, size) == end - 1:
                return end if cap <= MAX_DEPTH else _depth_checks(data, end, seen)
            if skeleton_proves(masked, first, end):
                if seen is not None:
                    seen.append(BY_SKELETON)
                return end if cap <= MAX_DEPTH else _depth_checks(data, end, seen)
    if seen is not None:
        seen.extend(arrays or [_UNPROVEN])
    return -end


# --------------------------------------------------------------------------
# The skeleton proof: the same question for the shapes the structured run does not take
#
# A pickle's structure depends on its opcodes alone, not on their arguments.
# The *skeleton* is the string of its opcode bytes (one byte per opcode, found
# by one ``findall`` with the run patterns' own tokens, so it reads the opcodes
# exactly as the runs do), and :func:`_skeleton_walk` proves the two facts on
# it in Python.  Records of one store share a handful of skeletons, so each
# verdict is kept (:data:`_SKELETONS`): a repeated shape costs the ``findall``
# and a dict lookup.  The walk knows less than :func:`check_structure` (a memo
# GET is of unknown kind, so a SETITEM on it is not proven), and whatever it
# does not prove goes to check_structure, which decides.


def _skeleton_pattern() -> re.Pattern[bytes]:
    """Opcodes with their arguments, the opcode bytes in group 1.

    Each match is a run of opcodes without an argument and at most one opcode
    with one (its argument matched by a lookbehind on the opcode), so
    ``b"".join(findall(pickle))`` gives the opcode bytes, in C.  For pickles the
    run patterns have taken: 4- and 8-byte lengths of 256 or more are not
    matched (callers mask those opcodes, or walk such pickles another way).
    """
    import pickletools

    noarg: set[int] = set()
    shapes: dict[bytes, set[int]] = {}
    for op in pickletools.opcodes:
        arg = op.arg
        if arg is None:
            noarg.add(ord(op.code))
            continue
        if arg.n >= 0:
            shape = b".{%d}" % arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            shape = b"[^\n]*\n" * (2 if arg.name == "stringnl_noescape_pair" else 1)
        elif arg.n == pickletools.TAKEN_FROM_ARGUMENT1:
            shape = _counted(1)
        elif arg.n == pickletools.TAKEN_FROM_ARGUMENT8U:
            shape = _counted(8)
        else:
            shape = _counted(4)
        shapes.setdefault(shape, set()).add(ord(op.code))
    # SHORT_BINUNICODE's shape first: the most common opcode with an argument.
    alternatives = sorted(shapes.items(), key=lambda item: (0x8C not in item[1], len(item[0])))
    args = set().union(*shapes.values())
    source = b"|".join(b"(?<=" + _class(codes) + b")" + shape for shape, codes in alternatives)
    return re.compile(
        b"(" + _class(noarg) + b"*" + _PLUS + _class(args) + b"?)(?:" + source + b"|)",
        re.DOTALL,
    )


SKELETON = _skeleton_pattern()
_SKELETONS: dict[bytes, bool] = {}  # skeleton -> proven
_SKELETON_CACHE_MAX = 4096  # entries (the cache is emptied when it is full)
_SKELETON_KEY_MAX = 1024  # opcodes: longer skeletons are walked, not kept
_SKELETON_MAX_PICKLE = 1 << 20  # bytes: larger pickles go to check_structure directly


def skeleton_proves(data: Any, first: int, end: int) -> bool:
    """Whether the opcodes of ``data[first:end]`` (a scanned pickle body, STOP last)
    leave no MARK open at STOP and fill only dicts, lists and sets of the right kind.

    ``data`` must be one the run patterns take whole (the original or its
    :func:`_masked` copy).  False means "not proven" (check_structure decides).
    """
    if end - first > _SKELETON_MAX_PICKLE:
        return False
    skeleton = b"".join(SKELETON.findall(data, first, end))
    verdict = _SKELETONS.get(skeleton)
    if verdict is None:
        verdict = _skeleton_walk(skeleton)
        if len(skeleton) <= _SKELETON_KEY_MAX:
            if len(_SKELETONS) >= _SKELETON_CACHE_MAX:
                _SKELETONS.clear()
            _SKELETONS[skeleton] = verdict
    return verdict


# Kinds of items in the skeleton walk (a GET is of unknown kind: never a target).
_K_ATOM, _K_LIST, _K_DICT, _K_SET, _K_OBJECT, _K_UNKNOWN = range(6)
# opcode -> (items above the innermost MARK it needs, kind it pushes or -1)
_SK_PUSH = {
    **dict.fromkeys(b"NFIJKLMGSTUVXBC\x88\x89\x8a\x8b\x8c\x8d\x8e)", _K_ATOM),
    **dict.fromkeys(b"ghj", _K_UNKNOWN),
    **dict.fromkeys(b"c\x82\x83\x84", _K_OBJECT),
    0x5D: _K_LIST,
    0x7D: _K_DICT,
    0x8F: _K_SET,
}
_SK_NOOP = frozenset(b"pqr\x94\x95\x80")
# Opcodes that pop k items and push one of a kind: TUPLE1-3, REDUCE, NEWOBJ, NEWOBJ_EX, STACK_GLOBAL.
_SK_POP_PUSH = {
    0x85: (1, _K_ATOM),
    0x86: (2, _K_ATOM),
    0x87: (3, _K_ATOM),
    0x52: (2, _K_OBJECT),
    0x81: (2, _K_OBJECT),
    0x92: (3, _K_OBJECT),
    0x93: (2, _K_OBJECT),
}
# MARK consumers that build one item: TUPLE, FROZENSET, LIST, DICT, OBJ, INST.
_SK_FROM_MARK = {
    0x74: _K_ATOM,
    0x91: _K_ATOM,
    0x6C: _K_LIST,
    0x64: _K_DICT,
    0x6F: _K_OBJECT,
    0x69: _K_OBJECT,
}
# Fills: opcode -> kind of target it needs (objects made by globals take any).
_SK_FILL_ONE = {0x61: (1, _K_LIST), 0x73: (2, _K_DICT), 0x62: (1, -1)}  # APPEND, SETITEM, BUILD
_SK_FILL_MARK = {0x65: _K_LIST, 0x75: _K_DICT, 0x90: _K_SET}  # APPENDS, SETITEMS, ADDITEMS


SHUFFLES = frozenset(b"012")  # POP, POP_MARK, DUP


def shuffle_stack(code: int, stack: list[Any], marks: list[int]) -> bool:
    """POP, POP_MARK or DUP on an abstract stack and its MARK positions, as the C
    unpickler does them; False on a stack underflow.  (Shared by the stack walks
    over opcode skeletons: here and the audit's plain-data walk.)"""
    fence = marks[-1] if marks else 0
    if code == 0x30:  # POP: with nothing above the MARK, it removes the MARK
        if len(stack) > fence:
            stack.pop()
        elif marks:
            marks.pop()
        else:
            return False
    elif code == 0x31:  # POP_MARK
        if not marks:
            return False
        del stack[marks.pop() :]
    else:  # DUP
        if len(stack) <= fence:
            return False
        stack.append(stack[-1])
    return True


def _skeleton_walk(skeleton: bytes) -> bool:
    """The stack effects of ``skeleton``'s opcodes: True when every fill hits a
    container of its kind (or an object made by a global), no stack underflow
    occurs and STOP, last, finds exactly no MARK open."""
    stack: list[int] = []
    marks: list[int] = []
    fence = 0  # items below the innermost MARK are out of reach
    last = len(skeleton) - 1
    for i, code in enumerate(skeleton):
        kind = _SK_PUSH.get(code)
        if kind is not None:
            stack.append(kind)
        elif code in _SK_NOOP:
            # (The C unpickler wants an item for a memo PUT; not asking for one
            # here proves no more: masked PROTO and FRAME bytes read as MEMOIZE.)
            pass
        elif code == 0x28:  # MARK
            marks.append(len(stack))
            fence = len(stack)
        elif code in _SK_POP_PUSH:
            k, kind = _SK_POP_PUSH[code]
            if len(stack) - k < fence:
                return False
            del stack[len(stack) - k :]
            stack.append(kind)
        elif code in _SK_FROM_MARK:
            if not marks:
                return False
            m = marks.pop()
            if code == 0x6F and len(stack) == m:  # OBJ needs its class
                return False
            del stack[m:]
            fence = marks[-1] if marks else 0
            stack.append(_SK_FROM_MARK[code])
        elif code in _SK_FILL_ONE:
            k, wants = _SK_FILL_ONE[code]
            if len(stack) - k - 1 < fence:
                return False
            del stack[len(stack) - k :]
            if wants >= 0 and stack[-1] != wants and stack[-1] != _K_OBJECT:
                return False
        elif code in _SK_FILL_MARK:
            if not marks:
                return False
            m = marks.pop()
            fence = marks[-1] if marks else 0
            if m <= fence or m == 0:  # the target must be above the outer MARK
                return False
            if len(stack) > m and stack[m - 1] != _SK_FILL_MARK[code] and stack[m - 1] != _K_OBJECT:
                return False
            del stack[m:]
        elif code in SHUFFLES:
            if not shuffle_stack(code, stack, marks):
                return False
            fence = marks[-1] if marks else 0
        elif code == _STOP:
            return i == last and not marks and len(stack) >= 1
        else:  # PERSID, BINPERSID, buffers, BYTEARRAY8: not proven here
            return False
    return False


def _structured(match: _Matcher, data: Any, pos: int, size: int) -> int:
    """Where the structured run stops; it reads at most _RUN top-level items per call.

    Each call starts and ends between top-level items (no MARK open, nothing
    pending), and what the grammar proves is proven inside each item, so going
    on from where a call ended is as sound as one call.
    """
    while True:
        end = match(data, pos).end()
        if end == pos or end >= size or data[end] == _STOP:
            return end
        pos = end


# Opcodes the flat walk takes in Python, by what stands in for them in the
# structured re-read: a value (pushes one item) or a no-op (memo PUT, FRAME, PROTO).
_VALUE_STOPS = frozenset(b"XBT\x8b\x8d\x8eIL")
_NEUTRAL_STOPS = frozenset(b"pr\x95\x80")


def _masked(data: Any, stops: list[tuple[int, int]]) -> bytearray | None:
    """A copy of ``data`` with each stop replaced by a UNICODE line or MEMOIZEs of its length."""
    out = bytearray(data)
    for pos, end in stops:
        code = data[pos]
        if code in _VALUE_STOPS:
            out[pos:end] = b"V" + b"x" * (end - pos - 2) + b"\n"
        elif code in _NEUTRAL_STOPS:
            out[pos:end] = b"\x94" * (end - pos)
        else:
            return None
    return out


def scan_stream(data: Any, start: int, resume: int, limit: int | None) -> int:
    """Find where the pickle at ``data[start:]`` ends, in a buffer that may hold only its start.

    Like :func:`scan`, walking on from the opcode boundary ``resume``, but memo
    indexes are not bounded (the caller checks the pickle again with :func:`scan`
    once it is cut out).  ``limit`` is the length the data will have once every
    byte is read (None when unknown); running out of ``data`` before that raises
    :class:`Incomplete`, which says where to resume and how long the data must get.
    """
    return _walk(data, start, resume, None, limit)


# --------------------------------------------------------------------------
# Structure: what the C unpickler does not check (a Python walk, not on every pickle)

# Kinds of stack items in check_structure.
_ATOM, _LIST, _DICT, _SET, _TUPLE, _BYTEARRAY, _OBJECT = range(7)
_KIND_NAMES = ("a scalar", "a list", "a dict", "a set", "a tuple", "a bytearray", "an object")
# Bytes of the opcodes that make a container (each level of nesting needs one):
# MARK (LIST/TUPLE/DICT/FROZENSET/INST/OBJ and REDUCE argument tuples),
# EMPTY_LIST/DICT/SET, TUPLE1/2/3.
NESTING_BYTES = b"(]}\x8f\x85\x86\x87"
_NOT_NESTING = bytes(c for c in range(256) if c not in NESTING_BYTES)


def tuple_bound(data: bytes) -> int:
    """An upper bound on how many tuples ``data`` can build (so on how deep a tuple can nest).

    Tuples come from EMPTY_TUPLE (empty), TUPLE1/2/3 and MARK ... TUPLE (a MARK
    and a TUPLE byte each); the C unpickler hashes a tuple used as a dict key or
    set item recursively, without a depth check.  Byte counts, so it over-counts.
    """
    return (
        min(data.count(b"("), data.count(b"t"))
        + data.count(b"\x85")
        + data.count(b"\x86")
        + data.count(b"\x87")
    )


def nesting_bound(data: bytes) -> int:
    """An upper bound on the nesting depth of what ``data`` can build, from byte counts alone.

    Every level of nesting is a container made by one of :data:`NESTING_BYTES`
    (the bytes are counted anywhere, strings included, so this only over-counts).
    """
    return len(data.translate(None, _NOT_NESTING))


def check_structure(data: bytes, start: int = 0, max_depth: int = MAX_DEPTH) -> int:
    """Walk the stack effects of a scanned pickle (see :func:`_structure`); returns the GET count."""
    try:
        return _structure(data, start, max_depth)
    except (IndexError, KeyError, ValueError) as exc:  # what the C unpickler refuses too
        raise DecodeError(
            f"malformed pickle: unpickling stack or memo error ({type(exc).__name__})"
        ) from None


def _structure(data: bytes, start: int, max_depth: int) -> int:
    """Walk the stack effects of a scanned pickle; refuse what the C unpickler lets through.

    ``data[start:]`` must have passed :func:`scan`.  Refuses, naming the opcode
    and its offset: a STOP that leaves a MARK open; SETITEM(S) on anything but a
    dict (a list would get an index assigned) or an object made by a global;
    APPEND(S) on anything but a list or such an object (a bytearray would be
    extended); ADDITEMS on anything but a set or such an object; and a nesting
    depth over ``max_depth``.  Depth is tracked per item when it is built or
    filled (``1 + `` the deepest item put in), so a tuple or frozenset, whose
    depth is fixed when it is built, is refused before the C unpickler hashes
    it (hashing a 100,000-deep tuple overflows the C stack).  An item filled
    *after* it was put into another container (through the memo) does not raise
    its parent's depth here; the caller checks the loaded value when the pickle
    reads the memo (the returned count of GET opcodes).  Returns that count.
    """
    stack: list[list[int]] = []  # [kind, depth]; the same list is shared by DUP/PUT/GET
    marks: list[int] = []
    memo: dict[int, list[int]] = {}
    gets = 0
    pos = start
    atom = [_ATOM, 0]
    while True:
        code = data[pos]
        kind, n, signed = _SHAPES[code]
        arg = pos + 1
        if kind == _NONE:
            end = arg
        elif kind == _FIXED:
            end = arg + n
        elif kind == _LINES:
            end = data.index(b"\n", arg) + 1
            if n == 2:
                end = data.index(b"\n", end) + 1
        else:
            end = arg + n + int.from_bytes(data[arg : arg + n], "little", signed=signed)
        if code in _PUSH_ATOM:
            stack.append(atom)
            pos = end
            continue
        where = pos - start
        fence = marks[-1] if marks else 0
        if code in _MARKED and not marks:
            raise DecodeError(
                f"malformed pickle: {OPCODE_NAMES[code]} at offset {where} could not find MARK"
            )
        need = _NEEDS.get(code, 0)
        if need and len(stack) - need < fence:
            raise DecodeError(
                f"malformed pickle: {OPCODE_NAMES[code]} at offset {where}: "
                f"unpickling stack underflow"
            )
        if code == 0x28:  # MARK
            marks.append(len(stack))
        elif code == _STOP:
            if marks:
                raise DecodeError(
                    f"malformed pickle: STOP at offset {where} leaves {len(marks)} MARK(s) open"
                )
            return gets
        elif code in _MEMO_PUT:
            if code == 0x94:
                index = len(memo)
            elif code == _PUT:
                index = int(data[arg : end - 1])
            else:
                index = int.from_bytes(data[arg:end], "little")
            memo[index] = stack[-1]
        elif code in _MEMO_GET:
            gets += 1
            if code == 0x67:
                index = int(data[arg : end - 1])
            else:
                index = int.from_bytes(data[arg:end], "little")
            if index not in memo:
                raise DecodeError(
                    f"malformed pickle: {OPCODE_NAMES[code]} at offset {where}: "
                    f"memo value {index} not found"
                )
            stack.append(memo[index])
        elif code in _EMPTY:  # EMPTY_LIST/DICT/SET/TUPLE, BYTEARRAY8
            stack.append([_EMPTY[code], 1])
        elif code in _TUPLE_N:  # TUPLE1/2/3
            k = code - 0x84
            items = stack[-k:]
            del stack[-k:]
            stack.append(_made(_TUPLE, items, code, where, max_depth))
        elif code in _FROM_MARK:  # TUPLE, LIST, DICT, FROZENSET, OBJ, INST
            m = marks.pop()
            items = stack[m:]
            del stack[m:]
            if code == 0x6F:  # OBJ: the first marked item is the class
                if not items:
                    raise DecodeError(
                        f"malformed pickle: OBJ at offset {where}: unpickling stack underflow"
                    )
                items = items[1:]
            stack.append(_made(_FROM_MARK[code], items, code, where, max_depth))
        elif code in _FILL:  # APPEND(S), SETITEM(S), ADDITEMS
            if code == 0x61 or code == 0x73:  # APPEND, SETITEM: the target is above the fence
                k = 1 if code == 0x61 else 2
                items = stack[-k:]
                del stack[-k:]
            else:
                m = marks.pop()
                items = stack[m:]
                del stack[m:]
                if not stack or len(stack) <= (marks[-1] if marks else 0):
                    raise DecodeError(
                        f"malformed pickle: {OPCODE_NAMES[code]} at offset {where}: "
                        f"unpickling stack underflow"
                    )
            target = stack[-1]
            wants = _FILL[code]
            if target[0] != wants and target[0] != _OBJECT and (items or code == 0x61):
                raise DecodeError(
                    f"malformed pickle: {OPCODE_NAMES[code]} at offset {where} on "
                    f"{_KIND_NAMES[target[0]]} (only {_KIND_NAMES[wants]} or an object made "
                    f"by a global takes {OPCODE_NAMES[code]})"
                )
            for item in items:
                if item[1] >= target[1]:
                    target[1] = item[1] + 1
            if target[1] > max_depth:
                _too_deep(code, where, max_depth)
        elif code in _MAKE_OBJECT:  # REDUCE, NEWOBJ, NEWOBJ_EX, STACK_GLOBAL, BINPERSID
            k = _MAKE_OBJECT[code]
            items = stack[-k:]
            del stack[-k:]
            stack.append(_made(_OBJECT, items, code, where, max_depth))
        elif code in _PUSH_OBJECT:  # GLOBAL, INST's class is in its MARK, EXT1/2/4, PERSID
            stack.append([_OBJECT, 0])
        elif code == 0x62:  # BUILD
            state = stack.pop()
            target = stack[-1]
            if state[1] >= target[1]:
                target[1] = state[1] + 1
            if target[1] > max_depth:
                _too_deep(code, where, max_depth)
        elif code == 0x30:  # POP (with nothing above the MARK, POP removes the MARK)
            if len(stack) > fence:
                stack.pop()
            elif marks:
                marks.pop()
            else:
                raise DecodeError(
                    f"malformed pickle: POP at offset {where}: unpickling stack underflow"
                )
        elif code == 0x31:  # POP_MARK
            del stack[marks.pop() :]
        elif code == 0x32:  # DUP
            stack.append(stack[-1])
        # PROTO, FRAME: no stack effect (buffers were refused by the strict scan)
        pos = end


def _made(kind: int, items: list[list[int]], code: int, where: int, max_depth: int) -> list[int]:
    depth = 1
    for item in items:
        if item[1] >= depth:
            depth = item[1] + 1
    if depth > max_depth:
        _too_deep(code, where, max_depth)
    return [kind, depth]


def _too_deep(code: int, where: int, max_depth: int) -> None:
    raise DecodeError(
        f"pickle nested too deeply: {OPCODE_NAMES[code]} at offset {where} makes more than "
        f"{max_depth} levels of containers (the depth limit)"
    )


_PUSH_ATOM = frozenset(b"NFIJKLMGSTUVXBC\x88\x89\x8a\x8b\x8c\x8d\x8e")
_MEMO_PUT = frozenset(b"pqr\x94")
_MEMO_GET = frozenset(b"ghj")
_TUPLE_N = frozenset(b"\x85\x86\x87")
_EMPTY = {0x5D: _LIST, 0x7D: _DICT, 0x8F: _SET, 0x29: _TUPLE, 0x96: _BYTEARRAY}
_MARKED = frozenset(b"tld\x91oieu\x901")
# Items an opcode needs above the innermost MARK (the C unpickler's fence).
_NEEDS = {
    **dict.fromkeys(b"pqr\x94\x852Q.", 1),
    **dict.fromkeys(b"\x86Rb\x81\x93a", 2),
    **dict.fromkeys(b"\x87\x92s", 3),
}
_FROM_MARK = {0x74: _TUPLE, 0x6C: _LIST, 0x64: _DICT, 0x91: _TUPLE, 0x6F: _OBJECT, 0x69: _OBJECT}
_FILL = {0x61: _LIST, 0x65: _LIST, 0x73: _DICT, 0x75: _DICT, 0x90: _SET}
_MAKE_OBJECT = {0x52: 2, 0x81: 2, 0x92: 3, 0x93: 2, 0x51: 1}
_PUSH_OBJECT = frozenset(b"c\x82\x83\x84P")
