"""A hand-assembled pickle corpus for the safe unpickler and the audit.

Every pickle here is built opcode by opcode with the tiny assembler below
(written from the opcode table in :mod:`pickletools`' documentation), or is a
real Python 2 pickle from ``fixtures/py2pickles/`` (written by CPython 2.7.18,
see its README).  Nothing is taken from any scanner's test data.

Each :class:`Case` says what it covers.  ``data(canary)`` builds the bytes;
``canary`` is a path in the test's temporary directory, and the only effect of
every hostile payload, if it ever ran, is to create that file (or, for state
poisoning, to set a ``corpus_poisoned`` attribute / ``CORPUS_POISON`` variable /
``corpus_poisoned`` module that the tests look for).

Fields:

* ``kind``: ``hostile`` (code execution, allowlist evasion, state poisoning),
  ``dos`` (resource exhaustion), ``malformed``, ``benign``, ``py2`` (real
  Python 2 pickles).
* ``expect``: ``refuse`` (DecodeError / UnsafePickleError), ``load`` (equals
  ``expected_value``, or ``expected_value(value)`` is true when it is callable),
  ``stub`` (like ``load``, and the value holds :class:`~shelfmigrate.stubs.Stub`s).
* ``mentions``: for refusals, the message must contain one of these (case
  insensitive): the global that was refused, or the limit that was hit.
* ``audit``: what ``audit_pickle(data).verdict`` must say: ``dangerous`` (a gadget,
  a refused feature, a resource bomb), ``unknown`` (only unknown classes, which
  the loader would stub), ``safe``, ``unreadable`` (the stream cannot be parsed
  and no danger was seen before the damage).
* ``xfail``: the reason the loader does not do this yet (the test is
  ``xfail(strict=True)``): the explicit list of what the loader still lacks.
* ``audit_xfail``: the reason the audit does not give ``audit`` yet (its test is
  ``xfail(strict=True)``): the explicit list of what the audit still lacks.
* ``verify``: the payload is run with plain ``pickle.loads`` in a child process
  to prove that it is live (the canary appears there).
* ``kwargs``: extra keyword arguments for ``safepickle.loads``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import fractions
import marshal
import math
import shlex
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shelfmigrate.stubs import Stub

PY2_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "py2pickles"

# --------------------------------------------------------------------------
# The assembler: one function per opcode, each returning the opcode's bytes


def _u8(n: int) -> bytes:
    return n.to_bytes(1, "little")


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def proto(n: int) -> bytes:
    return b"\x80" + _u8(n)


def frame(body: bytes) -> bytes:
    """FRAME announcing exactly ``body`` (which follows)."""
    return b"\x95" + _u64(len(body)) + body


def frame_len(n: int) -> bytes:
    return b"\x95" + _u64(n)


def stop() -> bytes:
    return b"."


def mark() -> bytes:
    return b"("


def pop() -> bytes:
    return b"0"


def pop_mark() -> bytes:
    return b"1"


def dup() -> bytes:
    return b"2"


def none() -> bytes:
    return b"N"


def newtrue() -> bytes:
    return b"\x88"


def newfalse() -> bytes:
    return b"\x89"


def int_text(n: int | str) -> bytes:
    """INT (protocol 0); ``"01"``/``"00"`` are the bools."""
    return b"I" + str(n).encode() + b"\n"


def long_text(n: int | str) -> bytes:
    """LONG (protocol 0): decimal digits with a trailing L."""
    return b"L" + str(n).encode() + b"L\n"


def binint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def binint1(n: int) -> bytes:
    return b"K" + _u8(n)


def binint2(n: int) -> bytes:
    return b"M" + struct.pack("<H", n)


def _twos(n: int) -> bytes:
    if n == 0:
        return b""
    size = (n.bit_length() + 8) // 8
    return n.to_bytes(size, "little", signed=True)


def long1(n: int) -> bytes:
    raw = _twos(n)
    return b"\x8a" + _u8(len(raw)) + raw


def long4(n: int) -> bytes:
    raw = _twos(n)
    return b"\x8b" + _u32(len(raw)) + raw


def float_text(text: str) -> bytes:
    return b"F" + text.encode() + b"\n"


def binfloat(x: float) -> bytes:
    return b"G" + struct.pack(">d", x)


def string(raw: bytes | str) -> bytes:
    """STRING (protocol 0 Python 2 ``str``): repr-quoted with escapes."""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    return b"S" + repr(raw)[1:].encode("ascii") + b"\n"


def string_raw(quoted: bytes) -> bytes:
    """STRING with the argument given exactly (for malformed cases)."""
    return b"S" + quoted + b"\n"


def binstring(raw: bytes) -> bytes:
    return b"T" + _u32(len(raw)) + raw


def short_binstring(raw: bytes) -> bytes:
    return b"U" + _u8(len(raw)) + raw


def unicode_text(text: str) -> bytes:
    """UNICODE (protocol 0): raw-unicode-escape, newline and backslash escaped."""
    text = text.replace("\\", "\\u005c").replace("\n", "\\u000a").replace("\r", "\\u000d")
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def binunicode(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return b"X" + _u32(len(raw)) + raw


def short_binunicode(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return b"\x8c" + _u8(len(raw)) + raw


def binunicode8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"\x8d" + _u64(len(raw)) + raw


def binbytes(raw: bytes) -> bytes:
    return b"B" + _u32(len(raw)) + raw


def short_binbytes(raw: bytes) -> bytes:
    return b"C" + _u8(len(raw)) + raw


def binbytes8(raw: bytes) -> bytes:
    return b"\x8e" + _u64(len(raw)) + raw


def bytearray8(raw: bytes) -> bytes:
    return b"\x96" + _u64(len(raw)) + raw


def empty_list() -> bytes:
    return b"]"


def empty_dict() -> bytes:
    return b"}"


def empty_tuple() -> bytes:
    return b")"


def empty_set() -> bytes:
    return b"\x8f"


def list_() -> bytes:
    return b"l"


def dict_() -> bytes:
    return b"d"


def tuple_() -> bytes:
    return b"t"


def tuple1() -> bytes:
    return b"\x85"


def tuple2() -> bytes:
    return b"\x86"


def tuple3() -> bytes:
    return b"\x87"


def frozenset_() -> bytes:
    return b"\x91"


def additems() -> bytes:
    return b"\x90"


def append() -> bytes:
    return b"a"


def appends() -> bytes:
    return b"e"


def setitem() -> bytes:
    return b"s"


def setitems() -> bytes:
    return b"u"


def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def inst(module: str, name: str) -> bytes:
    return b"i" + module.encode() + b"\n" + name.encode() + b"\n"


def obj() -> bytes:
    return b"o"


def stack_global() -> bytes:
    return b"\x93"


def reduce() -> bytes:
    return b"R"


def build() -> bytes:
    return b"b"


def newobj() -> bytes:
    return b"\x81"


def newobj_ex() -> bytes:
    return b"\x92"


def put(i: int) -> bytes:
    return b"p" + str(i).encode() + b"\n"


def get(i: int) -> bytes:
    return b"g" + str(i).encode() + b"\n"


def binput(i: int) -> bytes:
    return b"q" + _u8(i)


def binget(i: int) -> bytes:
    return b"h" + _u8(i)


def long_binput(i: int) -> bytes:
    return b"r" + _u32(i)


def long_binget(i: int) -> bytes:
    return b"j" + _u32(i)


def memoize() -> bytes:
    return b"\x94"


def persid(pid: str) -> bytes:
    return b"P" + pid.encode() + b"\n"


def binpersid() -> bytes:
    return b"Q"


def ext1(code: int) -> bytes:
    return b"\x82" + _u8(code)


def ext2(code: int) -> bytes:
    return b"\x83" + struct.pack("<H", code)


def ext4(code: int) -> bytes:
    return b"\x84" + struct.pack("<i", code)


def next_buffer() -> bytes:
    return b"\x97"


def readonly_buffer() -> bytes:
    return b"\x98"


# --------------------------------------------------------------------------
# Helpers a level up


class Raw(bytes):
    """Opcode bytes given as a value to :func:`lit` (already assembled)."""


def header(p: int) -> bytes:
    return proto(p) if p >= 2 else b""


def lit(value: Any, p: int) -> bytes:
    """The opcodes that push ``value`` at protocol ``p`` (the way a pickler would)."""
    if isinstance(value, Raw):
        return bytes(value)
    if value is None:
        return none()
    if value is True or value is False:
        if p >= 2:
            return newtrue() if value else newfalse()
        return int_text("01" if value else "00")
    if isinstance(value, int):
        if p == 0:
            return int_text(value)
        if 0 <= value < 256:
            return binint1(value)
        return binint(value)
    if isinstance(value, str):
        if p == 0:
            return unicode_text(value)
        if p >= 4 and len(value.encode()) < 256:
            return short_binunicode(value)
        return binunicode(value)
    if isinstance(value, bytes):
        return short_binbytes(value) if len(value) < 256 else binbytes(value)
    if isinstance(value, list):
        if p == 0:
            return mark() + b"".join(lit(v, p) for v in value) + list_()
        body = b"".join(lit(v, p) for v in value)
        return empty_list() + (mark() + body + appends() if value else b"")
    if isinstance(value, tuple):
        return mark() + b"".join(lit(v, p) for v in value) + tuple_()
    if isinstance(value, dict):
        body = b"".join(lit(k, p) + lit(v, p) for k, v in value.items())
        if p == 0:
            return mark() + body + dict_()
        return empty_dict() + (mark() + body + setitems() if value else b"")
    raise TypeError(f"lit() cannot write {type(value).__name__}")


def glob(module: str, name: str, p: int) -> bytes:
    """A global the way protocol ``p`` writes it: GLOBAL, or STACK_GLOBAL from 4 on."""
    if p >= 4:
        return (
            short_binunicode(module)
            + memoize()
            + short_binunicode(name)
            + memoize()
            + stack_global()
        )
    return global_(module, name)


def call(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` with MARK ... TUPLE REDUCE (valid at every protocol)."""
    return func + mark() + b"".join(args) + tuple_() + reduce()


def gcall(p: int, module: str, name: str, *args: Any) -> bytes:
    """A whole pickle: ``module.name(*args)`` at protocol ``p``."""
    body = call(glob(module, name, p), *(lit(a, p) for a in args))
    return header(p) + body + stop()


def cmd(canary: str) -> str:
    return "touch " + shlex.quote(canary)


def code(canary: str) -> str:
    return f"open({canary!r}, 'w').close()"


def os_system(canary: str, p: int = 2) -> bytes:
    return gcall(p, "os", "system", cmd(canary))


# --------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    name: str
    data: Callable[[str], bytes]
    covers: str
    kind: str  # hostile | dos | malformed | benign | py2
    expect: str  # refuse | load | stub
    expected_value: Any = None
    audit: str = ""
    mentions: tuple[str, ...] = ()
    xfail: str | None = None
    audit_xfail: str | None = None
    verify: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.kind in ("hostile", "dos", "malformed", "benign", "py2"), self.kind
        assert self.expect in ("refuse", "load", "stub"), self.expect
        if not self.audit:
            default = {
                "hostile": "dangerous",
                "dos": "dangerous",
                "malformed": "unreadable",
                "benign": "unknown" if self.expect == "stub" else "safe",
                "py2": "unknown" if self.expect == "stub" else "safe",
            }[self.kind]
            object.__setattr__(self, "audit", default)
        assert self.audit in ("dangerous", "unknown", "safe", "unreadable"), self.audit


