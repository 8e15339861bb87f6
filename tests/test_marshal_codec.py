"""Tests of the pure-Python marshal reader (shelfmigrate.codecs.marshal).

The fixtures in fixtures/marshal/ were written by real CPython 2.7 and 3.6-3.13,
each with an oracle made by the same interpreter (see the README there).  The
builtin ``marshal`` module is used here only to *write* trusted data.
"""

from __future__ import annotations

import io
import json
import marshal as cpython_marshal
import random
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfmigrate.codecs import marshal as m
from shelfmigrate.errors import DecodeError, UsageError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "marshal"
POLICIES = ("auto", "bytes", "latin1")


# ----------------------------------------------------------------------------- typed form
# The same form the fixture script writes (see fixtures/marshal/README.md).


def typed(x: Any, path: tuple[int, ...] = ()) -> Any:
    if x is None or x is True or x is False:
        return x
    if x is Ellipsis:
        return ["const", "Ellipsis"]
    if x is StopIteration:
        return ["const", "StopIteration"]
    t = type(x)
    if t is int:
        return x if -(2**53) < x < 2**53 else ["int", str(x)]
    if t is float:
        return ["float", repr(x)]
    if t is complex:
        return ["complex", repr(x.real), repr(x.imag)]
    if t is str:
        return x
    if t is bytes:
        return ["bytes", x.hex()]
    if id(x) in path:
        return ["backref", len(path) - 1 - path.index(id(x))]
    inner = (*path, id(x))
    if t is tuple:
        return ["tuple", [typed(i, inner) for i in x]]
    if t is list:
        return ["list", [typed(i, inner) for i in x]]
    if t is dict:
        return ["dict", [[typed(k, inner), typed(v, inner)] for k, v in x.items()]]
    if t in (set, frozenset):
        return [t.__name__, [typed(i, inner) for i in x]]
    if t is slice:
        return ["slice", [typed(i, inner) for i in (x.start, x.stop, x.step)]]
    raise TypeError(f"no typed form for {t}")


def _key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def normalize(form: Any, policy: str = "bytes") -> Any:
    """Canonical typed form: Python 2 str resolved by ``policy``, dicts and sets sorted."""
    if not isinstance(form, list):
        return form
    tag = form[0]
    if tag == "str2":
        raw = bytes.fromhex(form[1])
        if policy == "latin1":
            return raw.decode("latin-1")
        if policy == "auto":
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return ["bytes", form[1]]
    if tag in ("tuple", "list", "slice"):
        return [tag, [normalize(i, policy) for i in form[1]]]
    if tag in ("set", "frozenset"):
        members = _distinct([normalize(i, policy) for i in form[1]], form[1])
        return [tag, sorted(members, key=_key)]
    if tag == "dict":
        keys = _distinct([normalize(k, policy) for k, _ in form[1]], [k for k, _ in form[1]])
        pairs = [[k, normalize(v, policy)] for k, (_, v) in zip(keys, form[1], strict=True)]
        return [tag, sorted(pairs, key=lambda p: _key(p[0]))]
    return form


def _distinct(members: list[Any], forms: list[Any]) -> list[Any]:
    """Python 2 keys that decoding made equal: the decoded ``str`` stays bytes (drop nothing).

    In Python 2 a non-ASCII ``str`` never equals a ``unicode``; once decoded it may.
    """
    texts = [_key(x) for x in members]
    return [
        ["bytes", form[1]]
        if isinstance(form, list) and form[0] == "str2" and texts.count(text) > 1
        else member
        for member, form, text in zip(members, forms, texts, strict=True)
    ]


def same(value: Any, oracle: Any, policy: str = "bytes") -> bool:
    """Does the loaded ``value`` match the oracle form?  (JSON text: True is not 1.)"""
    return _key(normalize(typed(value))) == _key(normalize(oracle, policy))


def fixture_names(kind: str) -> list[str]:
    names = sorted(p.name[: -len(".expected.json")] for p in FIXTURES.glob("*.expected.json"))
    if kind == "single":
        return [
            n
            for n in names
            if n.startswith("py") and n.endswith(("_v0", "_v1", "_v2", "_v3", "_v4"))
        ]
    if kind == "code":
        return [n for n in names if n.endswith("_code")]
    return [n for n in names if n.endswith("_stream")]


