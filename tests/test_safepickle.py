"""Tests for the allowlist unpickler (shelfmigrate.codecs.safepickle).

Hostile pickles are built opcode by opcode.  Each code-execution payload's only
effect, if it ever ran, would be to create a canary file in ``tmp_path``;
``test_payloads_are_live`` proves (in a subprocess, with plain ``pickle.loads``)
that they really would, so the refusals below are meaningful.
"""

from __future__ import annotations

import collections
import contextlib
import copyreg
import datetime
import decimal
import fractions
import io
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pickle_mutations import STRUCTURAL, mutated_pickles

from shelfmigrate.codecs import pickle_scan
from shelfmigrate.codecs import safepickle as sp
from shelfmigrate.codecs.safepickle import (
    DEFAULT_ALLOWLIST,
    GADGETS,
    SafeUnpickler,
    is_python2,
    load_stream,
    loads,
    protocol_of,
)
from shelfmigrate.errors import DecodeError, ShelfmigrateError, UnsafePickleError, UsageError
from shelfmigrate.stubs import Stub

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)

# --------------------------------------------------------------------------
# Building pickles by hand


def su(text: str | bytes) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode() if isinstance(text, str) else text
    return b"\x8c" + bytes([len(raw)]) + raw


def uni(text: str | bytes) -> bytes:
    """BINUNICODE."""
    raw = text.encode() if isinstance(text, str) else text
    return b"X" + struct.pack("<I", len(raw)) + raw


def sglobal(module: str, name: str) -> bytes:
    """STACK_GLOBAL of two SHORT_BINUNICODE strings (protocol 4)."""
    return su(module) + su(name) + b"\x93"


