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
  BUILD/APPEND/SETITEM applied to a global (a class or function, not an
  instance), PERSID/BINPERSID, EXT1/2/4, NEXT_BUFFER/READONLY_BUFFER, bytes after
  STOP within one value (the stacked pickles in them are audited too), a second
  PROTO with a different value;
* **unreadable**: a malformed or truncated pickle, or one that exceeds a limit
  (the analysis is incomplete, and a scanner that gives up is a classic bypass);
* **unknown**: a global that is neither allowed nor a gadget (the loader would
  make it an inert stub), a Python 2 spelling at protocol 3 or higher (which
  ``pickle`` itself does not map), a call of something that is not a global;
* **safe**: everything else: only allowlisted globals, after the Python 2 name
  mapping that ``pickle`` applies while the current protocol is below 3.

A record's verdict is the worst of its problems, in the order safe < unknown <
unreadable < dangerous; ``--fail-on dangerous`` fails on unreadable records too.

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
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, ShelfmigrateError, UsageError
from ..options import ReadOptions
from ..values import looks_like_pickle
from . import safepickle
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

    Plain data taken by the fast path keeps no stack and no memo and is matched
    in linear time, so these bounds apply to the walk only.
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


_OTHER: Any = object()  # any value the audit does not need to know (numbers, containers, ...)
_LONG_TEXT: Any = object()  # a string too long to be a name
_MAX_NAME = 1024  # strings longer than this are not kept (no global name is that long)

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
) = range(34)