def load_fixture(name: str) -> tuple[bytes, dict[str, Any]]:
    data = (FIXTURES / f"{name}.marshal").read_bytes()
    oracle = json.loads((FIXTURES / f"{name}.expected.json").read_text("ascii"))
    return data, oracle


def i32(n: int) -> bytes:
    return struct.pack("<i", n)


# ----------------------------------------------------------------------------- fixtures


def test_fixtures_present_and_small():
    files = list(FIXTURES.iterdir())
    assert sum(f.stat().st_size for f in files) < 150_000
    assert len(fixture_names("single")) >= 15
    assert len(fixture_names("code")) >= 5
    assert fixture_names("stream")
    assert (FIXTURES / "README.md").exists()
    assert (FIXTURES / "make_marshal_fixtures.py").exists()


@pytest.mark.parametrize("name", fixture_names("single"))
def test_fixture_matches_oracle(name):
    data, oracle = load_fixture(name)
    py2 = name.startswith("py2")
    version = oracle["marshal_version"]
    if py2:
        assert m.detect_python(data) == 2
        for policy in POLICIES:
            for python in (None, 2):
                value = m.loads(data, python=python, py2_str=policy)
                assert same(value, oracle["value"], policy), (policy, python)
    else:
        assert m.detect_python(data) == (3 if version >= 3 else None)
        for python in (None, 3):
            for policy in POLICIES:  # py2_str never changes Python 3 data
                assert same(m.loads(data, python=python, py2_str=policy), oracle["value"])


@pytest.mark.parametrize("name", [n for n in fixture_names("single") if n.startswith("py3")])
def test_fixture_sharing_and_cycles(name):
    data, oracle = load_fixture(name)
    value = m.loads(data)
    assert value["stopiter"] is StopIteration
    assert value["ellipsis"] is Ellipsis
    assert value["bytearray"] == b"ba" and type(value["bytearray"]) is bytes
    if oracle["marshal_version"] < 3:
        return
    assert value["shared_a"] is value["shared_b"]
    assert value["rec_list"][1] is value["rec_list"]
    assert value["rec_dict"]["self"] is value["rec_dict"]
    rec_tuple = value["rec_tuple"]
    assert type(rec_tuple) is tuple and rec_tuple[0][0] is rec_tuple


def test_python2_strings_by_policy():
    data, _ = load_fixture("py27_v2")
    auto = m.loads(data)
    assert auto["s_ascii"] == "plain str"
    assert auto["s_utf8"] == "café"
    assert auto["s_latin1"] == b"caf\xe9"  # not UTF-8: stays bytes
    assert auto["u_latin"] == "café"  # a Python 2 unicode is always text
    assert auto["buffer"] == "buf"
    assert auto["nested"] == {"name": "outer", "inner": {"name": "inner"}}  # 't' + 'R'
    assert auto["i64"] == 2**40 and auto["long"] == 5 and auto["long0"] == 0
    # distinct keys in Python 2, equal once decoded: the decoded str stays bytes
    assert auto["collide"] == {b"caf\xc3\xa9": 1, "café": 2, b"caf\xe9": 3}
    assert auto["collide_set"] == {b"caf\xc3\xa9", "café", b"caf\xe9"}
    assert auto["collide_fset"] == frozenset(auto["collide_set"])
    raw = m.loads(data, py2_str="bytes")
    assert raw[b"s_utf8"] == b"caf\xc3\xa9"  # keys are Python 2 str too
    assert raw[b"u_latin"] == "café"
    latin = m.loads(data, py2_str="latin1")
    assert latin["s_utf8"] == "cafÃ©" and latin["s_latin1"] == "café"
    assert latin["collide"] == {"cafÃ©": 1, "café": 2, b"caf\xe9": 3}
    assert raw[b"collide"] == {b"caf\xc3\xa9": 1, "café": 2, b"caf\xe9": 3}


@pytest.mark.parametrize("name", fixture_names("code"))
def test_code_object_is_refused(name):
    data = (FIXTURES / f"{name}.marshal").read_bytes()
    with pytest.raises(DecodeError, match=r"code objects are refused \(never built, never run\)"):
        m.loads(data)
    with pytest.raises(DecodeError, match="code objects are refused"):
        m.loads(b")\x02N" + data)  # inside a tuple
    with pytest.raises(DecodeError, match="code objects are refused"):
        m.loads(b"c" + b"\x00" * 40, python=2)


