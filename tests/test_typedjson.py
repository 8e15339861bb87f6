"""Typed JSON: the contract table row by row, round trips, robustness, plain style."""

from __future__ import annotations

import collections
import contextlib
import copy
import enum
import json
import math
import sys
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from decimal import Decimal
from fractions import Fraction
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfmigrate.codecs.typedjson import (
    canonical,
    decode,
    decode_record,
    encode,
    encode_record,
    from_jsonable,
    to_jsonable,
    value_encoder,
)
from shelfmigrate.errors import DecodeError, EncodeError, UsageError
from shelfmigrate.stubs import Stub

nan, inf = math.nan, math.inf
EST = timezone(timedelta(hours=-5))


class PicklerStub(Stub):
    """A pickler may make subclasses of Stub: they are written like Stub itself."""

    __slots__ = ()


def assert_same(a, b):
    """a and b are equal with the same types all the way down (nan equals nan, -0.0 is not 0.0)."""
    if isinstance(a, Stub) and isinstance(b, Stub):
        assert a.name == b.name
        assert_same(tuple(a.args or ()), tuple(b.args or ()))  # () is written as no args
        assert_same(a.state, b.state)
        assert_same(a.listitems, b.listitems)
        assert (a.dictitems is None) == (b.dictitems is None)
        for (k1, v1), (k2, v2) in zip(a.dictitems or (), b.dictitems or (), strict=True):
            assert_same(k1, k2)
            assert_same(v1, v2)
        return
    assert type(a) is type(b), (a, b)
    if isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    elif isinstance(a, complex):
        assert_same(a.real, b.real)
        assert_same(a.imag, b.imag)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(map(encode, a)) == list(map(encode, b))  # same keys, same types, same order
        for x, y in zip(a.values(), b.values(), strict=True):
            assert_same(x, y)
        if isinstance(a, defaultdict):
            assert a.default_factory is b.default_factory
    elif isinstance(a, (set, frozenset)):
        assert sorted(map(encode, a)) == sorted(map(encode, b))
    elif isinstance(a, Decimal):
        assert str(a) == str(b)
    elif isinstance(a, (datetime, dtime)):
        assert a == b and a.utcoffset() == b.utcoffset()
    else:
        assert a == b


# --------------------------------------------------------------------------
# The contract table (DESIGN.md, "Records and typed JSON"), row by row.

