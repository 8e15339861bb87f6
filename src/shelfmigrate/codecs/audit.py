"""The static pickle audit: what a pickle would import and call, without running any of it.

:func:`audit_pickle` runs one pickle *symbolically*: a small abstract stack
machine over the opcodes that tracks constant strings, the memo
(PUT/BINPUT/LONG_BINPUT/MEMOIZE and the GETs), MARK frames and the current
protocol, and marks everything computed as unknown.  Nothing from the input is
ever imported, called or even decoded beyond the short strings that may name a
global.  Hostile input stays fast and bounded: :class:`AuditLimits` caps the
opcodes walked, the memo entries and the MARK nesting.

The verdict policy is the loader's (:mod:`shelfmigrate.codecs.safepickle`), read
from the same tables and checks (``DEFAULT_ALLOWLIST``, ``GADGETS``,
``map_py2_name`` and its name-shape check), so the audit and the loader never
disagree about a name:

* **dangerous**: a global the loader refuses (a gadget, an invalid, dunder or
  attribute-walking name), a STACK_GLOBAL whose operands are not constant strings,
  type confusion ``pickle.loads`` goes through with but the loader refuses
  (SETITEM(S) on a list or bytearray, APPEND(S) on a bytearray, BUILD on an
  allowlisted instance such as an OrderedDict or a defaultdict), an allowlisted
  constructor given an argument the loader's validators refuse as a resource
  bomb (``bytearray(2**36)``, a million-character Decimal, a 400,000-bit Fraction),
  BUILD/APPEND/SETITEM applied to a global (a class or function, not an
  instance), PERSID/BINPERSID, EXT1/2/4, NEXT_BUFFER/READONLY_BUFFER, bytes after
  STOP within one value (the stacked pickles in them are audited too), a second
  PROTO with a different value;
* **unreadable**: a malformed or truncated pickle, or one that exceeds a limit
  (the analysis is incomplete, and a scanner that gives up is a classic bypass);
  stack or memo misuse (underflow, a missing MARK, STOP with a MARK open), an
  unhashable key or set member, item or BUILD opcodes on a value that cannot
  take them (SETITEM on an int, ADDITEMS on a list, BUILD on an int), NEWOBJ of
  something that is not a class, REDUCE/NEWOBJ with arguments that are not a
  tuple, integers over the loader's size limits: all of which ``pickle.loads``
  (or the loader) refuses;
* **unknown**: a global that is neither allowed nor a gadget (the loader would
  make it an inert stub), a Python 2 spelling at protocol 3 or higher (which
  ``pickle`` itself does not map), a call of something that is not a global;
* **safe**: everything else: only allowlisted globals, after the Python 2 name
  mapping that ``pickle`` applies while the current protocol is below 3.

A record's verdict is the worst of its problems, in the order safe < unknown <
unreadable < dangerous; ``--fail-on dangerous`` fails on unreadable records too.

One reading of the stream: a pickle the fast path does not take first goes
through the loader's own pre-scan (:func:`pickle_scan.scan`, strict, then
``check_structure``); its refusal is reported as unreadable in its own words,
and a walk that ends somewhere other than where the pre-scan says is reported
as a desynchronisation.  The walk still runs to the end, since ``pickle.loads``
runs what comes before damage.  The values on the abstract stack carry their
built-in type (and tuples their items), so the type checks and the argument
validators see what the loader's would.  Remaining differences from the loader:
the audit never builds values, so it cannot check what depends on them (a
datetime's field ranges, a UUID state's keys, a Decimal string's syntax, the
depth of containers filled after they were shared through the memo); objects
made by calls and stubs are opaque (items and BUILD on them are not
type-checked); MARK nesting in the walk is bounded by ``AuditLimits.max_marks``
(container depth through the loader's ``check_structure``); a call of a data
value (``1()``) is "unknown", not "unreadable".

Stored values come in a few shapes, so :func:`audit_pickle` keeps a cache of
*skeletons* (the opcodes with the arguments that cannot change a verdict left
out, every argument still checked on every pickle): a skeleton whose first
pickle the precise path above found safe, with nothing that depends on argument
values, answers "safe" for later pickles of that skeleton; everything else takes
the precise path every time (see "The shape cache" below).

:func:`audit_path` walks files and directories and audits every stored value of
every container shelfmigrate reads that looks like a pickle;
:func:`render_text`, :func:`render_json` and :func:`render_sarif` present the
results, and :class:`AuditSummary` counts them and gives the exit code.
"""

from __future__ import annotations

import codecs
import fnmatch
import json
import mmap
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, DecodeError, ShelfmigrateError, UsageError
from ..options import ReadOptions
from ..values import looks_like_pickle
from . import pickle_scan, safepickle
from .safepickle import DEFAULT_ALLOWLIST, map_py2_name

__all__ = [
    "FAIL_ON",
    "RULES",
    "AuditLimits",
    "AuditSummary",
    "Build",
    "Call",
    "GlobalRef",
    "PickleFinding",
    "Problem",
    "RecordAudit",
    "Rule",
    "Verdict",
    "audit_path",
    "audit_paths",
    "audit_pickle",
    "audit_pickle_stream",
    "classify_global",
    "render_json",
    "render_sarif",
    "render_text",
]


# --------------------------------------------------------------------------
# Verdicts and the kinds of finding


class Verdict(IntEnum):
    """How bad a global, a problem or a record is; ordered, so a policy is one comparison."""

    SAFE = 0
    UNKNOWN = 1
    UNREADABLE = 2
    DANGEROUS = 3

    def __str__(self) -> str:
        return self.name.lower()


#: ``--fail-on`` level -> the lowest verdict that fails the run (None: never)
FAIL_ON: dict[str, Verdict | None] = {
    "dangerous": Verdict.UNREADABLE,  # partial results are not a pass
    "unknown": Verdict.UNKNOWN,
    "never": None,
}


@dataclass(frozen=True)
class Rule:
    """One kind of finding (a SARIF rule)."""

    id: str
    name: str
    verdict: Verdict
    short: str
    full: str


_RULE_LIST = [
    Rule(
        "SM001",
        "refused-global",
        Verdict.DANGEROUS,
        "A global the safe loader refuses",
        "The pickle names a global that shelfmigrate's loader refuses even in stub mode: a known "
        "gadget (os.system, eval, getattr, ...), an invalid or dunder name, or a protocol-4 "
        "attribute walk. pickle.loads would import it and could run code.",
    ),
    Rule(
        "SM002",
        "computed-global",
        Verdict.DANGEROUS,
        "STACK_GLOBAL with computed operands",
        "The module or name given to STACK_GLOBAL is not a constant string traced through the "
        "memo: it is computed while unpickling, so no static check can say what is imported.",
    ),
    Rule(
        "SM003",
        "unknown-global",
        Verdict.UNKNOWN,
        "A global that is neither allowed nor a known gadget",
        "The pickle names a class or function outside the allowlist that is not a known gadget. "
        "shelfmigrate would turn it into an inert stub; pickle.loads would import it.",
    ),
    Rule(
        "SM004",
        "global-mutation",
        Verdict.DANGEROUS,
        "BUILD or item opcodes applied to a class or function",
        "BUILD, APPEND(S), SETITEM(S) or ADDITEMS is applied to a global (a class, function or "
        "module) rather than to an instance made by this pickle: it sets attributes on shared, "
        "process-wide state.",
    ),
    Rule(
        "SM005",
        "persistent-id",
        Verdict.DANGEROUS,
        "Persistent reference (PERSID/BINPERSID)",
        "The pickle asks the loader's persistent_load for an external object; shelfmigrate refuses "
        "persistent ids.",
    ),
    Rule(
        "SM006",
        "extension-code",
        Verdict.DANGEROUS,
        "Extension registry code (EXT1/EXT2/EXT4)",
        "The pickle names a global through copyreg's extension registry, which depends on the "
        "loading process and cannot be checked statically.",
    ),
    Rule(
        "SM007",
        "out-of-band-buffer",
        Verdict.DANGEROUS,
        "Out-of-band buffer (NEXT_BUFFER/READONLY_BUFFER)",
        "Protocol 5 out-of-band buffers are not part of a stored value.",
    ),
    Rule(
        "SM008",
        "data-after-stop",
        Verdict.DANGEROUS,
        "Bytes after STOP",
        "The stored value goes on after its pickle's STOP opcode. pickle.loads ignores those bytes, "
        "a stream reader runs them; stacked pickles in them are audited too.",
    ),
    Rule(
        "SM009",
        "protocol-switch",
        Verdict.DANGEROUS,
        "A second PROTO with a different value",
        "The protocol changes half-way, which changes how names are mapped (Python 2 names below "
        "3) and resolved (dotted names from 4): a known scanner desynchronisation.",
    ),
    Rule(
        "SM010",
        "limit-exceeded",
        Verdict.UNREADABLE,
        "Audit limit exceeded",
        "The pickle exceeds a limit of the audit (opcodes, memo entries, MARK nesting); the "
        "analysis stopped there and is incomplete.",
    ),
    Rule(
        "SM011",
        "malformed",
        Verdict.UNREADABLE,
        "Malformed or truncated pickle",
        "The pickle cannot be read as written (unknown opcode, truncated data, stack or memo "
        "misuse, bad argument). pickle.loads may still run what comes before the damage.",
    ),
    Rule(
        "SM012",
        "computed-call",
        Verdict.UNKNOWN,
        "Call of a value that is not a global",
        "REDUCE, NEWOBJ or OBJ calls something that is not a global named in the pickle.",
    ),
    Rule(
        "SM013",
        "unreadable-source",
        Verdict.UNREADABLE,
        "Source that cannot be read",
        "A file or container that could not be opened or read to the end.",
    ),
    Rule(
        "SM014",
        "type-confusion",
        Verdict.DANGEROUS,
        "Item or state opcodes on the wrong kind of object",
        "SETITEM(S) on a list or bytearray, APPEND(S) on a bytearray, or BUILD setting the "
        "attributes or slots of an allowlisted instance (an OrderedDict given attributes, a "
        "defaultdict whose default_factory is replaced): pickle.loads goes through with it, the "
        "loader refuses it; a known type-confusion technique.",
    ),
    Rule(
        "SM015",
        "refused-argument",
        Verdict.DANGEROUS,
        "An allowlisted constructor called with an argument that exhausts memory or CPU",
        "bytes(n)/bytearray(n) with a large integer, or a Decimal/Fraction from an oversized "
        "string or integer: the loader's argument validators refuse it; pickle.loads would "
        "allocate gigabytes or compute for minutes.",
    ),
]
#: rule id -> :class:`Rule`
RULES: dict[str, Rule] = {rule.id: rule for rule in _RULE_LIST}

# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding in one pickle: a rule, a message and the offset in the value."""

    rule: str
    message: str
    offset: int | None = None

    @property
    def verdict(self) -> Verdict:
        """The severity of this problem's rule."""
        return RULES[self.rule].verdict


@dataclass(frozen=True, slots=True)
class GlobalRef:
    """A global named by GLOBAL, STACK_GLOBAL or INST (or EXT*, unresolvable)."""

    opcode: str
    offset: int
    written: str  # "module.name" as written ("?" for an operand that is not a constant)
    mapped: str  # as pickle.loads would import it at the current protocol
    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class Call:
    """A call site: REDUCE, NEWOBJ, NEWOBJ_EX, INST or OBJ and what it calls."""

    opcode: str
    offset: int
    callee: str


@dataclass(frozen=True, slots=True)
class Build:
    """A BUILD and what it sets the state of."""

    offset: int
    target: str
    on_global: bool


@dataclass(slots=True)
class PickleFinding:
    """What one stored pickle would do when loaded, and the verdict."""

    protocol: int | None
    python2: bool | None
    globals: list[GlobalRef]
    calls: list[Call]
    builds: list[Build]
    problems: list[Problem]
    verdict: Verdict
    reason: str
    size: int = 0
    opcodes: int | None = 0  # None when the fast path took it (not counted)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "verdict": str(self.verdict),
            "reason": self.reason,
            "protocol": self.protocol,
            "python2": self.python2,
            "size": self.size,
            "opcodes": self.opcodes,
            "globals": [
                {
                    "opcode": g.opcode,
                    "offset": g.offset,
                    "written": g.written,
                    "mapped": g.mapped,
                    "verdict": str(g.verdict),
                    "reason": g.reason,
                }
                for g in self.globals
            ],
            "calls": [
                {"opcode": c.opcode, "offset": c.offset, "callee": c.callee} for c in self.calls
            ],
            "builds": [
                {"offset": b.offset, "target": b.target, "on_global": b.on_global}
                for b in self.builds
            ],
            "problems": [
                {
                    "rule": p.rule,
                    "kind": RULES[p.rule].name,
                    "verdict": str(p.verdict),
                    "offset": p.offset,
                    "message": p.message,
                }
                for p in self.problems
            ],
        }


@dataclass(frozen=True)
class AuditLimits:
    """Bounds on the symbolic walk of one pickle (hostile input must stay fast and small).

    Plain data taken by the fast path keeps no memo and is matched in linear
    time; of these bounds only ``max_marks`` applies to it.
    """

    max_opcodes: int = 10_000_000
    max_memo: int = 1_000_000
    max_marks: int = 10_000


DEFAULT_LIMITS = AuditLimits()


# --------------------------------------------------------------------------
# Classifying one global, as the loader would


