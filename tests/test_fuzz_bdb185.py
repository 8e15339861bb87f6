"""Seeded, bounded fuzzing of the Berkeley DB 1.85/1.86 reader.

Every fixture of ``fixtures/bdb185`` (hash in both page byte orders, the ndbm
``.db``, btree in both orders, the cross-endian btree, the btree with freed pages,
recno in both orders) is a base input.  Each case mutates one base file:

* a header field (hash: the big-endian u32 fields, ``spares[]``, ``bitmaps[]``;
  btree: the meta page) set to an interesting value;
* page words: a hash page's index words (count, offsets, tags, overflow addresses),
  or a btree page's header (``pgno``, ``prevpg``, ``nextpg``, ``flags``, ``lower``,
  ``upper``), an index (``linp``) entry or an item's fields (sizes, flags, the
  ``{pgno, size}`` of an overflow reference);
* random bytes, truncation, duplicated and deleted chunks (``mutate_bytes`` of
  tests/test_fuzz.py).

Then the file is read whole: even cases go through detection
(``shelfmigrate.open_reader``), odd ones straight to ``BerkeleyDB185Reader`` so
damage that detection would turn away still reaches the reader; every tenth case
runs the whole pipeline (``convert`` to JSON lines).  A case passes when it ends in
records or a :class:`ShelfmigrateError` within ``CASE_BUDGET_S`` seconds (a
generous hang guard, not a timing assertion); the address space is capped as in
tests/test_fuzz.py.

``SHELFMIGRATE_FUZZ_ITERATIONS`` (default 300) sets the cases per base file;
case ``i`` of base ``B`` uses ``random.Random(f"{SEED}:bdb185:{B}:{i}")``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import time
from pathlib import Path

import pytest
from test_fuzz import (  # noqa: F401 - memory_cap is a fixture
    CASE_BUDGET_S,
    ITERATIONS,
    SEED,
    CaseTimeout,
    memory_cap,
    mutate_bytes,
    run_case,
    time_limit,
)

import shelfmigrate
from shelfmigrate.errors import ShelfmigrateError
from shelfmigrate.formats.bdb185 import BerkeleyDB185Reader
from shelfmigrate.records import Record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bdb185"
BASES = sorted(p.stem for p in FIXTURES.glob("*.db"))
MAX_REPORTED = 10


def _interesting(rng: random.Random, bits: int, current: int, page_size: int) -> int:
    top = (1 << bits) - 1
    return rng.choice(
        (
            0,
            1,
            2,
            3,
            4,
            top,
            top >> 1,
            (current + rng.choice((-1, 1, 2, 8))) & top,
            page_size & top,
            (page_size - 1) & top,
            (page_size + 1) & top,
            rng.randrange(top + 1),
            (rng.randrange(32) << 11 | rng.randrange(1, 8)) & top,  # a hash overflow address
            rng.randrange(64),
        )
    )


def _put(rng: random.Random, buf: bytearray, at: int, bits: int, order: str, page_size: int) -> str:
    width = bits // 8
    if at + width > len(buf):
        return "nothing (beyond the end)"
    fmt = order + ("H" if bits == 16 else "I")
    (current,) = struct.unpack_from(fmt, buf, at)
    value = _interesting(rng, bits, current, page_size)
    struct.pack_into(fmt, buf, at, value)
    return f"u{bits}{'le' if order == '<' else 'be'} at {at}: {current} -> {value}"


def mutate_structure(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Set one header field, page word or item field of a DB 1.85 file."""
    buf = bytearray(data)
    if data[:4] == b"\x00\x06\x15\x61":  # hash: big-endian header, lorder pages
        bsize = struct.unpack_from(">I", data, 12)[0] or 256
        order = "<" if struct.unpack_from(">I", data, 8)[0] == 1234 else ">"
        choice = rng.random()
        if choice < 0.3:
            at = rng.choice((4, 8, 12, 16, 32, 40, 44, 48, 52, 56, 60, 64))
            if rng.random() < 0.4:
                at = 68 + 4 * rng.randrange(8)  # spares[] used by small files
            return buf_done(buf, "header " + _put(rng, buf, at, 32, ">", bsize))
        if choice < 0.4:
            at = 196 + 2 * rng.randrange(4)  # bitmaps[]
            return buf_done(buf, "bitmaps " + _put(rng, buf, at, 16, ">", bsize))
        page = rng.randrange(max(1, len(data) // bsize))
        word = rng.choice((0, 1, 2, 3, 4, 5, rng.randrange(12)))
        at = page * bsize + 2 * word
        if rng.random() < 0.15:
            order = "<" if order == ">" else ">"
        return buf_done(buf, f"page {page} word {word}: " + _put(rng, buf, at, 16, order, bsize))
    order = "<" if struct.unpack_from("<I", data)[0] == 0x053162 else ">"
    psize = struct.unpack_from(order + "I", data, 8)[0] if len(data) >= 12 else 512
    psize = psize if 128 <= psize <= 65536 else 512
    choice = rng.random()
    if choice < 0.15:
        at = rng.choice((4, 8, 12, 16, 20))
        return buf_done(buf, "meta " + _put(rng, buf, at, 32, order, psize))
    page = rng.randrange(1, max(2, len(data) // psize))
    base = page * psize
    if choice < 0.45:  # page header
        at, bits = rng.choice(((0, 32), (4, 32), (8, 32), (12, 32), (16, 16), (18, 16)))
        return buf_done(buf, f"page {page} header " + _put(rng, buf, base + at, bits, order, psize))
    if base + 20 > len(buf):
        return buf_done(buf, "nothing (page beyond the end)")
    lower = struct.unpack_from(order + "H", buf, base + 16)[0]
    entries = max(1, (lower - 20) // 2) if 20 <= lower <= psize else 1
    entry = rng.randrange(min(entries, 64))
    if choice < 0.65:  # an index word
        return buf_done(
            buf,
            f"page {page} linp[{entry}] " + _put(rng, buf, base + 20 + 2 * entry, 16, order, psize),
        )
    # a field of an item: sizes, flags byte, overflow reference words
    linp_at = base + 20 + 2 * entry
    if linp_at + 2 > len(buf):
        return buf_done(buf, "nothing (index beyond the end)")
    item = struct.unpack_from(order + "H", buf, linp_at)[0]
    if not 20 <= item < psize - 8:
        return buf_done(buf, "nothing (no item)")
    field = rng.choice((0, 4, 8, 9, 13, 17, 21))
    if field == 8:
        at = base + item + 8
        if at < len(buf):
            old = buf[at]
            buf[at] = rng.choice((0, 1, 2, 3, 0xFF, rng.randrange(256)))
            return buf_done(buf, f"page {page} item {entry} flags {old} -> {buf[at]}")
        return buf_done(buf, "nothing")
    return buf_done(
        buf,
        f"page {page} item {entry} +{field} "
        + _put(rng, buf, base + item + field, 32, order, psize),
    )


def buf_done(buf: bytearray, what: str) -> tuple[bytes, str]:
    return bytes(buf), what


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    done: list[str] = []
    if rng.random() < 0.7:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data, what = mutate_structure(rng, data)
            done.append(what)
        if rng.random() < 0.2:
            data, more = mutate_bytes(rng, data, 1)
            done.extend(more)
        return data, done
    return mutate_bytes(rng, data)


def read_case(path: Path, through_detection: bool) -> str | None:
    """Read ``path`` whole; a problem description, or None when it ended acceptably."""
    try:
        with time_limit(CASE_BUDGET_S):
            if through_detection:
                reader = shelfmigrate.open_reader(path)
            else:
                reader = BerkeleyDB185Reader(path)
            try:
                count = reader.count()
                json.dumps(reader.details())
                read = 0
                for record in reader.records():
                    if not isinstance(record, Record):
                        return f"records() yielded {type(record).__name__}"
                    if record.error is None and not isinstance(record.raw, bytes):
                        return "a record without raw bytes and without an error"
                    read += 1
                exact = count is not None and isinstance(reader, BerkeleyDB185Reader)
                if exact and count != read:
                    return f"count() said {count} but {read} records were read"
            finally:
                reader.close()
    except ShelfmigrateError:
        return None
    except CaseTimeout as timeout:
        return f"hang: {timeout}"
    except Exception as error:  # anything else is a bug
        return f"unexpected {type(error).__name__}: {str(error)[:200]}"
    return None


@pytest.mark.parametrize("base", BASES)
def test_fuzz_bdb185(base: str, tmp_path: Path, memory_cap: None) -> None:  # noqa: F811
    original = (FIXTURES / f"{base}.db").read_bytes()
    src_dir, out = tmp_path / "src", tmp_path / "out"
    failures: list[str] = []
    for iteration in range(ITERATIONS):
        shutil.rmtree(src_dir, ignore_errors=True)
        src_dir.mkdir()
        rng = random.Random(f"{SEED}:bdb185:{base}:{iteration}")
        data, mutations = mutate(rng, original)
        path = src_dir / f"{base}.db"
        path.write_bytes(data)
        started = time.perf_counter()
        if iteration % 10 == 9:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            from_format = "bdb185-hash" if original[:4] == b"\x00\x06\x15\x61" else "bdb185-btree"
            exc, problem, _ = run_case(path, out, from_format if iteration % 20 == 19 else None)
            if exc is not None:
                problem = f"unexpected {type(exc).__name__}: {str(exc)[:200]}"
        else:
            problem = read_case(path, through_detection=iteration % 2 == 0)
        if problem is None and sorted(os.listdir(src_dir)) != [path.name]:
            problem = f"left {sorted(os.listdir(src_dir))} beside the source"
        if problem is not None:
            keep = tmp_path / "failures" / f"{base}-{iteration}.db"
            keep.parent.mkdir(exist_ok=True)
            keep.write_bytes(data)
            failures.append(
                f"seed={SEED!r} base={base} iteration={iteration} "
                f"({time.perf_counter() - started:.2f} s): {problem}\n"
                f"    mutations: {'; '.join(mutations)}\n    input kept in {keep}"
            )
    assert not failures, f"{len(failures)} of {ITERATIONS} cases failed; first ones:\n" + "\n".join(
        failures[:MAX_REPORTED]
    )


def test_structure_mutations_are_reproducible() -> None:
    data = (FIXTURES / "hash-le.db").read_bytes()
    assert mutate(random.Random("x"), data) == mutate(random.Random("x"), data)
