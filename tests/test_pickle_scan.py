"""The opcode pre-scan (codecs/pickle_scan.py): offsets, refusals, and robustness."""

from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import io
import pickle
import pickletools
import random
import re
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from pickle_mutations import mutated_pickles

from shelfmigrate.codecs import pickle_scan, safepickle
from shelfmigrate.codecs.pickle_scan import Incomplete, scan, scan_stream
from shelfmigrate.errors import DecodeError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pickles"
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


class Point:
    def __init__(self, x: int, y: int):
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class Cyclic:
    x: Any = None


class KwOnly:
    def __new__(cls, *, k: int) -> KwOnly:
        self = super().__new__(cls)
        self.k = k
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, int]]:
        return (), {"k": self.k}


def _values() -> list[object]:
    shared = ["shared"]
    cyclic: list[object] = []
    cyclic.append(cyclic)
    return [
        None,
        True,
        False,
        0,
        1,
        255,
        256,
        65535,
        65536,
        -1,
        2**31,
        2**63,
        2**2100,  # LONG4 (more than 255 bytes)
        -(2**2100),
        1.5,
        -0.0,
        float("inf"),
        "",
        "a",
        "é\n\x00",
        "x" * 255,
        "x" * 256,
        "y" * 70_000,  # several frames
        b"",
        b"\x00\xff.\n",
        b"z" * 300,
        bytearray(b"ab\xff"),
        (),
        (1,),
        (1, 2),
        (1, 2, 3),
        (1, 2, 3, 4),
        [],
        list(range(300)),  # APPENDS, BININT2
        {},
        {i: str(i) for i in range(1200)},  # SETITEMS batches, LONG_BINPUT, LONG_BINGET
        {"k": shared, "l": shared},  # GET
        {1, 2, 3},
        frozenset({1, 2}),
        cyclic,
        (cyclic, cyclic),
        Point(1, 2),
        [Point(i, i) for i in range(3)],
        KwOnly(k=5),
        collections.OrderedDict(a=1),
        collections.defaultdict(list, {"a": [1]}),
        datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
        decimal.Decimal("1.10"),
        complex(1, 2),
        len,  # a global by itself
        Point,
        [["nested"] * 3] * 3,
        {"id": 7, "name": "user-7", "tags": ["a", "b", "0"], "score": 7 / 3, "active": False},
    ]


_SIZES = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_OPS = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}


class WalkError(ValueError):
    pass


def pickle_end(data: bytes, start: int = 0) -> int:
    """A plain reference walk (argument shapes straight from pickletools.opcodes)."""
    pos = start
    while True:
        if pos >= len(data):
            raise WalkError("no STOP")
        op = _OPS.get(data[pos])
        if op is None:
            raise WalkError("unknown opcode")
        pos += 1
        arg = op.arg
        if arg is None:
            pass
        elif arg.n >= 0:
            pos += arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if arg.name == "stringnl_noescape_pair" else 1):
                newline = data.find(b"\n", pos)
                if newline < 0:
                    raise WalkError("no newline")
                pos = newline + 1
        else:
            width, signed = _SIZES[arg.n]
            length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
            if length < 0:
                raise WalkError("negative length")
            pos += width + length
        if pos > len(data):
            raise WalkError("past the end")
        if op.name == "STOP":
            return pos


def _genops_end(data: bytes, start: int = 0) -> int:
    end = start
    for op, _arg, pos in pickletools.genops(io.BytesIO(data[start:])):
        end = start + pos + 1
        if op.name == "STOP":
            break
    # genops gives the opcode's offset; add its argument length via the next offset
    return end


def _genops_offsets(data: bytes) -> list[int]:
    return [pos for _op, _arg, pos in pickletools.genops(data)]


def _scan_offsets_agree(data: bytes) -> None:
    """scan() returns just past STOP, and walking with pickleops gives the same end."""
    end = scan(data)
    assert end == len(data)
    assert end == pickle_end(data)
    offsets = _genops_offsets(data)
    assert offsets[-1] == end - 1 and data[end - 1] == 0x2E


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_dumps_of_varied_values(protocol: int) -> None:
    for value in _values():
        data = pickle.dumps(value, protocol)
        _scan_offsets_agree(data)
    # everything in one pickle too
    _scan_offsets_agree(pickle.dumps(_values(), protocol))


def test_protocol5_out_of_band_buffers() -> None:
    buffers: list[pickle.PickleBuffer] = []
    value = [pickle.PickleBuffer(b"abc"), pickle.PickleBuffer(bytearray(b"de"))]
    data = pickle.dumps(value, 5, buffer_callback=buffers.append)
    assert b"\x97" in data and b"\x98" in data  # NEXT_BUFFER, READONLY_BUFFER
    _scan_offsets_agree(data)
    _scan_offsets_agree(pickle.dumps(bytearray(b"x" * 1000), 5))  # BYTEARRAY8


