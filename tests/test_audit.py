"""The static pickle audit (``shelfmigrate.codecs.audit`` and ``shelfmigrate audit``).

Hostile pickles are built opcode by opcode, each named after the technique (and,
where there is one, the advisory or issue) it guards against; see
``shared/PICKLE_SECURITY.md``.  Nothing in this file may ever run a payload: the
canary tests check that no file appears and no module is imported.
"""

from __future__ import annotations

import collections
import datetime
import json
import pickle
import struct
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfmigrate.cli import app
from shelfmigrate.codecs import audit, safepickle
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


def test_stack_damage_in_plain_data_cannot_import_anything() -> None:
    # The fast path checks framing, not stack discipline: plain data that
    # pickle.loads would reject is still "safe" (nothing can be imported or
    # called); the symbolic walk itself does see the damage.
    data = b"\x80\x02a."
    assert audit_pickle(data).verdict is Verdict.SAFE
    walked = audit._walk(data, 0, audit.DEFAULT_LIMITS, frozenset())
    assert [p.rule for p in walked.problems] == ["SM011"]


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
    assert time.perf_counter() - start < 1.0
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

# The parts of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json, OASIS) that our
# output uses, with their types, required members and enums as the schema has
# them.  The full schema is not installable here (no PyPI package ships it).
_LEVEL = {"enum": ["none", "note", "warning", "error"]}
_MESSAGE = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
}
_MULTIFORMAT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SARIF_SUBSET = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"enum": ["2.1.0"]},
        "runs": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "informationUri": {"type": "string", "format": "uri"},
                                    "rules": {
                                        "type": "array",
                                        "uniqueItems": True,
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "name": {"type": "string"},
                                                "shortDescription": _MULTIFORMAT,
                                                "fullDescription": _MULTIFORMAT,
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {"level": _LEVEL},
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "invocations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["executionSuccessful"],
                            "properties": {
                                "executionSuccessful": {"type": "boolean"},
                                "toolExecutionNotifications": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["message"],
                                        "properties": {"message": _MESSAGE, "level": _LEVEL},
                                    },
                                },
                            },
                        },
                    },
                    "results": {
                        "type": ["array", "null"],
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": -1},
                                "level": _LEVEL,
                                "message": _MESSAGE,
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "properties": {
                                                    "artifactLocation": {
                                                        "type": "object",
                                                        "properties": {
                                                            "uri": {
                                                                "type": "string",
                                                                "format": "uri-reference",
                                                            }
                                                        },
                                                    },
                                                    "region": {
                                                        "type": "object",
                                                        "properties": {
                                                            "byteOffset": {
                                                                "type": "integer",
                                                                "minimum": 0,
                                                            },
                                                            "byteLength": {
                                                                "type": "integer",
                                                                "minimum": 0,
                                                            },
                                                        },
                                                    },
                                                },
                                                "anyOf": [
                                                    {"required": ["address"]},
                                                    {"required": ["artifactLocation"]},
                                                ],
                                            },
                                            "logicalLocations": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "properties": {
                                                        "name": {"type": "string"},
                                                        "fullyQualifiedName": {"type": "string"},
                                                        "kind": {"type": "string"},
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


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


_VALIDATE = """
import json, sys
import jsonschema
schema, documents = json.load(sys.stdin)
checker = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
print(json.dumps([[e.message for e in checker.iter_errors(d)] for d in documents]))
"""


def _schema_errors(documents: list[dict]) -> list[list[str]]:
    """Validate with jsonschema: in-process, else with a system Python that has it, else skip.

    (jsonschema is in this machine's base Python, not necessarily in the venv.)
    """
    import shutil
    import subprocess

    try:
        import jsonschema
    except ImportError:
        python = shutil.which("python3")
        if python is None or Path(python).resolve() == Path(sys.executable).resolve():
            pytest.skip("jsonschema is not installed")
        if subprocess.run([python, "-c", "import jsonschema"], capture_output=True).returncode:
            pytest.skip("jsonschema is not installed")
        done = subprocess.run(
            [python, "-c", _VALIDATE],
            input=json.dumps([SARIF_SUBSET, documents]),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout)
    checker = jsonschema.Draft7Validator(
        SARIF_SUBSET, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return [[e.message for e in checker.iter_errors(d)] for d in documents]


def test_sarif_validates_against_the_schema_subset(mixed_dir: Path, monkeypatch) -> None:
    monkeypatch.chdir(mixed_dir.parent)
    (mixed_dir / "notes.txt").write_text("not a pickle\n")
    items, summary = summarise(audit_path("data"))
    sarif = json.loads(render_sarif(items, summary))
    # The subset does reject what the real schema rejects.
    bad = json.loads(json.dumps(sarif))
    bad["runs"][0]["results"][0]["level"] = "fatal"
    errors, bad_errors = _schema_errors([sarif, bad])
    assert errors == []
    assert bad_errors


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