CASES: list[Case] = []


def case(name: str, data: Callable[[str], bytes], covers: str, kind: str, expect: str, **kw: Any):
    CASES.append(Case(name, data, covers, kind, expect, **kw))


def hostile(name: str, data: Callable[[str], bytes], covers: str, mentions: tuple[str, ...], **kw):
    case(name, data, covers, "hostile", "refuse", mentions=mentions, **kw)


# ==========================================================================
# Hostile: code execution, one route per case

for _p in range(6):

    def _os_system(c: str, p: int = _p) -> bytes:
        if p == 5:
            body = call(glob("os", "system", p), lit(cmd(c), p)) + stop()
            return header(p) + frame(body)
        return os_system(c, p)

    hostile(
        f"os_system_p{_p}",
        _os_system,
        f"os.system(cmd) through {'GLOBAL' if _p < 4 else 'STACK_GLOBAL'} + REDUCE at protocol {_p}"
        + (" inside a FRAME" if _p == 5 else ""),
        ("os.system",),
        verify=_p in (0, 4, 5),
    )

hostile(
    "posix_system_p2",
    lambda c: gcall(2, "posix", "system", cmd(c)),
    "posix.system: the C twin of os",
    ("posix",),
    verify=True,
)
hostile(
    "nt_system_p2", lambda c: gcall(2, "nt", "system", cmd(c)), "nt.system (Windows twin)", ("nt",)
)
hostile("os_popen_p4", lambda c: gcall(4, "os", "popen", cmd(c)), "os.popen", ("os.popen", "os"))
hostile(
    "os_spawnlp_p1",
    lambda c: gcall(1, "os", "spawnlp", 0, "touch", "touch", c),
    "os.spawnlp(P_WAIT, ...): another os process route",
    ("os",),
)
hostile(
    "builtins_exec_p4",
    lambda c: gcall(4, "builtins", "exec", code(c)),
    "builtins.exec of a source string",
    ("builtins.exec",),
    verify=True,
)
hostile(
    "builtins_exec_p0",
    lambda c: gcall(0, "builtins", "exec", code(c)),
    "builtins.exec at protocol 0 (UNICODE argument)",
    ("builtins.exec",),
)
hostile(
    "builtins_eval_p3",
    lambda c: gcall(3, "builtins", "eval", code(c)),
    "builtins.eval",
    ("builtins.eval",),
)
hostile(
    "py2_builtin_eval_p0",
    lambda c: (
        global_("__builtin__", "eval") + mark() + string(code(c)) + tuple_() + reduce() + stop()
    ),
    "Python 2 name __builtin__.eval with a Python 2 STRING argument",
    ("eval",),
    verify=True,
)
hostile(
    "py2_builtin_eval_p2",
    lambda c: gcall(2, "__builtin__", "eval", code(c)),
    "__builtin__.eval at protocol 2 (mapped to builtins.eval)",
    ("eval",),
)
hostile(
    "builtins_open_p4",
    lambda c: gcall(4, "builtins", "open", c, "w"),
    "builtins.open(canary, 'w') creates the file directly",
    ("builtins.open",),
    verify=True,
)
hostile(
    "py2_builtin_open_p1",
    lambda c: gcall(1, "__builtin__", "open", c, "w"),
    "__builtin__.open (Python 2 spelling, protocol 1)",
    ("open",),
)
hostile(
    "builtins_compile_exec_p2",
    lambda c: (
        header(2)
        + call(
            global_("builtins", "exec"),
            call(global_("builtins", "compile"), lit(code(c), 2), lit("x", 2), lit("exec", 2)),
        )
        + stop()
    ),
    "exec(compile(src, 'x', 'exec'))",
    ("builtins.exec", "builtins.compile"),
)
hostile(
    "builtins_getattr_import_p2",
    lambda c: (
        header(2)
        + call(
            call(
                global_("builtins", "getattr"),
                call(global_("builtins", "__import__"), lit("os", 2)),
                lit("system", 2),
            ),
            lit(cmd(c), 2),
        )
        + stop()
    ),
    "getattr(__import__('os'), 'system')(cmd): builtins only",
    ("builtins.getattr", "__import__"),
    verify=True,
)
hostile(
    "builtins_dict_get_vars_p4",
    lambda c: (
        header(4)
        + call(
            glob("builtins", "dict.get", 4),
            call(
                glob("builtins", "vars", 4), call(glob("builtins", "__import__", 4), lit("os", 4))
            ),
            lit("system", 4),
        )
        + mark()
        + lit(cmd(c), 4)
        + tuple_()
        + reduce()
        + stop()
    ),
    "dict.get(vars(__import__('os')), 'system')(cmd): a dotted builtins name",
    ("builtins.dict.get", "dict.get"),
    verify=True,
)
hostile(
    "builtins_print_class_walk_p4",
    lambda c: (
        header(4) + call(glob("builtins", "print.__class__.__base__.__subclasses__", 4)) + stop()
    ),
    "dunder attribute walk under builtins (print.__class__.__base__.__subclasses__)",
    ("__class__", "builtins.print"),
)
hostile(
    "builtins_getattr_fnmatch_os_p2",
    lambda c: (
        header(2)
        + call(
            call(global_("builtins", "getattr"), global_("fnmatch", "os"), lit("system", 2)),
            lit(cmd(c), 2),
        )
        + stop()
    ),
    "getattr(fnmatch.os, 'system'): a module reached as an attribute of an innocent module",
    ("builtins.getattr", "fnmatch.os"),
    verify=True,
)
hostile(
    "subprocess_popen_p4",
    lambda c: gcall(4, "subprocess", "Popen", ["touch", c]),
    "subprocess.Popen([...]) through REDUCE",
    ("subprocess",),
    verify=True,
)
hostile(
    "subprocess_call_p2",
    lambda c: gcall(2, "subprocess", "call", ["touch", c]),
    "subprocess.call",
    ("subprocess",),
)
hostile(
    "subprocess_check_output_p3",
    lambda c: gcall(3, "subprocess", "check_output", ["touch", c]),
    "subprocess.check_output",
    ("subprocess",),
)
hostile(
    "subprocess_getoutput_p0",
    lambda c: gcall(0, "subprocess", "getoutput", cmd(c)),
    "subprocess.getoutput at protocol 0",
    ("subprocess",),
)
hostile(
    "subprocess_run_p5",
    lambda c: header(5) + frame(call(glob("subprocess", "run", 5), lit(["touch", c], 5)) + stop()),
    "subprocess.run at protocol 5",
    ("subprocess",),
)
hostile(
    "commands_getoutput_p0",
    lambda c: (
        global_("commands", "getoutput") + mark() + string(cmd(c)) + tuple_() + reduce() + stop()
    ),
    "Python 2 commands.getoutput (mapped to subprocess.getoutput)",
    ("commands", "subprocess"),
    verify=True,
)
hostile(
    "commands_getstatusoutput_p2",
    lambda c: gcall(2, "commands", "getstatusoutput", cmd(c)),
    "commands.getstatusoutput at protocol 2",
    ("commands", "subprocess"),
)
hostile(
    "subprocess_popen_newobj_p2",
    lambda c: (
        header(2) + global_("subprocess", "Popen") + lit((["touch", c],), 2) + newobj() + stop()
    ),
    "NEWOBJ of subprocess.Popen (cls.__new__)",
    ("subprocess",),
)
hostile(
    "subprocess_popen_newobj_ex_p4",
    lambda c: (
        header(4)
        + glob("subprocess", "Popen", 4)
        + empty_tuple()
        + lit({"args": ["touch", c]}, 4)
        + newobj_ex()
        + stop()
    ),
    "NEWOBJ_EX of subprocess.Popen with keyword arguments",
    ("subprocess",),
)
hostile(
    "copy_reg_reconstructor_popen_p2",
    lambda c: (
        header(2)
        + call(
            global_("copy_reg", "_reconstructor"),
            global_("subprocess", "Popen"),
            global_("subprocess", "Popen"),
            lit(["touch", c], 2),
        )
        + stop()
    ),
    "copy_reg._reconstructor(Popen, Popen, argv): base.__init__(obj, state) runs a program",
    ("subprocess", "_reconstructor"),
    verify=True,
)
hostile(
    "copy_reg_reconstructor_popen_p0",
    lambda c: (
        global_("copy_reg", "_reconstructor")
        + mark()
        + global_("subprocess", "Popen")
        + global_("subprocess", "Popen")
        + lit(["touch", c], 0)
        + tuple_()
        + reduce()
        + stop()
    ),
    "the same at protocol 0, all text opcodes",
    ("subprocess", "_reconstructor"),
)
hostile(
    "inst_os_system_p0",
    lambda c: mark() + string(cmd(c)) + inst("os", "system") + stop(),
    "INST calls os.system(*marked args)",
    ("os.system",),
    verify=True,
)
hostile(
    "obj_os_system_p1",
    lambda c: mark() + global_("os", "system") + binunicode(cmd(c)) + obj() + stop(),
    "OBJ calls the first marked item",
    ("os.system",),
    verify=True,
)
hostile(
    "inst_subprocess_popen_p0",
    lambda c: mark() + lit(["touch", c], 0) + inst("subprocess", "Popen") + stop(),
    "INST of subprocess.Popen (a class: __init__ runs)",
    ("subprocess",),
)
hostile(
    "functools_partial_p2",
    lambda c: (
        header(2)
        + call(call(global_("functools", "partial"), global_("os", "system"), lit(cmd(c), 2)))
        + stop()
    ),
    "functools.partial(os.system, cmd)()",
    ("functools", "os.system"),
    verify=True,
)
hostile(
    "py2_builtin_reduce_getattr_p2",
    lambda c: (
        header(2)
        + call(
            call(
                global_("__builtin__", "reduce"),
                global_("__builtin__", "getattr"),
                lit(["system"], 2),
                global_("fnmatch", "os"),
            ),
            lit(cmd(c), 2),
        )
        + stop()
    ),
    "__builtin__.reduce (mapped to functools.reduce) folding getattr over ['system']",
    ("reduce", "getattr"),
    verify=True,
)
hostile(
    "operator_attrgetter_p2",
    lambda c: (
        header(2)
        + call(
            call(
                call(global_("operator", "attrgetter"), lit("system", 2)), global_("fnmatch", "os")
            ),
            lit(cmd(c), 2),
        )
        + stop()
    ),
    "operator.attrgetter('system')(fnmatch.os)(cmd)",
    ("operator",),
    verify=True,
)
hostile(
    "c_operator_attrgetter_p2",
    lambda c: (
        header(2)
        + call(
            call(
                call(global_("_operator", "attrgetter"), lit("system", 2)), global_("fnmatch", "os")
            ),
            lit(cmd(c), 2),
        )
        + stop()
    ),
    "_operator.attrgetter: the C twin",
    ("_operator", "private"),
)
hostile(
    "operator_methodcaller_p4",
    lambda c: (
        header(4)
        + call(
            call(glob("operator", "methodcaller", 4), lit("system", 4), lit(cmd(c), 4)),
            glob("fnmatch", "os", 4),
        )
        + stop()
    ),
    "operator.methodcaller('system', cmd)(fnmatch.os)",
    ("operator",),
)


def _inner(c: str) -> bytes:
    return os_system(c, 2)