CONTRACT = [
    pytest.param(None, "null", id="None"),
    pytest.param(True, "true", id="True"),
    pytest.param(False, "false", id="False"),
    pytest.param(0, "0", id="int-0"),
    pytest.param(-17, "-17", id="int-negative"),
    pytest.param(10**30, "1" + "0" * 30, id="int-big"),
    pytest.param('héllo "quoted"\n', '"héllo \\"quoted\\"\\n"', id="str"),
    pytest.param("", '""', id="str-empty"),
    pytest.param(1.5, "1.5", id="float"),
    pytest.param(-0.0, "-0.0", id="float-negative-zero"),
    pytest.param(1e300, "1e+300", id="float-big"),
    pytest.param(nan, '{"$float":"nan"}', id="float-nan"),
    pytest.param(inf, '{"$float":"inf"}', id="float-inf"),
    pytest.param(-inf, '{"$float":"-inf"}', id="float-minus-inf"),
    pytest.param(complex(1.5, -2), '{"$complex":[1.5,-2.0]}', id="complex"),
    pytest.param(complex(-0.0, inf), '{"$complex":[-0.0,{"$float":"inf"}]}', id="complex-inf"),
    pytest.param(b"\x00\xff", '{"$bytes":"AP8="}', id="bytes"),
    pytest.param(bytearray(b"hi"), '{"$bytearray":"aGk="}', id="bytearray"),
    pytest.param([1, "a", None, [2.5]], '[1,"a",null,[2.5]]', id="list"),
    pytest.param([], "[]", id="list-empty"),
    pytest.param((1, (2,)), '{"$tuple":[1,{"$tuple":[2]}]}', id="tuple"),
    pytest.param((), '{"$tuple":[]}', id="tuple-empty"),
    pytest.param({3, 1, 2}, '{"$set":[1,2,3]}', id="set"),
    # sorted by their typed-JSON text: '"b"' < '10' < '9'
    pytest.param({"b", 10, 9}, '{"$set":["b",10,9]}', id="set-sorted-by-text"),
    pytest.param(
        frozenset({(1,), (1, 2)}),
        '{"$frozenset":[{"$tuple":[1,2]},{"$tuple":[1]}]}',
        id="frozenset",
    ),
    pytest.param(set(), '{"$set":[]}', id="set-empty"),
    pytest.param({"a": 1, "b": [2]}, '{"a":1,"b":[2]}', id="dict-str-keys"),
    pytest.param({}, "{}", id="dict-empty"),
    pytest.param({2: "a", "b": 2}, '{"$dict":[[2,"a"],["b",2]]}', id="dict-other-keys"),
    pytest.param({"a": 1, "$b": 2}, '{"$dict":[["a",1],["$b",2]]}', id="dict-dollar-key"),
    pytest.param({"$ref": 1}, '{"$dict":[["$ref",1]]}', id="dict-tag-lookalike"),
    pytest.param({(1, 2): None}, '{"$dict":[[{"$tuple":[1,2]},null]]}', id="dict-tuple-key"),
    pytest.param(..., '{"$const":"Ellipsis"}', id="Ellipsis"),
    pytest.param(StopIteration, '{"$const":"StopIteration"}', id="StopIteration"),
    pytest.param(
        datetime(2024, 2, 29, 13, 5, 7, 123456),
        '{"$datetime":"2024-02-29T13:05:07.123456"}',
        id="datetime",
    ),
    pytest.param(
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        '{"$datetime":"2024-01-01T00:00:00+05:30"}',
        id="datetime-offset",
    ),
    pytest.param(
        datetime(2024, 1, 1, 12, tzinfo=timezone.utc),
        '{"$datetime":"2024-01-01T12:00:00+00:00"}',
        id="datetime-utc",
    ),
    pytest.param(
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=1))),
        '{"$datetime":"2000-01-01T00:00:00+00:00:00.000001"}',
        id="datetime-sub-second-offset",  # Python 3.11's fromisoformat reads this as UTC
    ),
    pytest.param(date(2024, 2, 29), '{"$date":"2024-02-29"}', id="date"),
    pytest.param(dtime(23, 59, 1), '{"$time":"23:59:01"}', id="time"),
    pytest.param(
        dtime(1, 2, 3, 4, tzinfo=EST), '{"$time":"01:02:03.000004-05:00"}', id="time-offset"
    ),
    pytest.param(
        timedelta(days=-1, seconds=3600, microseconds=5),
        '{"$timedelta":[-1,3600,5]}',
        id="timedelta",
    ),
    pytest.param(Decimal("3.140"), '{"$decimal":"3.140"}', id="Decimal"),
    pytest.param(Decimal("-0"), '{"$decimal":"-0"}', id="Decimal-negative-zero"),
    pytest.param(Decimal("NaN"), '{"$decimal":"NaN"}', id="Decimal-NaN"),
    pytest.param(Decimal("-Infinity"), '{"$decimal":"-Infinity"}', id="Decimal-Infinity"),
    pytest.param(Decimal("1E+3"), '{"$decimal":"1E+3"}', id="Decimal-exponent"),
    pytest.param(
        UUID("12345678-1234-5678-1234-567812345678"),
        '{"$uuid":"12345678-1234-5678-1234-567812345678"}',
        id="UUID",
    ),
    pytest.param(Stub("mod.Cls"), '{"$class":"mod.Cls"}', id="stub-bare"),
    pytest.param(
        Stub("mod.Cls", args=(1, "x")), '{"$class":"mod.Cls","$args":[1,"x"]}', id="stub-args"
    ),
    pytest.param(
        Stub("mod.Cls", state={"a": 1}), '{"$class":"mod.Cls","$state":{"a":1}}', id="stub-state"
    ),
    pytest.param(
        Stub("mod.Cls", listitems=[1, 2]),
        '{"$class":"mod.Cls","$listitems":[1,2]}',
        id="stub-listitems",
    ),
    pytest.param(
        Stub("mod.Cls", dictitems=[("k", 1), (2, b"v")]),
        '{"$class":"mod.Cls","$dictitems":[["k",1],[2,{"$bytes":"dg=="}]]}',
        id="stub-dictitems",
    ),
    pytest.param(
        Stub("mod.Cls", args=(1,), state=(None, {"s": 2}), listitems=[], dictitems=[]),
        '{"$class":"mod.Cls","$args":[1],"$state":{"$tuple":[null,{"s":2}]},"$listitems":[],"$dictitems":[]}',
        id="stub-everything",
    ),
    pytest.param(
        PicklerStub("m.Sub", state=1), '{"$class":"m.Sub","$state":1}', id="stub-subclass"
    ),
    pytest.param(
        OrderedDict([("b", 1), ("a", 2)]),
        '{"$class":"collections.OrderedDict","$dictitems":[["b",1],["a",2]]}',
        id="OrderedDict",
    ),
    pytest.param(
        Counter({"x": 2, "y": 1}),
        '{"$class":"collections.Counter","$dictitems":[["x",2],["y",1]]}',
        id="Counter",
    ),
    pytest.param(
        defaultdict(int, {"a": 1}),
        '{"$class":"collections.defaultdict","$args":["builtins.int"],"$dictitems":[["a",1]]}',
        id="defaultdict",
    ),
    pytest.param(
        defaultdict(None),
        '{"$class":"collections.defaultdict","$args":[null],"$dictitems":[]}',
        id="defaultdict-no-factory",
    ),
    pytest.param(
        defaultdict(Counter),
        '{"$class":"collections.defaultdict","$args":["collections.Counter"],"$dictitems":[]}',
        id="defaultdict-Counter",
    ),
    pytest.param(Fraction(3, 4), '{"$class":"fractions.Fraction","$args":["3/4"]}', id="Fraction"),
    pytest.param(Fraction(-2), '{"$class":"fractions.Fraction","$args":["-2"]}', id="Fraction-int"),
]