# ----------------------------------------------------------------------------- streams


def _check_stream(result, data, oracle, policy="bytes"):
    dumps = oracle["dumps"]
    assert len(result) == len(dumps)
    for (value, start, end), want in zip(result, dumps, strict=True):
        assert (start, end) == (want["start"], want["end"])
        assert same(value, want["value"], policy)
    assert result[-1][2] == len(data)


@pytest.mark.parametrize("name", fixture_names("stream"))
def test_stream_fixture(name, tmp_path, monkeypatch):
    data, oracle = load_fixture(name)
    policy = "auto"
    _check_stream(list(m.load_stream(data, py2_str=policy)), data, oracle, policy)
    _check_stream(list(m.load_stream(bytearray(data), py2_str=policy)), data, oracle, policy)
    _check_stream(list(m.load_stream(io.BytesIO(data), py2_str=policy)), data, oracle, policy)
    path = tmp_path / "stream.marshal"
    path.write_bytes(data)
    with path.open("rb") as f:
        _check_stream(list(m.load_stream(f, py2_str=policy)), data, oracle, policy)
    # tiny reads: every dump is cut at a buffer end at some point and read again
    monkeypatch.setattr(m, "_CHUNK", 3)
    _check_stream(list(m.load_stream(io.BytesIO(data), py2_str=policy)), data, oracle, policy)


def test_stream_offsets_are_file_positions(tmp_path):
    dumps = [cpython_marshal.dumps(v) for v in ({"a": 1}, [1, 2], "x" * 70000, None)]
    path = tmp_path / "s.marshal"
    path.write_bytes(b"HEADER" + b"".join(dumps))
    with path.open("rb") as f:
        f.read(6)
        got = list(m.load_stream(f))
    starts = [6]
    for d in dumps:
        starts.append(starts[-1] + len(d))
    assert [(s, e) for _, s, e in got] == list(zip(starts, starts[1:], strict=False))
    assert [v for v, _, _ in got] == [{"a": 1}, [1, 2], "x" * 70000, None]


def test_stream_bad_dump_names_its_file_offset():
    good = cpython_marshal.dumps([1, 2, 3])
    data = good * 3 + b"?"
    it = m.load_stream(io.BytesIO(data))
    assert [v for v, _, _ in (next(it), next(it), next(it))] == [[1, 2, 3]] * 3
    with pytest.raises(DecodeError, match=f"offset {3 * len(good)}"):
        next(it)
    with pytest.raises(DecodeError, match="truncated"):
        list(m.load_stream(io.BytesIO(good + good[:-1])))


def test_stream_claiming_more_than_the_file_fails_without_reading_it_all(tmp_path):
    path = tmp_path / "big.marshal"
    path.write_bytes(b"s" + i32(2**31 - 1) + b"x" * 10)
    with path.open("rb") as f, pytest.raises(DecodeError, match="truncated"):
        list(m.load_stream(f))


def test_stream_of_nothing():
    assert list(m.load_stream(b"")) == []
    assert list(m.load_stream(io.BytesIO(b""))) == []


def test_stream_python_decision_carries_over():
    # a Python 2 stream: the first dump says Python 2 ('I'); the next one alone would not
    py2 = b"(" + i32(1) + b"I" + struct.pack("<q", 2**40) + b"s" + i32(3) + b"abc"
    got = [v for v, _, _ in m.load_stream(py2)]
    assert got == [(2**40,), "abc"]
    assert [v for v, _, _ in m.load_stream(py2, python=3)] == [(2**40,), b"abc"]


# ----------------------------------------------------------------------------- by hand