hostile(
    "pickle_loads_nested_p3",
    lambda c: gcall(3, "pickle", "loads", _inner(c)),
    "pickle.loads of an inner os.system pickle (nested deserialisation)",
    ("pickle",),
    verify=True,
)
hostile(
    "cpickle_loads_nested_p2",
    lambda c: gcall(2, "cPickle", "loads", _inner(c)),
    "Python 2 cPickle.loads (mapped to pickle.loads)",
    ("cpickle", "pickle"),
)
hostile(
    "c_pickle_loads_nested_p4",
    lambda c: gcall(4, "_pickle", "loads", _inner(c)),
    "_pickle.loads: the C twin",
    ("_pickle", "private"),
)
hostile(
    "pickle_loads_base64_p4",
    lambda c: (
        header(4)
        + call(
            glob("pickle", "loads", 4),
            call(
                glob("_codecs", "decode", 4),
                lit(__import__("base64").b64encode(_inner(c)), 4),
                lit("base64", 4),
            ),
        )
        + stop()
    ),
    "pickle.loads(_codecs.decode(<base64>, 'base64')): an encoded nested payload",
    ("pickle", "_codecs"),
)


def _marshal_function(c: str) -> bytes:
    code_bytes = marshal.dumps(compile(code(c), "<corpus>", "exec"))
    return (
        header(4)
        + call(
            call(
                glob("types", "FunctionType", 4),
                call(glob("marshal", "loads", 4), lit(code_bytes, 4)),
                lit({}, 4),
            )
        )
        + stop()
    )


hostile(
    "marshal_functiontype_p4",
    _marshal_function,
    "types.FunctionType(marshal.loads(code), {})()",
    ("types", "marshal"),
    verify=True,
)
hostile(
    "importlib_import_module_memo_p4",
    lambda c: (
        header(4)
        + call(glob("importlib", "import_module", 4), lit("os", 4))
        + binput(50)
        + pop()
        + call(call(glob("builtins", "getattr", 4), binget(50), lit("system", 4)), lit(cmd(c), 4))
        + stop()
    ),
    "importlib.import_module('os') kept in the memo, then getattr(memo, 'system')(cmd)",
    ("importlib",),
    verify=True,
)
hostile(
    "pkgutil_resolve_name_p4",
    lambda c: (
        header(4)
        + call(call(glob("pkgutil", "resolve_name", 4), lit("os:system", 4)), lit(cmd(c), 4))
        + stop()
    ),
    "pkgutil.resolve_name('os:system'): one string resolver reaches everything",
    ("pkgutil",),
    verify=True,
)
hostile(
    "runpy_run_code_p4",
    lambda c: gcall(4, "runpy", "_run_code", code(c), {}),
    "runpy._run_code(src, {})",
    ("runpy",),
    verify=True,
)
hostile(
    "code_interactive_interpreter_p4",
    lambda c: (
        header(4)
        + call(
            glob("code", "InteractiveInterpreter.runsource", 4),
            call(glob("code", "InteractiveInterpreter", 4)),
            lit(code(c), 4),
        )
        + stop()
    ),
    "code.InteractiveInterpreter.runsource(InteractiveInterpreter(), src): a dotted method",
    ("code",),
    verify=True,
)
hostile(
    "shutil_copyfile_p4",
    lambda c: gcall(4, "shutil", "copyfile", "/dev/null", c),
    "shutil.copyfile('/dev/null', canary)",
    ("shutil",),
    verify=True,
)
hostile(
    "io_open_p4",
    lambda c: gcall(4, "io", "open", c, "w"),
    "io.open(canary, 'w')",
    ("io",),
    verify=True,
)
hostile(
    "c_io_fileio_p2",
    lambda c: gcall(2, "_io", "FileIO", c, "w"),
    "_io.FileIO: the C twin",
    ("_io", "private"),
)
hostile("codecs_open_p3", lambda c: gcall(3, "codecs", "open", c, "w"), "codecs.open", ("codecs",))
hostile(
    "pathlib_write_text_p4",
    lambda c: (
        header(4)
        + call(
            glob("pathlib", "Path.write_text", 4),
            call(glob("pathlib", "Path", 4), lit(c, 4)),
            lit("x", 4),
        )
        + stop()
    ),
    "pathlib.Path.write_text(Path(canary), 'x') through a dotted STACK_GLOBAL name",
    ("pathlib",),
    verify=True,
)
hostile(
    "pathlib_posixpath_touch_p4",
    lambda c: (
        header(4)
        + call(
            glob("pathlib", "PosixPath.touch", 4), call(glob("pathlib", "PosixPath", 4), lit(c, 4))
        )
        + stop()
    ),
    "pathlib.PosixPath.touch (the concrete subclass, not on a Path-only list)",
    ("pathlib",),
)
hostile(
    "logging_filehandler_p2",
    lambda c: gcall(2, "logging", "FileHandler", c),
    "logging.FileHandler(canary) opens (creates) the file",
    ("logging",),
    verify=True,
)
hostile(
    "uuid_get_command_stdout_p4",
    lambda c: gcall(4, "uuid", "_get_command_stdout", "touch", c),
    "uuid._get_command_stdout('touch', canary): uuid is allowlisted only for UUID",
    ("uuid",),
    verify=True,
)
hostile(
    "uuid_dunder_globals_walk_p4",
    lambda c: (
        header(4)
        + call(
            call(glob("uuid", "UUID.__init__.__globals__.get", 4), lit("_get_command_stdout", 4)),
            lit("touch", 4),
            lit(c, 4),
        )
        + stop()
    ),
    "uuid UUID.__init__.__globals__.get: a dunder walk from an allowed class",
    ("uuid", "__init__", "__globals__"),
    verify=True,
)
hostile(
    "fnmatch_builtins_get_p4",
    lambda c: (
        header(4)
        + call(call(glob("fnmatch", "__builtins__.get", 4), lit("exec", 4)), lit(code(c), 4))
        + stop()
    ),
    "fnmatch __builtins__.get('exec'): a module's builtins dict",
    ("__builtins__", "fnmatch"),
    verify=True,
)
hostile(
    "main_builtins_exec_p4",
    lambda c: header(4) + call(glob("__main__", "__builtins__.exec", 4), lit(code(c), 4)) + stop(),
    "__main__ __builtins__.exec: __main__ may be stubbed, its dunders may not",
    ("__builtins__", "__main__"),
    verify=True,
)
hostile(
    "pydoc_pipepager_p4",
    lambda c: gcall(4, "pydoc", "pipepager", "", cmd(c)),
    "pydoc.pipepager('', cmd) runs cmd in a shell",
    ("pydoc",),
    verify=True,
)
hostile(
    "timeit_timeit_p4",
    lambda c: (
        header(4)
        + call(
            glob("timeit", "timeit", 4),
            lit(code(c), 4),
            lit("pass", 4),
            glob("time", "perf_counter", 4),
            lit(1, 4),
        )
        + stop()
    ),
    "timeit.timeit(src, 'pass', perf_counter, 1)",
    ("timeit",),
    verify=True,
)
hostile(
    "cprofile_run_p2",
    lambda c: gcall(2, "cProfile", "run", code(c)),
    "cProfile.run(src)",
    ("cprofile",),
)
hostile(
    "ctypes_cdll_system_p4",
    lambda c: (
        header(4)
        + call(glob("ctypes", "CDLL", 4), none())
        + binput(7)
        + pop()
        + call(
            call(glob("builtins", "getattr", 4), binget(7), lit("system", 4)),
            lit(cmd(c).encode(), 4),
        )
        + stop()
    ),
    "getattr(ctypes.CDLL(None), 'system')(b'cmd'): libc through ctypes",
    ("ctypes",),
    verify=True,
)
hostile(
    "asyncio_subprocess_p4",
    lambda c: (
        header(4)
        + call(
            glob("asyncio", "run", 4),
            call(glob("asyncio.subprocess", "create_subprocess_shell", 4), lit(cmd(c), 4)),
        )
        + stop()
    ),
    "asyncio.run(asyncio.subprocess.create_subprocess_shell(cmd))",
    ("asyncio",),
)
hostile(
    "pty_spawn_p2",
    lambda c: gcall(2, "pty", "spawn", ["touch", c]),
    "pty.spawn(argv)",
    ("pty",),
)
hostile(
    "webbrowser_genericbrowser_p4",
    lambda c: (
        header(4)
        + call(
            glob("webbrowser", "GenericBrowser.open", 4),
            call(glob("webbrowser", "GenericBrowser", 4), lit(["touch", c], 4)),
            lit("x", 4),
        )
        + stop()
    ),
    "webbrowser.GenericBrowser(['touch', canary]).open('x') runs touch",
    ("webbrowser",),
    verify=True,
)
hostile(
    "imaplib_imap4_stream_p2",
    lambda c: gcall(2, "imaplib", "IMAP4_stream", cmd(c)),
    "imaplib.IMAP4_stream(cmd) runs a command",
    ("imaplib",),
)
hostile(
    "atexit_register_p2",
    lambda c: (
        header(2)
        + call(global_("atexit", "register"), global_("os", "system"), lit(cmd(c), 2))
        + stop()
    ),
    "atexit.register(os.system, cmd): runs when the interpreter exits",
    ("atexit", "os.system"),
    verify=True,
)
hostile(
    "numpy_runstring_p2",
    lambda c: gcall(2, "numpy.testing._private.utils", "runstring", code(c), {}),
    "numpy.testing._private.utils.runstring (third-party gadget; must not even import numpy)",
    ("numpy",),
)
hostile(
    "torch_collect_env_run_p2",
    lambda c: gcall(2, "torch.utils.collect_env", "run", cmd(c)),
    "torch.utils.collect_env.run (third-party gadget; must not import torch)",
    ("torch",),
)

# -- allowlist evasions: dotted names, protocol switches, memo, computed names

