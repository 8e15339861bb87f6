"""Fuzzing and differential testing of the pure-Python marshal reader.

* Mutation fuzz: the fixtures of fixtures/marshal/ (every CPython 2.7/3.6-3.13
  version and stream, code objects included) are mutated with a seeded
  ``random.Random`` (bit flips, bytes set, truncation, deletion, duplication,
  inserted bytes, and marshal-aware edits: a type code replaced, FLAG_REF
  toggled, a length or reference index set to a hostile value) and read by
  ``loads``, ``load_stream`` (bytes and a file), ``survey`` and the container
  reader.  Each case must end in values or a
  :class:`~shelfmigrate.errors.ShelfmigrateError`; nothing else, no hang, and
  (checked on a share of the cases) memory in proportion to the input.
* Differential: random values (nested containers; ints from small to huge;
  floats with nan, inf and -0.0; complex; text with non-BMP characters and lone
  surrogates; bytes; tuples, sets, frozensets; None, True, False, Ellipsis,
  StopIteration; the same containers shared and cycles) are written by
  ``marshal.dumps(value, version)`` for versions 0-4, and what we read must
  equal what CPython's ``marshal.loads`` gives for those same trusted bytes,
  down to which objects are the same object (FLAG_REF sharing and cycles), and
  the version range inferred from the type codes must hold the true version.

``SHELFMIGRATE_FUZZ_ITERATIONS`` (default 300) is the number of mutation cases
per fixture group, and half of it the number of differential values;
``SHELFMIGRATE_FUZZ_SEED`` changes the seed.  Case ``i`` of group ``G`` uses
``random.Random(f"{SEED}:marshal:{G}:{i}")`` and a failure names it.
"""

from __future__ import annotations

import contextlib
import io
import marshal as cpython_marshal
import math
import os
import random
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from shelfmigrate.codecs import marshal as m
from shelfmigrate.errors import ShelfmigrateError
from shelfmigrate.options import ReadOptions
from shelfmigrate.pipeline import open_reader

ITERATIONS = int(os.environ.get("SHELFMIGRATE_FUZZ_ITERATIONS", "300"))
SEED = os.environ.get("SHELFMIGRATE_FUZZ_SEED", "shelfmigrate-fuzz-1")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "marshal"
CASE_BUDGET_S = 20.0  # a hang guard, not a speed test
HOSTILE_INTS = (-1, 0, 1, 255, 256, 0x7FFF, 70_000, 2**31 - 1, -(2**31))

#: fixture groups: Python 2, Python 3 at versions 0-2, Python 3 at 3-4, streams, code
GROUPS = {
    "py2": ["py27_v0", "py27_v1", "py27_v2"],
    "py3-old": ["py36_v0", "py36_v2"],
    "py3-ref": ["py36_v3", "py36_v4", "py37_v4", "py310_v4"],
    "streams": ["py27_stream", "py36_stream", "py311_code"],
}


# ----------------------------------------------------------------------------- mutation fuzz


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    """1-4 random edits, some of them aware of marshal's layout; returns what was done."""
    buf = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf[:] = rng.randbytes(rng.randint(1, 8))
            done.append("replace everything")
            continue
        at = rng.randrange(len(buf))
        op = rng.randrange(10)
        if op == 0:
            buf[at] ^= 1 << rng.randrange(8)
            done.append(f"flip a bit at {at}")
        elif op == 1:
            buf[at] = rng.randrange(256)
            done.append(f"set byte {at}")
        elif op == 2:
            del buf[at:]
            done.append(f"truncate at {at}")
        elif op == 3:
            del buf[at : at + rng.randint(1, 32)]
            done.append(f"delete at {at}")
        elif op == 4:
            end = min(len(buf), at + rng.randint(1, 64))
            buf[end:end] = buf[at:end]
            done.append(f"duplicate [{at}:{end}]")
        elif op == 5:
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
            done.append(f"insert at {at}")
        elif op == 6:  # a type code position gets another code (maybe a Python 2/3-only one)
            buf[at] = ord(rng.choice("0NFTS.iIlfgxystRuaAzZ)([{<>rc?:"))
            buf[at] |= rng.choice((0, 0x80))
            done.append(f"type code at {at}")
        elif op == 7:  # FLAG_REF on or off
            buf[at] ^= 0x80
            done.append(f"toggle FLAG_REF at {at}")
        else:  # a length, count or reference index gone wild
            buf[at : at + 4] = struct.pack("<i", rng.choice(HOSTILE_INTS))
            done.append(f"hostile int32 at {at}")
    return bytes(buf), done