def glob(module: str, name: str) -> bytes:
    """GLOBAL (text form, any protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


P2 = b"\x80\x02"
P4 = b"\x80\x04"


def hostile_payloads(canary: Path) -> dict[str, bytes]:
    """Payloads whose only effect, if run by plain pickle, is to create ``canary``."""
    touch = f"touch {canary}"
    code = f"open({str(canary)!r}, 'w').close()"
    inner = glob("os", "system") + b"(" + uni(touch) + b"tR."
    return {
        "GLOBAL os.system": glob("os", "system") + b"(" + uni(touch) + b"tR.",
        "STACK_GLOBAL os.system": P4 + sglobal("os", "system") + su(touch) + b"\x85R.",
        "GLOBAL posix.system": glob("posix", "system") + b"(" + uni(touch) + b"tR.",
        "INST os.system": b"(" + uni(touch) + b"ios\nsystem\n.",
        "OBJ posix.system": P2 + b"(" + glob("posix", "system") + uni(touch) + b"o.",
        "__builtin__.eval": glob("__builtin__", "eval") + b"(" + uni(code) + b"tR.",
        "commands.getoutput": glob("commands", "getoutput") + b"(" + uni(touch) + b"tR.",
        "dotted protocol-4 builtins getattr": P4
        + sglobal("builtins", "print.__self__.getattr")
        + sglobal("fnmatch", "os")
        + su("system")
        + b"\x86R"
        + su(touch)
        + b"\x85R.",
        "dotted protocol-4 fnmatch os.system": P4
        + sglobal("fnmatch", "os.system")
        + su(touch)
        + b"\x85R.",
        "uuid UUID.__init__.__globals__": P4
        + sglobal("uuid", "UUID.__init__.__globals__.get")
        + su("_get_command_stdout")
        + b"\x85R"
        + su("touch")
        + su(str(canary))
        + b"\x86R.",
        "copy_reg._reconstructor with a Popen base": glob("copy_reg", "_reconstructor")
        + b"("
        + glob("subprocess", "Popen")
        + glob("subprocess", "Popen")
        + b"(l"
        + uni("touch")
        + b"a"
        + uni(str(canary))
        + b"atR.",
        "nested cPickle.loads": P2
        + glob("cPickle", "loads")
        + b"C"
        + bytes([len(inner)])
        + inner
        + b"\x85R.",
    }


# the error each payload gets (all are UnsafePickleError)
HOSTILE_MESSAGES = {
    "GLOBAL os.system": "refused global os.system: runs a shell command",
    "STACK_GLOBAL os.system": "refused global os.system: runs a shell command",
    "GLOBAL posix.system": "refused global posix.system: runs a shell command",
    "INST os.system": "refused global os.system: runs a shell command",
    "OBJ posix.system": "refused global posix.system",
    "__builtin__.eval": "refused global __builtin__.eval (read as builtins.eval): evaluates",
    "commands.getoutput": "refused global commands.getoutput (read as subprocess.getoutput)",
    "dotted protocol-4 builtins getattr": "refused global builtins.print.__self__.getattr",
    "dotted protocol-4 fnmatch os.system": "refused global fnmatch.os.system",
    "uuid UUID.__init__.__globals__": "refused global uuid.UUID.__init__.__globals__.get: dunder",
    "copy_reg._reconstructor with a Popen base": "refused global subprocess.Popen: runs programs",
    "nested cPickle.loads": "refused global cPickle.loads (read as pickle.loads): nested",
}


# --------------------------------------------------------------------------
# Comparing results exactly (types, nan, cycles)


def same(a: Any, b: Any) -> bool:
    """Deep equality with exact types, nan == nan, -0.0 != 0.0, order of dicts, cycles."""
    stack = [(a, b)]
    seen: set[tuple[int, int]] = set()
    while stack:
        x, y = stack.pop()
        if isinstance(x, Stub) and isinstance(y, Stub):  # per-name subclasses of Stub
            if x.name != y.name:
                return False
            stack.extend(
                (getattr(x, f), getattr(y, f)) for f in ("args", "state", "listitems", "dictitems")
            )
            continue
        if type(x) is not type(y):
            return False
        key = (id(x), id(y))
        if key in seen:
            continue
        seen.add(key)
        t = type(x)
        if t is float:
            if math.isnan(x) or math.isnan(y):
                if not (math.isnan(x) and math.isnan(y)):
                    return False
            elif x != y or math.copysign(1, x) != math.copysign(1, y):
                return False
        elif t in (list, tuple):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif t in (dict, collections.OrderedDict, collections.Counter, collections.defaultdict):
            if list(x) != list(y):
                return False
            if t is collections.defaultdict and x.default_factory is not y.default_factory:
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif t is decimal.Decimal:
            if str(x) != str(y):  # NaN, -0 and the exponent all count
                return False
        elif t is datetime.datetime or t is datetime.time:
            if x != y or x.fold != y.fold or x.tzinfo != y.tzinfo:
                return False
        elif x != y:
            return False
    return True


def trusted(value: Any, protocol: int) -> tuple[Any, Any]:
    data = pickle.dumps(value, protocol)
    return loads(data), pickle.loads(data)


# --------------------------------------------------------------------------
# Benign values load exactly like pickle.loads


def _cycle_list() -> list[Any]:
    lst: list[Any] = [1]
    lst.append(lst)
    return lst


def _cycle_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def _recursive_tuple() -> tuple[Any, ...]:
    inner: list[Any] = []
    t = (inner, 1)
    inner.append(t)
    return t


BENIGN = {
    "scalars": [
        None,
        True,
        False,
        0,
        -1,
        2**1000,
        -(2**64),
        1.5,
        -0.0,
        "",
        "text é \u20ac \U0001f600",
    ],
    "specials": [float("nan"), float("inf"), float("-inf"), 1e308, 5e-324],
    "bytes": [b"", b"\x00\xff" * 10, bytearray(b"ab\xff"), b"x" * 300],
    "containers": [[], {}, (), set(), frozenset(), [[1, [2, [3]]]], {"a": {"b": {}}}],
    "tuple keys": {(1, "a"): 1, (2, (3, frozenset({4}))): 2, frozenset({"x"}): 3},
    "sets": [{1, 2, "a"}, frozenset({1, frozenset({2})}), {(1, 2), b"x"}],
    "shared": (lambda s: [s, s, {"k": s}])([1, 2]),
    "cycle list": _cycle_list(),
    "cycle dict": _cycle_dict(),
    "recursive tuple": _recursive_tuple(),
    "datetimes": [
        datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
        datetime.datetime(1, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(2021, 3, 4, tzinfo=datetime.timezone.utc),
        datetime.datetime(
            2021, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=-5), "EST")
        ),
        datetime.datetime(2021, 11, 7, 1, 30, fold=1),
        datetime.date(2000, 2, 29),
        datetime.time(23, 59, 59, 999999),
        datetime.time(1, 2, tzinfo=datetime.timezone(datetime.timedelta(minutes=90))),
        datetime.timedelta(days=-3, seconds=5, microseconds=7),
        datetime.timezone.utc,
    ],
    "numbers": [
        decimal.Decimal("3.14159"),
        decimal.Decimal("-0"),
        decimal.Decimal("NaN"),
        decimal.Decimal("1E+999999"),
        fractions.Fraction(-7, 3),
        complex(1.5, -2),
        complex(float("inf"), 0),
    ],
    "collections": [
        collections.OrderedDict([("b", 1), ("a", [2])]),
        collections.defaultdict(list, {"k": [1]}),
        collections.defaultdict(int),
        collections.defaultdict(None, {"x": 1}),
        collections.defaultdict(collections.OrderedDict),
        collections.Counter("abracadabra"),
    ],
    "uuid and ellipsis": [uuid.UUID("12345678-1234-5678-1234-567812345678"), ...],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(BENIGN))
def test_benign_values_load_exactly(case: str, protocol: int) -> None:
    ours, theirs = trusted(BENIGN[case], protocol)
    assert same(ours, theirs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_is_kept(protocol: int) -> None:
    s = [1]
    when = datetime.datetime(2020, 1, 1)
    value = {"a": s, "b": s, "when": [when, when], "od": collections.OrderedDict(x=s)}
    value["self"] = value
    out = loads(pickle.dumps(value, protocol))
    assert out["a"] is out["b"] is out["od"]["x"]
    assert out["self"] is out
    assert out["when"][0] is out["when"][1]
    cyc = loads(pickle.dumps(_recursive_tuple(), protocol))
    assert cyc[0][0] is cyc


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cycles_through_allowlisted_containers(protocol: int) -> None:
    od: collections.OrderedDict[str, Any] = collections.OrderedDict(a=1)
    od["me"] = od
    dd: collections.defaultdict[str, Any] = collections.defaultdict(list)
    dd["me"] = [dd]
    out = loads(pickle.dumps([od, dd, datetime.date(2000, 1, 1)], protocol))
    assert type(out[0]) is collections.OrderedDict and out[0]["me"] is out[0]
    assert type(out[1]) is collections.defaultdict and out[1]["me"][0] is out[1]


def test_result_types_are_exact() -> None:
    for protocol in PROTOCOLS:
        for value in (
            BENIGN["datetimes"] + BENIGN["numbers"] + BENIGN["collections"] + BENIGN["bytes"]
        ):
            out = loads(pickle.dumps(value, protocol))
            assert type(out) is type(value), (protocol, value)
        out = loads(pickle.dumps(uuid.UUID(int=5), protocol))
        assert type(out) is uuid.UUID and out.int == 5


def _deep_variants(depth: int) -> list[bytes]:
    return [
        P4 + b"]" * depth + b"a" * (depth - 1) + b".",  # stacked lists
        # a global at the bottom (full path and the post-load walk)
        P4 + b"]" * depth + glob("datetime", "timedelta") + b")R" + b"a" * depth + b".",
        # nested tuples around a non-ASCII Python 2 str (the marker walk)
        P2 + b"U\x02\xc3\xa9" + b"\x85" * depth + b".",
        b"(" * depth + b")" + b"t" * depth + b".",  # MARK ... TUPLE
        (b"(K\x00") * depth + b"}" + b"d" * depth + b".",  # MARK ... DICT
    ]


def test_deep_nesting_loads_up_to_the_limit_without_recursion() -> None:
    depth = 999  # a legitimate deep value (the corpus has depth 200)
    out = loads(P4 + b"]" * depth + b"a" * (depth - 1) + b".")
    n = 0
    while out:
        out = out[0]
        n += 1
    assert n == depth - 1
    out = loads(P2 + b"U\x02\xc3\xa9" + b"\x85" * depth + b".")
    for _ in range(depth):
        assert type(out) is tuple
        out = out[0]
    assert out == "\u00e9"
    depth = 990  # the arguments of a global count as a level too (a stub keeps them)
    out = loads(P4 + b"]" * depth + glob("datetime", "timedelta") + b")R" + b"a" * depth + b".")
    for _ in range(depth):
        out = out[0]
    assert out == datetime.timedelta(0)


@pytest.mark.parametrize("variant", range(5))
def test_deep_nesting_is_refused_quickly(variant: int) -> None:
    data = _deep_variants(100_000)[variant]
    started = time.perf_counter()
    with pytest.raises(
        DecodeError, match=r"nested too deeply: .*more than \d+ levels .*depth limit"
    ):
        loads(data)
    assert time.perf_counter() - started < 20.0  # a hang guard, not a speed test


def test_deep_tuple_is_refused_before_it_is_hashed() -> None:
    """Hashing a 1,000,000-deep tuple (a dict key) overflows the C stack: refused before loading."""
    data = P2 + b"}N" + b"\x85" * 1_000_000 + b"K\x01s."
    with pytest.raises(DecodeError, match="TUPLE1 at offset 1004 .*depth limit"):
        loads(data)


def test_deep_nesting_through_the_memo_is_checked_after_loading() -> None:
    """Lists filled after they were put into their parent (memo): the loaded value is walked."""
    n = 2500
    out = P4 + b"".join(b"]r" + i.to_bytes(4, "little") + b"0" for i in range(n))
    for i in range(n - 1):  # list i gets list i+1 while list i+1 is still empty
        out += b"j" + i.to_bytes(4, "little") + b"j" + (i + 1).to_bytes(4, "little") + b"a0"
    data = out + b"j\x00\x00\x00\x00."
    with pytest.raises(DecodeError, match="nested too deeply: more than 2000 levels"):
        loads(data)  # (plain values: marshal's limit)
    # the same shape within the limit loads
    n = 900
    out = P4 + b"".join(b"]r" + i.to_bytes(4, "little") + b"0" for i in range(n))
    for i in range(n - 1):
        out += b"j" + i.to_bytes(4, "little") + b"j" + (i + 1).to_bytes(4, "little") + b"a0"
    value = loads(out + b"j\x00\x00\x00\x00.")
    for _ in range(n - 1):
        value = value[0]
    assert value == []


# --------------------------------------------------------------------------
# Hostile pickles


@pytest.mark.parametrize("name", sorted(HOSTILE_MESSAGES))
@pytest.mark.parametrize("stubs", [True, False])
def test_hostile_payloads_are_refused(name: str, stubs: bool, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = hostile_payloads(canary)[name]
    for py2_str in sp.PY2_STR_MODES:
        with pytest.raises(UnsafePickleError) as info:
            loads(data, stubs=stubs, py2_str=py2_str)
        assert HOSTILE_MESSAGES[name] in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(UnsafePickleError):
        list(load_stream(io.BytesIO(data)))
    assert not canary.exists()


def test_payloads_are_live(tmp_path: Path) -> None:
    """Control: plain pickle.loads really runs each payload (in a child process)."""
    canary = tmp_path / "canary"
    for name, data in hostile_payloads(canary).items():
        if canary.exists():
            canary.unlink()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1]))",
                data.hex(),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert canary.exists(), f"payload {name!r} is not live"


def _build_on_stub_class(state: bytes) -> bytes:
    return P4 + sglobal("mymod", "Thing") + state + b"b."


@pytest.mark.parametrize(
    "data",
    [
        _build_on_stub_class(b"}" + su("pwned") + su("x") + b"s"),  # dict state -> __dict__
        _build_on_stub_class(b"N}" + su("__new__") + su("x") + b"s\x86"),  # slot state -> setattr
        _build_on_stub_class(b"N}" + su("global_name") + su("os.system") + b"s\x86"),
        P2 + glob("builtins", "set") + b"}b.",  # BUILD on an allowlisted class
        P2 + glob("_codecs", "encode") + b"}b.",  # BUILD on an allowlisted function
        P2 + glob("__builtin__", "int") + b"N}" + su("x") + b"K\x01s\x86b.",  # on a reference
    ],
)
def test_build_on_globals_is_refused(data: bytes) -> None:
    with pytest.raises(UnsafePickleError, match="refused BUILD on global"):
        loads(data)
    cls = sp.stub_class("mymod.Thing")
    assert "pwned" not in cls.__dict__ and cls.global_name == "mymod.Thing"
    assert cls.__new__ is sp.stub_class("mymod.Thing").__new__
    assert loads(P4 + sglobal("mymod", "Thing") + b")\x81.") == Stub("mymod.Thing")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (P2 + glob("mymod", "Thing") + b"K\x01a.", "refused APPEND/APPENDS on global mymod.Thing"),
        (
            P2 + glob("__builtin__", "set") + b"(K\x01e.",
            "refused APPEND/APPENDS on global builtins.set",
        ),
        (P2 + glob("__builtin__", "int") + b"(K\x01tR.", "refused call of builtins.int"),
        (P2 + glob("__builtin__", "object") + b")R.", "refused call of builtins.object"),
    ],
)
def test_container_ops_and_calls_on_globals_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(UnsafePickleError, match=message):
        loads(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # BUILD on objects the stand-ins made: checked after the load
        (
            P2 + glob("collections", "OrderedDict") + b")R}" + uni("keys") + b"K\x01sb.",
            "OrderedDict: it takes no state",
        ),
        (
            P2 + glob("collections", "Counter") + b")RN}" + uni("x") + b"K\x01s\x86b.",
            "Counter: it takes no state",
        ),
        (
            P2 + glob("collections", "defaultdict") + glob("__builtin__", "list") + b"\x85R"
            b"N}" + uni("default_factory") + glob("mymod", "Factory") + b"s\x86b.",
            "default_factory replaced",
        ),
        (
            P2
            + glob("fractions", "Fraction")
            + b"K\x01K\x03\x86RN}"
            + uni("_numerator")
            + uni("x")
            + b"s\x86b.",
            "fractions.Fraction was given state",
        ),
        (P2 + glob("uuid", "UUID") + b")\x81.", "never got its state"),
        (
            P2 + glob("uuid", "UUID") + b")\x81}" + uni("int") + uni("x") + b"sb.",
            "int must be an integer",
        ),
        (
            P2
            + glob("uuid", "UUID")
            + b")\x81}"
            + uni("int")
            + b"\x8a\x11"
            + b"\x00" * 16
            + b"\x01sb.",
            "int must be",
        ),
        (
            P2
            + glob("uuid", "UUID")
            + b")\x81}"
            + uni("int")
            + b"K\x01sb}"
            + uni("int")
            + b"K\x02sb.",
            "BUILD applied twice",
        ),
        (P2 + glob("uuid", "UUID") + b"K\x01\x85R.", "only NEWOBJ"),
        (
            P2 + glob("datetime", "date") + b"C\x04\x07\xd0\x01\x01\x85R}b.",
            "no attribute '__dict__'",
        ),
        # argument validators
        (
            P2 + glob("__builtin__", "bytearray") + b"\x8a\x05\x00\x00\x00\x00\x10\x85R.",
            "refused argument of type int",
        ),
        (
            P2 + glob("__builtin__", "bytes") + b"J\x00\x00\x00\x10\x85R.",
            "refused argument of type int",
        ),
        (
            P2 + glob("_codecs", "encode") + uni("x") + uni("zlib") + b"\x86R.",
            "only the latin-1 codec",
        ),
        (P2 + glob("_codecs", "encode") + uni("x") + b"\x85R.", "called with 1 arguments"),
        (P2 + glob("__builtin__", "set") + uni("abc") + b"\x85R.", "expected a list of members"),
        (P2 + glob("__builtin__", "complex") + uni("1+2j") + b"\x85R.", "expected numbers"),
        (P2 + glob("datetime", "datetime") + b"C\x03abc\x85R.", "state must be 10 bytes"),
        (
            P2
            + glob("datetime", "datetime")
            + b"C\x0a\x07\xd0\x0d\x01\x00\x00\x00\x00\x00\x00\x85R.",
            "month must be",
        ),
        (P2 + glob("datetime", "date") + b"C\x04\x07\xd0\x02\x1e\x85R.", "day is out of range"),
        (
            P2
            + glob("datetime", "datetime")
            + b"C\x0a\x07\xd0\x01\x01\x00\x00\x00\x00\x00\x00K\x01\x86R.",
            "tzinfo must be",
        ),
        (P2 + glob("decimal", "Decimal") + uni("1" * 20_000) + b"\x85R.", "over the 10000 cap"),
        (P2 + glob("decimal", "Decimal") + uni("x") + b"\x85R.", "InvalidOperation"),
        (P2 + glob("fractions", "Fraction") + b"K\x01K\x00\x86R.", "ZeroDivisionError"),
        (P2 + glob("collections", "OrderedDict") + b"]K\x01a\x85R.", "expected [key, value] pairs"),
        (P2 + glob("collections", "Counter") + b"]\x85R.", "expected a dict of counts"),
        (
            P2 + glob("collections", "defaultdict") + glob("mymod", "Factory") + b"\x85R.",
            "refused default factory mymod.Factory",
        ),
        (
            P2 + glob("collections", "defaultdict") + glob("__builtin__", "set") + b"]\x86R.",
            "expected a dict of items",
        ),
        (
            P2
            + glob("copy_reg", "_reconstructor")
            + b"("
            + glob("mymod", "T")
            + glob("mymod", "Base")
            + b"Nt"
            + b"R.",
            "refused base mymod.Base",
        ),
        (
            P2
            + glob("copy_reg", "_reconstructor")
            + b"("
            + glob("mymod", "T")
            + glob("__builtin__", "dict")
            + b"]tR.",
            "dict base needs a dict",
        ),
        (
            P2
            + glob("copy_reg", "_reconstructor")
            + b"("
            + glob("mymod", "T")
            + glob("__builtin__", "object")
            + b"K\x01tR.",
            "object base with a state",
        ),
        (
            P2
            + glob("copy_reg", "_reconstructor")
            + b"("
            + glob("decimal", "Decimal")
            + glob("__builtin__", "object")
            + b"NtR.",
            "refused class decimal.Decimal",
        ),
        # a second BUILD on a stub
        (
            P2 + glob("mymod", "T") + b")\x81}b}b.",
            "BUILD applied twice to an object of class mymod.T",
        ),
        # names that are refused even as stubs
        (P4 + sglobal("fnmatch", "os") + b".", "attribute reaches module 'os'"),
        (
            P4 + sglobal("pathlib", "Path.write_text") + b".",
            "refused global pathlib.Path.write_text",
        ),
        (P4 + sglobal("mymod", "Thing.method") + b".", "protocol-4 attribute walk to 'method'"),
        (P4 + sglobal("mymod", "Thing._hidden") + b".", "private name '_hidden'"),
        (P4 + sglobal("__main__", "__builtins__") + b".", "dunder attribute '__builtins__'"),
        (P4 + sglobal("builtins", "ValueError.Inner") + b".", "attribute walk under builtins"),
        (P2 + glob("_posixsubprocess", "fork_exec") + b".", "private interpreter module"),
        (P2 + glob("pkg.__main__", "Thing") + b".", "dunder module segment"),
        (P2 + glob("copy_reg", "__newobj__") + b".", "refused global copy_reg.__newobj__"),
        (P2 + glob("copy_reg", "add_extension") + b".", "mutates the pickle registry"),
        (
            P2 + glob("_codecs", "decode") + uni("x") + uni("zlib") + b"\x86R.",
            "refused global _codecs.decode",
        ),
        (
            P2
            + glob("__builtin__", "xrange")
            + b"K\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x10\x86R.",
            "refused global __builtin__.xrange (read as builtins.range)",
        ),
        (
            P2 + glob("__builtin__", "getattr") + b".",
            "refused global __builtin__.getattr (read as builtins.getattr)",
        ),
        (P2 + glob("uuid", "getnode") + b")R.", "refused global uuid.getnode"),
        (P2 + glob("io", "open") + b".", "refused global io.open"),
        (P2 + glob("__builtin__", "file") + b".", "opens files"),
    ],
)
def test_refused(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)) as info:
        loads(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty value"),
        (pickle.dumps(1, 4) + b"x", "trailing data: 1 bytes after STOP at offset 5"),
        (pickle.dumps([1.5], 0) + pickle.dumps(2, 0), "trailing data"),
        (pickle.dumps({"a": "x" * 100}, 4) + b".", "trailing data"),
        (pickle.dumps({"a": "x" * 100}, 4)[:-10], "truncated pickle"),
        (pickle.dumps([1, 2], 0)[:-1], "truncated pickle"),
        (b"\x80\x04\xff.", "invalid load key"),
        (b"P1\n.", "refused persistent id"),
        (P2 + b"K\x01Q.", "refused persistent id"),
        (P2 + b"\x82\x01.", "unregistered extension code"),
        (b"\x80\x05\x97.", "out-of-band"),
        (
            b"\x8e" + struct.pack("<Q", 2**62) + b"xx.",
            "truncated pickle: BINBYTES8 at offset 0 declares 4611686018427387904 bytes "
            "but only 3 remain",
        ),
        (b"I" + b"9" * 5000 + b"\n.", "malformed pickle"),
        (b".", "stack underflow"),
        (P2 + glob("mymod", "N-ame") + b".", "invalid global name"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        loads(data)
    assert "\n" not in str(info.value)
    assert type(info.value) is DecodeError


def test_bytes_after_stop_never_run(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    payload = hostile_payloads(canary)["GLOBAL os.system"]
    for protocol in PROTOCOLS:
        with pytest.raises(DecodeError, match="trailing data"):
            loads(pickle.dumps([1.5, "a.b"], protocol) + payload)
    assert not canary.exists()


def test_extension_codes_go_through_the_allowlist() -> None:
    """EXT codes resolve through find_class, and copyreg's cache is never trusted."""
    code = 0x7FFFFFF0
    copyreg.add_extension("os", "system", code)
    try:
        data = P2 + b"\x84" + struct.pack("<i", code) + b"."
        with pytest.raises(UnsafePickleError, match="refused global os.system"):
            loads(data)
        copyreg._extension_cache[code] = os.system  # as another unpickler would leave it
        with pytest.raises(UnsafePickleError, match="refused global os.system"):
            loads(data)
    finally:
        copyreg.remove_extension("os", "system", code)
        copyreg._extension_cache.clear()