hostile(
    "dotted_fnmatch_os_system_p4",
    lambda c: header(4) + call(glob("fnmatch", "os.system", 4), lit(cmd(c), 4)) + stop(),
    "STACK_GLOBAL fnmatch 'os.system': a walk from an innocent module into os",
    ("fnmatch.os", "os"),
    verify=True,
)
hostile(
    "dotted_text_global_proto4",
    lambda c: proto(4) + call(global_("fnmatch", "os.system"), lit(cmd(c), 4)) + stop(),
    "PROTO 4 then a text GLOBAL with dots (dotted names follow the PROTO byte, not the opcode)",
    ("fnmatch.os", "os"),
    verify=True,
)
hostile(
    "proto2_then_proto4_dotted",
    lambda c: proto(2) + proto(4) + call(global_("fnmatch", "os.system"), lit(cmd(c), 2)) + stop(),
    "PROTO 2 then PROTO 4, then a dotted text GLOBAL",
    ("fnmatch.os", "os", "proto"),
    verify=True,
)
hostile(
    "proto4_then_proto2_commands",
    lambda c: (
        proto(4)
        + lit("x", 4)
        + pop()
        + proto(2)
        + call(global_("commands", "getoutput"), lit(cmd(c), 2))
        + stop()
    ),
    "PROTO 4 ... PROTO 2 then commands.getoutput (the Python 2 mapping follows the last PROTO)",
    ("commands", "subprocess", "proto"),
    verify=True,
)
hostile(
    "proto2_stack_global_opcode",
    lambda c: (
        proto(2)
        + call(short_binunicode("os") + short_binunicode("system") + stack_global(), lit(cmd(c), 2))
        + stop()
    ),
    "a protocol 4 opcode (STACK_GLOBAL) under PROTO 2",
    ("os.system", "os"),
    verify=True,
)
hostile(
    "stack_global_memo_binget_p4",
    lambda c: (
        proto(4)
        + short_binunicode("os")
        + binput(1)
        + pop()
        + short_binunicode("system")
        + binput(2)
        + pop()
        + call(binget(1) + binget(2) + stack_global(), lit(cmd(c), 4))
        + stop()
    ),
    "STACK_GLOBAL whose strings come from the memo (BINPUT/BINGET, popped in between)",
    ("os.system", "os"),
    verify=True,
)
hostile(
    "stack_global_memo_long_binget_p4",
    lambda c: (
        proto(4)
        + binunicode("x" * 400)
        + pop()
        + short_binunicode("os")
        + long_binput(300)
        + pop()
        + short_binunicode("system")
        + long_binput(301)
        + pop()
        + call(long_binget(300) + long_binget(301) + stack_global(), lit(cmd(c), 4))
        + stop()
    ),
    "STACK_GLOBAL strings through LONG_BINPUT/LONG_BINGET at indexes above 255 (a 400-char string pads the pickle)",
    ("os.system", "os"),
    verify=True,
)
hostile(
    "stack_global_memo_confusion_p4",
    lambda c: (
        proto(4)
        + short_binunicode("json")
        + memoize()
        + pop()
        + short_binunicode("loads")
        + memoize()
        + pop()
        + short_binunicode("os")
        + binput(0)
        + pop()
        + short_binunicode("system")
        + binput(1)
        + pop()
        + call(binget(0) + binget(1) + stack_global(), lit(cmd(c), 4))
        + stop()
    ),
    "MEMOIZE 'json','loads' then BINPUT overwrites memo 0/1 with 'os','system' (memo desync)",
    ("os.system", "os"),
    verify=True,
)
hostile(
    "stack_global_text_put_get_p0",
    lambda c: (
        unicode_text("os")
        + put(0)
        + pop()
        + unicode_text("system")
        + put(1)
        + pop()
        + call(get(0) + get(1) + stack_global(), lit(cmd(c), 0))
        + stop()
    ),
    "no PROTO, text PUT/GET, then a STACK_GLOBAL opcode",
    ("os.system", "os"),
    verify=True,
)
hostile(
    "stack_global_computed_str_p4",
    lambda c: (
        proto(4)
        + call(
            call(glob("builtins", "str", 4), lit("os", 4))
            + call(glob("builtins", "str", 4), lit("system", 4))
            + stack_global(),
            lit(cmd(c), 4),
        )
        + stop()
    ),
    "STACK_GLOBAL whose operands are built by calls (builtins.str('os'))",
    ("builtins.str", "call", "computed", "os"),
    verify=True,
)
hostile(
    "stack_global_computed_reconstructor_p4",
    lambda c: (
        proto(4)
        + call(
            call(
                glob("copyreg", "_reconstructor", 4),
                glob("builtins", "str", 4),
                glob("builtins", "str", 4),
                lit("os", 4),
            )
            + short_binunicode("system")
            + stack_global(),
            lit(cmd(c), 4),
        )
        + stop()
    ),
    "STACK_GLOBAL module computed only with allowlisted names: _reconstructor(str, str, 'os')",
    ("_reconstructor", "computed", "str", "os"),
    verify=True,
)
hostile(
    "payload_after_stop_p2",
    lambda c: proto(2) + empty_list() + stop() + os_system(c, 2),
    "a benign pickle, STOP, then an os.system pickle in the same value",
    ("trailing", "after stop"),
)
hostile(
    "payload_after_stop_p4_frame",
    lambda c: proto(4) + frame(lit({"a": 1}, 4) + stop()) + os_system(c, 4),
    "framed protocol 4 value, STOP, then a protocol 4 payload",
    ("trailing", "after stop"),
)
hostile(
    "payload_then_truncation_p2",
    lambda c: os_system(c, 2)[:-1] + binunicode("x")[:3],
    "payload, then the stream ends (no STOP): pickle has already run it",
    ("os.system", "truncat"),
    verify=True,
)
hostile(
    "payload_then_bad_opcode_p4",
    lambda c: os_system(c, 4)[:-1] + b"\xff",
    "payload followed by an invalid opcode (scanners give up, pickle already ran it)",
    ("os.system", "opcode"),
    verify=True,
)
hostile(
    "payload_then_huge_length_p4",
    lambda c: os_system(c, 4)[:-1] + b"\x8d" + _u64(1 << 40) + b"xx",
    "payload followed by a BINUNICODE8 with a huge declared length",
    ("os.system", "declares", "truncat"),
    verify=True,
)
hostile(
    "py2_latin1_str_then_payload_p0",
    lambda c: mark() + string(b"caf\xe9") + pop_mark() + os_system(c, 0),
    "non-ASCII Python 2 STRING first (genops stops there), payload after it",
    ("os.system",),
)
hostile(
    "long_5000_digits_then_payload_p0",
    lambda c: long_text("7" + "0" * 4998 + "3") + pop() + os_system(c, 0),
    "a 5000-digit text LONG (above the host's int limit) in front of the payload",
    ("os.system", "digits", "limit"),
)
hostile(
    "ext1_unregistered_p2",
    lambda c: proto(2) + ext1(1) + stop(),
    "EXT1 with an empty registry",
    ("extension",),
)
hostile(
    "ext2_unregistered_p2",
    lambda c: proto(2) + ext2(0x1234) + stop(),
    "EXT2 with an empty registry",
    ("extension",),
)
hostile(
    "ext4_then_call_p2",
    lambda c: proto(2) + call(ext4(0x12345678), lit(cmd(c), 2)) + stop(),
    "EXT4 code called like a function",
    ("extension",),
)
hostile(
    "persid_p0",
    lambda c: persid("os.system") + stop(),
    "PERSID (calls persistent_load)",
    ("persistent",),
)
hostile(
    "binpersid_p2",
    lambda c: proto(2) + lit(["os", "system"], 2) + binpersid() + stop(),
    "BINPERSID",
    ("persistent",),
)

# -- state poisoning

hostile(
    "build_on_class_ordereddict_p2",
    lambda c: (
        proto(2)
        + global_("collections", "OrderedDict")
        + lit({"corpus_poisoned": True}, 2)
        + build()
        + stop()
    ),
    "BUILD on an allowlisted class: setattr(OrderedDict, 'corpus_poisoned', True)",
    ("build",),
)
hostile(
    "build_setstate_on_class_p4",
    lambda c: (
        proto(4)
        + glob("collections", "OrderedDict", 4)
        + empty_dict()
        + short_binunicode("__setstate__")
        + glob("_codecs", "encode", 4)
        + setitem()
        + build()
        + stop()
    ),
    "BUILD planting a __setstate__ on OrderedDict (poisons every later load)",
    ("build",),
)
hostile(
    "build_slotstate_on_class_datetime_p2",
    lambda c: (
        proto(2)
        + global_("datetime", "datetime")
        + none()
        + lit({"corpus_poisoned": 1}, 2)
        + tuple2()
        + build()
        + stop()
    ),
    "BUILD (None, slotstate) on datetime.datetime",
    ("build",),
)
hostile(
    "build_on_function_reconstructor_p2",
    lambda c: (
        proto(2)
        + global_("copy_reg", "_reconstructor")
        + lit({"corpus_poisoned": 1}, 2)
        + build()
        + stop()
    ),
    "BUILD on an allowlisted function (copy_reg._reconstructor.__dict__)",
    ("build",),
)
hostile(
    "build_on_module_json_decoder_p2",
    lambda c: (
        proto(2) + global_("json", "decoder") + lit({"corpus_poisoned": 1}, 2) + build() + stop()
    ),
    "BUILD on a module object reached as an attribute (json.decoder.__dict__)",
    ("build", "json"),
)
hostile(
    "build_on_module_collections_abc_p4",
    lambda c: (
        proto(4) + glob("collections", "abc", 4) + lit({"corpus_poisoned": 1}, 4) + build() + stop()
    ),
    "BUILD on the collections.abc module",
    ("build", "collections"),
)
hostile(
    "setitems_sys_modules_p2",
    lambda c: (
        proto(2)
        + global_("sys", "modules")
        + mark()
        + lit("corpus_poisoned", 2)
        + none()
        + setitems()
        + stop()
    ),
    "SETITEMS into sys.modules",
    ("sys",),
)
hostile(
    "setitem_os_environ_p2",
    lambda c: (
        proto(2)
        + global_("os", "environ")
        + lit("CORPUS_POISON", 2)
        + lit("1", 2)
        + setitem()
        + stop()
    ),
    "SETITEM into os.environ",
    ("os",),
)
hostile(
    "defaultdict_factory_partial_p2",
    lambda c: (
        proto(2)
        + call(
            global_("collections", "defaultdict"),
            call(global_("functools", "partial"), global_("os", "system"), lit(cmd(c), 2)),
        )
        + stop()
    ),
    "defaultdict whose factory runs a command on the first missing key",
    ("functools", "os.system", "factory"),
)
hostile(
    "defaultdict_factory_replaced_by_build_p2",
    lambda c: (
        proto(2)
        + call(global_("collections", "defaultdict"), global_("__builtin__", "int"))
        + none()
        + lit({"default_factory": Raw(global_("mylib", "Evil"))}, 2)
        + tuple2()
        + build()
        + stop()
    ),
    "BUILD (None, {'default_factory': X}) swaps an allowed factory for another",
    ("default_factory", "factory", "defaultdict"),
)
hostile(
    "ordereddict_instance_attrs_p2",
    lambda c: (
        proto(2)
        + call(global_("collections", "OrderedDict"))
        + lit({"corpus_poisoned": 1}, 2)
        + build()
        + stop()
    ),
    "BUILD giving an OrderedDict instance attributes",
    ("ordereddict", "build", "attribute"),
)
hostile(
    "setitem_on_list_p2",
    lambda c: proto(2) + lit([5], 2) + lit(0, 2) + lit(9, 2) + setitem() + stop(),
    "SETITEM on a list (list[k] = v when the index exists; type confusion, torch CVE-2026-24747 family)",
    ("setitem", "list", "dict"),
)
# The same, spelled other ways (each loads as a list with an item replaced
# under plain pickle.loads): the loader must refuse every one of them.
_SETITEM_ON_LIST = {
    "setitems_on_list_p2": (
        proto(2)
        + lit([5, 6], 2)
        + mark()
        + lit(0, 2)
        + lit(9, 2)
        + lit(1, 2)
        + lit(8, 2)
        + setitems()
        + stop(),
        "SETITEMS on a list (list[0], list[1] = 9, 8)",
    ),
    "setitem_on_list_p0": (
        mark() + int_text(5) + list_() + put(0) + int_text(0) + int_text(9) + setitem() + stop(),
        "SETITEM on a protocol 0 list (MARK INT LIST PUT INT INT SETITEM)",
    ),
    "setitem_on_list_p1": (
        empty_list()
        + binput(0)
        + binint1(5)
        + append()
        + binint1(0)
        + binint1(9)
        + setitem()
        + stop(),
        "SETITEM on a protocol 1 list made by EMPTY_LIST and APPEND",
    ),
    "setitems_on_list_p4": (
        proto(4)
        + frame(
            empty_list()
            + memoize()
            + mark()
            + binint1(5)
            + binint1(6)
            + appends()
            + mark()
            + binint1(1)
            + binint1(9)
            + setitems()
            + stop()
        ),
        "SETITEMS on a list right after its APPENDS (protocol 4, framed, MEMOIZE)",
    ),
    "setitem_on_list_from_memo_p2": (
        proto(2)
        + empty_list()
        + binput(0)
        + binint1(5)
        + append()
        + pop()
        + binget(0)
        + binint1(0)
        + binint1(9)
        + setitem()
        + stop(),
        "SETITEM on a list fetched back from the memo (BINGET)",
    ),
    "setitem_on_list_in_dict_p2": (
        proto(2)
        + empty_dict()
        + binput(0)
        + lit("a", 2)
        + empty_list()
        + binput(1)
        + binint1(5)
        + append()
        + binint1(0)
        + binint1(9)
        + setitem()
        + setitem()
        + stop(),
        "SETITEM on the list that is the value of a dict item (loads {'a': [9]})",
    ),
    "setitems_on_list_under_dict_mark_p2": (
        proto(2)
        + empty_dict()
        + mark()
        + lit("a", 2)
        + lit([5, 6], 2)
        + mark()
        + binint1(0)
        + binint1(9)
        + setitems()
        + setitems()
        + stop(),
        "SETITEMS on a list inside a dict's SETITEMS batch (loads {'a': [9, 6]})",
    ),
}
for _name, (_data, _covers) in _SETITEM_ON_LIST.items():
    hostile(_name, lambda c, d=_data: d, _covers, ("setitem", "list", "dict"))