_ACTIONS: dict[str, tuple[int, int]] = {
    **{
        n: (A_PUSH, 0)
        for n in [
            "NONE",
            "NEWTRUE",
            "NEWFALSE",
            "BININT",
            "BININT1",
            "BININT2",
            "LONG1",
            "LONG4",
            "BINFLOAT",
            "BINBYTES",
            "SHORT_BINBYTES",
            "BINBYTES8",
            "BYTEARRAY8",
            "EMPTY_LIST",
            "EMPTY_DICT",
            "EMPTY_TUPLE",
            "EMPTY_SET",
        ]
    },
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
    "TUPLE": (A_MARK_PUSH, 0),
    "LIST": (A_MARK_PUSH, 0),
    "DICT": (A_MARK_PUSH, 0),
    "FROZENSET": (A_MARK_PUSH, 0),
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


def _opcode_table() -> list[tuple[str, int, int, bool, int, int, int] | None]:
    import pickletools

    prefixed = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    table: list[tuple[str, int, int, bool, int, int, int] | None] = [None] * 256
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
    return "<value>"


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
                stack.append(_OTHER)
            elif action == A_STR_UTF8:
                if aend - astart > _MAX_NAME:
                    stack.append(_LONG_TEXT)
                else:
                    try:
                        stack.append(str(data[astart:aend], "utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        problems.append(Problem("SM011", f"{name} is not valid UTF-8", rel))
                        stack.append(_OTHER)
            elif action == A_MARK:
                if len(metastack) >= max_marks:
                    raise _Stop("SM010", f"MARKs nested deeper than {max_marks}", pos)
                metastack.append(stack)
                stack = []
            elif action == A_MARK_PUSH:
                stack = metastack.pop()
                stack.append(_OTHER)
            elif action == A_PUT:
                if kind == 2:
                    text = data[astart : aend - 1]
                    index = int(text) if text.isdigit() else -1
                    if index < 0:
                        raise _Stop("SM011", f"PUT index {bytes(text)[:20]!r} is not a number", pos)
                else:
                    index = int.from_bytes(data[astart:aend], "little")
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
                stack = metastack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    problems.append(
                        Problem("SM004", f"{name} adds items to global {target.name}", rel)
                    )
            elif action == A_APPEND:
                stack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    problems.append(
                        Problem("SM004", f"APPEND adds an item to global {target.name}", rel)
                    )
            elif action == A_SETITEM:
                stack.pop()
                stack.pop()
                target = stack[-1]
                if type(target) is _Global:
                    problems.append(
                        Problem("SM004", f"SETITEM sets an item of global {target.name}", rel)
                    )
            elif action == A_POPN_PUSH:
                if len(stack) < extra:
                    raise IndexError
                del stack[len(stack) - extra :]
                stack.append(_OTHER)
            elif action == A_STOP:
                stack.pop()
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
                    stack = metastack.pop()
                    calls.append(Call(name, rel, ref.name))
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
                stack.pop()
                func = stack.pop()
                stack.append(_call(result, name, rel, func))
            elif action == A_NEWOBJ:
                stack.pop()
                cls = stack.pop()
                stack.append(_call(result, name, rel, cls))
            elif action == A_NEWOBJ_EX:
                stack.pop()
                stack.pop()
                cls = stack.pop()
                stack.append(_call(result, name, rel, cls))
            elif action == A_OBJ:
                items = stack
                stack = metastack.pop()
                if not items:
                    raise _Stop("SM011", "OBJ without a class after its MARK", pos)
                stack.append(_call(result, name, rel, items[0]))
            elif action == A_BUILD:
                stack.pop()
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
                    stack.append(_LONG_TEXT)
                else:
                    stack.append(str(data[astart:aend], "latin-1"))
            elif action == A_STR_TEXT_PY2:
                if py2 is None:
                    py2 = True
                text = _decode_text_string(bytes(data[astart : aend - 1]))
                if text is None:
                    problems.append(Problem("SM011", "STRING argument is not a quoted string", rel))
                    stack.append(_OTHER)
                else:
                    stack.append(text if len(text) <= _MAX_NAME else _LONG_TEXT)
            elif action == A_STR_UNICODE:
                try:
                    text = str(data[astart : aend - 1], "raw-unicode-escape")
                except UnicodeDecodeError:
                    problems.append(Problem("SM011", "UNICODE argument cannot be decoded", rel))
                    stack.append(_OTHER)
                else:
                    stack.append(text if len(text) <= _MAX_NAME else _LONG_TEXT)
            elif action == A_TEXT_NUMBER:
                if not _text_number_ok(name, bytes(data[astart : aend - 1])):
                    problems.append(Problem("SM011", f"{name} argument is not a number", rel))
                stack.append(_OTHER)
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


def _call(result: _Walk, opcode: str, rel: int, func: Any) -> _Made:
    if type(func) is _Global:
        callee = func.name
    else:
        callee = _describe(func)
        result.problems.append(
            Problem("SM012", f"{opcode} calls {callee}, which is not a global", rel)
        )
    result.calls.append(Call(opcode, rel, callee))
    return _Made(callee)


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
# size (the loader's memory-bomb rule).  Anything else, including memo GETs and
# any damage, goes the symbolic way, which reports it.  What the fast path does
# not check is the stack discipline: a plain-data pickle with an APPEND on an
# empty stack is "safe" here although pickle.loads rejects it; it can still not
# import or call anything, and the loader reports it when converting.

_RUN_CAP = 2000  # opcodes per match() (bounds the regex engine's backtracking stack)


def _escape_class(codes: Iterable[int]) -> bytes:
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(codes)) + b"]"


def _counted_small(width: int, body: bytes = b".") -> bytes:
    """Any length below 256 in ``width`` little-endian bytes, then that many ``body`` bytes."""
    pad = b"\x00" * (width - 1)
    return (
        b"(?:"
        + b"|".join(re.escape(bytes([n]) + pad) + body + b"{%d}" % n for n in range(256))
        + b")"
    )


_ASCII = rb"[\x00-\x7f]"
_ESCAPES = rb"""\\[\\'"abfnrtv]|\\x[0-9a-fA-F]{2}|\\[0-7]{1,3}"""
# Strict forms of the protocol-0 text arguments: whatever matches reads without
# error; anything else (other spellings pickle may still accept) is walked.
_TEXT_SHAPES: dict[str, bytes] = {
    "INT": rb"[+-]?[0-9]+\n",
    "LONG": rb"[+-]?[0-9]+L?\n",
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


def _fast_plain(
    data: Any, size: int, start: int = 0, *, stream: bool = False
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
    pattern = kind.pattern(bound)
    looked_at = kind.looked_at
    last = size - 1
    py2 = p1 = False
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


def audit_pickle(
    data: bytes | bytearray | memoryview,
    *,
    allow: Iterable[str] = (),
    limits: AuditLimits = DEFAULT_LIMITS,
) -> PickleFinding:
    """Audit one stored value that should hold exactly one pickle.

    Never imports or calls anything.  Bytes after the STOP opcode are a finding
    (SM008), and the stacked pickles in them are audited as well, each with its
    own memo and protocol, as a stream reader would load them.
    """
    size = len(data)
    fast = _fast_plain(data, size)
    if fast is not None:
        return fast
    allowed = allow if isinstance(allow, frozenset) else frozenset(allow)
    walks = [_walk(data, 0, limits, allowed)]
    end = walks[0].end
    budget = limits.max_opcodes - walks[0].opcodes
    while end is not None and end < size:
        walks[0].problems.append(
            Problem("SM008", f"{size - end} bytes after STOP at offset {end}", end)
        )
        if not _stacked(data, end) or budget <= 0:
            break
        walk = _walk(data, end, AuditLimits(budget, limits.max_memo, limits.max_marks), allowed)
        _shift(walk, end)
        walks.append(walk)
        budget -= walk.opcodes
        end = walk.end  # absolute; None when the stacked pickle is damaged
    if size == 0:
        walks[0].problems[:] = [Problem("SM011", "empty value: not a pickle", 0)]
    return _finish(walks, data, 0, size)


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
        fast = _fast_plain(data, size, pos, stream=True)
        if fast is not None:
            yield index, pos, fast
            pos += fast.size
            index += 1
            continue
        walk = _walk(data, pos, limits, allowed)
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