def test_gadget_cannot_be_allowed() -> None:
    with pytest.raises(UnsafePickleError, match="refused global os.system"):
        loads(glob("os", "system") + b".", allow=["os.system"])


def test_allow_imports_trusted_names() -> None:
    data = pickle.dumps(collections.deque([1, 2], maxlen=5), 2)
    stub = loads(data)
    assert isinstance(stub, Stub) and stub.name == "collections.deque"
    real = loads(data, allow=["collections.deque"])
    assert type(real) is collections.deque and list(real) == [1, 2] and real.maxlen == 5
    with pytest.raises(DecodeError, match="cannot be loaded"):
        loads(glob("collections", "NoSuchThing") + b".", allow=["collections.NoSuchThing"])


def test_stubs_false() -> None:
    data = P2 + glob("mymod", "Thing") + b")\x81."
    with pytest.raises(
        DecodeError, match=r"class mymod.Thing is not allowed \(use --allow mymod.Thing or stubs\)"
    ) as info:
        loads(data, stubs=False)
    assert type(info.value) is DecodeError
    # allowlisted classes still load
    assert loads(pickle.dumps(datetime.date(2000, 1, 1), 2), stubs=False) == datetime.date(
        2000, 1, 1
    )


def test_bad_options() -> None:
    with pytest.raises(UsageError):
        SafeUnpickler(py2_str="utf8")
    with pytest.raises(UsageError):
        SafeUnpickler(allow=["nodot"])
    with pytest.raises(TypeError):
        loads("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Stubs


def test_stub_from_reduce_newobj_inst_obj() -> None:
    cases = {
        P2 + glob("mymod", "Thing") + b"(K\x01K\x02tR.": Stub("mymod.Thing", args=[1, 2]),
        P2 + glob("mymod", "Thing") + b")R.": Stub("mymod.Thing"),
        P2 + glob("mymod", "Thing") + b"K\x01\x85\x81.": Stub("mymod.Thing", args=[1]),
        P2 + glob("mymod", "Thing") + b")\x81.": Stub("mymod.Thing"),
        b"(K\x01imymod\nThing\n.": Stub("mymod.Thing", args=[1]),
        b"(imymod\nThing\n.": Stub("mymod.Thing"),
        P2 + b"(" + glob("mymod", "Thing") + b"K\x01o.": Stub("mymod.Thing", args=[1]),
        P2 + b"(" + glob("mymod", "Thing") + b"o.": Stub("mymod.Thing"),
        P4 + sglobal("mymod", "Outer.Inner") + b")\x81.": Stub("mymod.Outer.Inner"),
        P4 + sglobal("mymod", "Thing") + b"K\x01\x85}" + su("k") + b"K\x02s\x92.": Stub(
            "mymod.Thing", args=[1, {"k": 2}]
        ),
    }
    for data, expected in cases.items():
        out = loads(data)
        assert isinstance(out, Stub) and out == expected, (data, out)
        assert type(out.name) is str
    out = loads(P4 + sglobal("mymod", "Thing") + b")}" + su("k") + b"K\x02s\x92.")
    assert out.args == [{"k": 2}] and out.kwargs == {"k": 2}


def test_stub_state_and_items() -> None:
    data = (
        P2
        + glob("mymod", "Thing")
        + b")\x81"
        + b"K\x01a(K\x02K\x03e"  # APPEND, APPENDS
        + uni("a")
        + b"K\x04s(K\x05K\x06u"  # SETITEM, SETITEMS
        + b"}"
        + uni("x")
        + b"K\x07sb."  # BUILD
    )
    assert loads(data) == Stub(
        "mymod.Thing", state={"x": 7}, listitems=[1, 2, 3], dictitems=[["a", 4], [5, 6]]
    )


def test_stub_from_reconstructor() -> None:
    def rec(base: str, state: bytes) -> bytes:
        return (
            glob("copy_reg", "_reconstructor")
            + b"("
            + glob("mymod", "T")
            + glob("__builtin__", base)
            + state
            + b"tR."
        )

    assert loads(rec("object", b"N")) == Stub("mymod.T")
    assert loads(rec("dict", b"(dS'a'\nI1\ns")) == Stub("mymod.T", dictitems=[["a", 1]])
    assert loads(rec("list", b"(lI1\na")) == Stub("mymod.T", listitems=[1])
    assert loads(rec("long", b"L5L\n")) == Stub("mymod.T", args=[5])
    assert loads(rec("unicode", b"Vx\n")) == Stub("mymod.T", args=["x"])
    assert loads(rec("tuple", b"(I1\nt")) == Stub("mymod.T", args=[(1,)])


def test_class_reference_as_value() -> None:
    cls = loads(P2 + glob("mymod", "Thing") + b".")
    assert isinstance(cls, type) and issubclass(cls, Stub) and cls.global_name == "mymod.Thing"
    assert loads(P2 + glob("__builtin__", "set") + b".") is set
    assert loads(P2 + glob("__builtin__", "long") + b".") is int
    assert loads(P2 + glob("datetime", "datetime") + b".") is datetime.datetime
    assert loads(P2 + glob("copy_reg", "_reconstructor") + b".") is copyreg._reconstructor
    assert loads(pickle.dumps([int, set, collections.OrderedDict], 4)) == [
        int,
        set,
        collections.OrderedDict,
    ]


def test_datetime_with_stub_tzinfo() -> None:
    state = b"C\x0a\x07\xd0\x01\x02\x03\x04\x05\x00\x00\x06"
    out = loads(P2 + glob("datetime", "datetime") + state + glob("pytz", "_UTC") + b")R\x86R.")
    assert out == Stub(
        "datetime.datetime", args=[datetime.datetime(2000, 1, 2, 3, 4, 5, 6), Stub("pytz._UTC")]
    )


def test_stubs_are_inert() -> None:
    out = loads(P2 + glob("mymod", "Thing") + b")\x81.")
    with pytest.raises(AttributeError):
        out.anything  # noqa: B018
    with pytest.raises(TypeError):
        out()
    with pytest.raises(TypeError):
        pickle.dumps(out)
    assert not hasattr(type(out), "__getattr__")


# --------------------------------------------------------------------------
# Python 2 pickles
#
# Made once with Python 2.7.18 (cPickle.dumps(value, protocol), hexlified) by
# this script; the classes lived in __main__:
#
#   class Old:                     # old-style
#       def __init__(self): self.a = 1; self.s = 'x'
#   class New(object):
#       def __init__(self): self.a = 1; self.u = u'caf\xe9'
#   class D(dict): pass            # D(a=1) with .extra = 'e'
#   class L(list): pass            # L([1, 'two'])
#   shared = [1]; cyc = {'a': shared, 'b': shared}; cyc['self'] = cyc
#   strings: ['plain', 'caf\xc3\xa9', '\xff\xfe', u'caf\xe9', 'caf\xe9', '']
#   longs: [2 ** 70, -5L, 5L, 0L, -2 ** 64]
#   datetimes: [datetime(2001, 2, 3, 4, 5, 6, 789012), date(1999, 12, 31),
#               time(23, 59, 1, 5), timedelta(3, 4, 5)]
#   decimal: Decimal('3.14159');  sets: [set(['a', 1]), frozenset([2])]
#   ordereddict: OrderedDict([('b', 1), ('a', 2)])
#   defaultdict_int: defaultdict(int, {'k': 1});  defaultdict_list: defaultdict(list, {'k': [1]})
#   unicode_keys: {u'k\xe9': 'v\xc3\xa9', 'k\xc3\xa9': 2}
#   uuid: UUID('12345678-1234-5678-1234-567812345678');  counter: Counter('aab')
#   fraction: Fraction(1, 3);  complex_bytearray: [1 + 2j, bytearray('ab\xff')]
#   tuple_key: {(1, 'a'): 'v'}
#
#   for protocol in (0, 1, 2): print binascii.hexlify(cPickle.dumps(value, protocol))


PY2_PICKLES: dict[str, tuple[Any, ...]] = {
    "strings": (
        (
            "286c70310a5327706c61696e270a70320a6153276361665c7863335c786139270a70330a6153275c"
            "7866665c786665270a70340a6156636166e90a70350a6153276361665c786539270a70360a615327"
            "270a612e"
        ),
        (
            "5d7101285505706c61696e71025505636166c3a971035502fffe71045805000000636166c3a97105"
            "5504636166e971065500652e"
        ),
        (
            "80025d7101285505706c61696e71025505636166c3a971035502fffe71045805000000636166c3a9"
            "71055504636166e971065500652e"
        ),
    ),
    "longs": (
        (
            "286c70310a4c313138303539313632303731373431313330333432344c0a614c2d354c0a614c354c"
            "0a614c304c0a614c2d31383434363734343037333730393535313631364c0a612e"
        ),
        (
            "5d7101284c313138303539313632303731373431313330333432344c0a4c2d354c0a4c354c0a4c30"
            "4c0a4c2d31383434363734343037333730393535313631364c0a652e"
        ),
        "80025d7101288a090000000000000000408a01fb8a01058a008a090000000000000000ff652e",
    ),
    "datetimes": (
        (
            "286c70310a636461746574696d650a6461746574696d650a70320a2853275c7830375c7864315c78"
            "30325c7830335c7830345c7830355c7830365c7830635c6e5c783134270a745270330a6163646174"
            "6574696d650a646174650a70340a2853275c7830375c7863665c7830635c783166270a745270350a"
            "61636461746574696d650a74696d650a70360a2853275c7831373b5c7830315c7830305c7830305c"
            "783035270a745270370a61636461746574696d650a74696d6564656c74610a70380a2849330a4934"
            "0a49350a745270390a612e"
        ),
        (
            "5d710128636461746574696d650a6461746574696d650a710228550a07d102030405060c0a147452"
            "7103636461746574696d650a646174650a710428550407cf0c1f74527105636461746574696d650a"
            "74696d650a7106285506173b0100000574527107636461746574696d650a74696d6564656c74610a"
            "7108284b034b044b0574527109652e"
        ),
        (
            "80025d710128636461746574696d650a6461746574696d650a7102550a07d102030405060c0a1485"
            "527103636461746574696d650a646174650a7104550407cf0c1f85527105636461746574696d650a"
            "74696d650a71065506173b0100000585527107636461746574696d650a74696d6564656c74610a71"
            "084b034b044b0587527109652e"
        ),
    ),
    "decimal": (
        "63646563696d616c0a446563696d616c0a70310a285327332e3134313539270a745270320a2e",
        "63646563696d616c0a446563696d616c0a7101285507332e3134313539745271022e",
        "800263646563696d616c0a446563696d616c0a71015507332e3134313539855271022e",
    ),
    "sets": (
        (
            "286c70310a635f5f6275696c74696e5f5f0a7365740a70320a28286c70330a532761270a6149310a"
            "61745270340a61635f5f6275696c74696e5f5f0a66726f7a656e7365740a70350a28286c70360a49"
            "320a61745270370a612e"
        ),
        (
            "5d710128635f5f6275696c74696e5f5f0a7365740a7102285d7103285501614b016574527104635f"
            "5f6275696c74696e5f5f0a66726f7a656e7365740a7105285d71064b026174527107652e"
        ),
        (
            "80025d710128635f5f6275696c74696e5f5f0a7365740a71025d7103285501614b01658552710463"
            "5f5f6275696c74696e5f5f0a66726f7a656e7365740a71055d71064b026185527107652e"
        ),
    ),
    "old_instance": (
        (
            "28695f5f6d61696e5f5f0a4f6c640a70310a286470320a532761270a49310a73532773270a532778"
            "270a73622e"
        ),
        "28635f5f6d61696e5f5f0a4f6c640a71016f71027d7103285501614b0155017355017875622e",
        "800228635f5f6d61696e5f5f0a4f6c640a71016f71027d7103285501614b0155017355017875622e",
    ),
    "new_instance": (
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a70310a28635f5f6d61696e5f5f0a4e"
            "65770a70320a635f5f6275696c74696e5f5f0a6f626a6563740a70330a4e745270340a286470350a"
            "532761270a49310a73532775270a56636166e90a70360a73622e"
        ),
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a710128635f5f6d61696e5f5f0a4e65"
            "770a7102635f5f6275696c74696e5f5f0a6f626a6563740a71034e745271047d7105285501614b01"
            "5501755805000000636166c3a9710675622e"
        ),
        (
            "8002635f5f6d61696e5f5f0a4e65770a7101298171027d7103285501614b01550175580500000063"
            "6166c3a9710475622e"
        ),
    ),
    "dict_subclass": (
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a70310a28635f5f6d61696e5f5f0a44"
            "0a70320a635f5f6275696c74696e5f5f0a646963740a70330a286470340a532761270a49310a7374"
            "5270350a286470360a53276578747261270a70370a532765270a73622e"
        ),
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a710128635f5f6d61696e5f5f0a440a"
            "7102635f5f6275696c74696e5f5f0a646963740a71037d71045501614b0173745271057d71065505"
            "6578747261710755016573622e"
        ),
        (
            "8002635f5f6d61696e5f5f0a440a7101298171025501614b01737d71035505657874726171045501"
            "6573622e"
        ),
    ),
    "list_subclass": (
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a70310a28635f5f6d61696e5f5f0a4c"
            "0a70320a635f5f6275696c74696e5f5f0a6c6973740a70330a286c70340a49310a61532774776f27"
            "0a70350a61745270360a2e"
        ),
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a710128635f5f6d61696e5f5f0a4c0a"
            "7102635f5f6275696c74696e5f5f0a6c6973740a71035d7104284b01550374776f71056574527106"
            "2e"
        ),
        "8002635f5f6d61696e5f5f0a4c0a710129817102284b01550374776f7103657d7104622e",
    ),
    "ordereddict": (
        (
            "63636f6c6c656374696f6e730a4f726465726564446963740a70310a28286c70320a286c70330a53"
            "2762270a6149310a6161286c70340a532761270a6149320a6161745270350a2e"
        ),
        (
            "63636f6c6c656374696f6e730a4f726465726564446963740a7101285d7102285d7103285501624b"
            "01655d7104285501614b026565745271052e"
        ),
        (
            "800263636f6c6c656374696f6e730a4f726465726564446963740a71015d7102285d710328550162"
            "4b01655d7104285501614b026565855271052e"
        ),
    ),
    "defaultdict_int": (
        (
            "63636f6c6c656374696f6e730a64656661756c74646963740a70310a28635f5f6275696c74696e5f"
            "5f0a696e740a70320a745270330a53276b270a49310a732e"
        ),
        (
            "63636f6c6c656374696f6e730a64656661756c74646963740a710128635f5f6275696c74696e5f5f"
            "0a696e740a71027452710355016b4b01732e"
        ),
        (
            "800263636f6c6c656374696f6e730a64656661756c74646963740a7101635f5f6275696c74696e5f"
            "5f0a696e740a71028552710355016b4b01732e"
        ),
    ),
    "defaultdict_list": (
        (
            "63636f6c6c656374696f6e730a64656661756c74646963740a70310a28635f5f6275696c74696e5f"
            "5f0a6c6973740a70320a745270330a53276b270a286c70340a49310a61732e"
        ),
        (
            "63636f6c6c656374696f6e730a64656661756c74646963740a710128635f5f6275696c74696e5f5f"
            "0a6c6973740a71027452710355016b5d71044b0161732e"
        ),
        (
            "800263636f6c6c656374696f6e730a64656661756c74646963740a7101635f5f6275696c74696e5f"
            "5f0a6c6973740a71028552710355016b5d71044b0161732e"
        ),
    ),
    "unicode_keys": (
        (
            "286470310a566be90a70320a5327765c7863335c786139270a70330a7353276b5c7863335c786139"
            "270a70340a49320a732e"
        ),
        "7d71012858030000006bc3a97102550376c3a9710355036bc3a971044b02752e",
        "80027d71012858030000006bc3a97102550376c3a9710355036bc3a971044b02752e",
    ),
    "shared_and_cycle": (
        (
            "286470310a532761270a286c70320a49310a6173532773656c66270a70330a67310a73532762270a"
            "67320a732e"
        ),
        "7d7101285501615d71024b0161550473656c66710368015501626802752e",
        "80027d7101285501615d71024b0161550473656c66710368015501626802752e",
    ),
    "uuid": (
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a70310a2863757569640a555549440a"
            "70320a635f5f6275696c74696e5f5f0a6f626a6563740a70330a4e745270340a286470350a532769"
            "6e74270a70360a4c3234313937383537313631303131373135313632313731383339363336393838"
            "3737383130344c0a73622e"
        ),
        (
            "63636f70795f7265670a5f7265636f6e7374727563746f720a71012863757569640a555549440a71"
            "02635f5f6275696c74696e5f5f0a6f626a6563740a71034e745271047d71055503696e7471064c32"
            "343139373835373136313031313731353136323137313833393633363938383737383130344c0a73"
            "622e"
        ),
        (
            "800263757569640a555549440a7101298171027d71035503696e7471048a10785634127856341278"
            "5634127856341273622e"
        ),
    ),
    "counter": (
        (
            "63636f6c6c656374696f6e730a436f756e7465720a70310a28286470320a532761270a49320a7353"
            "2762270a49310a73745270330a2e"
        ),
        (
            "63636f6c6c656374696f6e730a436f756e7465720a7101287d7102285501614b025501624b017574"
            "5271032e"
        ),
        (
            "800263636f6c6c656374696f6e730a436f756e7465720a71017d7102285501614b025501624b0175"
            "855271032e"
        ),
    ),
    "fraction": (
        "636672616374696f6e730a4672616374696f6e0a70310a285327312f33270a745270320a2e",
        "636672616374696f6e730a4672616374696f6e0a7101285503312f33745271022e",
        "8002636672616374696f6e730a4672616374696f6e0a71015503312f33855271022e",
    ),
    "complex_bytearray": (
        (
            "286c70310a635f5f6275696c74696e5f5f0a636f6d706c65780a70320a2846310a46320a74527033"
            "0a61635f5f6275696c74696e5f5f0a6279746561727261790a70340a28566162ff0a53276c617469"
            "6e2d31270a745270350a612e"
        ),
        (
            "5d710128635f5f6275696c74696e5f5f0a636f6d706c65780a710228473ff0000000000000474000"
            "00000000000074527103635f5f6275696c74696e5f5f0a6279746561727261790a71042858040000"
            "006162c3bf55076c6174696e2d3174527105652e"
        ),
        (
            "80025d710128635f5f6275696c74696e5f5f0a636f6d706c65780a7102473ff00000000000004740"
            "0000000000000086527103635f5f6275696c74696e5f5f0a6279746561727261790a710458040000"
            "006162c3bf55076c6174696e2d3186527105652e"
        ),
    ),
    "tuple_key": (
        "286470310a2849310a532761270a7470320a532776270a732e",
        "7d7101284b01550161747102550176732e",
        "80027d71014b01550161867102550176732e",
    ),
}