def test_round_trips_every_type_and_version():
    values = [
        None,
        True,
        False,
        StopIteration,
        Ellipsis,
        0,
        -1,
        2**31 - 1,
        -(2**31),
        2**31,
        -(2**31) - 1,
        2**63,
        -(2**64),
        7**300,
        -(7**301),
        0.0,
        -0.0,
        1e308,
        float("inf"),
        complex(-0.0, 2.5),
        b"",
        b"\x00\xff",
        "",
        "a" * 255,
        "a" * 256,
        "é€😀\ud800\udfff",
        (),
        (1,),
        tuple(range(255)),
        tuple(range(256)),
        [],
        [[], [[]]],
        {},
        {1: 2, "a": [3], (1, (2,)): frozenset({1})},
        set(),
        {1, "a", (2, 3)},
        frozenset(),
        frozenset({frozenset({1})}),
    ]
    for value in values:
        for version in range(5):
            loaded = m.loads(cpython_marshal.dumps(value, version))
            assert same(loaded, typed(value)), (value, version)
    nan = m.loads(cpython_marshal.dumps(float("nan")))
    assert nan != nan


def test_shared_and_self_referencing_objects():
    inner = [1]
    outer = m.loads(cpython_marshal.dumps([inner, inner, (inner,)]))
    assert outer[0] is outer[1] is outer[2][0]
    lst: list[Any] = []
    lst.append(lst)
    got = m.loads(cpython_marshal.dumps(lst))
    assert got[0] is got
    d: dict[str, Any] = {}
    d["d"] = d
    d["l"] = [d]
    got = m.loads(cpython_marshal.dumps(d))
    assert got["d"] is got and got["l"][0] is got
    # cycles through tuples: the tuple exists before its items in CPython
    t: tuple[Any, ...] = ([],)
    t[0].append(t)
    got = m.loads(cpython_marshal.dumps(t))
    assert type(got) is tuple and got[0][0] is got
    t2: tuple[Any, ...] = ({},)
    s = (t2, 5)
    t2[0]["s"] = s
    got = m.loads(cpython_marshal.dumps(t2))  # t2 -> dict -> s -> t2 (s built after t2)
    assert got[0]["s"][0] is got and got[0]["s"][1] == 5
    got = m.loads(cpython_marshal.dumps([t2, s]))  # entered through a list
    assert got[0][0]["s"] is got[1] and got[1][0] is got[0]


def test_flags_on_singletons_are_ignored():
    # a flagged list, a flagged None (not registered), then 'r' 0 = the list itself
    got = m.loads(b"\xdb" + i32(2) + b"\xce" + b"r" + i32(0))
    assert got[0] is None and got[1] is got
    with pytest.raises(DecodeError, match="reference 1"):
        m.loads(b"\xdb" + i32(2) + b"\xce" + b"r" + i32(1))


def test_python2_str_policies_by_hand():
    latin = b"s" + i32(4) + b"caf\xe9"
    utf8 = b"s" + i32(5) + b"caf\xc3\xa9"
    assert m.loads(latin, python=2) == b"caf\xe9"
    assert m.loads(latin, python=2, py2_str="latin1") == "café"
    assert m.loads(latin, python=2, py2_str="bytes") == b"caf\xe9"
    assert m.loads(utf8, python=2) == "café"
    assert m.loads(utf8, python=2, py2_str="bytes") == b"caf\xc3\xa9"
    assert m.loads(utf8, python=2, py2_str="latin1") == "cafÃ©"
    assert m.loads(utf8) == b"caf\xc3\xa9"  # nothing says Python 2: read as Python 3 (bytes)
    assert m.loads(utf8, python=3, py2_str="latin1") == b"caf\xc3\xa9"
    interned = b"(" + i32(2) + b"t" + i32(2) + b"ab" + b"R" + i32(0)
    got = m.loads(interned)
    assert got == ("ab", "ab") and got[0] is got[1]
    assert m.loads(interned, py2_str="bytes") == (b"ab", b"ab")
    # Python 3 reads 't' as interned text, and has no 'R'
    assert m.loads(b"t" + i32(2) + b"\xc3\xa9", python=3) == "é"
    with pytest.raises(DecodeError, match="Python 2 code"):
        m.loads(interned, python=3)


def test_python3_codes_in_python2_data_are_unknown():
    with pytest.raises(DecodeError, match=r"0xe9.*Python 3 code"):
        m.loads(b"\xe9" + i32(1), python=2)
    with pytest.raises(DecodeError, match=r"0x7a.*Python 3 code"):
        m.loads(b"z\x01a", python=2)