_SAFE_REASON = "allowlisted"
_CLASSIFY_CACHE: dict[tuple[str, str, bool, frozenset[str]], tuple[str, Verdict, str, str]] = {}
_MAX_CACHE = 10_000


def classify_global(
    module: str, name: str, *, protocol: int = 0, allow: Iterable[str] = ()
) -> tuple[str, Verdict, str, str | None]:
    """Classify the global ``module``.``name`` as written, at pickle protocol ``protocol``.

    Returns ``(mapped, verdict, reason, rule)``: ``mapped`` is the dotted name
    ``pickle.loads`` would import (Python 2 spellings are mapped while the
    protocol is below 3); ``rule`` is None for a safe global.  ``allow`` adds
    trusted mapped names, as ``--allow`` does for the loader (never imported
    here).  The checks are the loader's own (see the module docstring).
    """
    allowed = allow if isinstance(allow, frozenset) else frozenset(allow)
    key = (module, name, protocol >= 3, allowed)
    found = _CLASSIFY_CACHE.get(key)
    if found is None:
        found = _classify(module, name, protocol >= 3, allowed)
        if len(_CLASSIFY_CACHE) < _MAX_CACHE:
            _CLASSIFY_CACHE[key] = found
    mapped, verdict, reason, rule = found
    return mapped, verdict, reason, rule or None


def _classify(
    module: str, name: str, modern: bool, allow: frozenset[str]
) -> tuple[str, Verdict, str, str]:
    raw_full = f"{module}.{name}"
    if not (safepickle._valid_dotted(module) and safepickle._valid_dotted(name)):
        return raw_full, Verdict.DANGEROUS, f"invalid global name {raw_full!r:.100}", "SM001"
    # The loader maps Python 2 names whatever the protocol; pickle only below 3.
    lmodule, lname = map_py2_name(module, name)
    loader_full = f"{lmodule}.{lname}"
    mapped = raw_full if modern else loader_full
    shown = raw_full if loader_full == raw_full else f"{raw_full} (read as {loader_full})"
    if loader_full in DEFAULT_ALLOWLIST or (
        loader_full in allow and not safepickle._gadget_reason(loader_full)
    ):
        if modern and loader_full != raw_full:
            return (
                mapped,
                Verdict.UNKNOWN,
                f"Python 2 name {raw_full} at protocol 3 or higher: pickle does not map it "
                f"(shelfmigrate reads it as {loader_full})",
                "SM003",
            )
        why = _SAFE_REASON if loader_full in DEFAULT_ALLOWLIST else "allowed with --allow"
        return mapped, Verdict.SAFE, why, ""
    reason = safepickle._gadget_reason(loader_full) or safepickle._gadget_reason(raw_full)
    if reason is not None:
        walk = safepickle._shape_problem(lmodule, lname) if "." in lname else None
        return mapped, Verdict.DANGEROUS, f"{shown}: {walk or reason}", "SM001"
    shape = safepickle._shape_problem(lmodule, lname)
    if shape is not None:
        return mapped, Verdict.DANGEROUS, f"{shown}: {shape}", "SM001"
    return (
        mapped,
        Verdict.UNKNOWN,
        f"{shown} is not on the allowlist (the loader makes it an inert stub)",
        "SM003",
    )


# --------------------------------------------------------------------------
# The abstract machine


class _Global:
    """A global on the abstract stack."""

    __slots__ = ("name", "bad")

    def __init__(self, name: str, bad: bool):
        self.name = name
        self.bad = bad