@pytest.mark.parametrize(("value", "text"), CONTRACT)
def test_encode_follows_the_contract(value, text):
    assert encode(value) == text


@pytest.mark.parametrize(("value", "text"), CONTRACT)
def test_decode_gives_back_the_value(value, text):
    assert_same(decode(text), value)


@pytest.mark.parametrize(("value", "text"), CONTRACT)
def test_to_jsonable_is_what_encode_dumps(value, text):
    jsonable = to_jsonable(value)
    assert json.dumps(jsonable, separators=(",", ":"), ensure_ascii=False) == text
    assert_same(from_jsonable(jsonable), value)


def test_dict_with_other_keys_keeps_insertion_order():
    assert encode({"z": 1, 3: 2, "a": 3}) == '{"$dict":[["z",1],[3,2],["a",3]]}'


def test_stub_with_empty_args_writes_no_args_and_reads_back_without_args():
    assert encode(Stub("m.C", args=())) == '{"$class":"m.C"}'
    assert decode('{"$class":"m.C"}').args is None


def test_stub_args_come_back_as_a_tuple():
    assert decode('{"$class":"m.C","$args":[1,[2]]}').args == (1, [2])


def test_other_class_names_decode_to_stubs():
    stub = decode('{"$class":"builtins.set","$args":[[1]]}')
    assert type(stub) is Stub
    assert stub.name == "builtins.set"


def test_allowed_classes_decode_to_the_real_types():
    assert type(decode('{"$class":"collections.OrderedDict","$dictitems":[]}')) is OrderedDict
    assert type(decode('{"$class":"collections.Counter"}')) is Counter
    dd = decode('{"$class":"collections.defaultdict","$args":["builtins.list"],"$dictitems":[]}')
    assert type(dd) is defaultdict and dd.default_factory is list
    assert decode('{"$class":"fractions.Fraction","$args":["-6/4"]}') == Fraction(-3, 2)


@pytest.mark.parametrize(
    "factory",
    [None, list, dict, set, frozenset, tuple, int, float, str, bytes, bool, OrderedDict, Counter],
)
def test_every_allowed_defaultdict_factory_round_trips(factory):
    value = defaultdict(factory, {1: 2})
    assert decode(encode(value)).default_factory is factory


def test_defaultdict_with_another_factory_is_refused():
    with pytest.raises(EncodeError, match="default_factory"):
        encode(defaultdict(lambda: 0))


def test_a_named_timezone_keeps_its_offset():
    value = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET"))
    assert encode(value) == '{"$datetime":"2024-01-01T00:00:00+01:00"}'
    assert decode(encode(value)) == value


def test_a_tzinfo_with_rules_is_refused():
    class Zone(tzinfo):
        def utcoffset(self, dt):
            return timedelta(hours=1)

        def dst(self, dt):
            return timedelta(0)

    with pytest.raises(EncodeError, match="tzinfo of type .*Zone"):
        encode(datetime(2024, 1, 1, tzinfo=Zone()))
    with pytest.raises(EncodeError, match="tzinfo"):
        encode(dtime(1, tzinfo=Zone()))


class MyDict(dict):
    pass


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (threading.Lock(), "cannot encode a value of type _thread.lock"),
        ([1, {"x": (2, threading.Lock())}], "value of type _thread.lock"),
        (iter([1]), "cannot encode a value of type list_iterator"),
        (int, "the class int"),
        ({"k": 1j.__class__}, "the class complex"),
    ],
    ids=["lock", "nested", "reduced-through-a-function", "class", "class-in-dict"],
)
def test_unsupported_values_are_refused_naming_the_type(value, message):
    with pytest.raises(EncodeError, match=message):
        encode(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (MyDict(a=1), {"$class": f"{__name__}.MyDict", "$dictitems": [["a", 1]]}),
        (Color.RED, {"$class": f"{__name__}.Color", "$args": [1]}),
        (
            collections.deque([1, (2, 3)], maxlen=4),
            {
                "$class": "collections.deque",
                "$args": [{"$tuple": []}, 4],
                "$listitems": [1, {"$tuple": [2, 3]}],
            },
        ),
        (object(), {"$class": "builtins.object"}),
    ],
    ids=["dict-subclass", "IntEnum", "deque", "object"],
)
def test_allowed_classes_without_a_tag_use_the_class_form(value, expected):
    # DESIGN.md: "Allowed classes that have no tag of their own ... use the same form".
    assert json.loads(encode(value)) == expected
    assert json.loads(encode([value, value], refs="keep"))[1] == {"$ref": 1}