def py2(name: str, protocol: int) -> bytes:
    return bytes.fromhex("".join(PY2_PICKLES[name][protocol]))


_DT = [
    datetime.datetime(2001, 2, 3, 4, 5, 6, 789012),
    datetime.date(1999, 12, 31),
    datetime.time(23, 59, 1, 5),
    datetime.timedelta(3, 4, 5),
]

# name -> {py2_str mode: expected value}; one value means "the same in every mode"
PY2_EXPECTED: dict[str, Any] = {
    "strings": {
        "auto": ["plain", "caf\u00e9", b"\xff\xfe", "caf\u00e9", b"caf\xe9", ""],
        "bytes": [b"plain", b"caf\xc3\xa9", b"\xff\xfe", "caf\u00e9", b"caf\xe9", b""],
        "latin1": ["plain", "caf\u00c3\u00a9", "\u00ff\u00fe", "caf\u00e9", "caf\u00e9", ""],
    },
    "longs": [2**70, -5, 5, 0, -(2**64)],
    "datetimes": _DT,
    "decimal": decimal.Decimal("3.14159"),
    "sets": {"auto": [{"a", 1}, frozenset({2})], "bytes": [{b"a", 1}, frozenset({2})]},
    "old_instance": {
        "auto": Stub("__main__.Old", state={"a": 1, "s": "x"}),
        "bytes": Stub("__main__.Old", state={b"a": 1, b"s": b"x"}),
    },
    "new_instance": {
        "auto": Stub("__main__.New", state={"a": 1, "u": "caf\u00e9"}),
        "bytes": Stub("__main__.New", state={b"a": 1, b"u": "caf\u00e9"}),
    },
    "dict_subclass": {
        "auto": Stub("__main__.D", state={"extra": "e"}, dictitems=[["a", 1]]),
        "bytes": Stub("__main__.D", state={b"extra": b"e"}, dictitems=[[b"a", 1]]),
    },
    "ordereddict": {
        "auto": collections.OrderedDict([("b", 1), ("a", 2)]),
        "bytes": collections.OrderedDict([(b"b", 1), (b"a", 2)]),
    },
    "defaultdict_int": {
        "auto": collections.defaultdict(int, {"k": 1}),
        "bytes": collections.defaultdict(int, {b"k": 1}),
    },
    "defaultdict_list": {
        "auto": collections.defaultdict(list, {"k": [1]}),
        "bytes": collections.defaultdict(list, {b"k": [1]}),
    },
    "unicode_keys": {
        # the py2 str key would collide with the unicode one once decoded: it stays bytes
        "auto": {"k\u00e9": "v\u00e9", b"k\xc3\xa9": 2},
        "bytes": {"k\u00e9": b"v\xc3\xa9", b"k\xc3\xa9": 2},
        "latin1": {"k\u00e9": "v\u00c3\u00a9", "k\u00c3\u00a9": 2},
    },
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "counter": {
        "auto": collections.Counter("aab"),
        "bytes": collections.Counter([b"a", b"a", b"b"]),
    },
    "fraction": fractions.Fraction(1, 3),
    "complex_bytearray": [1 + 2j, bytearray(b"ab\xff")],
    "tuple_key": {"auto": {(1, "a"): "v"}, "bytes": {(1, b"a"): b"v"}},
}