def _read_everything(data: bytes, python: int | None, policy: str, path: Path | None) -> None:
    """Every way of reading ``data``; each must end in values or a ShelfmigrateError."""
    for attempt in (
        lambda: m.loads(data, python=python, py2_str=policy),
        lambda: list(m.load_stream(data, python=python, py2_str=policy)),
        lambda: list(m.load_stream(io.BytesIO(data), python=python, py2_str=policy)),
        lambda: m.survey(data, python=python),
        lambda: m.detect_python(data),
    ):
        with contextlib.suppress(ShelfmigrateError):
            attempt()
    if path is not None:
        path.write_bytes(data)
        options = ReadOptions(marshal_python=python, py2_str=policy)
        try:
            with open_reader(path, format="marshal", options=options) as reader:
                list(reader.records())
                reader.details()
                reader.count()
        except ShelfmigrateError:
            pass


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_mutated_fixtures_end_in_values_or_clear_errors(group, tmp_path):
    corpus = [(name, (FIXTURES / f"{name}.marshal").read_bytes()) for name in GROUPS[group]]
    failures = []
    for i in range(ITERATIONS):
        rng = random.Random(f"{SEED}:marshal:{group}:{i}")
        name, base = rng.choice(corpus)
        data, done = mutate(rng, base)
        python = rng.choice((None, 2, 3))
        policy = rng.choice(("auto", "bytes", "latin1"))
        path = tmp_path / "case.marshal" if i % 4 == 0 else None
        measure = i % 25 == 0
        started = time.perf_counter()
        if measure:
            tracemalloc.start()
        try:
            _read_everything(data, python, policy, path)
        except Exception as exc:  # anything but a ShelfmigrateError is a bug
            failures.append(f"{SEED}:marshal:{group}:{i} ({name}: {done}): {exc!r}")
        finally:
            if measure:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                # a copy or two of the input and the values built from it, never a declared size
                if peak > 64 * len(data) + (4 << 20):
                    failures.append(f"{SEED}:marshal:{group}:{i}: peak {peak} bytes")
        if time.perf_counter() - started > CASE_BUDGET_S:
            failures.append(f"{SEED}:marshal:{group}:{i} ({name}: {done}): too slow")
    assert not failures, "\n".join(failures[:10])


# ----------------------------------------------------------------------------- differential


class ValueMaker:
    """Random marshallable values, with shared containers and cycles."""

    def __init__(self, rng: random.Random, cycles: bool):
        self.rng = rng
        # marshal versions 0-2 have no references: CPython writes a cycle over and over
        # until its depth limit (exponential time with two of them), so only 3+ get cycles
        self.cycles = cycles
        self.pool: list[Any] = []  # containers made so far (to share)
        self.hashable_pool: list[Any] = []  # tuples and frozensets made so far

    def scalar(self) -> Any:
        rng = self.rng
        kind = rng.randrange(14)
        if kind == 0:
            return rng.choice([None, True, False, Ellipsis, StopIteration])
        if kind == 1:
            return rng.randint(-300, 300)
        if kind == 2:
            return rng.choice([2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**63, -(2**63) - 1])
        if kind == 3:
            bits = rng.choice([15, 30, 45, 64, 100, 1000])
            return rng.getrandbits(bits) * rng.choice((1, -1))
        if kind == 4:
            return rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1e308])
        if kind == 5:
            return rng.uniform(-1e6, 1e6)
        if kind == 6:
            return complex(rng.choice([0.0, -0.0, 1.5, math.inf]), rng.uniform(-9, 9))
        if kind == 7:
            return rng.randbytes(rng.choice([0, 1, 5, 300]))
        if kind == 8:
            alphabet = "ab\xe9\u20ac\U0001f600\U00010000"
            return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 20])))
        if kind == 9:
            return rng.choice(["\ud800", "a\udfffb", "x" * 255, "y" * 256, "z" * 300])
        if kind == 10:
            return "".join(rng.choice("abc") for _ in range(rng.randint(1, 300)))
        if kind == 11 and self.hashable_pool:
            return rng.choice(self.hashable_pool)  # a shared tuple or frozenset
        return rng.randint(-(2**31), 2**31 - 1)

    def hashable(self, depth: int) -> Any:
        rng = self.rng
        if depth <= 0 or rng.random() < 0.6:
            value = self.scalar()
            return value if value == value else 0.5  # nan keys: fine for marshal, not for ==
        if rng.random() < 0.5:
            value: Any = tuple(self.hashable(depth - 1) for _ in range(rng.randint(0, 4)))
        else:
            value = frozenset(self.hashable(depth - 1) for _ in range(rng.randint(0, 4)))
        if value:
            self.hashable_pool.append(value)
        return value

    def value(self, depth: int = 4) -> Any:
        rng = self.rng
        if depth <= 0 or rng.random() < 0.35:
            return self.scalar() if rng.random() < 0.8 else self.hashable(2)
        if self.pool and rng.random() < 0.15:
            return rng.choice(self.pool)  # the same list/dict/set again
        kind = rng.randrange(5)
        size = rng.choice([0, 1, 2, 3, 5, 8])
        if kind == 0:
            value: Any = [self.value(depth - 1) for _ in range(size)]
            if self.cycles and rng.random() < 0.3:
                value.append(value)  # a cycle
        elif kind == 1:
            value = tuple(self.value(depth - 1) for _ in range(size))
            if len(value) > 255 or rng.random() < 0.05:
                value = tuple(self.scalar() for _ in range(rng.choice([255, 256])))
        elif kind == 2:
            value = {self.hashable(2): self.value(depth - 1) for _ in range(size)}
            if self.cycles and rng.random() < 0.3:
                value[self.scalar() if rng.random() < 0.5 else "self"] = value
        elif kind == 3:
            value = {self.hashable(2) for _ in range(size)}
        else:
            value = frozenset(self.hashable(2) for _ in range(size))
        self.pool.append(value)
        return value