def test_a_self_containing_reduced_object_is_a_cycle_not_a_hang():
    looped = collections.deque([1])
    looped.append(looped)
    with pytest.raises(EncodeError, match="reference cycle"):
        encode(looped)
    assert json.loads(encode(looped, refs="keep")) == {
        "$class": "collections.deque",
        "$listitems": [1, {"$ref": 1}],
        "$id": 1,
    }


def test_whitespace_around_the_text_is_fine():
    assert decode(' \n{"$tuple": [1, 2]}\r\n') == (1, 2)


def test_bytes_input_is_read_as_utf8():
    assert decode('{"$tuple":["é"]}'.encode()) == ("é",)


def test_an_escaped_dollar_is_still_a_tag():
    assert decode('{"\\u0024tuple":[1]}') == (1,)


# --------------------------------------------------------------------------
# Decoding errors: always DecodeError, with a message.


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1,",
        "[1] [2]",
        "[NaN]",
        "-Infinity",
        '{"$nope":1}',
        '{"$tuple":[1],"x":2}',
        '{"$id":1}',
        '{"$bytes":"!!"}',
        '{"$bytes":1}',
        '{"$float":"NaN"}',
        '{"$complex":[1]}',
        '{"$const":"None"}',
        '{"$timedelta":[1,2]}',
        '{"$timedelta":[1e9,0,0]}',
        '{"$datetime":"yesterday"}',
        '{"$date":"2024-02-30"}',
        '{"$decimal":1}',
        '{"$uuid":"xyz"}',
        '{"$ref":1}',
        '{"$list":[],"$id":0}',
        '[{"$list":[],"$id":1},{"$list":[],"$id":1}]',
        '{"$bytes":"AA==","$id":1}',
        '{"$set":[[1]]}',
        '{"$dict":[[[1],2]]}',
        '{"$dict":[[1]]}',
        '{"$dict":{"a":1}}',
        '{"$tuple":{"a":1}}',
        '{"$class":1}',
        '{"$class":"m.C","$args":{}}',
        '{"$class":"m.C","extra":1}',
        '{"$class":"m.C","$listitems":1}',
        '{"$class":"m.C","$dictitems":[[1]]}',
        '{"$class":"collections.defaultdict","$args":["os.system"]}',
        '{"$class":"collections.OrderedDict","$args":[]}',
        '{"$class":"collections.Counter","$state":{}}',
        '{"$class":"fractions.Fraction","$args":["1/0"]}',
        '{"$class":"fractions.Fraction","$args":["x"]}',
        '{"$tuple":[{"$ref":1}],"$id":1}',
        '{"$tuple":[{"$tuple":[[{"$ref":1}]]},{"$ref":1}],"$id":1}',
    ],
)
def test_invalid_typed_json_raises_decode_error(text):
    with pytest.raises(DecodeError):
        decode(text)


def test_invalid_utf8_raises_decode_error():
    with pytest.raises(DecodeError, match="UTF-8"):
        decode(b'"\xff"')


JSON_WITH_TAGS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "$tuple",
                    "$list",
                    "$dict",
                    "$set",
                    "$class",
                    "$args",
                    "$state",
                    "$dictitems",
                    "$listitems",
                    "$ref",
                    "$id",
                    "$bytes",
                    "$float",
                    "$complex",
                    "$const",
                    "$datetime",
                    "$timedelta",
                    "$decimal",
                    "a",
                ]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON_WITH_TAGS)
def test_any_json_decodes_or_raises_decode_error(obj):
    with contextlib.suppress(DecodeError):
        decode(json.dumps(obj))
    with contextlib.suppress(DecodeError):
        from_jsonable(obj)


# --------------------------------------------------------------------------
# Lossless round trip (hypothesis).