def _expected(name: str, mode: str) -> Any:
    spec = PY2_EXPECTED[name]
    if type(spec) is not dict or not set(spec) <= set(sp.PY2_STR_MODES):
        return spec
    return spec.get(mode, spec["auto"])


@pytest.mark.parametrize("protocol", [0, 1, 2])
@pytest.mark.parametrize("mode", sp.PY2_STR_MODES)
@pytest.mark.parametrize("name", sorted(PY2_EXPECTED))
def test_python2_pickles(name: str, mode: str, protocol: int) -> None:
    data = py2(name, protocol)
    out = loads(data, py2_str=mode)
    assert same(out, _expected(name, mode)), out
    assert protocol_of(data) == protocol
    if not isinstance(out, Stub) and mode != "auto":
        # latin1 and bytes give what pickle.loads gives, where pickle.loads can read
        # it at all (with encoding="bytes" it fails on Decimal, Fraction, UUID, ...)
        try:
            theirs = pickle.loads(data, encoding=mode)
        except Exception:
            return
        assert same(out, theirs)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_python2_list_subclass(protocol: int) -> None:
    out = loads(py2("list_subclass", protocol))
    # protocol 2 writes an (empty) instance dict as BUILD state; 0 and 1 do not
    assert out == Stub("__main__.L", state={} if protocol == 2 else None, listitems=[1, "two"])