class _Made:
    """An object made by a call (an instance, as far as the audit can tell)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Kind:
    """A value of a known built-in type whose content the audit does not keep."""

    __slots__ = ("name", "hashable")

    def __init__(self, name: str, hashable: bool):
        self.name = name
        self.hashable = hashable


class _Tuple:
    """A tuple made by this pickle: its items (call arguments are checked) and hashability."""

    __slots__ = ("items", "hashable")

    def __init__(self, items: list[Any]):
        self.items = items
        self.hashable = all(_hashable(item) for item in items)


class _BigInt:
    """An integer too large to keep; ``bits`` is about its size."""

    __slots__ = ("bits",)

    def __init__(self, bits: int):
        self.bits = bits


class _Text:
    """A string too long to be a name; only its length is kept."""

    __slots__ = ("length",)

    def __init__(self, length: int):
        self.length = length


_OTHER: Any = object()  # a value of unknown type (a persistent object, a buffer, ...)
_NONE = _Kind("None", True)
_BOOL = _Kind("bool", True)
_FLOAT = _Kind("float", True)
_BYTES = _Kind("bytes", True)
_BYTEARRAY = _Kind("bytearray", False)
_LIST = _Kind("list", False)
_DICT = _Kind("dict", False)
_SET = _Kind("set", False)
_FROZENSET = _Kind("frozenset", True)
_EMPTY_TUPLE = _Tuple([])
_MAX_NAME = 1024  # strings longer than this are not kept (no global name is that long)

# The loader's limits, read from its pre-scan (pickle_scan) so both refuse the same
# pickles (the fallbacks are the same numbers): integers over MAX_INT_BITS bits
# (a 64 KiB LONG4 body) and text INT/LONG arguments over MAX_INT_DIGITS digits
# (far above real data, 5000-digit Python 2 longs included; far below the
# megabyte integers that cost seconds of CPU), strings over _MAX_VALUE bytes,
# pickles over _MAX_PICKLE bytes, containers nested deeper than _MAX_DEPTH.
MAX_INT_BITS: int = getattr(pickle_scan, "MAX_LONG_BYTES", 64 << 10) * 8
MAX_INT_DIGITS: int = getattr(pickle_scan, "MAX_TEXT_DIGITS", 100_000)
_MAX_VALUE: int = getattr(pickle_scan, "MAX_VALUE", 256 << 20)
_MAX_PICKLE: int = getattr(pickle_scan, "MAX_PICKLE", 1 << 30)
_MAX_DEPTH: int = getattr(pickle_scan, "MAX_DEPTH", 1000)
# The loader's caps on Decimal/Fraction arguments (its argument validators).
_MAX_DECIMAL_CHARS: int = getattr(safepickle, "_MAX_DECIMAL_CHARS", 10_000)
_MAX_FRACTION_BITS: int = getattr(safepickle, "_MAX_FRACTION_BITS", 100_000)
# bytes(n)/bytearray(n) with an int n: refused by the loader; dangerous from this size on.
_BIG_ALLOC = 1 << 24


def _hashable(value: Any) -> bool:
    t = type(value)
    return value.hashable if t is _Kind or t is _Tuple else True


def _kind_name(value: Any) -> str | None:
    """The built-in type of a value this pickle made, or None (a global, an object, unknown)."""
    t = type(value)
    if t is _Kind:
        return value.name
    if t is int or t is _BigInt:
        return "int"
    if t is str or t is _Text:
        return "str"
    if t is _Tuple:
        return "tuple"
    return None


def _int_bits(value: Any) -> int | None:
    t = type(value)
    if t is int:
        return value.bit_length()
    if t is _BigInt:
        return value.bits
    return None


# opcode byte -> (name, argument kind, size, signed, action, first protocol)
# kinds: 0 none, 1 fixed size, 2 lines, 3 length-prefixed.
(
    A_PUSH,
    A_STR_UTF8,
    A_STR_PY2,
    A_STR_TEXT_PY2,
    A_STR_UNICODE,
    A_MARK,
    A_STOP,
    A_POP,
    A_POP_MARK,
    A_DUP,
    A_POPN_PUSH,
    A_MARK_PUSH,
    A_APPEND,
    A_SETITEM,
    A_MARK_ITEMS,
    A_GET,
    A_PUT,
    A_MEMOIZE,
    A_GLOBAL,
    A_STACK_GLOBAL,
    A_INST,
    A_OBJ,
    A_REDUCE,
    A_NEWOBJ,
    A_NEWOBJ_EX,
    A_BUILD,
    A_PERSID,
    A_BINPERSID,
    A_EXT,
    A_NEXT_BUFFER,
    A_READONLY_BUFFER,
    A_PROTO,
    A_FRAME,
    A_TEXT_NUMBER,
    A_BININT,
) = range(35)

_ACTIONS: dict[str, tuple[int, Any]] = {
    "NONE": (A_PUSH, _NONE),
    "NEWTRUE": (A_PUSH, _BOOL),
    "NEWFALSE": (A_PUSH, _BOOL),
    "BINFLOAT": (A_PUSH, _FLOAT),
    "BINBYTES": (A_PUSH, _BYTES),
    "SHORT_BINBYTES": (A_PUSH, _BYTES),
    "BINBYTES8": (A_PUSH, _BYTES),
    "BYTEARRAY8": (A_PUSH, _BYTEARRAY),
    "EMPTY_LIST": (A_PUSH, _LIST),
    "EMPTY_DICT": (A_PUSH, _DICT),
    "EMPTY_TUPLE": (A_PUSH, _EMPTY_TUPLE),
    "EMPTY_SET": (A_PUSH, _SET),
    "BININT": (A_BININT, True),
    "BININT1": (A_BININT, False),
    "BININT2": (A_BININT, False),
    "LONG1": (A_BININT, True),
    "LONG4": (A_BININT, True),
    "INT": (A_TEXT_NUMBER, 0),
    "LONG": (A_TEXT_NUMBER, 0),
    "FLOAT": (A_TEXT_NUMBER, 0),
    "SHORT_BINUNICODE": (A_STR_UTF8, 0),
    "BINUNICODE": (A_STR_UTF8, 0),
    "BINUNICODE8": (A_STR_UTF8, 0),
    "BINSTRING": (A_STR_PY2, 0),
    "SHORT_BINSTRING": (A_STR_PY2, 0),
    "STRING": (A_STR_TEXT_PY2, 0),
    "UNICODE": (A_STR_UNICODE, 0),
    "MARK": (A_MARK, 0),
    "STOP": (A_STOP, 0),
    "POP": (A_POP, 0),
    "POP_MARK": (A_POP_MARK, 0),
    "DUP": (A_DUP, 0),
    "TUPLE1": (A_POPN_PUSH, 1),
    "TUPLE2": (A_POPN_PUSH, 2),
    "TUPLE3": (A_POPN_PUSH, 3),
    "TUPLE": (A_MARK_PUSH, None),
    "LIST": (A_MARK_PUSH, _LIST),
    "DICT": (A_MARK_PUSH, _DICT),
    "FROZENSET": (A_MARK_PUSH, _FROZENSET),
    "APPEND": (A_APPEND, 0),
    "SETITEM": (A_SETITEM, 0),
    "APPENDS": (A_MARK_ITEMS, 0),
    "SETITEMS": (A_MARK_ITEMS, 0),
    "ADDITEMS": (A_MARK_ITEMS, 0),
    "GET": (A_GET, 0),
    "BINGET": (A_GET, 0),
    "LONG_BINGET": (A_GET, 0),
    "PUT": (A_PUT, 0),
    "BINPUT": (A_PUT, 0),
    "LONG_BINPUT": (A_PUT, 0),
    "MEMOIZE": (A_MEMOIZE, 0),
    "GLOBAL": (A_GLOBAL, 0),
    "STACK_GLOBAL": (A_STACK_GLOBAL, 0),
    "INST": (A_INST, 0),
    "OBJ": (A_OBJ, 0),
    "REDUCE": (A_REDUCE, 0),
    "NEWOBJ": (A_NEWOBJ, 0),
    "NEWOBJ_EX": (A_NEWOBJ_EX, 0),
    "BUILD": (A_BUILD, 0),
    "PERSID": (A_PERSID, 0),
    "BINPERSID": (A_BINPERSID, 0),
    "EXT1": (A_EXT, 0),
    "EXT2": (A_EXT, 0),
    "EXT4": (A_EXT, 0),
    "NEXT_BUFFER": (A_NEXT_BUFFER, 0),
    "READONLY_BUFFER": (A_READONLY_BUFFER, 0),
    "PROTO": (A_PROTO, 0),
    "FRAME": (A_FRAME, 0),
}


def _opcode_table() -> list[tuple[str, int, int, bool, int, Any, int] | None]:
    import pickletools

    prefixed = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    table: list[tuple[str, int, int, bool, int, Any, int] | None] = [None] * 256
    for op in pickletools.opcodes:
        arg = op.arg
        if arg is None:
            kind, n, signed = 0, 0, False
        elif arg.n >= 0:
            kind, n, signed = 1, arg.n, False
        elif arg.n == pickletools.UP_TO_NEWLINE:
            kind, n, signed = 2, (2 if arg.name == "stringnl_noescape_pair" else 1), False
        else:
            kind = 3
            n, signed = prefixed[arg.n]
        action, extra = _ACTIONS[op.name]
        table[ord(op.code)] = (op.name, kind, n, signed, action, extra, op.proto)
    return table


_TABLE = _opcode_table()
# Global modules that tell who wrote a protocol 0-2 pickle (safepickle.is_python2).
_PY3_MODULES = frozenset({"_codecs", "builtins"})
_PY2_MODULES = frozenset({"__builtin__", "copy_reg", "exceptions"})


class _Stop(Exception):
    """Framing is broken: the walk cannot go on."""

    def __init__(self, rule: str, message: str, offset: int):
        self.rule = rule
        self.message = message
        self.offset = offset


def _describe(value: Any) -> str:
    if type(value) is _Global:
        return value.name
    if type(value) is _Made:
        return f"<object made by {value.name}>"
    if type(value) is str:
        return "<string>"
    kind = _kind_name(value)
    return f"<{kind}>" if kind is not None else "<value>"


def _decode_text_string(arg: bytes) -> str | None:
    """A protocol-0 STRING argument (quoted, escaped) as text, or None if malformed."""
    if len(arg) < 2 or arg[0] != arg[-1] or arg[0] not in b"'\"":
        return None
    try:
        return codecs.escape_decode(arg[1:-1])[0].decode("latin-1")
    except ValueError:
        return None


_DIGITS = re.compile(rb"[+-]?[0-9]+")


def _text_number_ok(name: str, arg: bytes) -> bool:
    """Whether a protocol-0 INT/LONG/FLOAT argument reads as a number.

    Plain digits are checked with a pattern, not ``int()``: a Python 2 long of
    5000 digits is legitimate whatever this interpreter's int-string limit says.
    """
    if name != "FLOAT" and _DIGITS.fullmatch(arg[:-1] if arg[-1:] == b"L" else arg):
        return True
    try:
        if name == "FLOAT":
            float(arg)
        elif name == "LONG":
            int(arg[:-1] if arg[-1:] == b"L" else arg, 0)
        elif arg not in (b"00", b"01"):
            int(arg, 0)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class _Walk:
    """What one walk over one pickle found (offsets relative to its start)."""

    end: int | None = None  # just past STOP; None when the walk could not finish
    protocol: int | None = None
    max_proto: int = 0
    opcodes: int = 0
    python2: bool | None = None
    globals: list[GlobalRef] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _walk(data: Any, start: int, limits: AuditLimits, allow: frozenset[str]) -> _Walk:
    """Run the pickle at ``data[start:]`` on the abstract machine, up to its STOP."""
    table = _TABLE
    size = len(data)
    result = _Walk()
    problems = result.problems
    globals_ = result.globals
    calls = result.calls
    builds = result.builds
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    memo: dict[int, Any] = {}
    max_ops = limits.max_opcodes
    max_memo = limits.max_memo
    max_marks = limits.max_marks
    proto = 0  # the current protocol, as the unpickler keeps it
    first_proto: int | None = None
    max_proto = 0
    ops = 0
    pos = start
    name = "?"
    # Python 2 origin, decided by the first telling opcode (safepickle.is_python2's rule).
    py2: bool | None = None
    py2_names = False
    try:
        while True:
            if pos >= size:
                raise _Stop("SM011", "pickle ends before its STOP opcode", pos)
            code = data[pos]
            spec = table[code]
            if spec is None:
                raise _Stop("SM011", f"unknown opcode 0x{code:02x}", pos)
            name, kind, n, signed, action, extra, oproto = spec
            ops += 1
            if ops > max_ops:
                raise _Stop("SM010", f"more than {max_ops} opcodes", pos)
            if oproto > max_proto:
                max_proto = oproto
                if oproto >= 3 and py2 is None:
                    py2 = False
            astart = pos + 1
            if kind == 0:
                aend = astart
            elif kind == 1:
                aend = astart + n
            elif kind == 3:
                length = int.from_bytes(data[astart : astart + n], "little", signed=signed)
                if length < 0:
                    raise _Stop("SM011", f"{name} has a negative length", pos)
                astart += n
                aend = astart + length
            else:
                aend = data.find(b"\n", astart)
                if aend >= 0 and n == 2:
                    aend = data.find(b"\n", aend + 1)
                if aend < 0:
                    raise _Stop("SM011", f"{name} argument has no end of line", pos)
                aend += 1
            if aend > size:
                raise _Stop("SM011", f"{name} argument runs past the end of the data", pos)
            rel = pos - start

            if action == A_PUSH:
                stack.append(extra)
            elif action == A_STR_UTF8:
                if aend - astart > _MAX_NAME:
                    stack.append(_Text(aend - astart))
                else:
                    try:
                        stack.append(str(data[astart:aend], "utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        problems.append(Problem("SM011", f"{name} is not valid UTF-8", rel))
                        stack.append(_Text(aend - astart))
            elif action == A_MARK:
                if len(metastack) >= max_marks:
                    raise _Stop("SM010", f"MARKs nested deeper than {max_marks}", pos)
                metastack.append(stack)
                stack = []
            elif action == A_BININT:
                if aend - astart <= 8:
                    stack.append(int.from_bytes(data[astart:aend], "little", signed=extra))
                else:
                    bits = (aend - astart) * 8
                    if bits > MAX_INT_BITS:
                        raise _Stop(
                            "SM010",
                            f"{name} integer of {aend - astart} bytes is over the "
                            f"{MAX_INT_BITS}-bit cap",
                            pos,
                        )
                    stack.append(_BigInt(bits))
            elif action == A_MARK_PUSH:
                items = stack
                stack = metastack.pop()
                if extra is None:
                    stack.append(_Tuple(items) if items else _EMPTY_TUPLE)
                else:
                    if extra is _DICT:
                        if len(items) % 2:
                            raise _Stop("SM011", "DICT with an odd number of items", pos)
                        _check_keys(items[::2], name, pos)
                    elif extra is _FROZENSET:
                        _check_keys(items, name, pos)
                    stack.append(extra)
            elif action == A_PUT:
                if kind == 2:
                    text = data[astart : aend - 1]
                    index = int(text) if text.isdigit() else -1
                    if index < 0:
                        raise _Stop("SM011", f"PUT index {bytes(text)[:20]!r} is not a number", pos)
                else:
                    index = int.from_bytes(data[astart:aend], "little")
                if not stack:
                    raise IndexError
                if index > size:
                    problems.append(
                        Problem(
                            "SM010",
                            f"{name} index {index} is larger than the pickle "
                            "(a memory bomb for the C unpickler; the loader refuses it)",
                            rel,
                        )
                    )
                memo[index] = stack[-1]
                if len(memo) > max_memo:
                    raise _Stop("SM010", f"more than {max_memo} memo entries", pos)
            elif action == A_MEMOIZE:
                if not stack:
                    raise IndexError
                memo[len(memo)] = stack[-1]
                if len(memo) > max_memo:
                    raise _Stop("SM010", f"more than {max_memo} memo entries", pos)
            elif action == A_GET:
                if kind == 2:
                    text = data[astart : aend - 1]
                    index = int(text) if text.isdigit() else -1
                else:
                    index = int.from_bytes(data[astart:aend], "little")
                value = memo.get(index, memo)
                if value is memo:
                    raise _Stop("SM011", f"{name} of memo entry {index}, which was never set", pos)
                stack.append(value)
            elif action == A_MARK_ITEMS:
                items = stack
                stack = metastack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    problems.append(
                        Problem("SM004", f"{name} adds items to global {target.name}", rel)
                    )
                else:
                    _check_items(problems, name, rel, pos, target, items)
            elif action == A_APPEND:
                item = stack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    problems.append(
                        Problem("SM004", f"APPEND adds an item to global {target.name}", rel)
                    )
                else:
                    _check_items(problems, name, rel, pos, target, [item])
            elif action == A_SETITEM:
                value = stack.pop()
                key = stack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    problems.append(
                        Problem("SM004", f"SETITEM sets an item of global {target.name}", rel)
                    )
                else:
                    _check_items(problems, name, rel, pos, target, [key, value])
            elif action == A_POPN_PUSH:
                if len(stack) < extra:
                    raise IndexError
                items = stack[len(stack) - extra :]
                del stack[len(stack) - extra :]
                stack.append(_Tuple(items))
            elif action == A_STOP:
                stack.pop()
                if metastack:
                    raise _Stop("SM011", "STOP with a MARK still open", pos)
                result.end = aend
                break
            elif action == A_PROTO:
                value = data[astart]
                if value > 5:
                    raise _Stop("SM011", f"unsupported pickle protocol {value}", pos)
                if first_proto is None:
                    first_proto = value
                elif value != proto:
                    problems.append(
                        Problem(
                            "SM009", f"PROTO switches the protocol from {proto} to {value}", rel
                        )
                    )
                proto = value
            elif action == A_FRAME:
                frame = int.from_bytes(data[astart:aend], "little")
                if frame > size - aend:
                    raise _Stop("SM011", f"FRAME of {frame} bytes runs past the end", pos)
            elif action in (A_GLOBAL, A_INST):
                cut = data.find(b"\n", astart)
                try:
                    module = str(data[astart:cut], "utf-8")
                    attr = str(data[cut + 1 : aend - 1], "utf-8")
                except UnicodeDecodeError:
                    raise _Stop("SM011", f"{name} names are not valid UTF-8", pos) from None
                if py2 is None:
                    if module in _PY3_MODULES:
                        py2 = False
                    elif module in _PY2_MODULES:
                        py2_names = True
                ref = _add_global(result, name, rel, module, attr, proto, allow)
                if action == A_GLOBAL:
                    stack.append(ref)
                else:
                    items = stack
                    stack = metastack.pop()
                    calls.append(Call(name, rel, ref.name))
                    if ref.name in DEFAULT_ALLOWLIST:
                        _check_args(problems, rel, ref.name, items)
                    stack.append(_Made(ref.name))
            elif action == A_STACK_GLOBAL:
                attr_value = stack.pop()
                module_value = stack.pop()
                if type(module_value) is str and type(attr_value) is str:
                    ref = _add_global(result, name, rel, module_value, attr_value, proto, allow)
                else:
                    written = (
                        f"{module_value if type(module_value) is str else '?'}."
                        f"{attr_value if type(attr_value) is str else '?'}"
                    )
                    globals_.append(
                        GlobalRef(
                            name,
                            rel,
                            written,
                            written,
                            Verdict.DANGEROUS,
                            "operands are not constant strings",
                        )
                    )
                    problems.append(
                        Problem(
                            "SM002",
                            f"STACK_GLOBAL operands are computed, not constant strings "
                            f"(module {_describe(module_value)}, name {_describe(attr_value)})",
                            rel,
                        )
                    )
                    ref = _Global(f"<computed {written}>", True)
                stack.append(ref)
            elif action == A_REDUCE:
                args = stack.pop()
                func = stack.pop()
                _check_tuple(args, "REDUCE", "argument", pos)
                stack.append(_call(result, name, rel, func, args))
            elif action == A_NEWOBJ:
                args = stack.pop()
                cls = stack.pop()
                _check_class(cls, name, pos)
                _check_tuple(args, name, "argument", pos)
                stack.append(_call(result, name, rel, cls, args))
            elif action == A_NEWOBJ_EX:
                kwargs = stack.pop()
                args = stack.pop()
                cls = stack.pop()
                _check_class(cls, name, pos)
                _check_tuple(args, name, "argument", pos)
                kind = _kind_name(kwargs)
                if kind is not None and kind != "dict":
                    raise _Stop("SM011", f"NEWOBJ_EX keyword arguments are {_an(kind)}", pos)
                stack.append(_call(result, name, rel, cls, None))
            elif action == A_OBJ:
                items = stack
                stack = metastack.pop()
                if not items:
                    raise _Stop("SM011", "OBJ without a class after its MARK", pos)
                _check_class(items[0], name, pos)
                stack.append(_call(result, name, rel, items[0], _Tuple(items[1:])))
            elif action == A_BUILD:
                state = stack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    builds.append(Build(rel, target.name, True))
                    problems.append(
                        Problem(
                            "SM004",
                            f"BUILD sets the state of global {target.name}, "
                            "a class or function rather than an instance",
                            rel,
                        )
                    )
                else:
                    builds.append(Build(rel, _describe(target), False))
                    _check_build(problems, rel, pos, target, state)
            elif action == A_POP:
                if stack:
                    stack.pop()
                else:
                    stack = metastack.pop()
            elif action == A_POP_MARK:
                stack = metastack.pop()
            elif action == A_DUP:
                stack.append(stack[-1])
            elif action == A_STR_PY2:
                if py2 is None:
                    py2 = True
                if aend - astart > _MAX_NAME:
                    stack.append(_Text(aend - astart))
                else:
                    stack.append(str(data[astart:aend], "latin-1"))
            elif action == A_STR_TEXT_PY2:
                if py2 is None:
                    py2 = True
                text = _decode_text_string(bytes(data[astart : aend - 1]))
                if text is None:
                    problems.append(Problem("SM011", "STRING argument is not a quoted string", rel))
                    stack.append(_Text(0))
                else:
                    stack.append(text if len(text) <= _MAX_NAME else _Text(len(text)))
            elif action == A_STR_UNICODE:
                try:
                    text = str(data[astart : aend - 1], "raw-unicode-escape")
                except UnicodeDecodeError:
                    problems.append(Problem("SM011", "UNICODE argument cannot be decoded", rel))
                    stack.append(_Text(0))
                else:
                    stack.append(text if len(text) <= _MAX_NAME else _Text(len(text)))
            elif action == A_TEXT_NUMBER:
                stack.append(_text_number(name, data, astart, aend, pos, problems, rel))
            elif action in (A_PERSID, A_BINPERSID):
                if action == A_BINPERSID:
                    stack.pop()
                problems.append(
                    Problem("SM005", f"{name}: a persistent reference to an external object", rel)
                )
                stack.append(_OTHER)
            elif action == A_EXT:
                index = int.from_bytes(data[astart:aend], "little")
                label = f"<extension code {index}>"
                globals_.append(
                    GlobalRef(
                        name,
                        rel,
                        label,
                        label,
                        Verdict.DANGEROUS,
                        "resolved through copyreg's extension registry",
                    )
                )
                problems.append(
                    Problem(
                        "SM006",
                        f"{name} {index}: a global named through copyreg's extension registry",
                        rel,
                    )
                )
                stack.append(_Global(label, True))
            elif action in (A_NEXT_BUFFER, A_READONLY_BUFFER):
                if action == A_READONLY_BUFFER:
                    stack.pop()
                problems.append(Problem("SM007", f"{name}: an out-of-band buffer", rel))
                stack.append(_OTHER)
            else:  # pragma: no cover - every opcode has an action
                raise _Stop("SM011", f"opcode {name} is not handled", pos)
            pos = aend
    except _Stop as stop:
        problems.append(Problem(stop.rule, stop.message, stop.offset - start))
    except IndexError:
        problems.append(
            Problem("SM011", f"{name} finds too few items on the stack (or no MARK)", pos - start)
        )
    result.protocol = first_proto if first_proto is not None else min(max_proto, 1)
    result.max_proto = max_proto
    result.python2 = py2 if py2 is not None else (True if py2_names else None)
    result.opcodes = ops
    return result


def _add_global(
    result: _Walk, opcode: str, rel: int, module: str, attr: str, proto: int, allow: frozenset[str]
) -> _Global:
    mapped, verdict, reason, rule = classify_global(module, attr, protocol=proto, allow=allow)
    result.globals.append(GlobalRef(opcode, rel, f"{module}.{attr}", mapped, verdict, reason))
    if rule is not None:
        message = f"refused global {reason}" if rule == "SM001" else reason
        result.problems.append(Problem(rule, message, rel))
    return _Global(mapped, verdict is Verdict.DANGEROUS)


def _call(result: _Walk, opcode: str, rel: int, func: Any, args: Any) -> _Made:
    if type(func) is _Global:
        callee = func.name
        if type(args) is _Tuple and callee in DEFAULT_ALLOWLIST:
            _check_args(result.problems, rel, callee, args.items)
    else:
        callee = _describe(func)
        result.problems.append(
            Problem("SM012", f"{opcode} calls {callee}, which is not a global", rel)
        )
    result.calls.append(Call(opcode, rel, callee))
    return _Made(callee)


# Type checks: what pickle.loads refuses (unreadable, the walk stops there) and
# what it goes through with although the loader refuses it (type confusion).
_ITEM_TARGET = {
    "APPEND": "list",
    "APPENDS": "list",
    "SETITEM": "dict",
    "SETITEMS": "dict",
    "ADDITEMS": "set",
}
# (opcode, target type) that pickle.loads accepts by calling a method of the target
_CONFUSED = {
    ("APPEND", "bytearray"),
    ("APPENDS", "bytearray"),
    ("SETITEM", "list"),
    ("SETITEMS", "list"),
    ("SETITEM", "bytearray"),
    ("SETITEMS", "bytearray"),
}
# Allowlisted instances whose BUILD the loader accepts (uuid.UUID's one state dict;
# _reconstructor makes instances of other classes, stubs mostly).
_BUILD_OK = frozenset({"uuid.UUID", "copyreg._reconstructor"})


def _an(kind: str | None) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _check_keys(keys: list[Any], opcode: str, pos: int) -> None:
    for key in keys:
        if not _hashable(key):
            raise _Stop("SM011", f"{opcode} with an unhashable key ({_an(_kind_name(key))})", pos)


def _check_items(
    problems: list[Problem], opcode: str, rel: int, pos: int, target: Any, items: list[Any]
) -> None:
    """APPEND(S), SETITEM(S), ADDITEMS of ``items`` to ``target`` (not a global)."""
    setitems = opcode in ("SETITEM", "SETITEMS")
    if setitems and len(items) % 2:
        raise _Stop("SM011", f"{opcode} with an odd number of items", pos)
    if not items:  # pickle does nothing at all
        return
    kind = _kind_name(target)
    if kind is None:  # an object made by a call, or unknown
        if type(target) is not _Made or target.name != "builtins.bytearray":
            return
        kind = "bytearray"  # the allowlisted constructor's: filling it is type confusion
    if kind == _ITEM_TARGET[opcode]:
        if setitems:
            _check_keys(items[::2], opcode, pos)
        elif opcode == "ADDITEMS":
            _check_keys(items, opcode, pos)
        return
    if (opcode, kind) in _CONFUSED:
        problems.append(
            Problem(
                "SM014",
                f"{opcode} on {_an(kind)}: pickle.loads goes through with it (type confusion); "
                "the loader refuses it",
                rel,
            )
        )
        return
    raise _Stop("SM011", f"{opcode} on {_an(kind)} (pickle.loads fails here)", pos)


def _check_tuple(value: Any, opcode: str, what: str, pos: int) -> None:
    kind = _kind_name(value)
    if kind is not None and kind != "tuple":
        raise _Stop("SM011", f"{opcode} {what} is {_an(kind)}, not a tuple", pos)


def _check_class(value: Any, opcode: str, pos: int) -> None:
    kind = _kind_name(value)
    if kind is not None:
        raise _Stop("SM011", f"{opcode} of {_an(kind)}, not a class", pos)


def _check_build(problems: list[Problem], rel: int, pos: int, target: Any, state: Any) -> None:
    kind = _kind_name(target)
    if kind is not None:
        raise _Stop("SM011", f"BUILD on {_an(kind)}, which has no state to set", pos)
    if type(target) is _Made and target.name in DEFAULT_ALLOWLIST and target.name not in _BUILD_OK:
        problems.append(
            Problem(
                "SM014",
                f"BUILD sets the state of a {target.name} instance (attributes or slots, "
                f"{_describe(state)}): the loader refuses it, pickle.loads sets them",
                rel,
            )
        )


def _text_length(value: Any) -> int | None:
    t = type(value)
    if t is str:
        return len(value)
    if t is _Text:
        return value.length
    return None


def _check_args(problems: list[Problem], rel: int, callee: str, items: list[Any]) -> None:
    """The loader's argument validators for allowlisted constructors, on what is known."""
    if callee in ("builtins.bytes", "builtins.bytearray"):
        bits = _int_bits(items[0]) if len(items) == 1 else None
        if bits is None:
            return
        if bits > _BIG_ALLOC.bit_length() - 1:
            problems.append(
                Problem(
                    "SM015",
                    f"{callee} of an integer of {bits} bits: pickle.loads allocates that many "
                    "bytes; the loader refuses an integer argument",
                    rel,
                )
            )
        else:
            problems.append(
                Problem("SM011", f"{callee} of an integer: the loader refuses the argument", rel)
            )
    elif callee in ("decimal.Decimal", "fractions.Fraction"):
        for item in items:
            length = _text_length(item)
            bits = _int_bits(item)
            if length is not None and length > _MAX_DECIMAL_CHARS:
                what = f"a string of {length} characters (cap {_MAX_DECIMAL_CHARS})"
            elif bits is not None and callee != "decimal.Decimal" and bits > _MAX_FRACTION_BITS:
                what = f"an integer of {bits} bits (cap {_MAX_FRACTION_BITS})"
            else:
                continue
            problems.append(
                Problem(
                    "SM015",
                    f"{callee} of {what}: the loader refuses it, pickle.loads spends "
                    "memory and CPU on it",
                    rel,
                )
            )
            return