FIXED_OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
BIG_INTS = st.builds(
    lambda sign, digits, low: sign * 10**digits + low,
    st.sampled_from([1, -1]),
    st.integers(4290, 4400),
    st.integers(0, 10**6),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    BIG_INTS,
    st.floats(allow_nan=False),
    st.just(-0.0),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.complex_numbers(allow_nan=False),
    st.decimals(allow_nan=False),
    st.sampled_from([Decimal("-0"), Decimal("Infinity"), Decimal("1.500")]),
    st.datetimes(),
    st.datetimes(timezones=FIXED_OFFSETS),
    st.dates(),
    st.times(),
    st.times(timezones=FIXED_OFFSETS),
    st.timedeltas(),
    st.uuids(),
    st.fractions(),
    st.sampled_from([..., StopIteration]),
)
HASHABLE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.binary(max_size=5),
        st.decimals(allow_nan=False),
        st.dates(),
        st.fractions(),
    ),
    lambda children: (
        st.lists(children, max_size=3).map(tuple) | st.frozensets(children, max_size=3)
    ),
    max_leaves=6,
)
FACTORIES = st.sampled_from(
    [None, list, dict, set, frozenset, tuple, int, float, str, bytes, bool, OrderedDict, Counter]
)
NAMES = st.sampled_from(["mod.Cls", "pkg.sub.Other", "x"])


def _containers(children):
    pairs = st.lists(st.tuples(HASHABLE, children), max_size=3)
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        pairs.map(dict),
        st.sets(HASHABLE, max_size=4),
        st.frozensets(HASHABLE, max_size=4),
        pairs.map(OrderedDict),
        pairs.map(lambda p: Counter(dict(p))),
        st.builds(defaultdict, FACTORIES, pairs),
        st.builds(
            Stub,
            NAMES,
            args=st.none() | st.lists(children, min_size=1, max_size=3).map(tuple),
            state=st.none() | children,
            listitems=st.none() | st.lists(children, max_size=3),
            dictitems=st.none() | st.lists(st.tuples(children, children), max_size=3),
        ),
    )


VALUES = st.recursive(LEAVES, _containers, max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_decode_inverts_encode(value):
    text = encode(value)
    back = decode(text)
    assert_same(back, value)
    assert encode(back) == text


@settings(max_examples=50, deadline=None)
@given(VALUES)
def test_refs_keep_round_trips_and_keeps_sharing(value):
    shared = [value, value, (value,)]
    back = decode(encode(shared, refs="keep"))
    assert_same(back, shared)
    if isinstance(value, (list, dict, set, tuple, bytearray, Stub)):
        assert back[0] is back[1] is back[2][0]


@settings(max_examples=50, deadline=None)
@given(VALUES)
def test_from_jsonable_inverts_to_jsonable(value):
    assert_same(from_jsonable(to_jsonable(value)), value)
    # and on what json.loads makes of the text (decode reads ints of any size)
    assert_same(from_jsonable(json.loads(encode(value), parse_int=decode)), value)


# --------------------------------------------------------------------------
# Nesting depth: an error, never RecursionError.


def nested_list(depth):
    root = current = []
    for _ in range(depth - 1):
        inner = []
        current.append(inner)
        current = inner
    return root


def nested_int_key_dict(depth):
    root = current = {}
    for i in range(depth - 1):
        inner = {}
        current[i] = inner
        current = inner
    return root


def call_deep(frames, fn, *args):
    if frames:
        return call_deep(frames - 1, fn, *args)
    return fn(*args)


def test_max_depth_levels_are_fine_and_one_more_is_an_error():
    assert encode(nested_list(5), max_depth=5) == "[[[[[]]]]]"
    with pytest.raises(EncodeError, match="nested deeper than 5 levels"):
        encode(nested_list(6), max_depth=5)
    with pytest.raises(EncodeError, match="nested deeper than 5 levels"):
        encode([[[[[(1,)]]]]], max_depth=5)


def test_a_100000_deep_list_is_an_encode_error():
    with pytest.raises(EncodeError, match="nested deeper than 1000 levels"):
        encode(nested_list(100_000))


def test_the_default_depth_works_when_called_50_frames_deep():
    value = nested_list(1000)
    text = call_deep(50, encode, value)
    assert text == "[" * 1000 + "]" * 1000
    assert call_deep(50, encode, call_deep(50, decode, text)) == text


def test_deep_tagged_nesting_round_trips():
    value = nested_int_key_dict(1000)  # about 3000 levels of JSON
    text = encode(value)
    assert encode(decode(text)) == text


def test_a_100000_deep_document_is_a_decode_error():
    for text in ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000]:
        with pytest.raises(DecodeError, match="nested deeper"):
            decode(text)
    with pytest.raises(DecodeError, match="nested deeper"):
        decode('{"$tuple":[' * 2000 + "]}" * 2000)


def test_decode_refuses_what_encode_would_refuse():
    text = encode(nested_list(6))
    assert decode(text, max_depth=6) == nested_list(6)
    with pytest.raises(DecodeError, match="nested deeper than 5 levels"):
        decode(text, max_depth=5)
    with pytest.raises(DecodeError, match="nested deeper than 4 levels"):
        decode(encode([[[[[(1,)]]]]]), max_depth=4)
    assert decode(encode([[[(1,)]]]), max_depth=4) == [[[(1,)]]]