@pytest.mark.parametrize("protocol", [0, 1, 2])
@pytest.mark.parametrize("mode", sp.PY2_STR_MODES)
def test_python2_shared_and_cycle(mode: str, protocol: int) -> None:
    out = loads(py2("shared_and_cycle", protocol), py2_str=mode)
    key = (lambda s: s.encode()) if mode == "bytes" else (lambda s: s)
    assert out[key("self")] is out
    assert out[key("a")] is out[key("b")] == [1]


def test_python2_is_detected() -> None:
    assert is_python2(py2("strings", 0)) is True
    assert is_python2(py2("strings", 2)) is True
    assert is_python2(py2("datetimes", 1)) is True
    assert is_python2(pickle.dumps({"a": 1}, 4)) is False
    assert is_python2(pickle.dumps(b"x", 2)) is False  # _codecs.encode: Python 3 bytes
    assert is_python2(pickle.dumps([1, 2], 2)) is None
    assert is_python2(pickle.dumps({1}, 0)) is True  # __builtin__ set: a guess


def test_protocol_of() -> None:
    for protocol in PROTOCOLS:
        assert protocol_of(pickle.dumps({"a": [1, "x"]}, protocol)) == protocol
    assert protocol_of(b"N.") == 0  # protocol 0 and 1 cannot be told apart here
    assert protocol_of(b"garbage") == 0


def test_py2_str_in_a_python3_protocol_pickle() -> None:
    """BINBYTES stays bytes even when py2 str opcodes share the pickle."""
    data = P4 + b"(" + b"C\x02\xc3\xa9" + b"U\x02\xc3\xa9" + b"U\x01\xff" + b"l."
    assert loads(data) == [b"\xc3\xa9", "\u00e9", b"\xff"]
    assert [type(x) for x in loads(data)] == [bytes, str, bytes]


def test_py2_marker_never_leaks() -> None:
    data = (
        P2 + b"}(U\x02\xc3\xa9" + glob("mymod", "T") + b")\x81(U\x02\xc3\xa9U\x01\xffl\x85b" + b"u."
    )
    out = loads(data)
    ((key, stub),) = out.items()
    assert type(key) is str and stub == Stub("mymod.T", state=(["\u00e9", b"\xff"],))
    for value in (key, *stub.state[0]):
        assert type(value) in (str, bytes)


# --------------------------------------------------------------------------
# Streams


def _stream(values: list[Any]) -> bytes:
    buf = io.BytesIO()
    for i, value in enumerate(values):
        pickle.dump(value, buf, protocol=i % (pickle.HIGHEST_PROTOCOL + 1))
    return buf.getvalue()


def test_load_stream_offsets_and_raw_bytes() -> None:
    values = [{"a": i, "b": "x" * (i * 5000)} for i in range(30)] + [
        1.5,
        b"\xff",
        datetime.date(2000, 1, 1),
    ]
    data = _stream(values)
    out = list(load_stream(io.BytesIO(data)))
    assert [v for v, _, _ in out] == values
    assert b"".join(raw for _, _, raw in out) == data
    offset = 0
    for value, start, raw in out:
        assert start == offset and loads(raw) == value
        offset += len(raw)


def test_load_stream_starts_where_the_file_is() -> None:
    data = b"HEADER" + _stream([1, 2])
    f = io.BytesIO(data)
    f.seek(6)
    assert [(v, o) for v, o, _ in load_stream(f)] == [(1, 6), (2, 6 + len(pickle.dumps(1, 0)))]


def test_load_stream_empty_and_truncated(tmp_path: Path) -> None:
    assert list(load_stream(io.BytesIO(b""))) == []
    data = _stream([1, [2] * 100, 3])
    last = len(data) - len(pickle.dumps(3, 2))
    it = load_stream(io.BytesIO(data[:-1]))
    assert next(it)[0] == 1 and next(it)[0] == [2] * 100
    with pytest.raises(DecodeError, match=f"pickle at offset {last}: truncated pickle"):
        next(it)
    path = tmp_path / "stream.pkl"
    path.write_bytes(data + b"\xff")
    with (
        path.open("rb") as f,
        pytest.raises(DecodeError, match=f"pickle at offset {len(data)}: malformed"),
    ):
        list(load_stream(f))