def test_int64_and_small_longs():
    assert m.loads(b"I" + struct.pack("<q", -(2**62))) == -(2**62)
    assert m.loads(b"I" + struct.pack("<q", 5), python=3) == 5  # CPython 3 still reads 'I'
    assert m.loads(b"l" + i32(0)) == 0
    assert m.loads(b"l" + i32(-1) + b"\x05\x00") == -5
    assert m.loads(b"l" + i32(2) + b"\xff\x7f\x01\x00") == 0x7FFF | 1 << 15
    assert m.loads(b"l" + i32(3) + b"\x00\x00\x00\x00\x01\x00") == 1 << 30


def test_text_floats():
    assert m.loads(b"f\x031.5") == 1.5
    assert m.loads(b"f\x03inf") == float("inf")
    assert m.loads(b"f\x04-inf") == float("-inf")
    assert m.loads(b"f\x06-1e-05") == -1e-05
    x = m.loads(b"x\x031.5\x04-0.0")
    assert x == complex(1.5, -0.0) and repr(x.imag) == "-0.0"
    for bad in (b"f\x03abc", b"f\x041_00", b"f\x04 1.5", b"f\x00", b"f\x031.5\xff"[:4] + b"\xff"):
        with pytest.raises(DecodeError):
            m.loads(bad)


def test_slices_of_format_version_5():
    assert m.loads(b":N" + b"i" + i32(1) + b"N") == slice(None, 1, None)
    # a tuple holding a slice that holds a list holding the tuple (slices come from 3.14)
    got = m.loads(b"\xa9\x01:" + b"[" + i32(1) + b"r" + i32(0) + b"NN")
    assert type(got) is tuple and got[0].start[0] is got
    # a slice referring to itself cannot be made by Python (CPython refuses it too)
    with pytest.raises(DecodeError, match="not complete yet"):
        m.loads(b"\xba" + b"r" + i32(0) + b"NN")


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"?", r"offset 0: unknown type code 0x3f \('\?'\)"),
        (b"\x01", "unknown type code 0x01"),
        (b"[" + i32(1) + b"\xff", "unknown type code 0xff"),
        (b"r" + i32(0), "reference 0 to an object not read yet"),
        (b"r" + i32(-1), "reference -1"),
        (b"\xdb" + i32(1) + b"r" + i32(1), "reference 1"),  # forward reference
        (b"(" + i32(1) + b"R" + i32(0), "string reference 0"),
        (b"(" + i32(2) + b"t" + i32(1) + b"aR" + i32(1), "string reference 1"),
        (b"s" + i32(-1), "negative size"),
        (b"u" + i32(-5), "negative size"),
        (b"a" + i32(-5), "negative size"),
        (b"[" + i32(-1), "negative size"),
        (b"(" + i32(-1), "negative size"),
        (b"<" + i32(-1), "negative size"),
        (b">" + i32(-1), "negative size"),
        (b"s" + i32(2**31 - 1) + b"x", "truncated"),
        (b"[" + i32(2**31 - 1) + b"N", "truncated"),
        (b"(" + i32(2**31 - 1) + b"N", "truncated"),
        (b"<" + i32(2**31 - 1) + b"N", "truncated"),
        (b"z\xff" + b"x", "truncated"),
        (b"0", "NULL"),
        (b"[" + i32(1) + b"0", "NULL"),
        (b"{N0" + b"0", "NULL"),  # NULL as a dict value
        (b"N" + b"N", "trailing"),
        (b"u" + i32(2) + b"\xff\xfe", "not UTF-8"),
        (b"{" + b"[" + i32(0) + b"N0", "unhashable dict key of type list"),
        (b"{" + b"(" + i32(1) + b"[" + i32(0) + b"N0", "unhashable dict key of type tuple"),
        (b"<" + i32(1) + b"{0", "unhashable set member of type dict"),
        (b">" + i32(1) + b"<" + i32(0), "unhashable frozenset member"),
        (b"\xfb" + b"r" + i32(0) + b"N0", "unhashable dict key of type dict"),  # d[d] = None
        (b"\xbc" + i32(1) + b"r" + i32(0), "unhashable set member of type set"),  # s.add(s)
        (b"\xbe" + i32(1) + b"r" + i32(0), "not complete yet"),  # frozenset inside itself
        (b"\xa8" + i32(1) + b"r" + i32(0), "refers to itself"),  # t = (t,)
        (b"\xa9\x01" + b"{r" + i32(0) + b"N0", "dict key refers to a tuple"),
        (b"\xa9\x01" + b"<" + i32(1) + b"r" + i32(0), "set member refers to a tuple"),
        (b"l" + i32(m.MAX_LONG_DIGITS + 1) + b"\x01\x00", "over the limit"),
        (b"l" + i32(-(2**31)) + b"\x01\x00", "over the limit"),
        (b"l" + i32(1) + b"\x00\x80", "digit out of range"),
        (b"l" + i32(2) + b"\x01\x00\x00\x00", "unnormalized"),
        (b"l" + i32(2) + b"\x01\x80\x01\x00", "digit out of range"),
        (b"l" + i32(4) + b"\x01\x00\x01\x00\x00\x00\x00\x00", "unnormalized"),
        (b"l" + i32(4) + b"\x01\x00\xff\xff\x00\x00\x01\x00", "digit out of range"),
        (b"l" + i32(100) + b"\x01\x00", "truncated"),
        (b"c" + i32(0) * 5, "code objects are refused"),
        (b"\xe3" + i32(0) * 5, "code objects are refused"),
        (b"g\x00\x00", "truncated"),
        (b"i\x01", "truncated"),
        (b"[" + i32(2) + b"N", "truncated"),
        (b"{N", "truncated"),
    ],
)
def test_malformed(data, message):
    with pytest.raises(DecodeError, match=message) as info:
        m.loads(data)
    assert "offset" in str(info.value) or message == "empty"