# --------------------------------------------------------------------------
# Cycles and shared references.


def cyclic_list():
    value = []
    value.append(value)
    return value


def stub_cycle():
    stub = Stub("m.Node")
    stub.state = {"self": stub}
    return stub


def tuple_cycle():
    inner = []
    value = (inner,)
    inner.append(value)
    return value


@pytest.mark.parametrize("make", [cyclic_list, stub_cycle, tuple_cycle])
def test_a_cycle_is_an_encode_error_naming_refs_keep(make):
    with pytest.raises(EncodeError, match=r"reference cycle.*--refs keep"):
        encode(make())


def test_refs_keep_writes_a_cyclic_list_once():
    text = encode(cyclic_list(), refs="keep")
    assert text == '{"$list":[{"$ref":1}],"$id":1}'
    back = decode(text)
    assert back[0] is back


def test_refs_keep_writes_a_cycle_through_a_stub_state():
    text = encode(stub_cycle(), refs="keep")
    assert text == '{"$class":"m.Node","$state":{"self":{"$ref":1}},"$id":1}'
    back = decode(text)
    assert back.state["self"] is back


def test_refs_keep_writes_a_cycle_through_a_tuple():
    text = encode(tuple_cycle(), refs="keep")
    assert text == '{"$tuple":[[{"$ref":1}]],"$id":1}'
    back = decode(text)
    assert type(back) is tuple and back[0][0] is back


def test_refs_keep_writes_a_dict_cycle():
    value = {"a": 1}
    value["me"] = value
    text = encode(value, refs="keep")
    assert text == '{"$dict":[["a",1],["me",{"$ref":1}]],"$id":1}'
    back = decode(text)
    assert back["me"] is back


def test_refs_keep_numbers_ids_in_order_of_first_occurrence():
    a, b = [1], [2]
    text = encode([b, a, b, a], refs="keep")
    assert text == '[{"$list":[2],"$id":1},{"$list":[1],"$id":2},{"$ref":1},{"$ref":2}]'
    back = decode(text)
    assert back[0] is back[2] and back[1] is back[3] and back[0] is not back[1]


def test_refs_keep_writes_containers_seen_once_normally():
    assert encode([[1], (2,), {"a": {3}}], refs="keep") == '[[1],{"$tuple":[2]},{"a":{"$set":[3]}}]'


@pytest.mark.parametrize(
    ("shared", "first"),
    [
        ((1, 2), '{"$tuple":[1,2],"$id":1}'),
        ({1}, '{"$set":[1],"$id":1}'),
        (frozenset({1}), '{"$frozenset":[1],"$id":1}'),
        ({"a": 1}, '{"$dict":[["a",1]],"$id":1}'),
        (bytearray(b"x"), '{"$bytearray":"eA==","$id":1}'),
        (Stub("m.C"), '{"$class":"m.C","$id":1}'),
        (OrderedDict(a=1), '{"$class":"collections.OrderedDict","$dictitems":[["a",1]],"$id":1}'),
    ],
    ids=["tuple", "set", "frozenset", "dict", "bytearray", "stub", "OrderedDict"],
)
def test_refs_keep_tags_every_kind_of_shared_container(shared, first):
    text = encode([shared, shared], refs="keep")
    assert text == f'[{first},{{"$ref":1}}]'
    back = decode(text)
    assert back[0] is back[1]
    assert_same(back[0], shared)


def test_refs_expand_writes_shared_containers_in_full():
    shared = [1, (2,)]
    assert encode([shared, shared]) == '[[1,{"$tuple":[2]}],[1,{"$tuple":[2]}]]'


def memo_bomb(levels=40):
    value = []
    for _ in range(levels):
        value = [value, value]
    return value


def test_a_memo_bomb_is_refused_quickly():
    bomb = memo_bomb()
    started = time.perf_counter()
    with pytest.raises(EncodeError, match="more than 10000000 values"):
        encode(bomb)
    assert time.perf_counter() - started < 20.0  # a hang guard, not a speed test


def test_a_memo_bomb_is_small_with_refs_keep():
    text = encode(memo_bomb(), refs="keep")
    assert len(text) < 2000
    back = decode(text)
    assert back[0] is back[1]


def test_max_nodes_bounds_expanded_values():
    shared = list(range(100))
    assert encode([shared] * 5, max_nodes=1000)
    with pytest.raises(EncodeError, match="more than 1000 values"):
        encode([shared] * 50, max_nodes=1000)


def test_max_chars_bounds_repeated_strings():
    big = "x" * 1000
    with pytest.raises(EncodeError, match="more than 100000 characters"):
        encode([big] * 200, max_chars=100_000)
    with pytest.raises(EncodeError, match="more than 100000 characters"):
        encode([(big,)] * 200, max_chars=100_000)