def test_load_stream_python2_and_hostile(tmp_path: Path) -> None:
    data = py2("strings", 0) + py2("datetimes", 2) + py2("old_instance", 1)
    out = [v for v, _, _ in load_stream(io.BytesIO(data))]
    assert out == [PY2_EXPECTED["strings"]["auto"], _DT, PY2_EXPECTED["old_instance"]["auto"]]
    canary = tmp_path / "canary"
    data = pickle.dumps(1, 2) + hostile_payloads(canary)["STACK_GLOBAL os.system"]
    with pytest.raises(UnsafePickleError, match="pickle at offset 5: refused global os.system"):
        list(load_stream(io.BytesIO(data)))
    assert not canary.exists()


def test_load_stream_large_pickles_in_small_reads() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes):
            self.data, self.pos = data, 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), 7, len(self.data) - self.pos)
            b[:n] = self.data[self.pos : self.pos + n]
            self.pos += n
            return n

    values = [b"x" * 300_000, "y" * 70_000, list(range(20_000)), {"k": "v"}]
    data = _stream(values)
    out = list(load_stream(Trickle(data)))
    assert [v for v, _, _ in out] == values and b"".join(r for _, _, r in out) == data


# --------------------------------------------------------------------------
# The fast path


def test_fast_path_is_active_and_exact() -> None:
    assert sp._FAST_PATH
    decoder = SafeUnpickler()
    assert decoder.loads(pickle.dumps({"a": [1, 2]}, 4)) == {"a": [1, 2]}
    assert decoder._try_fast
    # "." bytes inside the pickle take the nonce route, still exact
    assert decoder.loads(pickle.dumps(["a.b", 1.5], 0)) == ["a.b", 1.5]
    with pytest.raises(DecodeError, match="trailing data"):
        decoder.loads(pickle.dumps("a.b", 4) + pickle.dumps("c.", 4))
    # a global turns the fast path off until a record without globals comes
    assert decoder.loads(pickle.dumps(datetime.date(2000, 1, 1), 4)) == datetime.date(2000, 1, 1)
    assert not decoder._try_fast
    assert decoder.loads(pickle.dumps(1, 4)) == 1
    assert decoder._try_fast


def test_other_pickle_users_are_unaffected() -> None:
    value = [datetime.date(2000, 1, 1), collections.OrderedDict(a=1), uuid.UUID(int=3)]
    data = pickle.dumps(value, 4)
    errors: list[BaseException] = []

    def ours() -> None:
        try:
            for _ in range(300):
                assert loads(data) == value
                assert loads(pickle.dumps([1, "x"], 4)) == [1, "x"]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ours) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(300):
        assert pickle.loads(data) == value  # plain pickle, real globals
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------
# Tables


def test_tables() -> None:
    for name in (
        "builtins.set",
        "_codecs.encode",
        "copyreg._reconstructor",
        "datetime.datetime",
        "uuid.UUID",
        "collections.defaultdict",
    ):
        assert name in DEFAULT_ALLOWLIST
    for name in (
        "os",
        "posix",
        "subprocess",
        "builtins.eval",
        "builtins.getattr",
        "functools",
        "pickle",
        "_codecs.decode",
    ):
        assert GADGETS[name]
    assert not {name for name in DEFAULT_ALLOWLIST if sp._gadget_reason(name)} - {
        "_codecs.encode",
        "copyreg._reconstructor",
        "uuid.UUID",
    }
    assert sp.map_py2_name("__builtin__", "long") == ("builtins", "int")
    assert sp.map_py2_name("copy_reg", "_reconstructor") == ("copyreg", "_reconstructor")
    assert sp.map_py2_name("exceptions", "NoSuchError") == ("builtins", "NoSuchError")


# --------------------------------------------------------------------------
# Property tests

_keys = st.one_of(st.integers(), st.text(max_size=8), st.binary(max_size=8))
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, places=3),
    st.datetimes(),
    st.dates(),
    st.uuids(),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(_keys, inner, max_size=5),
        st.frozensets(_keys, max_size=5),
        st.sets(st.tuples(_keys, _keys), max_size=3),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, protocol=st.sampled_from(list(PROTOCOLS)))
def test_round_trip_like_pickle(value: Any, protocol: int) -> None:
    ours, theirs = trusted(value, protocol)
    assert same(ours, theirs)