def _text_number(
    name: str, data: Any, astart: int, aend: int, pos: int, problems: list[Problem], rel: int
) -> Any:
    """The value of a protocol-0 INT/LONG/FLOAT argument (checked; integers size-capped)."""
    arg = bytes(data[astart : aend - 1])
    if name != "FLOAT" and len(arg) > MAX_INT_DIGITS + 2:
        raise _Stop("SM010", f"{name} of {len(arg)} digits is over the {MAX_INT_DIGITS} cap", pos)
    if not _text_number_ok(name, arg):
        problems.append(Problem("SM011", f"{name} argument is not a number", rel))
        return _OTHER
    if name == "FLOAT":
        return _FLOAT
    if name == "INT" and arg in (b"00", b"01"):
        return _BOOL
    core = arg[:-1] if arg[-1:] == b"L" else arg
    if len(core) <= 18 and _DIGITS.fullmatch(core):
        return int(core)
    return _BigInt(len(core) * 10 // 3 + 1)


# --------------------------------------------------------------------------
# The fast path: plain data
#
# Most stored values name no global at all.  For those, a compiled bytes regex
# matches runs of opcodes in C, and the symbolic walk is not needed: the run
# pattern holds only opcodes that can neither import, call, build, reference
# anything outside the pickle nor switch protocol (no GLOBAL, STACK_GLOBAL, INST,
# OBJ, REDUCE, NEWOBJ(_EX), BUILD, PERSID, EXT*, buffers, PROTO), so the walk
# could only find data.  A value is taken by the fast path only when the runs
# (and FRAMEs, whose lengths are checked here) reach exactly its last byte, a
# STOP.  Arguments are checked exactly: text opcodes must match strict forms,
# strings must be valid UTF-8 (non-ASCII and long ones are decoded on the Python
# side), declared lengths and FRAMEs must fit, memo indexes may not exceed the
# size (the loader's memory-bomb rule), integers and strings must be within the
# loader's limits.  Then the stack discipline and types: the opcode bytes alone
# (``_TOKENS.findall``, in C) go through :func:`_plain_ok`, a small typed stack
# machine (underflow, MARK fences, STOP with an open MARK, APPEND(S) only on a
# list, SETITEM(S) on a dict, ADDITEMS on a set, hashable keys and members, MARK
# depth), and a pickle with more container opcodes than the loader's depth limit
# is walked (the loader's own gate for its structure check).  Anything else,
# including memo GETs and any damage, goes the symbolic way, which reports it.
# Whatever the fast path takes, the loader's pre-scan takes too (tested).

_RUN_CAP = 2000  # opcodes per match() (bounds the regex engine's backtracking stack)


# Regex helpers shared with the loader's pre-scan: a class of byte values, and
# a length below 256 followed by that many items.
_escape_class = pickle_scan._class
_counted_small = pickle_scan._counted


_ASCII = rb"[\x00-\x7f]"
_ESCAPES = rb"""\\[\\'"abfnrtv]|\\x[0-9a-fA-F]{2}|\\[0-7]{1,3}"""
# Strict forms of the protocol-0 text arguments: whatever matches reads without
# error; anything else (other spellings pickle may still accept) is walked.
_TEXT_SHAPES: dict[str, bytes] = {
    "INT": rb"[+-]?[0-9]{1,%d}\n" % MAX_INT_DIGITS,
    "LONG": rb"[+-]?[0-9]{1,%d}L?\n" % MAX_INT_DIGITS,
    "FLOAT": rb"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?\n",
    "STRING": rb"(?:'(?:[^'\\\n]|" + _ESCAPES + rb""")*'|"(?:[^"\\\n]|""" + _ESCAPES + rb')*")\n',
    "UNICODE": rb"(?:[^\\\n]|\\u[0-9a-fA-F]{4}|\\U(?:000[0-9a-fA-F]|0010)[0-9a-fA-F]{4}"
    rb"|\\(?![uU]))*\n",
}
_UNICODE_OPS = {"SHORT_BINUNICODE", "BINUNICODE"}
# Opcodes the regex leaves to the Python side of the fast path (checked, then skipped).
_LOOKED_AT = {
    "BINUNICODE8",
    "BINBYTES8",
    "BYTEARRAY8",
    "PUT",
    "LONG_BINPUT",
    "FRAME",
}


def _fast_pattern(
    ops: set[str], groups: dict[str, set[str]], *, binput: bool, put_digits: int
) -> re.Pattern[bytes]:
    """A run pattern over the opcodes named in ``ops``; ``groups`` capture some of them."""
    import pickletools

    by_name = {op.name: op for op in pickletools.opcodes}
    by_shape: dict[bytes, set[int]] = {}
    grouped: dict[str, dict[bytes, set[int]]] = {g: {} for g in groups}
    for name in ops - _LOOKED_AT:
        if name == "BINPUT" and not binput:
            continue
        op = by_name[name]
        code = ord(op.code)
        arg = op.arg
        body = _ASCII if name in _UNICODE_OPS else b"."
        if arg is None:
            shape = b""
        elif arg.n >= 0:
            shape = b".{%d}" % arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            shape = _TEXT_SHAPES[name]
        elif arg.n == pickletools.TAKEN_FROM_ARGUMENT1:
            shape = _counted_small(1, body)
        else:  # 4-byte lengths below 256 here (the Python side takes larger ones)
            shape = _counted_small(4, body)
        target = by_shape
        for group, members in groups.items():
            if name in members:
                target = grouped[group]
        target.setdefault(shape, set()).add(code)
    parts = [_escape_class(codes) + shape for shape, codes in by_shape.items()]
    if put_digits and "PUT" in ops:  # PUT indexes that cannot exceed the size
        parts.append(b"p[0-9]{1,%d}\n" % put_digits)
    for group, shapes in grouped.items():
        if shapes:
            inner = b"|".join(_escape_class(codes) + shape for shape, codes in shapes.items())
            parts.append(b"(?P<%s>%s)" % (group.encode(), inner))
    source = b"(?:" + b"|".join(parts) + b"){0,%d}" % _RUN_CAP
    return re.compile(source, re.DOTALL)


# GETs are not here: they go the symbolic way (a GET of an entry never set is the
# classic memo desync).
_DATA_OPS = {
    "MARK",
    "POP",
    "POP_MARK",
    "DUP",
    "NONE",
    "NEWTRUE",
    "NEWFALSE",
    "INT",
    "BININT",
    "BININT1",
    "BININT2",
    "LONG",
    "LONG1",
    "LONG4",
    "FLOAT",
    "BINFLOAT",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
    "EMPTY_LIST",
    "EMPTY_DICT",
    "EMPTY_TUPLE",
    "EMPTY_SET",
    "TUPLE",
    "TUPLE1",
    "TUPLE2",
    "TUPLE3",
    "LIST",
    "DICT",
    "FROZENSET",
    "APPEND",
    "APPENDS",
    "SETITEM",
    "SETITEMS",
    "ADDITEMS",
    "PUT",
    "BINPUT",
    "LONG_BINPUT",
    "MEMOIZE",
    "FRAME",
}
_PY2_STR_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING"}


def _ops_up_to(protocol: int) -> set[str]:
    import pickletools

    return {op.name for op in pickletools.opcodes if op.proto <= protocol}


def _codes(names: set[str]) -> frozenset[int]:
    import pickletools

    return frozenset(ord(op.code) for op in pickletools.opcodes if op.name in names)


class _FastKind:
    """The run patterns and the Python-side opcodes for one kind of pickle."""

    def __init__(self, ops: set[str], groups: dict[str, set[str]]):
        self.ops = ops
        self.groups = groups
        self._patterns: dict[int, re.Pattern[bytes]] = {}
        self.looked_at = _codes((ops & _LOOKED_AT) | ({"BINPUT"} & ops) | (ops & _UNICODE_OPS))
        self.looked_at |= _codes(ops & {"BINBYTES", "BINSTRING", "LONG4"})
        self.proto1 = _codes(ops & (_ops_up_to(1) - _ops_up_to(0)))

    def pattern(self, size: int) -> re.Pattern[bytes]:
        """The run pattern for a pickle of ``size`` bytes.

        Memo indexes the regex may take are those that cannot exceed the size:
        BINPUT (< 256) from 256 bytes on, PUT with fewer digits than the size has.
        """
        # At most two digits in the regex (indexes below 100): larger PUT indexes are
        # checked on the Python side, and few patterns ever need compiling.
        digits = min(len(str(size)) - 1, 2)
        key = digits if size < 256 else -1 - digits
        found = self._patterns.get(key)
        if found is None:
            found = self._patterns[key] = _fast_pattern(
                self.ops, self.groups, binput=size >= 256, put_digits=digits
            )
        return found


# Protocol 3 and up: Python 3 wrote it, Python 2 str opcodes or not.
_FAST_MODERN = _FastKind(_DATA_OPS, {})
# Protocol 2: a Python 2 str opcode says Python 2 (safepickle.is_python2's rule).
_FAST_P2 = _FastKind(_DATA_OPS & _ops_up_to(2), {"py2": _PY2_STR_OPS})
# No PROTO: protocol 1 as soon as a protocol-1 opcode appears, else 0.
_FAST_P01 = _FastKind(
    _DATA_OPS & _ops_up_to(1),
    {
        "py2": _PY2_STR_OPS & _ops_up_to(0),  # STRING
        "py2b": _PY2_STR_OPS - _ops_up_to(0),  # BINSTRING, SHORT_BINSTRING: protocol 1 too
        "p1": (_DATA_OPS & _ops_up_to(1)) - _ops_up_to(0) - _PY2_STR_OPS,
    },
)
# opcode -> (length width, signed, text) for the counted opcodes the Python side takes
_COUNTED_LOOK: dict[int, tuple[int, bool, bool]] = {
    0x8C: (1, False, True),  # SHORT_BINUNICODE
    0x58: (4, False, True),  # BINUNICODE
    0x8D: (8, False, True),  # BINUNICODE8
    0x42: (4, False, False),  # BINBYTES
    0x54: (4, True, False),  # BINSTRING
    0x8B: (4, True, False),  # LONG4
    0x8E: (8, False, False),  # BINBYTES8
    0x96: (8, False, False),  # BYTEARRAY8
}


# Possessive repeats (Python 3.11+) stop the regex engine from backtracking; on 3.10
# plain greedy repeats match the same tokens, only slower on hostile input.
_PLUS = b"+" if sys.version_info >= (3, 11) else b""


# The opcode bytes of a pickle, one ``findall`` (the loader's skeleton pattern).
_TOKENS = pickle_scan.SKELETON


def _opcodes_of(data: Any, start: int, end: int) -> bytes:
    """The opcode bytes of the (already checked) pickle at ``data[start:end]``, in Python."""
    table = _TABLE
    out = bytearray()
    pos = start
    while pos < end:
        code = data[pos]
        out.append(code)
        spec = table[code]
        assert spec is not None
        kind, n, signed = spec[1], spec[2], spec[3]
        pos += 1
        if kind == 1:
            pos += n
        elif kind == 3:
            pos += n + int.from_bytes(data[pos : pos + n], "little", signed=signed)
        elif kind == 2:
            for _ in range(n):
                pos = data.find(b"\n", pos) + 1
    return bytes(out)


# Opcode -> class for _plain_ok: "h" any hashable scalar, "p" a memo PUT.
_OP_CLASSES = bytes.maketrans(
    b"NKMJ\x8a\x8bGFILSTUVX\x8c\x8dCB\x8e\x88\x89" + b"pqr\x94",
    b"h" * 22 + b"pppp",
)
# Abstract values on _plain_ok's stack: 0 hashable, anything else unhashable.
_H, _U, _L, _D, _S, _Y = range(6)


_PLAIN_CACHE: dict[bytes, bool] = {}
_PLAIN_CACHE_SIZE = 4096
_PLAIN_CACHE_OPS = 512  # opcode strings longer than this are not cached


# Opcodes that make a container: a pickle nests at most as deep as their count
# (the loader's nesting_bound, which gates its structure check the same way).
_NESTING_BYTES: bytes = getattr(pickle_scan, "NESTING_BYTES", b"(]}\x8f\x85\x86\x87")
_NOT_NESTING = bytes(c for c in range(256) if c not in _NESTING_BYTES)


def _plain_ok(ops: bytes, max_marks: int) -> bool:
    """Whether the plain-data opcodes ``ops`` (classed by _OP_CLASSES) run cleanly.

    Memo PUTs can only fail on an empty stack or at a MARK fence: at the start,
    after a MARK, POP or POP_MARK.  Anywhere else they are dropped before the
    check, which halves the work at protocol 4 (a MEMOIZE after every value).
    Records of one shape share their opcode string, so results are cached.
    """
    if b"p" in ops:
        if ops[0] == 0x70 or b"(p" in ops or b"0p" in ops or b"1p" in ops:
            return False
        ops = ops.replace(b"p", b"")
    if max_marks != DEFAULT_LIMITS.max_marks or len(ops) > _PLAIN_CACHE_OPS:
        return _plain_run(ops, max_marks)
    found = _PLAIN_CACHE.get(ops)
    if found is None:
        found = _plain_run(ops, max_marks)
        if len(_PLAIN_CACHE) < _PLAIN_CACHE_SIZE:
            _PLAIN_CACHE[ops] = found
    return found


def _plain_run(ops: bytes, max_marks: int) -> bool:
    """Whether plain-data opcodes (classed by _OP_CLASSES) run cleanly in pickle.loads.

    Stack discipline (underflow, MARK fences, STOP with an open MARK), the types
    item opcodes need (APPEND(S) on a list, SETITEM(S) on a dict, ADDITEMS on a
    set), hashable keys and members, and the MARK depth limit.  False means "walk
    it": the symbolic walk finds and reports the damage.
    """
    stack: list[int] = []
    marks: list[int] = []
    fence = 0
    push = stack.append
    for op in ops:
        if op == 0x68:  # h: a hashable scalar
            push(_H)
        elif op == 0x70:  # p: a memo PUT needs a value
            if len(stack) <= fence:
                return False
        elif op == 0x28:  # MARK
            if len(marks) >= max_marks:
                return False
            fence = len(stack)
            marks.append(fence)
        elif op == 0x75 or op == 0x65 or op == 0x90:  # SETITEMS, APPENDS, ADDITEMS
            if not marks:
                return False
            mark = marks.pop()
            fence = marks[-1] if marks else 0
            if mark <= fence:
                return False  # no target
            items = stack[mark:]
            if items:
                del stack[mark:]
                target = stack[-1]
                if op == 0x75:
                    if target != _D or len(items) % 2 or any(items[::2]):
                        return False
                elif op == 0x65:
                    if target != _L:
                        return False
                elif target != _S or any(items):
                    return False
        elif op == 0x73:  # SETITEM
            if len(stack) - fence < 3:
                return False
            stack.pop()
            if stack.pop() or stack[-1] != _D:
                return False
        elif op == 0x61:  # APPEND
            if len(stack) - fence < 2:
                return False
            stack.pop()
            if stack[-1] != _L:
                return False
        elif op == 0x7D:  # EMPTY_DICT
            push(_D)
        elif op == 0x5D:  # EMPTY_LIST
            push(_L)
        elif op == 0x29:  # EMPTY_TUPLE
            push(_H)
        elif op == 0x8F:  # EMPTY_SET
            push(_S)
        elif op == 0x96:  # BYTEARRAY8
            push(_Y)
        elif 0x85 <= op <= 0x87:  # TUPLE1-3
            n = op - 0x84
            if len(stack) - fence < n:
                return False
            unhashable = any(stack[-n:])
            del stack[-n:]
            push(_U if unhashable else _H)
        elif op == 0x74 or op == 0x6C or op == 0x64 or op == 0x91:  # TUPLE LIST DICT FROZENSET
            if not marks:
                return False
            mark = marks.pop()
            fence = marks[-1] if marks else 0
            items = stack[mark:]
            del stack[mark:]
            if op == 0x74:
                push(_U if any(items) else _H)
            elif op == 0x6C:
                push(_L)
            elif op == 0x64:
                if len(items) % 2 or any(items[::2]):
                    return False
                push(_D)
            else:
                if any(items):
                    return False
                push(_H)
        elif op in pickle_scan.SHUFFLES:  # POP, POP_MARK, DUP
            if not pickle_scan.shuffle_stack(op, stack, marks):
                return False
            fence = marks[-1] if marks else 0
        elif op == 0x2E:  # STOP
            return not marks and len(stack) > 0
        else:
            return False
    return False


def _fast_plain(
    data: Any, size: int, start: int = 0, *, stream: bool = False, max_marks: int = 10_000
) -> PickleFinding | None:
    """The finding for a plain-data pickle at ``data[start:]``, or None (walk it).

    Without ``stream`` the pickle must fill ``data[start:size]`` exactly; with it,
    the pickle ends at its STOP and the finding's ``size`` says where.
    """
    if size - start < 2:
        return None
    if data[start] == 0x80:
        protocol = data[start + 1]
        if protocol < 2 or protocol > 5:
            return None
        kind = _FAST_MODERN if protocol >= 3 else _FAST_P2
        pos = start + 2
    else:
        protocol = -1
        kind = _FAST_P01
        pos = start
    bound = size - start  # memo indexes may not exceed the pickle's size
    if bound > _MAX_PICKLE and not stream:
        return None  # over the loader's size limit
    pattern = kind.pattern(bound)
    looked_at = kind.looked_at
    last = size - 1
    py2 = p1 = long_args = False
    while True:
        match = pattern.match(data, pos)
        end = match.end()
        if protocol < 0:
            if match["py2b"] is not None:
                py2 = p1 = True
            elif match["p1"] is not None:
                p1 = True
            if match["py2"] is not None:
                py2 = True
        elif protocol == 2 and match["py2"] is not None:
            py2 = True
        if end > pos:
            pos = end
            continue
        if pos >= size:
            return None  # no STOP: the walk reports it
        code = data[pos]
        if code == 0x2E:
            if pos == last or stream:
                if pos + 1 - start > _MAX_PICKLE:
                    return None
                if long_args:
                    ops = _opcodes_of(data, start, pos + 1)
                elif start or pos != last or type(data) is not bytes:
                    ops = b"".join(_TOKENS.findall(bytes(data[start : pos + 1])))
                else:
                    ops = b"".join(_TOKENS.findall(data))
                if len(ops) > _MAX_DEPTH and len(ops.translate(None, _NOT_NESTING)) > _MAX_DEPTH:
                    return None  # might nest deeper than the loader allows: walk and check
                if not _plain_ok(ops.translate(_OP_CLASSES, b"\x80\x95"), max_marks):
                    return None  # stack or type damage, or too deep: the walk reports it
                break
            return None  # bytes after STOP
        if code not in looked_at:
            return None
        if protocol < 0 and code in kind.proto1:
            p1 = True
        counted = _COUNTED_LOOK.get(code)
        if counted is not None:
            width, signed, text = counted
            body = pos + 1 + width
            length = int.from_bytes(data[pos + 1 : body], "little", signed=signed)
            if length < 0 or body > size or length > size - body:
                return None
            if length >= 256:
                long_args = True  # past what _TOKENS matches
                if length > _MAX_VALUE:
                    return None
                if code == 0x8B and length * 8 > MAX_INT_BITS:
                    return None
            if text:
                try:
                    str(data[body : body + length], "utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    return None
            elif code == 0x54:  # BINSTRING
                py2 = True
            pos = body + length
        elif code == 0x95:  # FRAME
            if protocol < 4 or pos + 9 > size:
                return None
            frame = int.from_bytes(data[pos + 1 : pos + 9], "little")
            if frame > size - pos - 9:
                return None
            pos += 9
        else:  # PUT, BINPUT, LONG_BINPUT: the index may not exceed the size
            if code == 0x70:  # PUT
                cut = data.find(b"\n", pos + 1)
                digits = data[pos + 1 : cut]
                if cut < 0 or not digits.isdigit() or len(digits) > 19:
                    return None
                index, pos = int(digits), cut + 1
            else:
                width = 1 if code == 0x71 else 4
                if pos + 1 + width > size:
                    return None
                index = int.from_bytes(data[pos + 1 : pos + 1 + width], "little")
                pos += 1 + width
            if index > bound:
                return None
    if protocol < 0:
        protocol = 1 if p1 else 0
    python2 = False if protocol >= 3 else (True if py2 else None)
    return PickleFinding(
        protocol,
        python2,
        [],
        [],
        [],
        [],
        Verdict.SAFE,
        "plain data (no globals)",
        pos + 1 - start,
        None,
    )


# --------------------------------------------------------------------------
# One pickle, one stream


def _finish(walks: list[_Walk], data: Any, start: int, end: int) -> PickleFinding:
    first = walks[0]
    if len(walks) == 1:
        problems = first.problems
        globals_, calls, builds = first.globals, first.calls, first.builds
        opcodes = first.opcodes
    else:
        problems, globals_, calls, builds, opcodes = [], [], [], [], 0
        for walk in walks:
            problems += walk.problems
            globals_ += walk.globals
            calls += walk.calls
            builds += walk.builds
            opcodes += walk.opcodes
    python2 = False if first.protocol is not None and first.protocol >= 3 else first.python2
    verdict, reason = _verdict(problems, globals_)
    return PickleFinding(
        protocol=first.protocol,
        python2=python2,
        globals=globals_,
        calls=calls,
        builds=builds,
        problems=_dedupe(problems),
        verdict=verdict,
        reason=reason,
        size=end - start,
        opcodes=opcodes,
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    if len(problems) < 2:
        return problems
    seen: set[tuple[str, str]] = set()
    kept = []
    for problem in problems:
        key = (problem.rule, problem.message)
        if key not in seen:
            seen.add(key)
            kept.append(problem)
    return kept


def _verdict(problems: list[Problem], globals_: list[GlobalRef]) -> tuple[Verdict, str]:
    if not problems:
        if globals_:
            return Verdict.SAFE, "only allowlisted globals"
        return Verdict.SAFE, "plain data (no globals)"
    worst = max(problems, key=lambda p: RULES[p.rule].verdict)
    return RULES[worst.rule].verdict, worst.message


def _stacked(data: Any, pos: int) -> bool:
    """Whether the bytes at ``pos`` could start a pickle (to audit them as a stacked one)."""
    first = data[pos]
    if first == 0x80:
        return pos + 1 < len(data) and data[pos + 1] <= 5
    return _TABLE[first] is not None


# --------------------------------------------------------------------------
# The shape cache: records of one shape share one verdict
#
# A shelf holds many values of the same few shapes.  The *skeleton* of a pickle
# is its opcode bytes with the arguments that cannot change the verdict left
# out (numbers, strings and bytes of data, FRAME lengths), and with the ones
# that can kept (PROTO, the names of GLOBAL, memo indexes of PUT/GET, and the
# operand strings of STACK_GLOBAL in the forms pickle writes them).  One regex
# ``findall`` (in C) tokenises the pickle, checks every argument it drops as
# strictly as the plain-data fast path does (strict text forms of INT, LONG,
# FLOAT, STRING, UNICODE; counted lengths below 256 that fit; UTF-8 strings),
# and gives the skeleton; tokens that tile the pickle exactly up to its final
# STOP are the proof that it tokenised as pickle reads it.
#
# The first pickle of a skeleton goes the precise way (:func:`_audit_full`,
# the pre-scan, the symbolic walk, the structure check).  Its skeleton is
# remembered as "safe" only when that verdict is safe with no problem at all,
# no global is an allowlisted constructor whose argument *values* the loader
# checks (bytes, bytearray, Decimal, Fraction), the loader's structure check
# passes on it (so it passes on every pickle of the skeleton, whether the
# pre-scan asks for it or not), and every STACK_GLOBAL operand is a string
# whose bytes are in the skeleton (written there, or fetched from the memo
# entry of such a string).  Everything the walk and the loader's checks look
# at is then a function of the skeleton and of argument checks made on every
# pickle, so a later pickle of that skeleton, memo indexes within its size,
# gets the same verdict.  Only "safe" is ever answered from the cache: any
# other skeleton, a token outside the forms above (EXT*, PERSID, buffers, INST,
# OBJ, NEWOBJ_EX, a second PROTO or a FRAME past the header, computed
# STACK_GLOBAL operands, long arguments), a non-default limit or input that is
# not ``bytes`` goes the precise way every time.  The details (globals, calls,
# builds, opcode count) of a cached answer are computed on first access, by
# the precise path.

_SHAPE_MAX = 1 << 16  # larger pickles are not shape-cached
_SHAPE_CACHE_SIZE = 8192
_SHAPE_MAX_KEY = 4096  # skeleton bytes
_SHAPE_NOARG = b"(012N]})eusatld\x85\x86\x87\x88\x89\x8f\x90\x91\x94R\x81b"
_SHORT_ASCII = _counted_small(1, _ASCII)
_SG_OPERAND = b"(?:\x8c" + _SHORT_ASCII + b"\x94?|h.|j.{4})"
# Tokens kept whole in the skeleton (opcode and argument); STACK_GLOBAL with
# its operands first, so a string is taken as an operand whenever it is one.
_SHAPE_KEEP = [
    b"\x8c" + _SHORT_ASCII + b"\x94?" + _SG_OPERAND + b"\x93",
    b"h." + _SG_OPERAND + b"\x93",
    b"j.{4}" + _SG_OPERAND + b"\x93",
    b"c[^\n]{1,300}\n[^\n]{1,300}\n",  # GLOBAL
    b"[pg][0-9]{1,10}\n",  # PUT, GET
    b"[qh].",  # BINPUT, BINGET
    b"[rj].{4}",  # LONG_BINPUT, LONG_BINGET
]
# Validator callees: the loader checks their argument values, not in a skeleton.
_VALUE_CHECKED = frozenset(
    {"builtins.bytes", "builtins.bytearray", "decimal.Decimal", "fractions.Fraction"}
)


# One UTF-8 character (surrogates allowed, as ``surrogatepass`` decodes them),
# byte by byte so a counted length can bound it: a lead byte must be followed by
# its continuation bytes, a continuation byte must belong to a lead before it.
_UTF8_BYTE = (
    b"(?:[\x00-\x7f]"
    b"|[\xc2-\xdf](?=[\x80-\xbf])"
    b"|\xe0(?=[\xa0-\xbf][\x80-\xbf])"
    b"|[\xe1-\xef](?=[\x80-\xbf]{2})"
    b"|\xf0(?=[\x90-\xbf][\x80-\xbf]{2})"
    b"|[\xf1-\xf3](?=[\x80-\xbf]{3})"
    b"|\xf4(?=[\x80-\x8f][\x80-\xbf]{2})"
    b"|(?:(?<=[\xc2-\xf4])|(?<=[\xe0-\xf4][\x80-\xbf])|(?<=[\xf0-\xf4][\x80-\xbf]{2}))"
    b"[\x80-\xbf])"
)
# ... and a string must neither start inside a character nor end inside one.
_UTF8_END = b"(?<![\xc2-\xf4])(?<![\xe0-\xf4].)(?<![\xf0-\xf4]..)"


def _counted_utf8(width: int) -> bytes:
    """Like :func:`_counted_small`, the body valid UTF-8 (with surrogates); ASCII tried first."""
    pad = b"\x00" * (width - 1)
    parts = [re.escape(b"\x00" + pad)]
    for n in range(1, 256):
        parts.append(
            re.escape(bytes([n]) + pad)
            + b"(?:[\x00-\x7f]{%d}|(?![\x80-\xbf])" % n
            + _UTF8_BYTE
            + b"{%d}" % n
            + _UTF8_END
            + b")"
        )
    return b"(?:" + b"|".join(parts) + b")"


# _TEXT_SHAPES["STRING"] and ["UNICODE"] (the same languages), loops unrolled for speed.
_UNICODE_ESCAPE = rb"(?:\\u[0-9a-fA-F]{4}|\\U(?:000[0-9a-fA-F]|0010)[0-9a-fA-F]{4}|\\(?![uU]))"
_UNICODE_UNROLLED = (
    rb"[^\\\n]*"
    + _PLUS
    + rb"(?:"
    + _UNICODE_ESCAPE
    + rb"[^\\\n]*"
    + _PLUS
    + rb")*"
    + _PLUS
    + rb"\n"
)
_STRING_UNROLLED = (
    rb"(?:'[^'\\\n]*"
    + _PLUS
    + rb"(?:(?:"
    + _ESCAPES
    + rb")[^'\\\n]*"
    + _PLUS
    + rb")*"
    + _PLUS
    + rb"'"
    rb'|"[^"\\\n]*'
    + _PLUS
    + rb"(?:(?:"
    + _ESCAPES
    + rb')[^"\\\n]*'
    + _PLUS
    + rb")*"
    + _PLUS
    + rb'")\n'
)


def _shape_pattern(stack_global: bool) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """The splitter and the run of kept tokens, with or without STACK_GLOBAL.

    A match of the splitter is a run of kept tokens and the opcode of one data
    token (group 1, kept in the skeleton), then that token's argument (dropped):
    ``split`` gives the skeleton in pieces, with nothing between the matches
    when the tokens tile the pickle.
    """
    text = _TEXT_SHAPES
    data = [
        (b"\x8c", _counted_utf8(1)),
        (b"X", _counted_utf8(4)),
        (b"K", b"."),
        (b"G", b".{8}"),
        (b"J", b".{4}"),
        (b"M", b".{2}"),
        (b"\x8aUC", _counted_small(1)),
        (b"\x8bTB", _counted_small(4)),
        (b"\x8d", _counted_utf8(8)),
        (b"\x8e\x96", _counted_small(8)),
        (b"I", text["INT"]),
        (b"L", text["LONG"]),
        (b"F", text["FLOAT"]),
        (b"S", _STRING_UNROLLED),
        (b"V", _UNICODE_UNROLLED),
    ]
    kept = _SHAPE_KEEP if stack_global else _SHAPE_KEEP[3:]
    run = b"(?:" + b"|".join([_escape_class(_SHAPE_NOARG)] + kept) + b")*" + _PLUS
    codes = _escape_class(b"".join(c for c, _ in data))
    args = b"|".join(b"(?<=" + _escape_class(c) + b")" + shape for c, shape in data)
    return (
        re.compile(b"(" + run + codes + b")(?:" + args + b")", re.DOTALL),
        re.compile(run, re.DOTALL),
    )


_SHAPE_P4 = _shape_pattern(True)  # protocol 4 and 5: STACK_GLOBAL
_SHAPE_P0 = _shape_pattern(False)
_SHAPE_CACHE: dict[
    tuple[bytes, bytes, frozenset[str]], tuple[int, int, bool | None, str, bool] | None
] = {}
_FIELD_NAMES = tuple(f.name for f in fields(PickleFinding))
_DETAIL_FIELDS = ("globals", "calls", "builds", "opcodes")


class _ShapeFinding(PickleFinding):
    """A finding answered from the shape cache; its details are computed on first access."""

    __slots__ = ("_source",)

    def _details(self, name: str) -> None:
        data, allow, no_globals = self._source
        if no_globals and name != "opcodes":  # the skeleton has no global, call or BUILD
            for name in ("globals", "calls", "builds"):
                _SLOT_OF[name].__set__(self, [])
            return
        full = _audit_full(data, allow, DEFAULT_LIMITS)
        for name in _DETAIL_FIELDS:
            _SLOT_OF[name].__set__(self, getattr(full, name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PickleFinding):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _FIELD_NAMES)

    __hash__ = None  # type: ignore[assignment]


_SLOT_OF = {name: PickleFinding.__dict__[name] for name in _DETAIL_FIELDS}


def _detail_property(name: str) -> property:
    slot = _SLOT_OF[name]

    def get(self: _ShapeFinding) -> Any:
        try:
            return slot.__get__(self, PickleFinding)
        except AttributeError:
            self._details(name)
            return slot.__get__(self, PickleFinding)

    def put(self: _ShapeFinding, value: Any) -> None:
        slot.__set__(self, value)

    return property(get, put)


for _name in _DETAIL_FIELDS:
    setattr(_ShapeFinding, _name, _detail_property(_name))
del _name


def _operands_traced(data: bytes) -> tuple[bool, int]:
    """Whether every STACK_GLOBAL operand is a string kept in the skeleton; the largest PUT index."""
    import pickletools

    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    names = [name for name, _ in ops]
    operand_strings: set[int] = set()
    fed: dict[int, int] = {}  # op index of a GET operand -> memo index
    for k, name in enumerate(names):
        if name != "STACK_GLOBAL":
            continue
        j = k - 1
        for _ in range(2):
            if j >= 1 and names[j] == "MEMOIZE" and names[j - 1] == "SHORT_BINUNICODE":
                operand_strings.add(j - 1)
                j -= 2
            elif j >= 0 and names[j] == "SHORT_BINUNICODE":
                operand_strings.add(j)
                j -= 1
            elif j >= 0 and names[j] in ("BINGET", "LONG_BINGET"):
                fed[j] = ops[j][1]
                j -= 1
            else:
                return False, 0
    memo: dict[int, bool] = {}
    max_put = 0
    for k, (name, arg) in enumerate(ops):
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(memo) if name == "MEMOIZE" else arg
            if name != "MEMOIZE":
                max_put = max(max_put, index)
            memo[index] = (k - 1) in operand_strings
        elif k in fed and memo.get(fed[k]) is not True:
            return False, 0
    return True, max_put


def _shape_entry(
    data: bytes, finding: PickleFinding
) -> tuple[int, int, bool | None, str, bool] | None:
    """What the cache keeps for a skeleton, from its first pickle's precise finding."""
    if finding.verdict is not Verdict.SAFE or finding.problems:
        return None
    if any(g.mapped in _VALUE_CHECKED or g.verdict is not Verdict.SAFE for g in finding.globals):
        return None
    try:
        traced, max_put = _operands_traced(data)
        check = getattr(pickle_scan, "check_structure", None)
        if check is None:
            return None
        check(data)
    except Exception:  # noqa: BLE001 - anything odd: never cache it
        return None
    if not traced or finding.protocol is None:
        return None
    details = finding.globals or finding.calls or finding.builds
    return max_put, finding.protocol, finding.python2, finding.reason, not details


def _audit_shaped(data: bytes, allowed: frozenset[str]) -> PickleFinding:
    """:func:`audit_pickle` for ``bytes`` at the default limits: the shape cache first."""
    size = len(data)
    if size < 3 or size > _SHAPE_MAX or data[-1] != 0x2E:
        return _audit_full(data, allowed, DEFAULT_LIMITS)
    # The header: PROTO, and the FRAME pickle.dumps puts after it (its length checked).
    start = 0
    if data[0] == 0x80:
        if data[1] > 5:
            return _audit_full(data, allowed, DEFAULT_LIMITS)
        start = 2
        if data[2] == 0x95:
            if size < 12 or int.from_bytes(data[3:11], "little") > size - 11:
                return _audit_full(data, allowed, DEFAULT_LIMITS)
            start = 11
    # (no STACK_GLOBAL token can match without a 0x93 byte: the simpler pattern then)
    split, run = _SHAPE_P4 if start and data[1] >= 4 and 0x93 in data else _SHAPE_P0
    pieces = split.split(data[start : size - 1])
    # The tokens tile the pickle up to its final STOP exactly, or it is not read
    # this way: nothing between the matches, kept tokens after the last one.
    if any(pieces[:-1:2]) or run.fullmatch(pieces[-1]) is None:
        return _audit_full(data, allowed, DEFAULT_LIMITS)
    skeleton = b"".join(pieces)
    if len(skeleton) > _SHAPE_MAX_KEY:
        return _audit_full(data, allowed, DEFAULT_LIMITS)
    key = (data[: start and (3 if start == 11 else 2)], skeleton, allowed)
    try:
        entry = _SHAPE_CACHE[key]
    except KeyError:
        finding = _audit_full(data, allowed, DEFAULT_LIMITS)
        if len(_SHAPE_CACHE) < _SHAPE_CACHE_SIZE:
            _SHAPE_CACHE[key] = _shape_entry(data, finding)
        return finding
    if entry is None or entry[0] > size:  # a memo index the pickle's size does not allow
        return _audit_full(data, allowed, DEFAULT_LIMITS)
    finding = _new_shape_finding(_ShapeFinding)
    finding.protocol = entry[1]
    finding.python2 = entry[2]
    finding.problems = []
    finding.verdict = Verdict.SAFE
    finding.reason = entry[3]
    finding.size = size
    finding._source = (data, allowed, entry[4])
    return finding


_new_shape_finding = object.__new__
_NO_ALLOW: frozenset[str] = frozenset()


def audit_pickle(
    data: bytes | bytearray | memoryview,
    *,
    allow: Iterable[str] = (),
    limits: AuditLimits = DEFAULT_LIMITS,
) -> PickleFinding:
    """Audit one stored value that should hold exactly one pickle.

    Never imports or calls anything.  Bytes after the STOP opcode are a finding
    (SM008), and the stacked pickles in them are audited as well, each with its
    own memo and protocol, as a stream reader would load them.  ``bytes`` at the
    default limits go through the shape cache (see above) first.
    """
    if type(data) is memoryview:
        data = data.tobytes()
    if allow == ():
        allowed = _NO_ALLOW
    else:
        allowed = allow if isinstance(allow, frozenset) else frozenset(allow)
    if type(data) is bytes and (limits is DEFAULT_LIMITS or limits == DEFAULT_LIMITS):
        return _audit_shaped(data, allowed)
    return _audit_full(data, allowed, limits)


def _audit_full(data: Any, allowed: frozenset[str], limits: AuditLimits) -> PickleFinding:
    """:func:`audit_pickle` without the shape cache: the plain-data fast path, else the walk."""
    size = len(data)
    fast = _fast_plain(data, size, max_marks=limits.max_marks)
    if fast is not None:
        return fast
    walks = [_checked_walk(data, 0, limits, allowed)]
    end = walks[0].end
    budget = limits.max_opcodes - walks[0].opcodes
    while end is not None and end < size:
        walks[0].problems.append(
            Problem("SM008", f"{size - end} bytes after STOP at offset {end}", end)
        )
        if not _stacked(data, end) or budget <= 0:
            break
        walk = _checked_walk(
            data, end, AuditLimits(budget, limits.max_memo, limits.max_marks), allowed
        )
        _shift(walk, end)
        walks.append(walk)
        budget -= walk.opcodes
        end = walk.end  # absolute; None when the stacked pickle is damaged
    if size == 0:
        walks[0].problems[:] = [Problem("SM011", "empty value: not a pickle", 0)]
    return _finish(walks, data, 0, size)


def _checked_walk(data: Any, start: int, limits: AuditLimits, allow: frozenset[str]) -> _Walk:
    """The loader's pre-scan (:func:`pickle_scan.scan`), then the symbolic walk.

    One reading of the stream: what the loader refuses before unpickling (declared
    lengths, memo index bound, framing, unknown opcodes, truncation) is reported
    with the pre-scan's own message, and a walk that ends somewhere else than the
    pre-scan says is a desynchronisation, reported too.  The walk still runs to
    the end: ``pickle.loads`` runs what comes before the damage.
    """
    end: int | None = None
    refusal = None
    structure = False
    try:
        if isinstance(data, (bytes, bytearray)):
            buf, base = data, start
        else:  # an mmap: cut the pickle out first (the pre-scan needs bytes methods)
            stop = pickle_scan.scan_stream(data, start, start, len(data))
            buf, base = bytes(data[start:stop]), 0
        try:
            # strict: the loader's own call; negative means "run check_structure too"
            end = pickle_scan.scan(buf, base, True)
        except TypeError:  # a pre-scan without the strict flag
            end = pickle_scan.scan(buf, base)
        if end < 0:
            end, structure = -end, True
        end += start - base
    except DecodeError as exc:
        refusal = str(exc)
    except Exception as exc:  # noqa: BLE001 - the pre-scan must never crash the audit
        refusal = f"pre-scan failed: {type(exc).__name__}: {exc}"
    walk = _walk(data, start, limits, allow)
    check = getattr(pickle_scan, "check_structure", None)
    # The loader runs its structure check when the pre-scan asks for it and on its
    # full path (any global); the C unpickler checks the rest, as the walk does.
    if refusal is None and end is not None and check is not None and (structure or walk.globals):
        try:
            check(bytes(data[start:end]))
        except DecodeError as exc:
            refusal = str(exc)
        except Exception as exc:  # noqa: BLE001
            refusal = f"structure check failed: {type(exc).__name__}: {exc}"
    if refusal is not None:
        walk.problems.append(Problem("SM011", f"the loader refuses it: {refusal}", None))
    elif end is not None and walk.end is not None and walk.end != end:
        walk.problems.append(
            Problem(
                "SM011",
                f"the audit and the loader's pre-scan disagree where the pickle ends "
                f"(offsets {walk.end - start} and {end - start})",
                walk.end - start,
            )
        )
    return walk


def _shift(walk: _Walk, offset: int) -> None:
    """Make a stacked pickle's offsets relative to the start of the whole value."""
    walk.globals[:] = [
        GlobalRef(g.opcode, g.offset + offset, g.written, g.mapped, g.verdict, g.reason)
        for g in walk.globals
    ]
    walk.calls[:] = [Call(c.opcode, c.offset + offset, c.callee) for c in walk.calls]
    walk.builds[:] = [Build(b.offset + offset, b.target, b.on_global) for b in walk.builds]
    walk.problems[:] = [
        Problem(p.rule, f"stacked pickle at offset {offset}: {p.message}", (p.offset or 0) + offset)
        for p in walk.problems
    ]


def audit_pickle_stream(
    data: bytes | bytearray | memoryview | mmap.mmap,
    *,
    allow: Iterable[str] = (),
    limits: AuditLimits = DEFAULT_LIMITS,
) -> Iterator[tuple[int, int, PickleFinding]]:
    """Audit consecutive pickles (a pickle file): yields ``(index, start offset, finding)``.

    Offsets inside each finding count from that pickle's start.  A pickle whose
    end cannot be found (malformed, truncated) is the last one yielded.
    """
    allowed = allow if isinstance(allow, frozenset) else frozenset(allow)
    size = len(data)
    pos = index = 0
    while pos < size:
        fast = _fast_plain(data, size, pos, stream=True, max_marks=limits.max_marks)
        if fast is not None:
            yield index, pos, fast
            pos += fast.size
            index += 1
            continue
        walk = _checked_walk(data, pos, limits, allowed)
        if walk.end is None:
            yield index, pos, _finish([walk], data, pos, size)
            return
        yield index, pos, _finish([walk], data, pos, walk.end)
        pos = walk.end
        index += 1


# --------------------------------------------------------------------------
# Files, containers and directories


@dataclass(slots=True)
class RecordAudit:
    """One audited stored value, or a note about a whole source.

    ``finding`` is None for a source-level entry: ``status`` then says
    ``"skipped"`` (not recognised, not audited: not a failure) or
    ``"unreadable"`` (the source cannot be opened or detected at all).  For a
    record, ``status`` is ``"audited"``; a container that breaks half-way gives a
    record with key None and an unreadable finding.
    """

    source: str
    key: Any
    finding: PickleFinding | None
    format: str | None = None
    offset: int | None = None  # start of the pickle in a pickle file
    subdb: str | None = None
    status: str = "audited"
    note: str | None = None


def _unreadable_finding(message: str) -> PickleFinding:
    problem = Problem("SM011", message, None)
    return PickleFinding(None, None, [], [], [], [problem], Verdict.UNREADABLE, message)


def _pickle_file(
    path: str, fmt: str, allow: frozenset[str], limits: AuditLimits
) -> Iterator[RecordAudit]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return
        if size <= 64 << 20:
            data: Any = handle.read()
        else:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            for index, start, finding in audit_pickle_stream(data, allow=allow, limits=limits):
                yield RecordAudit(path, index, finding, fmt, offset=start)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()


def _parses_as_pickle(path: str) -> bool:
    """Whether a file detect() did not recognise still holds a complete first pickle."""
    from .pickleops import PickleWalkError, pickle_end

    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
        if not head or _TABLE[head[0]] is None:
            return False
        pickle_end(head)
    except (OSError, PickleWalkError):
        return False
    return True


def _container(
    path: str,
    fmt: str,
    read_options: ReadOptions,
    allow: frozenset[str],
    limits: AuditLimits,
    subdb: str | None = None,
) -> Iterator[RecordAudit]:
    from ..pipeline import open_reader

    try:
        try:
            reader = open_reader(path, format=fmt, options=replace(read_options, values="raw"))
        except UsageError as exc:
            if "--values" not in str(exc):
                raise
            # A container whose values are not stored bytes (marshal): read them.
            reader = open_reader(path, format=fmt, options=replace(read_options, values="auto"))
    except UsageError as exc:
        if subdb is None:
            raise
        # One table of several that the reader cannot interpret: say so, go on.
        yield RecordAudit(path, None, None, fmt, subdb=subdb, status="skipped", note=str(exc))
        return
    with reader:
        records = reader.records()
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except ShelfmigrateError as exc:
                yield RecordAudit(path, None, _unreadable_finding(str(exc)), fmt, subdb=subdb)
                return
            if record.error is not None:
                finding = _unreadable_finding(record.error.detail)
                yield RecordAudit(path, record.key, finding, fmt, subdb=record.subdb or subdb)
                continue
            raw = record.raw
            if not looks_like_pickle(raw):
                value = record.value
                if not looks_like_pickle(value):
                    continue
                raw = value
            finding = audit_pickle(raw, allow=allow, limits=limits)
            yield RecordAudit(path, record.key, finding, fmt, subdb=record.subdb or subdb)


def _audit_one(
    path: str,
    *,
    explicit: bool,
    seen: set[str],
    read_options: ReadOptions,
    allow: frozenset[str],
    limits: AuditLimits,
) -> Iterator[RecordAudit]:
    from .. import detect as _detect
    from ..errors import FormatError
    from ..formats import READERS

    try:
        detection = _detect.detect(path)
    except FormatError as exc:
        if os.path.isfile(path) and _parses_as_pickle(path):
            # detect() is stricter than pickle.loads (pickletools' checks): a file
            # that parses as a pickle is audited as one, never skipped.
            yield RecordAudit(
                path,
                None,
                None,
                "pickle",
                status="note",
                note=f"not recognised by detection ({exc.detail}); audited as a pickle file",
            )
            yield from _pickle_file(path, "pickle", allow, limits)
            return
        yield _source_note(path, explicit, f"not recognised: {exc.detail}")
        return
    except ShelfmigrateError as exc:
        yield _source_note(path, explicit, str(exc), force_unreadable=True)
        return
    files = [os.path.abspath(f) for f in detection.details.get("files", [detection.path])]
    main = os.path.abspath(detection.path)
    if main in seen:
        return
    seen.update(files)
    seen.add(main)
    if detection.refusal or detection.format not in READERS:
        why = detection.refusal or "no reader in this version"
        yield _source_note(path, explicit, f"{detection.description}: {why}; not audited")
        return
    try:
        if detection.format == "pickle":
            yield from _pickle_file(detection.path, "pickle", allow, limits)
        elif detection.format == "sqlite" and read_options.table is None:
            # Every table of the database (the reader alone would refuse to choose).
            tables = detection.details.get("tables") or [None]
            for table in tables if len(tables) > 1 else [None]:
                yield from _container(
                    detection.path,
                    "sqlite",
                    replace(read_options, table=table),
                    allow,
                    limits,
                    subdb=table,
                )
        else:
            yield from _container(detection.path, detection.format, read_options, allow, limits)
    except ShelfmigrateError as exc:
        yield _source_note(detection.path, True, str(exc), force_unreadable=True)
    except OSError as exc:
        yield _source_note(detection.path, True, f"{exc.strerror or exc}", force_unreadable=True)


def _source_note(
    path: str, explicit: bool, message: str, *, force_unreadable: bool = False
) -> RecordAudit:
    status = "unreadable" if explicit or force_unreadable else "skipped"
    return RecordAudit(path, None, None, None, status=status, note=message)


def _matches(relative: str, pattern: str | None) -> bool:
    if pattern is None:
        return True
    return fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(
        os.path.basename(relative), pattern
    )


def audit_path(
    path: str | os.PathLike[str],
    *,
    glob: str | None = None,
    read_options: ReadOptions | None = None,
    allow: Iterable[str] = (),
    limits: AuditLimits = DEFAULT_LIMITS,
) -> Iterator[RecordAudit]:
    """Audit a pickle file, a container, or every file under a directory (recursively).

    A directory that is itself a container (LevelDB) is audited as one.
    Otherwise each file under it that matches ``glob`` (on its relative path or
    its name; default all files) is detected from its content; a file that is not
    recognised is yielded as a ``"skipped"`` note (not a failure), one that is
    recognised but has no reader as ``"skipped"`` too.  A ``path`` given directly
    that cannot be opened or recognised is an ``"unreadable"`` note.  ``allow``
    trusts more mapped names, as the loader's ``--allow`` (nothing is imported).
    """
    read_options = read_options or ReadOptions()
    allowed = frozenset(allow) | frozenset(read_options.allow)
    path = os.fspath(path)
    seen: set[str] = set()
    if not os.path.isdir(path):
        yield from _audit_one(
            path, explicit=True, seen=seen, read_options=read_options, allow=allowed, limits=limits
        )
        return
    yield from _audit_dir(path, path, glob, seen, read_options, allowed, limits, top=True)


def _audit_dir(
    root: str,
    folder: str,
    glob: str | None,
    seen: set[str],
    read_options: ReadOptions,
    allow: frozenset[str],
    limits: AuditLimits,
    top: bool = False,
) -> Iterator[RecordAudit]:
    from .. import detect as _detect

    # A LevelDB database is a directory: audit it whole, do not look at its files.
    if os.path.exists(os.path.join(folder, "CURRENT")):
        try:
            detection = _detect.detect(folder)
        except ShelfmigrateError:
            detection = None
        if detection is not None:
            yield from _audit_one(
                folder,
                explicit=top,
                seen=seen,
                read_options=read_options,
                allow=allow,
                limits=limits,
            )
            return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield _source_note(folder, True, exc.strerror or str(exc))
        return
    for entry in entries:
        full = entry.path
        if entry.is_dir(follow_symlinks=False):
            yield from _audit_dir(root, full, glob, seen, read_options, allow, limits)
        elif entry.is_file():
            relative = os.path.relpath(full, root).replace(os.sep, "/")
            if not _matches(relative, glob) or os.path.abspath(full) in seen:
                continue
            yield from _audit_one(
                full,
                explicit=False,
                seen=seen,
                read_options=read_options,
                allow=allow,
                limits=limits,
            )


def audit_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    glob: str | None = None,
    read_options: ReadOptions | None = None,
    allow: Iterable[str] = (),
    limits: AuditLimits = DEFAULT_LIMITS,
) -> Iterator[RecordAudit]:
    """:func:`audit_path` over several sources, in order."""
    for path in paths:
        yield from audit_path(
            path, glob=glob, read_options=read_options, allow=allow, limits=limits
        )


# --------------------------------------------------------------------------
# Summary and exit code


@dataclass
class AuditSummary:
    """Counts over a run, and the exit code the contract gives them."""

    records: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: {str(v): 0 for v in Verdict})
    sources: int = 0
    skipped: int = 0
    unreadable_sources: int = 0
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    _sources_seen: set[str] = field(default_factory=set, repr=False)

    def add(self, item: RecordAudit) -> None:
        """Count one item of :func:`audit_path`."""
        if item.finding is None:
            if item.status == "skipped":
                self.skipped += 1
            elif item.status == "unreadable":
                self.unreadable_sources += 1
            return
        if item.source not in self._sources_seen:
            self._sources_seen.add(item.source)
            self.sources += 1
        self.records += 1
        self.verdicts[str(item.finding.verdict)] += 1

    def close(self) -> AuditSummary:
        """Stop the clock."""
        self.seconds = time.perf_counter() - self.started
        return self

    @property
    def records_per_second(self) -> float:
        """Audited records per second of the run."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def exit_code(self, fail_on: str = "dangerous") -> int:
        """0 clean, 1 findings at or above ``fail_on``, 2 a source could not be read at all."""
        if fail_on not in FAIL_ON:
            raise UsageError(f"--fail-on takes {'|'.join(FAIL_ON)}, not {fail_on!r}")
        if self.unreadable_sources:
            return EXIT_ERROR
        threshold = FAIL_ON[fail_on]
        if threshold is not None and any(self.verdicts[str(v)] for v in Verdict if v >= threshold):
            return EXIT_FINDINGS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "records": self.records,
            "verdicts": dict(self.verdicts),
            "sources": self.sources,
            "skipped_files": self.skipped,
            "unreadable_sources": self.unreadable_sources,
            "seconds": round(self.seconds, 6),
            "records_per_second": round(self.records_per_second, 1),
        }


def summarise(items: Iterable[RecordAudit]) -> tuple[list[RecordAudit], AuditSummary]:
    """Collect the items of :func:`audit_path` and count them."""
    summary = AuditSummary()
    kept = []
    for item in items:
        summary.add(item)
        kept.append(item)
    return kept, summary.close()


# --------------------------------------------------------------------------
# Rendering


def _key_text(key: Any) -> str:
    return repr(key)


def render_text(items: Iterable[RecordAudit], summary: AuditSummary) -> str:
    """Human-readable report: one line per safe record, details for the others, a summary table."""
    lines: list[str] = []
    for item in items:
        if item.finding is None:
            lines.append(f"{item.source}: {item.status}: {item.note}")
            continue
        f = item.finding
        where = item.source if item.key is None else f"{item.source} [{_key_text(item.key)}]"
        facts = []
        if f.protocol is not None:
            facts.append(f"protocol {f.protocol}")
        if f.python2:
            facts.append("Python 2")
        head = f"{where}: {f.verdict} - {f.reason}"
        if facts:
            head += f" ({', '.join(facts)})"
        lines.append(head)
        if f.verdict is Verdict.SAFE:
            if f.globals:
                names = sorted({g.mapped for g in f.globals})
                lines.append(f"    globals: {', '.join(names)}")
            continue
        for g in f.globals:
            shown = g.written if g.written == g.mapped else f"{g.written} -> {g.mapped}"
            lines.append(f"    global {shown} ({g.opcode} at {g.offset}): {g.verdict}")
        for c in f.calls:
            lines.append(f"    call {c.opcode} at {c.offset}: {c.callee}")
        for b in f.builds:
            lines.append(f"    build at {b.offset}: {b.target}")
        for p in f.problems:
            at = "" if p.offset is None else f" at {p.offset}"
            lines.append(f"    {p.rule} {RULES[p.rule].name}{at}: {p.message}")
    lines.append("")
    lines.append(
        f"summary: {summary.records} records in {summary.sources} sources, "
        f"{summary.skipped} files skipped, {summary.unreadable_sources} unreadable sources"
    )
    lines.append(f"  {'verdict':<12}{'records':>10}")
    for verdict in Verdict:
        lines.append(f"  {str(verdict):<12}{summary.verdicts[str(verdict)]:>10}")
    return "\n".join(lines) + "\n"


def _item_dict(item: RecordAudit) -> dict[str, Any]:
    out: dict[str, Any] = {"source": item.source, "status": item.status}
    if item.format is not None:
        out["format"] = item.format
    if item.finding is None:
        out["note"] = item.note
        return out
    out["key"] = item.key if isinstance(item.key, int | str) or item.key is None else repr(item.key)
    if item.offset is not None:
        out["offset"] = item.offset
    if item.subdb is not None:
        out["subdb"] = item.subdb
    out.update(item.finding.to_dict())
    return out


def render_json(items: Iterable[RecordAudit], summary: AuditSummary) -> str:
    """Machine-readable report: every record with its findings, and the summary."""
    document = {
        "tool": "shelfmigrate audit",
        "version": __version__,
        "records": [_item_dict(item) for item in items],
        "summary": summary.to_dict(),
    }
    return json.dumps(document, indent=2, default=repr) + "\n"


_SARIF_LEVEL = {
    Verdict.DANGEROUS: "error",
    Verdict.UNREADABLE: "error",
    Verdict.UNKNOWN: "warning",
    Verdict.SAFE: "note",
}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _uri(path: str, base: str) -> str:
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute, base)
    except ValueError:  # another drive on Windows
        relative = None
    if relative is None or relative.startswith(".."):
        return Path(absolute).as_uri()
    return quote(relative.replace(os.sep, "/"))


def render_sarif(
    items: Iterable[RecordAudit], summary: AuditSummary, *, base: str | None = None
) -> str:
    """SARIF 2.1.0: one result per problem kind of each record that is not safe.

    Artifact URIs are relative to ``base`` (default: the current directory);
    a container record names its key in a logical location.
    """
    base = os.path.abspath(base or os.getcwd())
    rule_index = {rule.id: i for i, rule in enumerate(_RULE_LIST)}
    results: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    for item in items:
        uri = _uri(item.source, base)
        if item.finding is None:
            if item.status == "unreadable":
                results.append(
                    {
                        "ruleId": "SM013",
                        "ruleIndex": rule_index["SM013"],
                        "level": "error",
                        "message": {"text": item.note or "source cannot be read"},
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                    }
                )
            else:
                notifications.append(
                    {
                        "level": "note",
                        "message": {"text": f"{uri}: {item.status}: {item.note}"},
                    }
                )
            continue
        finding = item.finding
        if finding.verdict is Verdict.SAFE:
            continue
        location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
        if item.offset is not None:
            location["physicalLocation"]["region"] = {
                "byteOffset": item.offset,
                "byteLength": max(finding.size, 1),
            }
        if item.key is not None and item.format != "pickle":
            key = _key_text(item.key)
            location["logicalLocations"] = [
                {"name": key, "fullyQualifiedName": f"{uri}[{key}]", "kind": "value"}
            ]
        elif item.key is not None:
            location["logicalLocations"] = [{"name": f"pickle {item.key}", "kind": "value"}]
        by_rule: dict[str, list[Problem]] = {}
        for problem in finding.problems:
            by_rule.setdefault(problem.rule, []).append(problem)
        where = "" if item.key is None else f"record {_key_text(item.key)}: "
        for rule_id, problems in by_rule.items():
            messages = "; ".join(p.message for p in problems[:5])
            if len(problems) > 5:
                messages += f"; and {len(problems) - 5} more"
            results.append(
                {
                    "ruleId": rule_id,
                    "ruleIndex": rule_index[rule_id],
                    "level": _SARIF_LEVEL[RULES[rule_id].verdict],
                    "message": {"text": f"{where}{messages}"},
                    "locations": [location],
                    "properties": {
                        "verdict": str(finding.verdict),
                        "protocol": finding.protocol,
                        "python2": finding.python2,
                    },
                }
            )
    rules = [
        {
            "id": rule.id,
            "name": rule.name,
            "shortDescription": {"text": rule.short},
            "fullDescription": {"text": rule.full},
            "defaultConfiguration": {"level": _SARIF_LEVEL[rule.verdict]},
            "properties": {"verdict": str(rule.verdict)},
        }
        for rule in _RULE_LIST
    ]
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "shelfmigrate-audit",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": summary.unreadable_sources == 0,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
                "properties": {"summary": summary.to_dict()},
            }
        ],
    }
    return json.dumps(document, indent=2, default=repr) + "\n"