def same_graph(ours: Any, theirs: Any) -> str | None:
    """Compare two loaded values: equal values, and the same objects shared in both.

    Walks both in parallel (no recursion), pairing containers one to one: a
    container met twice on one side must be met twice, at the same places, on the
    other (that covers FLAG_REF sharing and cycles).  Floats compare by repr (nan,
    -0.0).  Returns a description of the first difference, or ``None``.
    """
    pairs: dict[int, int] = {}
    back: dict[int, int] = {}
    keep = []  # keep the objects alive while their ids are in the maps
    todo = [(ours, theirs, "value")]
    while todo:
        a, b, where = todo.pop()
        if type(a) is not type(b):
            return f"{where}: {type(a).__name__} != {type(b).__name__}"
        kind = type(a)
        if kind is float:
            if repr(a) != repr(b):
                return f"{where}: {a!r} != {b!r}"
            continue
        if kind is complex:
            if (repr(a.real), repr(a.imag)) != (repr(b.real), repr(b.imag)):
                return f"{where}: {a!r} != {b!r}"
            continue
        if kind not in (list, tuple, dict, set, frozenset):
            if a != b and a is not b:
                return f"{where}: {a!r} != {b!r}"
            continue
        if len(a) == 0:
            if len(b):
                return f"{where}: empty on our side only"
            continue  # empty tuples and frozensets may be shared singletons
        if id(a) in pairs or id(b) in back:
            if pairs.get(id(a)) != id(b) or back.get(id(b)) != id(a):
                return f"{where}: sharing differs"
            continue
        pairs[id(a)] = id(b)
        back[id(b)] = id(a)
        keep += (a, b)
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        if kind is dict:
            for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items(), strict=True)):
                todo.append((ka, kb, f"{where}.key[{i}]"))
                todo.append((va, vb, f"{where}[{ka!r}]"))
        else:  # sets and frozensets too: both sides built them in the same order
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                todo.append((x, y, f"{where}[{i}]"))
    return None


def _has_cycle(value: Any) -> bool:
    """Does a container contain itself (at any depth)?"""
    on_path: set[int] = set()
    done: set[int] = set()
    todo: list[tuple[Any, bool]] = [(value, False)]
    while todo:
        obj, leaving = todo.pop()
        if leaving:
            on_path.discard(id(obj))
            done.add(id(obj))
            continue
        if type(obj) not in (list, tuple, dict, set, frozenset):
            continue
        if id(obj) in on_path:
            return True
        if id(obj) in done:
            continue
        on_path.add(id(obj))
        todo.append((obj, True))
        todo.extend((x, False) for x in (obj.values() if type(obj) is dict else obj))
    return False


def test_same_graph_notices_differences():
    shared = [1]
    assert str(same_graph([shared, shared], [[1], [1]])).endswith("sharing differs")
    assert same_graph([shared, shared], [[1], [1]][:1] * 2) is None
    assert same_graph([1.0], [1]) is not None
    assert same_graph([-0.0], [0.0]) is not None
    assert same_graph([math.nan], [math.nan]) is None
    assert same_graph({"a": (1, 2)}, {"a": (1, 3)}) is not None


def test_differential_against_cpython_marshal():
    """Random values, dumped at versions 0-4: our reader == CPython's loads of the same bytes."""
    count = max(20, ITERATIONS // 2)
    failures = []
    shared_seen = cyclic = 0
    for i in range(count):
        rng = random.Random(f"{SEED}:marshal:differential:{i}")
        cycles = i % 3 == 2
        maker = ValueMaker(rng, cycles)
        value = [maker.value() for _ in range(rng.randint(1, 4))]
        for version in range(3, 5) if cycles else range(5):
            data = cpython_marshal.dumps(value, version)
            want = cpython_marshal.loads(data)  # trusted: we made these bytes just now
            try:
                got = m.loads(data)
                forced = m.loads(data, python=3)
                stream = [v for v, _, _ in m.load_stream(data + data)]
            except ShelfmigrateError as exc:
                failures.append(f"case {i} version {version}: {exc}")
                continue
            for what, ours in (("loads", got), ("python=3", forced), ("stream", stream[1])):
                problem = same_graph(ours, want)
                if problem:
                    failures.append(f"case {i} version {version} {what}: {problem}")
            seen = [0] * 256
            m._load_one(data, 0, None, 1, None, None, False, seen)
            low, high, _ = m.infer_version(seen, None)
            if not low <= version <= high:
                failures.append(f"case {i}: version {version} inferred as {low}-{high}")
            shared_seen += version >= 3 and b"r" in bytes(b & 0x7F for b in data)
            cyclic += _has_cycle(got)
    assert not failures, "\n".join(failures[:10])
    assert shared_seen  # the values did exercise 'r' references
    assert cyclic  # and cycles