# A bytearray made by the allowed builtins.bytearray constructor is not a
# container a pickle fills: plain pickle.loads assigns b[k] = v or extends it.
hostile(
    "setitem_on_reduced_bytearray_p2",
    lambda c: (
        proto(2)
        + call(global_("__builtin__", "bytearray"), short_binbytes(b"ab"))
        + lit(0, 2)
        + lit(9, 2)
        + setitem()
        + stop()
    ),
    "SETITEM on a bytearray made by REDUCE (loads bytearray(b'\\tb'))",
    ("setitem", "bytearray"),
)
hostile(
    "append_on_reduced_bytearray_p0",
    lambda c: (
        call(global_("__builtin__", "bytearray"), lit("ab", 0), lit("latin-1", 0))
        + lit(65, 0)
        + append()
        + stop()
    ),
    "APPEND on a protocol 0 bytearray made by REDUCE (extends it)",
    ("append", "bytearray"),
)
hostile(
    "build_on_reduced_bytearray_p2",
    lambda c: (
        proto(2)
        + call(global_("__builtin__", "bytearray"), short_binbytes(b"ab"))
        + lit({"x": 1}, 2)
        + build()
        + stop()
    ),
    "BUILD on a bytearray made by REDUCE",
    ("build", "bytearray"),
)
hostile(
    "appends_on_bytearray_p5",
    lambda c: proto(5) + bytearray8(b"ab") + mark() + lit(65, 5) + appends() + stop(),
    "APPENDS on a bytearray (calls .extend on a non-list)",
    ("appends", "bytearray", "list"),
)
hostile(
    "readonly_buffer_bytearray_p5",
    lambda c: proto(5) + bytearray8(b"abc") + readonly_buffer() + stop(),
    "READONLY_BUFFER turns a bytearray into a memoryview (raw buffer object in the output)",
    ("readonly_buffer", "buffer"),
)
hostile(
    "next_buffer_p5",
    lambda c: proto(5) + next_buffer() + stop(),
    "NEXT_BUFFER with no out-of-band buffers",
    ("buffer", "out-of-band"),
)

hostile(
    "proto_switch_2_to_4_plain",
    lambda c: proto(2) + proto(4) + empty_list() + stop(),
    "PROTO 2 then PROTO 4 with nothing hostile after it (the switch itself must be refused)",
    ("proto",),
)
hostile(
    "proto_switch_4_to_2_py2_name",
    lambda c: proto(4) + proto(2) + call(global_("__builtin__", "set")) + stop(),
    "PROTO 4 then PROTO 2 then a Python 2 name (turns the name mapping back on)",
    ("proto",),
)
hostile(
    "proto_switch_inside_frame",
    lambda c: proto(4) + frame(empty_list() + proto(2) + empty_list()) + stop(),
    "PROTO 2 inside a protocol 4 FRAME",
    ("proto",),
)


# ==========================================================================
# Denial of service


def dos(name: str, data: Callable[[str], bytes], covers: str, mentions: tuple[str, ...], **kw):
    case(name, data, covers, "dos", "refuse", mentions=mentions, **kw)


_LEN = ("truncat", "length", "memory", "too large", "limit", "exceeds")

dos(
    "binstring_huge_len",
    lambda c: binstring(b"")[:1] + _u32(2**31 - 1) + b"ab.",
    "BINSTRING declaring 2**31-1 bytes",
    _LEN,
)
dos(
    "short_binstring_255_short",
    lambda c: b"U\xffab.",
    "SHORT_BINSTRING declaring 255, 3 given",
    _LEN,
)
dos(
    "binunicode_huge_len",
    lambda c: b"X" + _u32(2**32 - 1) + b"ab.",
    "BINUNICODE declaring 2**32-1",
    _LEN,
)
dos(
    "short_binunicode_255_short",
    lambda c: proto(4) + b"\x8c\xffab.",
    "SHORT_BINUNICODE declaring 255",
    _LEN,
)
dos(
    "binunicode8_2_40",
    lambda c: proto(4) + b"\x8d" + _u64(1 << 40) + b"ab.",
    "BINUNICODE8 declaring 2**40",
    _LEN,
)
dos(
    "binunicode8_2_62",
    lambda c: proto(4) + b"\x8d" + _u64(1 << 62) + b"ab.",
    "BINUNICODE8 declaring 2**62",
    _LEN,
)
dos(
    "binbytes_huge_len",
    lambda c: proto(3) + b"B" + _u32(2**32 - 1) + b"ab.",
    "BINBYTES declaring 2**32-1",
    _LEN,
)
dos(
    "short_binbytes_255_short",
    lambda c: proto(3) + b"C\xffab.",
    "SHORT_BINBYTES declaring 255",
    _LEN,
)
dos(
    "binbytes8_2_62",
    lambda c: proto(4) + b"\x8e" + _u64(1 << 62) + b"ab.",
    "BINBYTES8 declaring 2**62",
    _LEN,
)
dos(
    "binbytes8_256mib_declared",
    lambda c: proto(4) + b"\x8e" + _u64(1 << 28) + b"ab.",
    "BINBYTES8 declaring 256 MiB with 3 bytes present (allocates before reading?)",
    _LEN,
)
dos(
    "bytearray8_2_62",
    lambda c: proto(5) + b"\x96" + _u64(1 << 62) + b"ab.",
    "BYTEARRAY8 declaring 2**62",
    _LEN,
)
dos(
    "bytearray8_256mib_declared",
    lambda c: proto(5) + b"\x96" + _u64(1 << 28) + b"ab.",
    "BYTEARRAY8 declaring 256 MiB with 3 bytes present",
    _LEN,
)
dos("long1_255_short", lambda c: proto(2) + b"\x8a\xffab.", "LONG1 declaring 255 bytes", _LEN)
dos(
    "long4_2_31",
    lambda c: proto(2) + b"\x8b" + _u32(2**31 - 1) + b"ab.",
    "LONG4 declaring 2**31-1 bytes",
    _LEN,
)
dos("frame_2_40", lambda c: proto(4) + frame_len(1 << 40) + b"N.", "FRAME declaring 2**40", _LEN)
dos("frame_2_62", lambda c: proto(4) + frame_len(1 << 62) + b"N.", "FRAME declaring 2**62", _LEN)
dos(
    "frame_256mib_declared",
    lambda c: proto(4) + frame_len(1 << 28) + b"N.",
    "FRAME declaring 256 MiB with 2 bytes present",
    _LEN,
)
_MEMO = ("memo", "memory", "limit")
dos(
    "memo_long_binput_2_31",
    lambda c: proto(4) + empty_list() + long_binput(2**31) + stop(),
    "LONG_BINPUT at index 2**31 (the C memo array grows to the index)",
    _MEMO,
)
dos(
    "memo_long_binput_2_32_minus_16",
    lambda c: proto(4) + empty_list() + long_binput(2**32 - 16) + stop(),
    "LONG_BINPUT at 2**32-16 (CVE-2018-20406 shape)",
    _MEMO,
)
dos(
    "memo_put_1e9",
    lambda c: mark() + list_() + put(10**9) + stop(),
    "text PUT at index 10**9",
    _MEMO,
)
dos(
    "memo_long_binput_2_24",
    lambda c: proto(4) + empty_list() + long_binput(2**24) + stop(),
    "LONG_BINPUT at 2**24: small enough to be allocated (256 MiB memo array)",
    _MEMO,
)
_DEPTH = ("deep", "depth", "nest", "recursion", "limit")
_N = 100_000
dos(
    "deep_list_100k",
    lambda c: mark() * _N + empty_list() + list_() * _N + stop(),
    "100,000 nested lists (MARK ... LIST)",
    _DEPTH,
)
dos(
    "deep_tuple_100k",
    lambda c: mark() * _N + empty_tuple() + tuple_() * _N + stop(),
    "100,000 nested tuples",
    _DEPTH,
)
dos(
    "deep_dict_100k",
    lambda c: (mark() + binint1(0)) * _N + empty_dict() + dict_() * _N + stop(),
    "100,000 nested dicts {0: {0: ...}}",
    _DEPTH,
)
dos(
    "deep_list_100k_with_global",
    lambda c: proto(2) + mark() * _N + global_("__builtin__", "set") + list_() * _N + stop(),
    "100,000 nested lists around a global (takes the full path and the post-load walk)",
    _DEPTH,
)


def _memo_bomb(c: str) -> bytes:
    out = proto(2) + empty_list() + binput(0) + pop()
    for i in range(1, 41):
        out += mark() + long_binget(i - 1) + long_binget(i - 1) + list_() + long_binput(i) + pop()
    return out + long_binget(40) + stop()


def _memo_bomb_ok(v: Any) -> bool:
    node = v
    for _ in range(40):
        if type(node) is not list or len(node) != 2 or node[0] is not node[1]:
            return False
        node = node[0]
    return node == []


case(
    "memo_bomb_x40",
    _memo_bomb,
    "L[i] = [L[i-1], L[i-1]] x40: 41 real lists, 2.2e12 nodes if expanded (loads keeps sharing)",
    "dos",
    "load",
    expected_value=_memo_bomb_ok,
)


def _laughs(c: str) -> bytes:
    out = proto(2) + binunicode("a" * 1000) + binput(0) + pop()
    for i in range(1, 5):
        out += mark() + binget(i - 1) * 1000 + list_() + binput(i) + pop()
    return out + binget(4) + stop()


def _laughs_ok(v: Any) -> bool:
    node = v
    for _ in range(4):
        if type(node) is not list or len(node) != 1000 or any(x is not node[0] for x in node):
            return False
        node = node[0]
    return node == "a" * 1000