def test_huge_declared_sizes_allocate_nothing():
    cases = [
        b"s" + i32(2**31 - 1),
        b"u" + i32(2**31 - 1) + b"abc",
        b"[" + i32(2**31 - 1) + b"N" * 10,
        b"<" + i32(2**31 - 1) + b"N" * 10,
        b"l" + i32(m.MAX_LONG_DIGITS) + b"\x01\x00" * 10,
    ]
    tracemalloc.start()
    try:
        for data in cases:
            with pytest.raises(DecodeError):
                m.loads(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("kind", [dict.fromkeys, set, frozenset])
def test_hash_flooding_is_refused_fast(kind):
    # ints k * (2**61 - 1) all hash to 0: each insertion would scan all the others
    flood = kind(k * (2**61 - 1) for k in range(5000))  # (building it is quadratic too)
    data = cpython_marshal.dumps(flood)
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="same hash value in one dict or set"):
        m.loads(data)
    assert time.perf_counter() - started < 30  # a hang guard
    # big containers of ordinary keys are read as ever
    legit = kind(range(-3000, 3000))
    assert m.loads(cpython_marshal.dumps(legit)) == legit
    legit = kind((i, i * 0.5) for i in range(3000))
    assert m.loads(cpython_marshal.dumps(legit)) == legit


def test_longs_of_every_size():
    rng = random.Random(5)
    for bits in [*range(1, 100), 1000, 4097, 65536, 300_000]:
        for sign in (1, -1):
            value = sign * (rng.getrandbits(bits) | 1 << (bits - 1))
            assert m.loads(cpython_marshal.dumps(value)) == value


def test_largest_long_is_fast():
    digits = [0x7FFF] * m.MAX_LONG_DIGITS
    data = b"l" + i32(len(digits)) + struct.pack(f"<{len(digits)}H", *digits)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        value = m.loads(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert value == (1 << (15 * len(digits))) - 1
    assert time.perf_counter() - started < 30  # a hang guard, not a speed test
    assert peak < 12 * len(data)  # a few copies of the number, no object per digit
    with pytest.raises(DecodeError, match="digit out of range"):
        m.loads(data[:-4] + b"\x00\x80" + data[-2:])


@pytest.mark.parametrize(
    "head", [b"[" + i32(1), b")\x01", b"(" + i32(1), b"{N", b"<" + i32(1), b":"]
)
def test_deep_nesting_is_refused_not_a_recursion_error(head):
    data = head * 100_000 + b"N" * 3
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="nested deeper than"):
        m.loads(data)
    assert time.perf_counter() - started < 30  # a hang guard, not a speed test
    assert m.detect_python(data) in (None, 3)