def test_a_shared_container_counts_its_depth_where_it_is_reused():
    deep = nested_list(4)
    assert encode([deep, [deep]], max_depth=6)
    with pytest.raises(EncodeError, match="nested deeper than 5 levels"):
        encode([deep, [deep]], max_depth=5)


# --------------------------------------------------------------------------
# Integers of any size, without touching sys.set_int_max_str_digits.


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (10**4999 + 7, "1" + "0" * 4998 + "7"),
        (-(3 * 10**49999 + 12345), "-3" + "0" * 49994 + "12345"),
    ],
    ids=["5000-digits", "50000-digits-negative"],
)
def test_big_ints_are_exact(value, text):
    limit = getattr(sys, "get_int_max_str_digits", lambda: None)()
    assert encode(value) == text
    assert decode(text) == value
    assert decode(encode({"n": [value]})) == {"n": [value]}
    assert getattr(sys, "get_int_max_str_digits", lambda: None)() == limit


def test_big_ints_in_keys_sets_fractions_and_stubs():
    big = 7**20000
    value = {big: {big, -big}, "f": Fraction(big, big + 2), "s": Stub("m.C", args=(big,))}
    assert_same(decode(encode(value)), value)
    assert decode(encode(value, refs="keep")) == value


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="Python 3.11+")
def test_big_ints_work_with_the_lowest_digit_limit():
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        value = [10**700 + 1, -(2**5000)]
        assert decode(encode(value)) == value
    finally:
        sys.set_int_max_str_digits(old)


# --------------------------------------------------------------------------
# Records, options and the hot path.


def test_encode_record_writes_one_json_lines_object():
    assert encode_record("k", (1,)) == '{"key":"k","value":{"$tuple":[1]}}'
    assert encode_record(b"\xff", 1) == '{"key":{"$bytes":"/w=="},"value":1}'
    assert encode_record(3, None) == '{"key":3,"value":null}'


def test_decode_record_reads_it_back():
    line = encode_record(b"\xff", {"a": {1, 2}})
    assert decode_record(line) == (b"\xff", {"a": {1, 2}})
    assert decode_record('{"key":"k","value":[1]}\n') == ("k", [1])


def test_record_ids_run_on_from_key_to_value():
    shared = [1]
    line = encode_record((shared, shared), [shared, shared], refs="keep")
    assert line == (
        '{"key":{"$tuple":[{"$list":[1],"$id":1},{"$ref":1}]},'
        '"value":[{"$list":[1],"$id":2},{"$ref":2}]}'
    )
    key, value = decode_record(line)
    assert key[0] is key[1] and value[0] is value[1]
    assert decode(line) == {"key": key, "value": value}


def test_decode_record_needs_key_and_value():
    with pytest.raises(DecodeError, match='"key" and "value"'):
        decode_record('{"key":1}')


def test_an_encode_error_names_the_record_key():
    with pytest.raises(EncodeError) as excinfo:
        encode_record("user:7", threading.Lock())
    assert excinfo.value.key == "user:7"
    assert str(excinfo.value).startswith("record 'user:7': cannot encode")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"style": "yaml"}, "unknown JSON style"),
        ({"refs": "share"}, "unknown refs mode"),
        ({"style": "plain", "refs": "keep"}, "needs the typed JSON style"),
    ],
)
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        encode(1, **options)


def test_plain_values_are_returned_as_they_are():
    value = {"id": 1, "name": "x", "tags": ["a", "b"], "score": 1.5, "ok": True, "none": None}
    assert to_jsonable(value) is value
    assert to_jsonable(value, refs="keep") is value


def test_from_jsonable_does_not_change_its_argument():
    jsonable = {"a": [{"$tuple": [1]}], "b": {"$dict": [[1, 2]]}}
    before = copy.deepcopy(jsonable)
    assert from_jsonable(jsonable) == {"a": [(1,)], "b": {1: 2}}
    assert jsonable == before