def _arg_for(op: pickletools.OpcodeInfo) -> bytes:
    """A valid argument for ``op`` (as far as pickletools can decode it)."""
    name, arg = op.name, op.arg
    if arg is None:
        return b""
    if op.name == "FRAME":
        return struct.pack("<Q", 0)
    if arg.n >= 0:
        return b"\x00" * arg.n
    if arg.n == pickletools.UP_TO_NEWLINE:
        return {
            "INT": b"01\n",
            "LONG": b"12L\n",
            "FLOAT": b"1.5\n",
            "STRING": b"'a\\n'\n",
            "UNICODE": b"caf\\xe9\n",
            "GLOBAL": b"mod\nName\n",
            "INST": b"mod\nName\n",
        }.get(name, b"1\n")
    width = {
        pickletools.TAKEN_FROM_ARGUMENT1: "<B",
        pickletools.TAKEN_FROM_ARGUMENT4: "<i",
        pickletools.TAKEN_FROM_ARGUMENT4U: "<I",
        pickletools.TAKEN_FROM_ARGUMENT8U: "<Q",
    }[arg.n]
    return struct.pack(width, 3) + b"abc"


def test_every_opcode_of_every_protocol() -> None:
    """One pickle holding every opcode (no stack semantics: the scan never builds)."""
    body = b""
    names = set()
    for op in pickletools.opcodes:
        if op.name == "STOP":
            continue
        piece = op.code.encode("latin-1") + _arg_for(op)
        body += piece
        names.add(op.name)
        # each opcode on its own, after PROTO
        data = b"\x80\x05" + piece + b"."
        assert scan(data) == len(data), op.name
        assert pickle_end(data) == len(data)
        assert _genops_offsets(data)[-1] == len(data) - 1, op.name
    assert len(names) == len(pickletools.opcodes) - 1 == len(pickle_scan.OPCODE_NAMES) - 1
    data = body + b"."
    assert scan(data) == len(data) == pickle_end(data)
    assert _genops_offsets(data)[-1] == len(data) - 1
    for op in pickletools.opcodes:
        assert pickle_scan.OPCODE_NAMES[op.code.encode("latin-1")[0]] == op.name


def test_python2_text_pickles() -> None:
    """Python 2 ``str`` with non-ASCII bytes: pickletools cannot decode them, offsets still agree."""
    data = b"(dp1\nS'caf\\xe9'\np2\nS'\xe9t\xe9'\np3\ns."
    assert scan(data) == len(data) == pickle_end(data)
    with pytest.raises(Exception):  # noqa: B017,PT011 (whatever the host pickletools raises)
        list(pickletools.genops(b"S'\xe9'\n."))
    data = b"\x80\x02U\x03\xe9t\xe9q\x00T\x04\x00\x00\x00\xff\xfe\xfd\xfcq\x01\x86q\x02."
    assert scan(data) == len(data) == pickle_end(data)


def _fixture_pickles() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(FIXTURES.glob("*.pkl"))]