case(
    "billion_laughs",
    _laughs,
    "four levels of 1000 memo references over a 1000-char string (1e12 chars if expanded)",
    "dos",
    "load",
    expected_value=_laughs_ok,
)
dos(
    "long4_1mib",
    lambda c: proto(2) + b"\x8b" + _u32(1 << 20) + b"\x01" * ((1 << 20) - 1) + b"\x00" + stop(),
    "a 1 MiB LONG4 integer (8.4 million bits)",
    ("int", "bits", "limit", "large"),
)
dos(
    "text_long_1m_digits",
    lambda c: long_text("9" * 1_000_000) + stop(),
    "a 1,000,000-digit protocol 0 LONG",
    ("digits", "limit"),
)
dos(
    "range_1e18_p4",
    lambda c: gcall(4, "builtins", "range", 0, Raw(long1(10**18))),
    "builtins.range(0, 10**18)",
    ("range",),
)
dos(
    "xrange_py2_p2",
    lambda c: gcall(2, "__builtin__", "xrange", 0, Raw(long1(10**18))),
    "__builtin__.xrange (mapped to range)",
    ("range",),
)
dos(
    "codecs_decode_zlib_bomb_p4",
    lambda c: gcall(4, "_codecs", "decode", zlib.compress(b"\0" * (16 << 20), 9), "zlib"),
    "_codecs.decode(<16 MiB of zeros, zlib-compressed>, 'zlib')",
    ("_codecs",),
)
dos(
    "bytearray_2_36_p4",
    lambda c: gcall(4, "builtins", "bytearray", Raw(long1(2**36))),
    "builtins.bytearray(2**36): an allowed constructor with an int",
    ("bytearray",),
)
dos(
    "bytes_2_36_py2_p2",
    lambda c: gcall(2, "__builtin__", "bytes", Raw(long1(2**36))),
    "__builtin__.bytes(2**36)",
    ("bytes",),
)
dos(
    "decimal_1m_chars_p2",
    lambda c: gcall(2, "decimal", "Decimal", "9" * 1_000_000),
    "Decimal of a 1,000,000-character string",
    ("decimal",),
)
dos(
    "fraction_huge_p2",
    lambda c: gcall(2, "fractions", "Fraction", Raw(long4(1 << 400_000)), 3),
    "Fraction with a 400,000-bit numerator",
    ("fraction",),
)

# ==========================================================================
# Malformed streams


def bad(
    name: str, data: bytes, covers: str, mentions: tuple[str, ...] = ("malformed", "truncat"), **kw
):
    case(name, lambda c, d=data: d, covers, "malformed", "refuse", mentions=mentions, **kw)


bad("empty", b"", "empty value", ("empty",))
bad("proto_only", proto(4), "PROTO and nothing else", ("truncat",))
bad(
    "truncated_short_binunicode",
    proto(4) + b"\x8c\x05ab",
    "truncated inside an argument",
    ("truncat",),
)
bad("no_stop", proto(2) + empty_list(), "a value but no STOP", ("truncat",))
bad(
    "truncated_frame", proto(4) + frame_len(100) + b"N.", "FRAME longer than the data", ("truncat",)
)
bad("unknown_opcode_ff", b"\xff.", "opcode 0xff", ("malformed", "opcode", "load key"))
bad(
    "unknown_opcode_after_value",
    proto(2) + empty_list() + b"\x00.",
    "opcode 0x00 after a value",
    ("malformed", "opcode", "load key"),
)
bad("unsupported_proto_6", proto(6) + none() + stop(), "PROTO 6", ("protocol",))
bad(
    "stop_on_empty_stack", stop(), "STOP with nothing on the stack", ("underflow", "stack", "empty")
)
bad("append_underflow", append() + stop(), "APPEND on an empty stack", ("underflow", "stack"))
bad("tuple_without_mark", binint1(1) + tuple_() + stop(), "TUPLE with no MARK", ("mark",))
bad("pop_mark_without_mark", pop_mark() + stop(), "POP_MARK with no MARK", ("mark",))
bad("dup_on_empty", dup() + stop(), "DUP on an empty stack", ("underflow", "stack"))
bad(
    "mark_without_matching_pop",
    mark() + binint1(1) + stop(),
    "STOP with a MARK still open (pickle returns the top item)",
    ("mark",),
)
# The same below other values and protocols (plain pickle.loads returns the
# top item each time).
bad(
    "mark_open_p0",
    mark() + int_text(5) + mark() + list_() + put(0) + int_text(1) + append() + stop(),
    "protocol 0: a MARK left open below a list (loads [1])",
    ("mark",),
)
bad(
    "mark_open_below_dict_p2",
    proto(2) + mark() + lit({"a": [1, 2]}, 2) + stop(),
    "a MARK left open below a whole dict with a list in it",
    ("mark",),
)
bad(
    "two_marks_open_p2",
    proto(2) + empty_list() + mark() + binint1(1) + mark() + lit({"b": (1, 2)}, 2) + stop(),
    "two MARKs left open under nested values (loads {'b': (1, 2)})",
    ("mark",),
)
bad(
    "mark_open_after_tuple_p1",
    mark() + mark() + binint1(1) + binint1(2) + tuple_() + stop(),
    "the inner MARK is consumed by TUPLE, the outer one left open (loads (1, 2))",
    ("mark",),
)
bad(
    "mark_open_p4_framed",
    proto(4) + frame(mark() + empty_list() + memoize() + binint1(1) + append() + stop()),
    "protocol 4, framed: a MARK left open below a list (loads [1])",
    ("mark",),
)
bad("get_missing", get(7) + stop(), "GET of a memo index never PUT", ("memo",))
bad("binget_missing", binget(7) + stop(), "BINGET of a missing index", ("memo",))
bad(
    "long_binget_missing",
    proto(4) + long_binget(123456) + stop(),
    "LONG_BINGET of a missing index",
    ("memo",),
)
bad("bad_text_int", b"Iabc\n.", "INT with a non-number", ("malformed", "int"))
bad("bad_text_float", b"Fxyz\n.", "FLOAT with a non-number", ("malformed", "float"))
bad(
    "string_no_quotes",
    string_raw(b"abc") + stop(),
    "STRING without quotes",
    ("malformed", "quote", "string"),
)
bad(
    "string_mismatched_quotes",
    string_raw(b"'abc\"") + stop(),
    "STRING with mismatched quotes",
    ("malformed", "quote", "string"),
)
bad(
    "setitem_on_int",
    binint1(1) + binint1(2) + binint1(3) + setitem() + stop(),
    "SETITEM on an int",
    ("malformed",),
)
bad(
    "unhashable_key",
    empty_dict() + empty_list() + binint1(1) + setitem() + stop(),
    "a list as a dict key",
    ("malformed", "unhashable"),
)
bad(
    "invalid_utf8_binunicode",
    binunicode(b"ab\xff") + stop(),
    "BINUNICODE with invalid UTF-8",
    ("malformed", "utf"),
)
bad(
    "newobj_non_class",
    proto(2) + binint1(1) + empty_tuple() + newobj() + stop(),
    "NEWOBJ of an int",
    ("malformed",),
)
bad(
    "reduce_args_not_tuple",
    proto(2) + global_("__builtin__", "set") + binint1(1) + reduce() + stop(),
    "REDUCE with an int as the argument tuple",
    ("malformed", "tuple", "argument"),
)
bad(
    "build_on_int",
    binint1(1) + empty_dict() + build() + stop(),
    "BUILD on an int",
    ("malformed", "build"),
)
bad(
    "additems_on_list",
    proto(4) + empty_list() + mark() + binint1(1) + additems() + stop(),
    "ADDITEMS on a list",
    ("malformed", "add"),
)
bad(
    "stub_built_twice",
    proto(2)
    + global_("mylib", "Thing")
    + empty_tuple()
    + newobj()
    + lit({"a": 1}, 2)
    + build()
    + lit({"b": 2}, 2)
    + build()
    + stop(),
    "a second BUILD on the same stub",
    ("build",),
    audit="unknown",
)

# ==========================================================================
# Benign tricky values


def ok(name: str, data: Callable[[str], bytes], covers: str, expected: Any, **kw):
    case(name, data, covers, "benign", "load", expected_value=expected, **kw)


def stubbed(name: str, data: Callable[[str], bytes], covers: str, expected: Any, **kw):
    case(name, data, covers, "benign", "stub", expected_value=expected, **kw)


ok(
    "list_self_cycle_p2",
    lambda c: proto(2) + empty_list() + binput(0) + binget(0) + append() + stop(),
    "a list that contains itself",
    lambda v: type(v) is list and len(v) == 1 and v[0] is v,
)
ok(
    "list_self_cycle_dup_p1",
    lambda c: empty_list() + dup() + append() + stop(),
    "a list appended to itself through DUP (no memo)",
    lambda v: type(v) is list and len(v) == 1 and v[0] is v,
)
ok(
    "dict_self_cycle_p4",
    lambda c: (
        proto(4)
        + empty_dict()
        + memoize()
        + short_binunicode("self")
        + binget(0)
        + setitem()
        + stop()
    ),
    "a dict that contains itself",
    lambda v: type(v) is dict and list(v) == ["self"] and v["self"] is v,
)
ok(
    "recursive_tuple_tuple1_p2",
    lambda c: (
        proto(2)
        + empty_list()
        + binput(0)
        + binget(0)
        + tuple1()
        + binput(1)
        + append()
        + pop()
        + binget(1)
        + stop()
    ),
    "t = ([t],) with the POP + BINGET repair (protocol 2 shape)",
    lambda v: type(v) is tuple and len(v) == 1 and type(v[0]) is list and v[0][0] is v,
)
ok(
    "recursive_tuple_pop_mark_p1",
    lambda c: (
        mark()
        + empty_list()
        + binput(0)
        + mark()
        + binget(0)
        + binint1(1)
        + binint1(2)
        + tuple_()
        + binput(1)
        + append()
        + binint1(1)
        + binint1(2)
        + pop_mark()
        + binget(1)
        + stop()
    ),
    "t = ([t], 1, 2) with the POP_MARK + BINGET repair (protocol 1 shape)",
    lambda v: type(v) is tuple and len(v) == 3 and v[1:] == (1, 2) and v[0][0] is v,
)
ok(
    "shared_refs_p2",
    lambda c: (
        proto(2)
        + empty_list()
        + mark()
        + lit([1], 2)
        + binput(1)
        + binget(1)
        + lit({"k": Raw(binget(1))}, 2)
        + appends()
        + stop()
    ),
    "one list referenced three times",
    lambda v: v == [[1], [1], {"k": [1]}] and v[0] is v[1] is v[2]["k"],
)
ok(
    "shared_refs_text_put_get_p0",
    lambda c: mark() + mark() + int_text(1) + list_() + put(3) + get(3) + list_() + stop(),
    "shared list via text PUT/GET",
    lambda v: v == [[1], [1]] and v[0] is v[1],
)
ok(
    "set_p4",
    lambda c: (
        proto(4)
        + empty_set()
        + mark()
        + lit(1, 4)
        + lit("a", 4)
        + lit((1, 2), 4)
        + additems()
        + stop()
    ),
    "EMPTY_SET + ADDITEMS",
    {1, "a", (1, 2)},
)
ok(
    "frozenset_p4",
    lambda c: proto(4) + mark() + lit(1, 4) + lit("b", 4) + frozenset_() + stop(),
    "FROZENSET opcode",
    frozenset({1, "b"}),
)
ok(
    "set_py2_name_p2",
    lambda c: gcall(2, "__builtin__", "set", [1, 2]),
    "__builtin__.set([...]) (what protocol 2 writes)",
    {1, 2},
)
ok(
    "frozenset_in_set_p0",
    lambda c: (
        call(
            global_("__builtin__", "set"),
            lit([Raw(call(global_("__builtin__", "frozenset"), lit([1], 0)))], 0),
        )
        + stop()
    ),
    "a set holding a frozenset, all text opcodes",
    {frozenset({1})},
)