# --------------------------------------------------------------------------
# canonical(): one text for equal values.


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({1: "x", 2: "y"}, {2: "y", 1: "x"}),
        ({"$a": 1, "b": 2}, {"b": 2, "$a": 1}),
        (Stub("m.C", state={"a": 1, "b": 2}), Stub("m.C", state={"b": 2, "a": 1})),
        ([-0.0], [0.0]),
        (complex(0.0, -0.0), complex(0.0, 0.0)),
        (frozenset({-0.0}), frozenset({0.0})),
        ([nan], [float("nan")]),
        (Decimal("1.0"), Decimal("1.00")),
        ({Decimal("10"): 1}, {Decimal("1E+1"): 1}),
        (Decimal("-0"), Decimal("0.000")),
        (datetime(2024, 1, 1, 12, tzinfo=timezone.utc), datetime(2024, 1, 1, 7, tzinfo=EST)),
        (dtime(12, tzinfo=timezone.utc), dtime(7, tzinfo=EST)),
        (Counter(a=1, b=0), Counter(a=1)),
        (Counter(a=1, b=2), Counter(b=2, a=1)),
        (defaultdict(int, a=1), defaultdict(list, a=1)),
        ({1, 2, 3}, {3, 2, 1}),
    ],
)
def test_equal_values_have_one_canonical_text(a, b):
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1, 2], [2, 1]),
        (OrderedDict(a=1, b=2), OrderedDict(b=2, a=1)),
        ((1,), [1]),
        (1, True),
        (b"x", bytearray(b"x")),
        (Stub("m.C", listitems=[1, 2]), Stub("m.C", listitems=[2, 1])),
    ],
)
def test_different_values_have_different_canonical_texts(a, b):
    assert canonical(a) != canonical(b)


def test_canonical_sorts_object_members_and_dict_pairs():
    assert canonical({"b": 1, "a": {2: 0, 1: 0}}) == '{"a":{"$dict":[[1,0],[2,0]]},"b":1}'


@settings(max_examples=100, deadline=None)
@given(VALUES, st.randoms(use_true_random=False))
def test_canonical_ignores_dict_order_and_survives_a_round_trip(value, rnd):
    items = [("x", value), ("y", 1), ("z", [value])]
    shuffled = items[:]
    rnd.shuffle(shuffled)
    assert canonical(dict(items)) == canonical(dict(shuffled))
    assert canonical(decode(encode(value))) == canonical(value)


# --------------------------------------------------------------------------
# style="plain": lossy, no tags.


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ((1, (2,)), "[1,[2]]"),
        ({2, 1}, "[1,2]"),
        (b"hi", '"aGk="'),
        (bytearray(b"hi"), '"aGk="'),
        (datetime(2024, 1, 2, 3, 4, tzinfo=EST), '"2024-01-02T03:04:00-05:00"'),
        (date(2024, 1, 2), '"2024-01-02"'),
        (dtime(3, 4), '"03:04:00"'),
        (timedelta(days=1, microseconds=500000), "86400.5"),
        (Decimal("1.50"), '"1.50"'),
        (UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
        (complex(1, -inf), '[1.0,"-inf"]'),
        ([nan, inf, -inf], '["nan","inf","-inf"]'),
        (
            {1: "a", None: 1, (1, 2): 3, "$x": 4, b"k": 5},
            '{"1":"a","null":1,"[1,2]":3,"$x":4,"aw==":5}',
        ),
        (
            Stub("m.C", args=(1,), state={"a": 1, 2: 3}),
            '{"__class__":"m.C","a":1,"2":3,"args":[1]}',
        ),
        (Stub("m.C", state=[1]), '{"__class__":"m.C","state":[1]}'),
        (Stub("m.L", listitems=[1]), '{"__class__":"m.L","items":[1]}'),
        (Stub("m.D", dictitems=[(1, 2)]), '{"__class__":"m.D","items":{"1":2}}'),
        (OrderedDict(b=1, a=2), '{"b":1,"a":2}'),
        (Counter(a=2), '{"a":2}'),
        (defaultdict(list, {1: [2]}), '{"1":[2]}'),
        (Fraction(1, 3), '"1/3"'),
        (..., '"Ellipsis"'),
    ],
)
def test_plain_style(value, text):
    assert encode(value, style="plain") == text


def test_plain_style_still_refuses_cycles():
    with pytest.raises(EncodeError, match="reference cycle"):
        encode(cyclic_list(), style="plain")


@pytest.mark.parametrize("style", ["typed", "plain"])
@pytest.mark.parametrize("refs", ["expand", "keep"])
def test_value_encoder_writes_what_encode_writes(style, refs):
    if style == "plain" and refs == "keep":
        with pytest.raises(UsageError):
            value_encoder(style=style, refs=refs)
        return
    shared = [1, 2]
    values = [
        {"id": 1, "name": "café", "tags": ["a"], "score": 1.5},
        {"t": (1, 2), 3: b"x", "$k": float("nan")},
        [shared, shared],
        {"\ud800": "lone surrogate"},
        10**5000,
    ]
    encode_value = value_encoder(style=style, refs=refs)
    for value in values:
        assert encode_value(value) == encode(value, style=style, refs=refs)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.binary(max_size=300))
def test_a_raw_record_line_is_the_general_encoding(key, value):
    # encode_record writes text-key/bytes-value lines (--values raw) on a short path.
    assert encode_record(key, value) == '{"key":' + encode(key) + ',"value":' + encode(value) + "}"
    assert decode_record(encode_record(key, value)) == (key, value)