# Byte values a mutation may not introduce: PUT/LONG_BINPUT with a random index
# make the C unpickler allocate the memo up to that index (the hardening issue
# limits this); everything else must give a value or one of our errors.
_MEMO_GROWERS = frozenset(b"pr")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=_values,
    protocol=st.sampled_from(list(PROTOCOLS)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10_000),
    tail=st.binary(max_size=4),
)
def test_damaged_pickles_raise_only_our_errors(
    value: Any, protocol: int, edits: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(pickle.dumps(value, protocol))
    for pos, byte in edits:
        if byte not in _MEMO_GROWERS:
            data[pos % len(data)] = byte
    data = bytes(data[: max(1, len(data) - cut % 4)]) + tail
    for mode in sp.PY2_STR_MODES:
        try:
            loads(data, py2_str=mode)
        except ShelfmigrateError as exc:
            assert "\n" not in str(exc)
        with contextlib.suppress(ShelfmigrateError):
            list(load_stream(io.BytesIO(data), py2_str=mode))


# --------------------------------------------------------------------------
# Limits and structure (pickle_scan's strict scan and check_structure)


@pytest.mark.parametrize("py2_str", ["auto", "bytes", "latin1"])
def test_text_longs_above_the_host_digit_limit_load(py2_str: str) -> None:
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    big, digits = 10**5000 - 1, b"9" * 5000  # (str(big) itself is over the host's limit)
    data = b"(L" + digits + b"L\nL-" + digits + b"L\nI" + b"1" * 700 + b"\nl."
    assert loads(data, py2_str=py2_str) == [big, -big, int("1" * 700)]
    # with a global and a non-ASCII Python 2 str too (full path, second reading)
    data = b"(L" + digits + b"L\nS'\xe9'\n" + glob("__builtin__", "set") + b")Rl."
    assert loads(data, py2_str=py2_str)[0] == big
    assert getattr(sys, "get_int_max_str_digits", lambda: 0)() == limit


def test_integer_caps() -> None:
    with pytest.raises(
        DecodeError, match="LONG at offset 0 has 100001 digits, more than the 100000"
    ):
        loads(b"L" + b"7" * 100_001 + b"L\n.")
    assert loads(b"L" + b"7" * 100_000 + b"L\n.") == (10**100_000 - 1) // 9 * 7
    data = P2 + b"\x8b" + struct.pack("<I", (1 << 16) + 1) + b"\x01" * ((1 << 16) + 1) + b"."
    with pytest.raises(
        DecodeError, match=r"LONG4 at offset 2 declares a 65537-byte int.*too large"
    ):
        loads(data)
    data = P2 + b"\x8b" + struct.pack("<I", 1 << 16) + b"\x00" * (1 << 16) + b"."
    assert loads(data) == 0


def test_value_and_total_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    from shelfmigrate.codecs import pickle_scan

    monkeypatch.setattr(pickle_scan, "MAX_VALUE", 1 << 10)
    assert loads(P4 + b"B" + struct.pack("<I", 1 << 10) + b"x" * 1024 + b".") == b"x" * 1024
    with pytest.raises(DecodeError, match="BINUNICODE at offset 2 declares 1025 bytes, more than"):
        loads(P4 + b"X" + struct.pack("<I", 1025) + b"x" * 1025 + b".")
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE", 1 << 10)
    with pytest.raises(DecodeError, match="more than the 1024-byte limit for one pickle"):
        loads(P4 + b"N" * 1100 + b".")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (P2 + P4 + b"].", "second PROTO at offset 2 switches from protocol 2 to protocol 4"),
        (P4 + P2 + glob("__builtin__", "set") + b")R.", "second PROTO at offset 2"),
        (b"]" + P2 + b".", "second PROTO at offset 1 switches from no PROTO"),
        (
            b"\x80\x05\x96\x03\x00\x00\x00\x00\x00\x00\x00abc\x98.",
            "READONLY_BUFFER at offset 14: out-of-band buffers",
        ),
        (b"\x80\x05\x97.", "NEXT_BUFFER at offset 2: out-of-band buffers"),
    ],
)
def test_protocol_switch_and_buffers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        loads(data)
    with pytest.raises(DecodeError, match=re.escape(message)):
        list(sp.load_stream(io.BytesIO(data)))
    assert loads(P4 + P4 + b"].") == []  # the same protocol again is allowed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # a bytearray makes the structure walk run before loading (fast path too)
        (
            b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab(KAe.",
            "APPENDS at offset 16 on a bytearray",
        ),
        (
            b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00abKAa.",
            "APPEND at offset 15 on a bytearray",
        ),
        # so do more tuple opcodes than MAX_DEPTH (here with an open MARK and SETITEM on a list)
        (b"(" + b"N\x85\x30" * 1001 + b"K\x01.", "STOP at offset 3006 leaves 1 MARK"),
        (b"N\x85\x30" * 1001 + b"]K\x05aK\x00K\x09s.", "SETITEM at offset 3011 on a list"),
    ],
)
def test_structure_is_checked(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        loads(data)


def test_open_mark_and_setitem_on_a_list_are_refused_on_both_paths() -> None:
    """The C unpickler loads these (1 and [9]); the strict scan's structured run
    cannot prove them, so the exact walk runs before loading, on both paths."""
    decoder = sp.SafeUnpickler()
    cases = [
        (b"(K\x01.", "STOP at offset 3 leaves 1 MARK(s) open"),
        (P2 + b"]K\x05aK\x00K\x09s.", "SETITEM at offset 10 on a list"),
        (P2 + b"](K\x05K\x06e(K\x00K\x09u.", "SETITEMS at offset 14 on a list"),
        (P2 + glob("__builtin__", "set") + b")R0]K\x05aK\x00K\x09s.", "SETITEM at offset"),
    ]
    for data, message in cases:
        assert pickle.loads(data) in (1, [9], [9, 6])
        for fast in (True, False):
            decoder._try_fast = fast
            with pytest.raises(DecodeError, match=re.escape(message)):
                decoder.loads(data)
    # What picklers write still loads, on both paths.
    for value in ({"a": [1, 2], "b": {"c": (1, 2, 3, 4)}}, [{"a": 1, "b": [2, 3]}] * 2):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            for fast in (True, False):
                decoder._try_fast = fast
                assert decoder.loads(pickle.dumps(value, protocol)) == value


def test_slice_cannot_be_allowed() -> None:
    # SETITEM on a list with a slice key, l[0:0] = l, doubles the list per opcode:
    # 60 opcodes would ask for 2**60 items.
    # The bomb is refused twice over: SETITEM on a list is malformed, and the
    # slice is a gadget that no --allow can let through.
    bomb = P2 + b"]q\x00K\x01a" + glob("builtins", "slice") + b"K\x00K\x00\x86Rh\x00s."
    with pytest.raises(DecodeError, match="SETITEM at offset 32 on a list"):
        sp.loads(bomb, allow=frozenset({"builtins.slice"}))
    lone_slice = P2 + glob("builtins", "slice") + b"K\x00K\x00\x86R."
    with pytest.raises(UnsafePickleError, match="slice"):
        sp.loads(lone_slice, allow=frozenset({"builtins.slice"}))


def test_check_depth_counts_shared_and_cyclic_values() -> None:
    def chain(n: int) -> list[Any]:
        root = node = []
        for _ in range(n - 1):
            child: list[Any] = []
            node.append(child)
            node = child
        return root

    sp._walk_depth(chain(1000), 1000)
    with pytest.raises(DecodeError, match="more than 1000 levels"):
        sp._walk_depth(chain(1001), 1000)
    with pytest.raises(DecodeError, match="more than 2000 levels"):
        sp._check_depth(chain(2001))
    deep = chain(600)
    top = [deep, chain(500)]
    bottom = top[1]
    while bottom:
        bottom = bottom[0]
    bottom.append(deep)  # reached again 500 levels further down: 1101 deep
    with pytest.raises(DecodeError, match="more than 1000 levels"):
        sp._walk_depth(top, 1000)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    sp._check_depth([cyclic, {1: (cyclic,)}, Stub("m.C", args=[cyclic])])
    with pytest.raises(DecodeError, match="more than 1000 levels"):
        sp._check_depth([Stub("m.C", args=[chain(1001)])])


@pytest.fixture
def no_compiled_structured_runs() -> Any:
    """Forget the compiled structured-run patterns for one test (restored after)."""
    patterns, sizes = dict(pickle_scan._STRUCT_PATTERNS), list(pickle_scan._SBY_CAP)
    pickle_scan._STRUCT_PATTERNS.clear()
    pickle_scan._SBY_CAP[:] = [None] * len(sizes)  # in place: the loader holds this list
    try:
        yield
    finally:
        pickle_scan._STRUCT_PATTERNS.update(patterns)
        pickle_scan._SBY_CAP[:] = sizes


def test_structured_run_is_compiled_only_for_a_long_run_of_records(
    no_compiled_structured_runs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its pattern takes about half a second to compile: a small conversion
    # never pays that, the skeleton proof reads its records.
    monkeypatch.setattr(sp, "_COMPILE_AFTER", (10, 10))
    unpickler = sp.SafeUnpickler()
    data = pickle.dumps({"a": [1, 2], "b": {"c": None}}, 4)
    bad = P2 + b"]q\x00K\x05aK\x00K\x09s."
    for _ in range(5):  # ten records
        assert unpickler.loads(data) == {"a": [1, 2], "b": {"c": None}}
        with pytest.raises(DecodeError, match="SETITEM at offset 12 on a list"):
            unpickler.loads(bad)
    assert not pickle_scan._STRUCT_PATTERNS
    assert unpickler.loads(data) == {"a": [1, 2], "b": {"c": None}}
    assert pickle_scan._STRUCT_PATTERNS and pickle_scan._SBY_CAP[len(data)] is not None
    # Compiled once, it serves every unpickler at once: a new one reads this
    # size inline, without counting a record towards its own compile.
    fresh = sp.SafeUnpickler()
    assert fresh.loads(data) == {"a": [1, 2], "b": {"c": None}}
    assert fresh._uncompiled == 0
    assert sp.loads(data) == {"a": [1, 2], "b": {"c": None}}
    with pytest.raises(DecodeError, match="SETITEM at offset 12 on a list"):
        unpickler.loads(bad)


def test_protocol_0_records_through_the_compiled_text_grammar() -> None:
    # Once compiled, the loader reads a protocol 0 pickle with the text
    # grammar in its inline scan: nested values load, a SETITEM on a list
    # and a MARK left open are still refused.
    value = {"a": {"x": 1, "y": [1, (2, "z")]}, "b": [{"c": None}]}
    data = pickle.dumps(value, 0)
    assert pickle_scan.scan(data, 0, True, [], pickle_scan.RUN_STRUCTURED) == len(data)
    assert sp._TEXT_BY_SIZE[len(data)] is not None or not pickle_scan._PLUS
    unpickler = sp.SafeUnpickler()
    assert unpickler.loads(data) == value
    bad_list = b"(lp0\nI5\naI0\nI9\ns."
    with pytest.raises(DecodeError, match="SETITEM at offset 15 on a list"):
        unpickler.loads(bad_list)
    with pytest.raises(DecodeError, match="STOP at offset 4 leaves 1 MARK"):
        unpickler.loads(b"(I1\n.")
    # Over MAX_DEPTH bytes, only the depth checks follow the inline proof: the
    # skeleton proof is not run again (it would put the unpickler in skip mode).
    long_value = {f"k{i}": [i, {"v": (i, "x")}] for i in range(40)}
    long_data = pickle.dumps(long_value, 0)
    assert len(long_data) > pickle_scan.MAX_DEPTH
    pickle_scan.scan(long_data, 0, True, [], pickle_scan.RUN_STRUCTURED)
    fresh = sp.SafeUnpickler()
    assert fresh.loads(long_data) == long_value
    assert fresh._structured_skip == 0 or not pickle_scan._PLUS


def test_every_proof_path_reads_a_pickle_the_same_way() -> None:
    """Pickler output with structural opcodes changed, inserted or dropped: the
    loader with its structured run and the loader with the skeleton proof and
    the exact walk alone accept and refuse the same pickles, with equal values."""
    import random

    rng = random.Random(int(os.environ.get("SHELFMIGRATE_FUZZ_SEED", "7")))
    iterations = int(os.environ.get("SHELFMIGRATE_FUZZ_ITERATIONS", "300")) * 5
    leaves = [0, 300, "a", b"x", None, True, 1.5, "x" * 300, datetime.date(2020, 1, 2)]

    def outcome(unpickler: SafeUnpickler, data: bytes) -> tuple[str, str]:
        # (Which check refuses first may differ: the pre-scan's walk, or the
        # load itself; what matters is that both refuse.)
        try:
            return "loads", repr(unpickler.loads(data))
        except ShelfmigrateError:
            return "refused", ""

    seen: collections.Counter[str] = collections.Counter()
    structural = STRUCTURAL + b"bR"
    for _original, data in mutated_pickles(rng, iterations, leaves, structural, 0):
        with contextlib.suppress(ShelfmigrateError):  # compiles the runs this size needs
            pickle_scan.scan(data, 0, True, [], pickle_scan.RUN_STRUCTURED)
        with_runs = outcome(SafeUnpickler(), data)
        skeleton_only = SafeUnpickler()
        skeleton_only._structured_skip = 1 << 30
        assert outcome(skeleton_only, data) == with_runs, data
        seen[with_runs[0]] += 1
    assert seen["loads"] > iterations // 5 and seen["refused"] > iterations // 5