def _dt_state() -> bytes:
    return bytes([0x07, 0xD1, 2, 3, 4, 5, 6, 0, 0, 7])  # 2001-02-03 04:05:06.000007


def _timezone(p: int, seconds: int, name: str | None = None) -> bytes:
    td = call(glob("datetime", "timedelta", p), lit(0, p), lit(seconds, p), lit(0, p))
    args = [td] + ([lit(name, p)] if name else [])
    return call(glob("datetime", "timezone", p), *args)


ok(
    "datetime_tz_plus2_p4",
    lambda c: (
        proto(4)
        + call(glob("datetime", "datetime", 4), lit(_dt_state(), 4), _timezone(4, 7200))
        + stop()
    ),
    "datetime with a +02:00 timezone",
    datetime.datetime(2001, 2, 3, 4, 5, 6, 7, datetime.timezone(datetime.timedelta(hours=2))),
)
ok(
    "datetime_tz_named_p2",
    lambda c: (
        proto(2)
        + call(global_("datetime", "datetime"), lit(_dt_state(), 2), _timezone(2, -18000, "EST"))
        + stop()
    ),
    "datetime with a named -05:00 timezone",
    datetime.datetime(
        2001, 2, 3, 4, 5, 6, 7, datetime.timezone(datetime.timedelta(hours=-5), "EST")
    ),
)
ok(
    "time_tz_p3",
    lambda c: (
        proto(3)
        + call(
            global_("datetime", "time"),
            lit(bytes([23, 59, 58, 0x0F, 0x42, 0x3F]), 3),
            _timezone(3, 0),
        )
        + stop()
    ),
    "time 23:59:58.999999 UTC",
    datetime.time(23, 59, 58, 999999, datetime.timezone.utc),
)
ok(
    "date_codecs_encode_p0",
    lambda c: (
        call(
            global_("datetime", "date"),
            call(
                global_("_codecs", "encode"),
                unicode_text("\x07\xcf\x0c\x1f"),
                unicode_text("latin1"),
            ),
        )
        + stop()
    ),
    "date whose state is _codecs.encode(latin-1 text) (Python 3 at protocol 0)",
    datetime.date(1999, 12, 31),
)
ok(
    "timedelta_negative_p2",
    lambda c: (
        proto(2) + call(global_("datetime", "timedelta"), lit(-1, 2), lit(5, 2), lit(7, 2)) + stop()
    ),
    "negative timedelta",
    datetime.timedelta(-1, 5, 7),
)
ok(
    "decimal_p2",
    lambda c: gcall(2, "decimal", "Decimal", "1.10"),
    "Decimal('1.10') (exponent kept)",
    decimal.Decimal("1.10"),
)
ok(
    "decimal_neg_p4",
    lambda c: gcall(4, "decimal", "Decimal", "-0.050"),
    "Decimal('-0.050')",
    decimal.Decimal("-0.050"),
)
ok(
    "decimal_nan_p4",
    lambda c: gcall(4, "decimal", "Decimal", "NaN"),
    "Decimal('NaN')",
    lambda v: type(v) is decimal.Decimal and v.is_nan() and not v.is_snan(),
)
ok(
    "ordereddict_p4",
    lambda c: (
        proto(4)
        + call(glob("collections", "OrderedDict", 4))
        + mark()
        + lit("b", 4)
        + lit(1, 4)
        + lit("a", 4)
        + lit(2, 4)
        + setitems()
        + stop()
    ),
    "OrderedDict() + SETITEMS (Python 3 shape), order kept",
    collections.OrderedDict([("b", 1), ("a", 2)]),
)
ok(
    "ordereddict_pairs_p2",
    lambda c: gcall(2, "collections", "OrderedDict", [["b", 1], ["a", 2]]),
    "OrderedDict([[k, v], ...]) (Python 2 shape)",
    collections.OrderedDict([("b", 1), ("a", 2)]),
)
ok(
    "defaultdict_int_p4",
    lambda c: (
        proto(4)
        + call(glob("collections", "defaultdict", 4), glob("builtins", "int", 4))
        + lit("x", 4)
        + lit(1, 4)
        + setitem()
        + stop()
    ),
    "defaultdict(int)",
    collections.defaultdict(int, {"x": 1}),
)
ok(
    "defaultdict_list_py2_name_p2",
    lambda c: (
        proto(2)
        + call(global_("collections", "defaultdict"), global_("__builtin__", "list"))
        + lit("y", 2)
        + lit([1], 2)
        + setitem()
        + stop()
    ),
    "defaultdict(list) with the __builtin__ spelling",
    collections.defaultdict(list, {"y": [1]}),
)
ok(
    "counter_p4",
    lambda c: gcall(4, "collections", "Counter", {"a": 3}),
    "Counter({'a': 3})",
    collections.Counter({"a": 3}),
)
ok("bigint_long1_p2", lambda c: proto(2) + long1(2**1000) + stop(), "2**1000 as LONG1", 2**1000)
ok(
    "bigint_neg_long4_p2",
    lambda c: proto(2) + long4(-(3**900)) + stop(),
    "-(3**900) as LONG4",
    -(3**900),
)
ok(
    "bigint_text_p0",
    lambda c: long_text(-(10**100) - 7) + stop(),
    "a 101-digit text LONG",
    -(10**100) - 7,
)
ok(
    "int_text_bools_p0",
    lambda c: mark() + int_text("01") + int_text("00") + int_text(-5) + tuple_() + stop(),
    "I01/I00 are bools",
    (True, False, -5),
)
ok(
    "nan_inf_p4",
    lambda c: (
        proto(4)
        + mark()
        + binfloat(math.nan)
        + binfloat(math.inf)
        + binfloat(-math.inf)
        + binfloat(-0.0)
        + tuple_()
        + stop()
    ),
    "nan, inf, -inf, -0.0 as BINFLOAT",
    lambda v: (
        type(v) is tuple
        and math.isnan(v[0])
        and v[1:3] == (math.inf, -math.inf)
        and math.copysign(1, v[3]) < 0
    ),
)
ok(
    "nan_inf_text_p0",
    lambda c: (
        mark()
        + float_text("nan")
        + float_text("inf")
        + float_text("-inf")
        + float_text("-0.0")
        + list_()
        + stop()
    ),
    "nan/inf as text FLOAT",
    lambda v: (
        type(v) is list
        and math.isnan(v[0])
        and v[1:3] == [math.inf, -math.inf]
        and math.copysign(1, v[3]) < 0
    ),
)
ok(
    "tuple_keys_p4",
    lambda c: (
        proto(4)
        + lit({Raw(lit((1, 2), 4)): "a", Raw(lit(((1,), "x"), 4)): "b", Raw(lit((), 4)): "c"}, 4)
        + stop()
    ),
    "dict with tuple keys (nested and empty)",
    {(1, 2): "a", ((1,), "x"): "b", (): "c"},
)
ok(
    "frozenset_key_p4",
    lambda c: (
        proto(4)
        + empty_dict()
        + mark()
        + lit(1, 4)
        + frozenset_()
        + lit("v", 4)
        + setitem()
        + stop()
    ),
    "dict with a frozenset key",
    {frozenset({1}): "v"},
)
ok(
    "bytes_codecs_encode_p2",
    lambda c: gcall(2, "_codecs", "encode", "ab\xff", "latin1"),
    "bytes as _codecs.encode(text, 'latin1') (Python 3 at protocols 0-2)",
    b"ab\xff",
)
ok(
    "bytes_256kib_p4",
    lambda c: proto(4) + binbytes(bytes(range(256)) * 1024) + stop(),
    "256 KiB of bytes",
    bytes(range(256)) * 1024,
)
ok(
    "bytearray8_small_p5",
    lambda c: proto(5) + bytearray8(b"xyz") + stop(),
    "BYTEARRAY8",
    bytearray(b"xyz"),
)


def _depth200(v: Any) -> bool:
    for _ in range(200):
        if type(v) is not list or len(v) != 1:
            return False
        v = v[0]
    return v == []


ok(
    "depth_200_list",
    lambda c: mark() * 200 + empty_list() + list_() * 200 + stop(),
    "200 nested lists (legitimate depth)",
    _depth200,
)
ok(
    "complex_p2",
    lambda c: (
        proto(2) + call(global_("__builtin__", "complex"), binfloat(1.5), binfloat(-2.0)) + stop()
    ),
    "complex(1.5, -2.0)",
    complex(1.5, -2.0),
)
ok(
    "fraction_p4",
    lambda c: gcall(4, "fractions", "Fraction", "22/7"),
    "Fraction('22/7')",
    fractions.Fraction(22, 7),
)
ok(
    "uuid_newobj_build_p4",
    lambda c: (
        proto(4)
        + glob("uuid", "UUID", 4)
        + empty_tuple()
        + newobj()
        + lit({"int": Raw(long1(0x12345678123456781234567812345678))}, 4)
        + build()
        + stop()
    ),
    "uuid.UUID via NEWOBJ + BUILD {'int': n} (what protocol 4 writes)",
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
)
ok(
    "lone_surrogate_p4",
    lambda c: proto(4) + binunicode("a\ud800b") + stop(),
    "text with a lone surrogate (surrogatepass UTF-8)",
    "a\ud800b",
)
ok(
    "non_bmp_text_p0",
    lambda c: unicode_text("x\U0001f600\\\n") + stop(),
    "non-BMP text, backslash and newline at protocol 0",
    "x\U0001f600\\\n",
)
ok(
    "dollar_key_dict_p4",
    lambda c: proto(4) + lit({"$class": "x", "a": None}, 4) + stop(),
    "a dict with a '$' key",
    {"$class": "x", "a": None},
)
ok(
    "empty_containers_p2",
    lambda c: (
        proto(2)
        + mark()
        + empty_list()
        + empty_dict()
        + empty_tuple()
        + lit("", 2)
        + short_binbytes(b"")
        + tuple_()
        + stop()
    ),
    "empty list, dict, tuple, str, bytes",
    ([], {}, (), "", b""),
)
ok(
    "bools_none_p2",
    lambda c: proto(2) + newtrue() + newfalse() + none() + tuple3() + stop(),
    "NEWTRUE/NEWFALSE/NONE",
    (True, False, None),
)
ok(
    "mixed_key_dict_p1",
    lambda c: (
        empty_dict()
        + mark()
        + binint1(1)
        + lit("a", 1)
        + lit("1", 1)
        + lit("b", 1)
        + binfloat(1.5)
        + lit("c", 1)
        + setitems()
        + stop()
    ),
    "a dict with int, str and float keys",
    {1: "a", "1": "b", 1.5: "c"},
)
ok(
    "proto_repeated_same_p2",
    lambda c: proto(2) + proto(2) + lit([1], 2) + stop(),
    "PROTO 2 twice (same value)",
    [1],
)
stubbed(
    "stub_reduce_args_p2",
    lambda c: gcall(2, "mylib.models", "Record", 1, "x"),
    "an unknown class called with arguments (REDUCE)",
    Stub("mylib.models.Record", args=[1, "x"]),
)
stubbed(
    "stub_nested_class_p4",
    lambda c: (
        proto(4)
        + glob("mylib", "Outer.Inner", 4)
        + empty_tuple()
        + newobj()
        + lit({"a": 1}, 4)
        + build()
        + stop()
    ),
    "a nested class Outer.Inner via dotted STACK_GLOBAL + NEWOBJ + BUILD",
    Stub("mylib.Outer.Inner", state={"a": 1}),
)
stubbed(
    "stub_reconstructor_p0",
    lambda c: (
        call(
            global_("copy_reg", "_reconstructor"),
            global_("mylib", "Thing"),
            global_("__builtin__", "object"),
            none(),
        )
        + lit({"a": 1}, 0)
        + build()
        + stop()
    ),
    "copy_reg._reconstructor(Thing, object, None) + BUILD (Python 2 new-style at protocol 0)",
    Stub("mylib.Thing", state={"a": 1}),
)
stubbed(
    "stub_newobj_ex_p4",
    lambda c: (
        proto(4)
        + glob("mylib", "Thing", 4)
        + lit((1,), 4)
        + lit({"k": 2}, 4)
        + newobj_ex()
        + stop()
    ),
    "NEWOBJ_EX with args and kwargs",
    lambda v: (
        isinstance(v, Stub)
        and v.name == "mylib.Thing"
        and list(v.args)[0] == 1
        and {"k": 2} in list(v.args)
    ),
)
stubbed(
    "stub_inst_p0",
    lambda c: mark() + int_text(1) + inst("mylib", "Old") + lit({"a": 1}, 0) + build() + stop(),
    "INST of an unknown old-style class with arguments",
    Stub("mylib.Old", args=[1], state={"a": 1}),
)
stubbed(
    "stub_dict_subclass_p2",
    lambda c: (
        proto(2)
        + global_("mylib", "MyDict")
        + empty_tuple()
        + newobj()
        + lit("k", 2)
        + lit(1, 2)
        + setitem()
        + lit({"attr": "d"}, 2)
        + build()
        + stop()
    ),
    "a dict subclass (NEWOBJ, SETITEM, BUILD)",
    Stub("mylib.MyDict", state={"attr": "d"}, dictitems=[("k", 1)]),
)
stubbed(
    "stub_datetime_stub_tz_p2",
    lambda c: (
        proto(2)
        + call(
            global_("datetime", "datetime"),
            lit(_dt_state(), 2),
            call(global_("pytz", "_p"), lit("Europe/Paris", 2)),
        )
        + stop()
    ),
    "a datetime whose tzinfo is an unknown class (pytz): naive value + tz stub",
    lambda v: (
        isinstance(v, Stub)
        and v.name == "datetime.datetime"
        and list(v.args)[0] == datetime.datetime(2001, 2, 3, 4, 5, 6, 7)
        and isinstance(list(v.args)[1], Stub)
    ),
)