def test_deepest_nesting_cpython_writes_is_read():
    def nest(depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth):
            value = [value]
        return value

    depth = 1900
    while True:  # find the deepest list marshal.dumps accepts (1999 lists + [] on Linux)
        try:
            cpython_marshal.dumps(nest(depth + 1))
        except ValueError:
            break
        depth += 1
    got = m.loads(cpython_marshal.dumps(nest(depth)))
    levels = 0
    while got:
        got = got[0]
        levels += 1
    assert levels == depth
    with pytest.raises(DecodeError, match="nested deeper"):
        m.loads(b"[" + i32(1) + cpython_marshal.dumps(nest(depth)))


def test_every_truncation_of_a_fixture_is_a_decode_error():
    for name in ("py27_v2", "py36_v4", "py311_v3"):
        data, _ = load_fixture(name)
        for cut in range(len(data)):
            with pytest.raises(DecodeError):
                m.loads(data[:cut])


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("data", "python"),
    [
        (b"", None),
        (b"N", None),
        (b"s" + i32(1) + b"a", None),
        (b"u" + i32(1) + b"a", None),
        (b"l" + i32(3) + b"\x00\x00\x00\x00\x00\x02", None),  # > 2**31: Python 3 writes this too
        (b"\xe9" + i32(1), 3),
        (b"z\x01a", 3),
        (b"[" + i32(2) + b"Nr" + i32(0), 3),
        (b"[" + i32(1) + b")\x00", 3),
        (b"R" + i32(0), 2),
        (b"I" + struct.pack("<q", 1), 2),
        (b"l" + i32(1) + b"\x05\x00", 2),  # a small long: Python 3 writes 'i'
        (b"l" + i32(0), 2),
        (b"t" + i32(1) + b"a", 2),
        (b"[" + i32(2) + b"t" + i32(1) + b"a\xe9" + i32(1), 3),  # FLAG_REF outweighs 't'
        (b"?garbage", None),
        (b"[" + i32(5), None),
    ],
)
def test_detect_python(data, python):
    assert m.detect_python(data) == python


def test_detection_looks_past_the_first_code():
    data = b"[" + i32(3) + b"N" + b"s" + i32(1) + b"x" + b"{" + b"R" + i32(0)
    assert m.detect_python(data) == 2
    py3 = b"[" + i32(2) + b"s" + i32(1) + b"x" + b"\xda\x01s"  # unflagged list, flagged str
    assert m.detect_python(py3) == 3
    assert m.loads(py3) == [b"x", "s"]


def test_options_are_checked():
    with pytest.raises(UsageError):
        m.loads(b"N", python=4)
    with pytest.raises(UsageError):
        m.loads(b"N", py2_str="utf-8")
    with pytest.raises(UsageError):
        m.load_stream(b"N", python=1)


def test_never_calls_the_builtin_reader(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("marshal.loads must never be called on input")

    monkeypatch.setattr(cpython_marshal, "loads", boom)
    monkeypatch.setattr(cpython_marshal, "load", boom)
    data, oracle = load_fixture("py36_v4")
    assert same(m.loads(data), oracle["value"])
    assert len(list(m.load_stream(io.BytesIO(data * 2)))) == 2


# ----------------------------------------------------------------------------- fuzz
# Mutation fuzzing and the differential test against CPython: tests/test_fuzz_marshal.py.


# ----------------------------------------------------------------------------- hypothesis

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.complex_numbers()
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "a\udfffb", "😀", "x" * 300, Ellipsis, StopIteration])
)
_hashables = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=12,
)
_values = st.recursive(
    _hashables,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(_hashables, inner, max_size=5)
        | st.sets(_hashables, max_size=5)
        | st.frozensets(_hashables, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_round_trip_against_cpython_dumps(value):
    want = typed(value)
    for version in range(5):
        data = cpython_marshal.dumps(value, version)
        assert same(m.loads(data), want), version
        assert same(m.loads(data, python=3), want), version
        got = list(m.load_stream(data + data))
        assert [(s, e) for _, s, e in got] == [(0, len(data)), (len(data), 2 * len(data))]