@pytest.mark.parametrize(("name", "data"), _fixture_pickles())
def test_fixture_streams(name: str, data: bytes) -> None:
    start = count = 0
    while start < len(data):
        end = scan(data, start)
        assert end == pickle_end(data, start), (name, start)
        # (pickletools cannot decode a Python 2 non-ASCII STRING)
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            assert _genops_end(data, start) == end
        # the stream walk finds the same end, also from a buffer that holds only part
        assert scan_stream(bytearray(data), start, start, len(data)) == end
        cut = bytearray(data[: (start + end) // 2])
        with pytest.raises(Incomplete) as info:
            scan_stream(cut, start, start, len(data))
        assert scan_stream(bytearray(data), start, info.value.resume, len(data)) == end
        start, count = end, count + 1
    assert count >= 1


# --------------------------------------------------------------------------
# Refusals


def _refused(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        scan(data)
    assert str(info.value) == message
    # and through the decoder, before the C unpickler sees a byte
    with pytest.raises(DecodeError) as info:
        safepickle.loads(data)
    assert str(info.value) == message


def test_empty_and_truncated() -> None:
    _refused(b"", "empty value: not a pickle")
    _refused(b"\x80\x04N", "truncated pickle (the data ends before STOP)")
    _refused(b"\x80\x04J\x01\x02", "truncated pickle: the data ends inside BININT at offset 2")
    _refused(b"I12", "truncated pickle: INT at offset 0 has no end of line")
    _refused(b"cmod\nname", "truncated pickle: GLOBAL at offset 0 has no end of line")
    _refused(
        b"\x80\x04\x8c\x05ab",
        "truncated pickle: SHORT_BINUNICODE at offset 2 declares 5 bytes but only 2 remain",
    )


def test_unknown_opcode() -> None:
    _refused(
        b"\x80\x04\xff.", "malformed pickle: invalid load key, unknown opcode 0xff at offset 2"
    )
    _refused(b"N\x00.", "malformed pickle: invalid load key, unknown opcode 0x00 at offset 1")


LENGTH_PREFIXED = {
    "SHORT_BINSTRING": (b"U", "<B"),
    "SHORT_BINBYTES": (b"C", "<B"),
    "SHORT_BINUNICODE": (b"\x8c", "<B"),
    "LONG1": (b"\x8a", "<B"),
    "BINSTRING": (b"T", "<i"),
    "BINUNICODE": (b"X", "<I"),
    "BINBYTES": (b"B", "<I"),
    "LONG4": (b"\x8b", "<i"),
    "BINUNICODE8": (b"\x8d", "<Q"),
    "BINBYTES8": (b"\x8e", "<Q"),
    "BYTEARRAY8": (b"\x96", "<Q"),
}


@pytest.mark.parametrize("name", sorted(LENGTH_PREFIXED))
def test_declared_length_past_the_end(name: str) -> None:
    code, fmt = LENGTH_PREFIXED[name]
    huge = {"<B": 255, "<i": 2**31 - 1, "<I": 2**32 - 1, "<Q": 2**64 - 1}[fmt]
    for length in (huge, 4):
        data = b"\x80\x05" + code + struct.pack(fmt, length) + b"ab."
        _refused(
            data,
            f"truncated pickle: {name} at offset 2 declares {length} bytes but only 3 remain",
        )
    # after a GLOBAL (the CPython 3.8-3.11 BYTEARRAY8 stderr case)
    data = b"\x80\x02c__main__\nNew\n" + code + struct.pack(fmt, huge) + b"."
    with pytest.raises(DecodeError, match=f"truncated pickle: {name} at offset 16 declares"):
        safepickle.loads(data)


def test_negative_lengths() -> None:
    for code, name in ((b"T", "BINSTRING"), (b"\x8b", "LONG4")):
        _refused(
            b"\x80\x02" + code + struct.pack("<i", -5) + b".",
            f"malformed pickle: {name} at offset 2 declares a negative length (-5)",
        )


def test_frame_past_the_end() -> None:
    data = b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N."
    _refused(data, f"truncated pickle: FRAME at offset 2 declares {2**40} bytes but only 2 remain")
    data = b"\x80\x04\x95" + struct.pack("<Q", 2) + b"N.\x95" + struct.pack("<Q", 1)
    assert scan(data) == 13  # STOP comes first: what follows is trailing data
    data = b"\x80\x04\x95" + struct.pack("<Q", 12) + b"N\x95" + struct.pack("<Q", 2) + b"0."
    assert scan(data) == len(data)
    data = b"\x80\x04\x95" + struct.pack("<Q", 12) + b"N\x95" + struct.pack("<Q", 3) + b"0."
    _refused(data, "truncated pickle: FRAME at offset 12 declares 3 bytes but only 2 remain")
    _refused(b"\x80\x04\x95\x01\x00", "truncated pickle: the data ends inside FRAME at offset 2")


def test_memo_index_bombs() -> None:
    bomb = b"\x80\x02Nr" + struct.pack("<I", 100_000_000) + b"."
    _refused(
        bomb,
        "malformed pickle: LONG_BINPUT at offset 3 stores memo index 100000000, "
        "more than a pickle of 9 bytes can hold",
    )
    _refused(
        b"Np100000000\n.",
        "malformed pickle: PUT at offset 1 stores memo index 100000000, "
        "more than a pickle of 13 bytes can hold",
    )
    _refused(
        b"Np" + b"9" * 30 + b"\n.",
        "malformed pickle: PUT at offset 1 has a memo index that is not a plain number "
        f"({b'9' * 30!r})",
    )
    _refused(
        b"Np-1\n.",
        "malformed pickle: PUT at offset 1 has a memo index that is not a plain number (b'-1')",
    )
    # indexes up to the pickle's size are fine (Python 2 numbers from 1), BINPUT always
    assert scan(b"Np5\n.") == 5
    assert scan(b"\x80\x02Nr\x09\x00\x00\x00.") == 9
    assert scan(b"\x80\x02Nq\xff.") == 6
    # the stream walk does not bound indexes (the cut-out pickle is checked by scan)
    assert scan_stream(bomb, 0, 0, len(bomb)) == len(bomb)


@pytest.mark.parametrize("size", [100, 300, 4095, 4096, 70_000, 300_000])
def test_memo_bound_follows_the_size(size: int) -> None:
    """Each size class of the regex takes exactly the indexes up to the size."""
    for index in (size - 40, size - 1, size, size + 1, 10 * size):
        for put in (b"r" + struct.pack("<I", index), b"p%d\n" % index):
            data = b"\x80\x02N" + put + b"."
            data = data[:3] + b"N" * (size - len(data)) + data[3:]
            assert len(data) == size
            if index <= size:
                assert scan(data) == size
            else:
                with pytest.raises(DecodeError, match=f"stores memo index {index}, more than a "):
                    scan(data)


def test_safepickle_refuses_the_memo_bomb_before_loading() -> None:
    for bomb in (
        b"\x80\x02Nr" + struct.pack("<I", 100_000_000) + b".",
        b"(p100000000\n.",
    ):
        with pytest.raises(DecodeError, match="stores memo index 100000000"):
            safepickle.loads(bomb)
        with pytest.raises(DecodeError, match="pickle at offset 5: malformed pickle: "):
            list(safepickle.load_stream(io.BytesIO(pickle.dumps(1, 2) + bomb)))


def test_pickle_file_reader_skips_a_refused_pickle(tmp_path: Path) -> None:
    import shelfmigrate

    bomb = b"\x80\x02Nr" + struct.pack("<I", 100_000_000) + b"."
    src = tmp_path / "s.pkl"
    src.write_bytes(pickle.dumps({"a": 1}, 2) + bomb + pickle.dumps([2], 4))
    records = list(shelfmigrate.open_reader(src))
    assert [r.value for r in records if r.error is None] == [{"a": 1}, [2]]
    assert "stores memo index" in str(records[1].error) and records[1].raw == bomb


def test_trailing_data_is_left_to_the_caller() -> None:
    data = pickle.dumps(1, 4) + b"garbage"
    assert scan(data) == len(pickle.dumps(1, 4))
    assert scan(data * 2, len(data)) == len(data) + len(pickle.dumps(1, 4))


# --------------------------------------------------------------------------
# Robustness


def _samples() -> list[bytes]:
    value = {"id": 1, "name": "user-1", "tags": ["a", "b"], "score": 0.5, "big": 2**80}
    return [pickle.dumps(value, p) for p in PROTOCOLS] + [d for _n, d in _fixture_pickles()][:2]


def test_truncation_at_every_offset() -> None:
    for data in _samples():
        end = pickle_end(data)
        data = data[:end]
        for cut in range(end):
            with pytest.raises(DecodeError):
                scan(data[:cut])
            with pytest.raises(Incomplete):
                scan_stream(bytearray(data[:cut]), 0, 0, None)
            with pytest.raises(DecodeError):
                scan_stream(bytearray(data[:cut]), 0, 0, cut)


def test_stream_read_in_small_pieces_resumes() -> None:
    data = pickle.dumps(["x" * 1000, b"y" * 300, list(range(400))], 0)
    buf = bytearray()
    resume = 0
    for i in range(0, len(data), 37):
        buf += data[i : i + 37]
        try:
            end = scan_stream(buf, 0, resume, len(data))
        except Incomplete as more:
            assert more.needed > len(buf)
            resume = more.resume
        else:
            break
    assert end == len(data)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
def test_random_mutations_only_decode_error_or_success() -> None:
    rng = random.Random(20240611)
    samples = _samples()
    results = collections.Counter()
    for _ in range(2000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            at = rng.randrange(len(data))
            if action < 0.6:
                data[at] = rng.randrange(256)
            elif action < 0.8:
                del data[at : at + rng.randint(1, 8)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        data = bytes(data)
        try:
            end = scan(data)
        except DecodeError as exc:
            assert re.match(r"(truncated|malformed) pickle|empty value", str(exc)), str(exc)
            results["refused"] += 1
            continue
        # what the scan accepts, pickleops agrees on (same end offset)
        assert end == pickle_end(data)
        results["accepted"] += 1
        with_stream = scan_stream(bytearray(data), 0, 0, len(data))
        assert with_stream == end
        with contextlib.suppress(DecodeError):
            safepickle.loads(data[:end])
    assert results["refused"] and results["accepted"]


def test_walk_error_offsets_match_pickleops() -> None:
    """When pickleops cannot find the end, the scan refuses too."""
    rng = random.Random(7)
    for _ in range(500):
        data = bytearray(rng.choice(_samples()))
        data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            pickle_end(bytes(data))
        except WalkError:
            with pytest.raises(DecodeError):
                scan(bytes(data))


def test_load_stream_refuses_a_declared_length_past_the_end_of_the_file() -> None:
    """The stream reader compares declared lengths with the file's size, never reads for them."""
    first = pickle.dumps({"a": 1}, 2)
    bad = b"\x80\x05\x8e" + struct.pack("<Q", 1 << 40) + b"ab."
    data = first + bad + b"N." * 100_000
    it = safepickle.load_stream(io.BytesIO(data))
    assert next(it)[0] == {"a": 1}
    remain = len(data) - len(first) - 11
    with pytest.raises(
        DecodeError,
        match=f"pickle at offset {len(first)}: truncated pickle: BINBYTES8 at offset 2 "
        f"declares {1 << 40} bytes but only {remain} remain",
    ):
        next(it)


# --------------------------------------------------------------------------
# Limits and strict refusals


def test_strict_refuses_a_protocol_switch() -> None:
    for data, first, second in (
        (b"\x80\x02\x80\x04].", "protocol 2", 4),
        (b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00]\x80\x02].", "protocol 4", 2),
        (b"]\x80\x02.", "no PROTO (protocol 0 or 1)", 2),
    ):
        assert scan(data) == len(data)  # the structural scan takes it
        with pytest.raises(
            DecodeError, match=rf"second PROTO at offset \d+ switches from {re.escape(first)} "
        ):
            scan(data, 0, True)
        assert str(second) in _refusal(data)
    same = b"\x80\x04\x80\x04]."  # the same value again is allowed
    assert scan(same, 0, True) == len(same)


def _refusal(data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        scan(data, 0, True)
    return str(info.value)


@pytest.mark.parametrize("opcode", [b"\x97", b"\x98"])
def test_strict_refuses_out_of_band_buffers(opcode: bytes) -> None:
    data = b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00a" + opcode + b"."
    assert scan(data) == len(data)
    name = pickle_scan.OPCODE_NAMES[opcode[0]]
    with pytest.raises(DecodeError, match=f"refused pickle: {name} at offset 12: out-of-band"):
        scan(data, 0, True)


def test_long4_cap() -> None:
    ok = b"\x80\x02\x8b" + struct.pack("<I", 1 << 16) + b"\x01" * (1 << 16) + b"."
    assert scan(ok, 0, True) == len(ok)
    big = b"\x80\x02\x8b" + struct.pack("<I", (1 << 16) + 1) + b"\x01" * ((1 << 16) + 1) + b"."
    assert scan(big) == len(big)
    with pytest.raises(DecodeError, match="LONG4 at offset 2 declares a 65537-byte int, more than"):
        scan(big, 0, True)


def test_value_and_pickle_size_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickle_scan, "MAX_VALUE", 1000)
    data = b"\x80\x04B" + struct.pack("<I", 1001) + b"x" * 1001 + b"."
    with pytest.raises(DecodeError, match="BINBYTES at offset 2 declares 1001 bytes, more than"):
        scan(data)
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1001) + b"x" * 1001 + b"."
    with pytest.raises(DecodeError, match="BINBYTES8 at offset 2 declares 1001 bytes"):
        scan(data)
    # a declared length past the end of the data is still reported as truncation
    with pytest.raises(DecodeError, match="truncated pickle: BINBYTES8"):
        scan(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"x.")
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE", 100)
    with pytest.raises(DecodeError, match="101 bytes, more than the 100-byte limit for one pickle"):
        scan(b"N" * 100 + b".")
    with pytest.raises(DecodeError, match="size limit"):
        scan_stream(bytearray(b"N" * 200 + b"."), 0, 0, None)


def test_text_int_limits_and_rewrite() -> None:
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    big = "9" * 5000
    for data, value in (
        (b"L" + big.encode() + b"L\n.", int(big) if not limit else None),
        (b"I-" + big.encode() + b"\n.", None),
        (b"(L" + big.encode() + b"L\nL-12L\nl.", None),
    ):
        assert scan(data, 0, True) == len(data)
        fixed = pickle_scan.rewrite_text_ints(data)
        assert len(fixed) == len(data) and abs(scan(fixed, 0, True)) == len(fixed)
        loaded = pickle.loads(fixed)
        assert loaded == value or value is None
    assert pickle.loads(pickle_scan.rewrite_text_ints(b"L" + big.encode() + b"L\n.")) == (
        10**5000 - 1
    )
    assert getattr(sys, "get_int_max_str_digits", lambda: 0)() == limit  # never changed
    short = b"L12345678901234567890L\n."
    assert pickle_scan.rewrite_text_ints(short) is short
    too_many = b"L" + b"1" * 100_001 + b"L\n."
    assert scan(too_many) == len(too_many)
    with pytest.raises(
        DecodeError, match="LONG at offset 0 has 100001 digits, more than the 100000"
    ):
        scan(too_many, 0, True)
    with pytest.raises(DecodeError, match="INT at offset 0 is not a plain decimal number"):
        scan(b"I" + b"1_0" * 300 + b"\n.", 0, True)


def test_int_from_digits_matches_int() -> None:
    rng = random.Random(5)
    for n in (1, 599, 600, 601, 1234, 4299, 4301, 9999):
        digits = "".join(rng.choice("0123456789") for _ in range(n)).encode()
        want = 0
        for d in digits:
            want = want * 10 + d - 48
        assert pickle_scan._int_from_digits(digits) == want


def _strict(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """The loader's strict scan, structured run first (compiled if need be)."""
    checks: list[tuple[int, int]] = []
    return scan(data, 0, True, checks, pickle_scan.RUN_STRUCTURED), checks


def test_strict_scan_asks_for_the_structure_walk() -> None:
    small = pickle.dumps({"a": [1, 2]}, 4)
    assert _strict(small) == (len(small), [])
    # Deep (more container opcodes than MAX_DEPTH) but proven: only the depth
    # of the loaded value is due (negative, nothing in the list).
    nested = pickle.dumps([[i] for i in range(2000)], 4)
    assert pickle_scan.nesting_bound(nested) > pickle_scan.MAX_DEPTH
    assert _strict(nested) == (-len(nested), []) and scan(nested) == len(nested)
    assert pickle_scan.tuple_bound(nested) < pickle_scan.MAX_DEPTH
    tuples = pickle.dumps([(i,) for i in range(2000)], 4)
    assert pickle_scan.tuple_bound(tuples) > pickle_scan.MAX_DEPTH
    end, checks = _strict(tuples)
    assert end == -len(tuples) and checks and scan(tuples) == len(tuples)
    ba = pickle.dumps(bytearray(b"ab"), 5)
    assert _strict(ba) == (-len(ba), [(11, 22)])  # the BYTEARRAY8 opcode's (offset, end)
    in_bytes = pickle.dumps(b"\x96", 5)  # the byte 0x96 in a value is no BYTEARRAY8
    assert _strict(in_bytes) == (len(in_bytes), [])
    # Proven by neither run: the exact walk is asked for.
    for data in (b"(K\x01.", P2 + b"]K\x05aK\x00K\x09s."):
        end, checks = _strict(data)
        assert end == -len(data) and checks == [(-1, -1)] and scan(data) == len(data)
    # A shape the structured run does not take (four MARK groups deep): the
    # skeleton proof proves it, and says so.
    deep = pickle.dumps({"x": [{"y": [{"z": 1, "w": 2}, 3]}, 4]}, 2)
    assert _strict(deep) == (len(deep), [pickle_scan.BY_SKELETON])
    assert scan(deep, 0, True, [], pickle_scan.SKIP_STRUCTURED) == len(deep)


P2 = b"\x80\x02"
P4 = b"\x80\x04"

# --------------------------------------------------------------------------
# The structured run of a strict scan: sound (never proves what check_structure
# refuses and the C unpickler loads), and proves what picklers write


# Tokens for the generators: every MARK consumer, SETITEM(S), APPEND(S), the
# makers, stack shufflers (POP, POP_MARK, DUP, BUILD, REDUCE), memo PUT/GET and
# a few values.  No global: plain pickle.loads runs them safely.
_TOKENS = [
    b"(", b"t", b"l", b"d", b"e", b"u", b"s", b"a", b"0", b"1", b"2", b"]", b"}", b")",
    b"N", b"K\x00", b"K\x01", b"\x8c\x01a", b"\x94", b"h\x00", b"\x85", b"\x86", b"\x8f",
    b"\x90", b"\x91", b"\x88", b"b", b"R",
]  # fmt: skip


def _fast_verdict(data: bytes) -> str:
    """What the strict scan says, checked against check_structure and pickle.loads."""
    try:
        end, checks = _strict(data)
    except DecodeError:
        return "refused"
    if end < 0:
        assert checks, data  # unproven: the exact walk is asked for
        return "walk"
    try:
        pickle_scan.check_structure(data)
    except DecodeError as exc:
        # The structured run proved it, yet the exact walk refuses it: only
        # sound if the C unpickler refuses it too (APPEND on a dict, ...).
        with pytest.raises(Exception) as loaded:  # noqa: PT011 - any refusal will do
            pickle.loads(data)
        assert loaded.type is not AssertionError, f"proven but refused: {data!r}: {exc}"
        return "c-refuses"
    return "proven"


def test_structured_run_is_sound_on_every_short_opcode_sequence() -> None:
    """Exhaustive: every sequence of up to 3 tokens (and 4 on a subset), after PROTO 4."""
    import itertools

    verdicts: collections.Counter[str] = collections.Counter()
    for n in range(4):
        for seq in itertools.product(_TOKENS, repeat=n):
            verdicts[_fast_verdict(P4 + b"".join(seq) + b".")] += 1
    small = [b"(", b"t", b"e", b"u", b"s", b"]", b"}", b"K\x00", b"0", b"1", b"h\x00"]
    for seq in itertools.product(small, repeat=5):
        verdicts[_fast_verdict(P4 + b"".join(seq) + b".")] += 1
    assert verdicts["proven"] > 1000 and verdicts["walk"] > 1000


# Protocol 0 tokens for the text grammar: its MARK users and fills, BUILD,
# REDUCE, the stack shufflers, memo PUT/GET, a GLOBAL and an INST of a harmless
# class (plain pickle.loads may run them), and a few values.
_TEXT_TOKENS = [
    b"(", b"t", b"l", b"d", b"s", b"a", b"b", b"R", b"0", b"1", b"2", b"N", b"I1\n",
    b"Vx\n", b"p0\n", b"p1\n", b"g0\n", b"cbuiltins\nlist\n", b"ibuiltins\nlist\n",
]  # fmt: skip


def test_text_grammar_is_sound_on_protocol_0_token_sequences() -> None:
    """Exhaustive up to 4 text tokens, then random longer ones (no PROTO: the text grammar)."""
    import itertools

    verdicts: collections.Counter[str] = collections.Counter()
    for n in range(1, 5):
        for seq in itertools.product(_TEXT_TOKENS, repeat=n):
            verdicts[_fast_verdict(b"".join(seq) + b".")] += 1
    rng = random.Random(17)
    for _ in range(20_000):
        body = b"".join(rng.choice(_TEXT_TOKENS) for _ in range(rng.randint(5, 40)))
        verdicts[_fast_verdict(body + b".")] += 1
    assert verdicts["proven"] > 500 and verdicts["walk"] > 1000


def test_structured_run_is_sound_on_random_and_mutated_pickles() -> None:
    rng = random.Random(11)
    verdicts: collections.Counter[str] = collections.Counter()
    for _ in range(20_000):
        body = b"".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 30)))
        verdicts[_fast_verdict(rng.choice([b"", P2, P4]) + body + b".")] += 1

    # Pickler output, and the same with structural opcodes changed: close to
    # what the grammar takes.
    leaves = [0, 300, "a", b"x", None, True, 1.5, "x", "x" * 300]
    for original, mutated in mutated_pickles(rng, 8000, leaves):
        verdicts[_fast_verdict(original)] += 1
        verdicts[_fast_verdict(mutated)] += 1
    assert verdicts["proven"] > 5000 and verdicts["walk"] > 1000 and verdicts["c-refuses"] > 100


def _record(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user-{i}", "tags": ["a", "b", str(i % 7)], "score": i / 3}


# Values the structured run proves at protocols 1 to 5 (protocol 0 too where
# marked): what shelves hold.  Anything else takes the exact walk.
_PROVEN: list[tuple[Any, bool]] = [
    (_record(7), False),  # bench_convert's record: a dict with a list in it
    ({"a": 1, "b": "x", "c": None}, True),
    ({"a": [1, 2]}, False),  # one item whose value is a container
    ({"a": {"b": 1, "c": 2}}, False),
    ({"a": (1, 2, 3, 4)}, False),
    ({1: "a"}, True),
    ({"a": [1, 2], "b": {"c": 1}, "t": (1, 2), "e": []}, True),  # protocol 0: one level in
    ([{"a": 1}, {"b": [1, "x"]}], True),
    ([_record(1), _record(2)], False),  # three levels of MARK groups
    ({"text": "x" * 1000, "tags": [1, 2]}, False),  # a long string (re-read masked)
    ([1, 2, 3], True),
    ((1, 2, 3, 4, 5), True),
    ({1, 2}, True),
    (frozenset([1]), True),
    ({i: str(i) for i in range(300)}, True),  # LONG_BINPUT at protocols 1-3
    (collections.OrderedDict(a=1, b=2), False),
    (datetime.datetime(2024, 1, 2, 3, 4, 5), True),
]
# Protocol 0 values the text grammar proves: values in values, up to four levels.
_PROVEN_TEXT: list[Any] = [
    {"a": [{"b": 1}], "c": 1},
    {"a": {"x": 1, "y": [1, (2, "z")]}, "b": {"x": None}},
    {(1, 2): "a", (3, "b"): [1]},  # tuple keys
    {"when": datetime.datetime(2020, 1, 2), "d": decimal.Decimal("1.5")},
    {"s": {1, 2}, "f": frozenset(["x"])},
    [_record(1), _record(2)],
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_structured_run_proves_what_picklers_write(protocol: int) -> None:
    for value, also_protocol_0 in _PROVEN:
        if protocol == 0 and not also_protocol_0:
            continue
        data = pickle.dumps(value, protocol)
        if protocol == 1 and pickle_scan._PLUS and not pickle_scan.BINARY_FIRST[data[0]]:
            # No PROTO and a first opcode protocol 0 has too (a MARK): the text
            # grammar's turn; a binary value is not one, the skeleton proof takes it.
            assert _strict(data) == (len(data), [pickle_scan.BY_SKELETON])
            continue
        assert _strict(data) == (len(data), []), (protocol, value)
    if protocol == 0 and pickle_scan._PLUS:  # (the text grammar needs possessive repeats: 3.11)
        for value in _PROVEN_TEXT:
            data = pickle.dumps(value, 0)
            assert _strict(data) == (len(data), []), value


def test_shapes_outside_the_structured_run_take_the_skeleton_proof() -> None:
    # Shapes outside the grammars (correct, just slower): single-key dicts
    # nested in each other, MARK groups deeper than STRUCTURE_DEPTH, protocol
    # 0 values nested deeper than TEXT_DEPTH, a dict of more than 1000 items.
    # The skeleton proof takes them, and keeps its verdict.
    deep_groups: Any = [1, 2]
    for _ in range(pickle_scan.STRUCTURE_DEPTH):
        deep_groups = [deep_groups, 1]
    for value, protocol in (
        ({"x": {"y": {"z": 1}}}, 2),
        (deep_groups, 2),
        ({"a": [{"b": [{"c": [1]}]}]}, 0),  # deeper than TEXT_DEPTH
        ({i: i for i in range(1001)}, 4),
    ):
        data = pickle.dumps(value, protocol)
        pickle_scan._SKELETONS.clear()
        assert _strict(data) == (len(data), [pickle_scan.BY_SKELETON]), value
        # (a skeleton longer than _SKELETON_KEY_MAX opcodes is walked, not kept)
        kept = len(pickletools_ops(data)) <= pickle_scan._SKELETON_KEY_MAX
        assert len(pickle_scan._SKELETONS) == kept and all(pickle_scan._SKELETONS.values())
        assert _strict(data) == (len(data), [pickle_scan.BY_SKELETON]), value
        pickle_scan.check_structure(data)
        assert safepickle.loads(data) == value


def pickletools_ops(data: bytes) -> list[Any]:
    """The opcodes after the PROTO/FRAME header (what a skeleton holds)."""
    first = pickle_scan._after_header(data, 0, len(data))
    return [op for op, _arg, pos in pickletools.genops(data) if pos >= first]


def test_skeleton_is_one_byte_per_opcode() -> None:
    rng = random.Random(3)
    values: list[Any] = [
        {"a": [1, 2.5, None, True], "b": ("x" * 300, b"y" * 70000), 10**40: {1, 2}},
        [frozenset([1]), bytearray(b"z"), -(2**70), "\u20ac", {"k": {"k": [[]]}}],
        collections.OrderedDict(a=1),
        datetime.datetime(2024, 1, 2),
    ]
    for _ in range(200):
        values.append([rng.random(), rng.randint(-(2**40), 2**40), str(rng.random()) * 10])
    for value in values:
        for protocol in PROTOCOLS:
            data = pickle.dumps(value, protocol)
            first = pickle_scan._after_header(data, 0, len(data))
            stops: list[tuple[int, int]] = []
            end = pickle_scan._walk(data, 0, first, len(data), len(data), True, stops=stops)
            masked = pickle_scan._masked(data, stops) if stops else data
            if masked is None:  # BYTEARRAY8: check_structure's business
                continue
            # The opcodes, with each masked one as its stand-in: UNICODE for a
            # long value, one MEMOIZE per byte of a memo PUT or a FRAME (the
            # same stack effect, or a stricter one that leaves the walk unproven).
            sizes = dict(stops)
            want = b""
            for op, _arg, pos in pickletools.genops(data):
                if pos < first:
                    continue
                code = op.code.encode("latin-1")
                if pos in sizes:
                    code = b"V" if code in b"XBT\x8b\x8d\x8eIL" else b"\x94" * (sizes[pos] - pos)
                want += code
            skeleton = b"".join(pickle_scan.SKELETON.findall(masked, first, end))
            assert skeleton == want, (value, protocol)


# --------------------------------------------------------------------------
# check_structure


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"(K\x01.", "STOP at offset 3 leaves 1 MARK"),
        (b"\x80\x02]K\x00K\x09s.", "SETITEM at offset 7 on a list"),
        (b"\x80\x02](K\x00K\x09u.", "SETITEMS at offset 8 on a list"),
        (
            b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab(KAe.",
            "APPENDS at offset 16 on a bytearray",
        ),
        (
            b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00abKAa.",
            "APPEND at offset 15 on a bytearray",
        ),
        (b"\x80\x04](K\x01\x90.", "ADDITEMS at offset 6 on a list"),
        (b"a.", "APPEND at offset 0: unpickling stack underflow"),
        (b"K\x01(a.", "APPEND at offset 3: unpickling stack underflow"),
        (b"K\x01t.", "TUPLE at offset 2 could not find MARK"),
        (b"1.", "POP_MARK at offset 0 could not find MARK"),
        (b"2.", "DUP at offset 0: unpickling stack underflow"),
        (b"h\x07.", "BINGET at offset 0: memo value 7 not found"),
        (b"g\n.", "malformed pickle"),
        (b"N" + b"\x85" * 1001 + b".", "TUPLE1 at offset 1001 makes more than 1000 levels"),
        (b"(" * 1001 + b")" + b"t" * 1001 + b".", "TUPLE at offset 2001 makes more than 1000"),
    ],
)
def test_check_structure_refuses(data: bytes, message: str) -> None:
    assert scan(data) == len(data)
    with pytest.raises(DecodeError, match=re.escape(message)):
        pickle_scan.check_structure(data)


def test_check_structure_accepts_what_picklers_write() -> None:
    shared: list[Any] = [1]
    node = Cyclic()
    node.x = [node]  # type: ignore[attr-defined]
    values: list[Any] = [
        _values(),
        {(1, 2): [{1, 2}, frozenset([3]), bytearray(b"x")], "s": shared, "t": shared},
        collections.OrderedDict(a=1),
        [list(range(1000)), {i: str(i) for i in range(1000)}],
        node,
    ]
    recursive: list[Any] = []
    recursive.append((recursive,))
    values.append(recursive)
    nested: Any = "leaf"
    for _ in range(300):  # (pickle.dumps itself recurses)
        nested = [nested]
    values.append(nested)
    for value in values:
        for protocol in PROTOCOLS:
            data = pickle.dumps(value, protocol)
            gets = pickle_scan.check_structure(data)
            assert gets >= 0
    for _name, data in _fixture_pickles():
        start = 0
        while start < len(data):
            end = scan(data, start)
            pickle_scan.check_structure(data, start)
            start = end