# ==========================================================================
# Real Python 2 pickles (fixtures/py2pickles, written by CPython 2.7.18)


def _py2(file: str) -> Callable[[str], bytes]:
    return lambda c: (PY2_DIR / file).read_bytes()


def _shared_cycle_ok(v: Any) -> bool:
    return (
        type(v) is list
        and len(v) == 5
        and v[0] == [1, 2]
        and v[0] is v[1] is v[2]["k"]
        and type(v[3]) is list
        and v[3][0] is v[3]
        and type(v[4]) is dict
        and v[4]["self"] is v[4]
    )


_BIG = 7 * 10**4999 + 3
_PY2_EXPECTED: dict[str, tuple[str, Any, str]] = {
    # group: (expect, value, covers) -- values written from fixtures/py2pickles/oracle.txt
    "strings": (
        "load",
        ["ascii", "café", b"caf\xe9", "café", "ключ", "", ""],
        "str (ASCII, UTF-8, Latin-1 -> bytes under py2_str=auto) and unicode",
    ),
    "numbers": (
        "load",
        [2**70, -(2**70), 1, 0, -1, 2**31, -(2**31) - 1, 1.5, -0.0, 1e300, True, False, None],
        "long, int, float, -0.0, bools, None",
    ),
    "datetimes": (
        "load",
        [
            datetime.datetime(2001, 2, 3, 4, 5, 6, 7),
            datetime.date(1999, 12, 31),
            datetime.time(23, 59, 58, 999999),
            datetime.timedelta(-1, 5, 7),
        ],
        "datetime, date, time (py2 str state), timedelta",
    ),
    "decimals": ("load", [decimal.Decimal("1.10"), decimal.Decimal("-0.050")], "Decimal"),
    "sets": (
        "load",
        ({"a", 1, 2}, frozenset({3, "b"}), {(1, 2): "tuple key"}),
        "set, frozenset, tuple key",
    ),
    "oldstyle": (
        "stub",
        [
            Stub("__main__.Old", state={"a": 1, "name": "x"}),
            Stub("__main__.OldArgs", args=["A-1", 3], state={"code": "A-1", "n": 3}),
        ],
        "old-style instances (INST / OBJ + BUILD, __getinitargs__)",
    ),
    "newstyle": ("stub", Stub("__main__.New", state={"a": 2}), "new-style instance"),
    "subclasses": (
        "stub",
        [
            Stub("__main__.MyDict", state={"attr": "d"}, dictitems=[("k", 1)]),
            Stub("__main__.MyList", state={"attr": "l"}, listitems=[1, 2]),
        ],
        "dict and list subclasses with an attribute",
    ),
    "ordereddict": ("load", collections.OrderedDict([("b", 1), ("a", 2)]), "OrderedDict"),
    "defaultdicts": (
        "load",
        [collections.defaultdict(int, {"x": 1}), collections.defaultdict(list, {"y": [1]})],
        "defaultdict(int) and defaultdict(list)",
    ),
    "shared_cycle": (
        "load",
        _shared_cycle_ok,
        "a list shared three times, a self-list, a self-dict",
    ),
    "biglong": (
        "load",
        [_BIG, -_BIG],
        "5000-digit longs (legitimate, above Python 3's int-string limit)",
    ),
}

for _group, (_expect, _value, _covers) in _PY2_EXPECTED.items():
    for _p in (0, 1, 2):
        case(
            f"py2_{_group}_p{_p}",
            _py2(f"{_group}_p{_p}.pkl"),
            f"Python 2.7 cPickle protocol {_p}: {_covers}",
            "py2",
            _expect,
            expected_value=_value,
        )

case(
    "py2_strings_p2_bytes_mode",
    _py2("strings_p2.pkl"),
    "Python 2 str kept as bytes with py2_str='bytes'",
    "py2",
    "load",
    expected_value=[b"ascii", b"caf\xc3\xa9", b"caf\xe9", "café", "ключ", b"", ""],
    kwargs={"py2_str": "bytes"},
)
case(
    "py2_strings_p0_latin1_mode",
    _py2("strings_p0.pkl"),
    "Python 2 str decoded as Latin-1 with py2_str='latin1' (mojibake for UTF-8 str)",
    "py2",
    "load",
    expected_value=["ascii", "caf\xc3\xa9", "café", "café", "ключ", "", ""],
    kwargs={"py2_str": "latin1"},
)
case(
    "py2_datetimes_p2_bytes_mode",
    _py2("datetimes_p2.pkl"),
    "Python 2 datetime state read with py2_str='bytes'",
    "py2",
    "load",
    expected_value=_PY2_EXPECTED["datetimes"][1],
    kwargs={"py2_str": "bytes"},
)

# ==========================================================================
# Audit expectations that differ from the kind's default, and what the audit lacks
#
# The audit's documented policy: "unreadable" for a malformed or truncated stream
# or one over a limit; "dangerous" for gadgets and refused features.  A record the
# loader refuses must never be "safe".

_NO_LIMIT = "the audit applies no {} limit on plain data (says safe; the loader refuses)"
_STRUCT = "the audit does not check stack/memo/argument structure on plain data (says safe)"
_AUDIT: dict[str, tuple[str, str | None]] = {
    # declared lengths past the end of the data: unreadable
    **{
        n: ("unreadable", None)
        for n in (
            "binstring_huge_len",
            "short_binstring_255_short",
            "binunicode_huge_len",
            "short_binunicode_255_short",
            "binunicode8_2_40",
            "binunicode8_2_62",
            "binbytes_huge_len",
            "short_binbytes_255_short",
            "binbytes8_2_62",
            "binbytes8_256mib_declared",
            "bytearray8_2_62",
            "bytearray8_256mib_declared",
            "long1_255_short",
            "long4_2_31",
        )
    },
    "frame_2_40": ("unreadable", None),
    "frame_2_62": ("unreadable", None),
    "frame_256mib_declared": ("unreadable", None),
    "truncated_frame": ("unreadable", None),
    "memo_long_binput_2_31": ("unreadable", None),
    "memo_long_binput_2_32_minus_16": ("unreadable", None),
    "memo_put_1e9": ("unreadable", None),
    "memo_long_binput_2_24": ("unreadable", None),
    "deep_list_100k": ("unreadable", None),
    "deep_tuple_100k": ("unreadable", None),
    "deep_dict_100k": ("unreadable", None),
    "deep_list_100k_with_global": ("unreadable", None),
    # sharing is kept by the loader: not a finding of its own
    "memo_bomb_x40": ("safe", None),
    "billion_laughs": ("safe", None),
    "long4_1mib": ("unreadable", None),
    "text_long_1m_digits": ("unreadable", None),
    **{
        n: ("dangerous", None)
        for n in (
            "bytearray_2_36_p4",
            "bytes_2_36_py2_p2",
            "decimal_1m_chars_p2",
            "fraction_huge_p2",
        )
    },
    "defaultdict_factory_replaced_by_build_p2": ("dangerous", None),
    "ordereddict_instance_attrs_p2": ("dangerous", None),
    "setitem_on_list_p2": ("dangerous", None),
    "appends_on_bytearray_p5": ("dangerous", None),
    **{
        n: ("unreadable", None)
        for n in (
            "append_underflow",
            "tuple_without_mark",
            "pop_mark_without_mark",
            "dup_on_empty",
            "mark_without_matching_pop",
            "setitem_on_int",
            "unhashable_key",
            "build_on_int",
            "additems_on_list",
        )
    },
    **{
        n: ("unreadable", None)
        for n in (
            "bad_text_int",
            "bad_text_float",
            "string_no_quotes",
            "string_mismatched_quotes",
            "invalid_utf8_binunicode",
        )
    },
    "get_missing": ("unreadable", None),
    "binget_missing": ("unreadable", None),
    "long_binget_missing": ("unreadable", None),
    "proto_only": ("unreadable", None),
    "no_stop": ("unreadable", None),
    "newobj_non_class": ("unreadable", None),
    "reduce_args_not_tuple": ("unreadable", None),
}
for _i, _c in enumerate(CASES):
    if _c.name in _AUDIT:
        _verdict, _why = _AUDIT.pop(_c.name)
        CASES[_i] = dataclasses.replace(_c, audit=_verdict, audit_xfail=_why)
assert not _AUDIT, f"audit expectations for unknown cases: {sorted(_AUDIT)}"

#: names of the cases, in order (unique)
NAMES = [c.name for c in CASES]
assert len(set(NAMES)) == len(NAMES), "duplicate case names"
