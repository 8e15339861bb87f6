"""Seeded, bounded fuzzing of the Berkeley DB reader on damaged files.

Base files are real libdb 5.3 files from ``fixtures/bdb/`` (hash, btree with duplicates
and overflow items, checksummed, recno, queue, subdatabases, and a queue whose pages
are split into extent files as ``test_bdb.py`` synthesizes it).  Each case mutates a copy
with ``random.Random``; about half of the mutations are aimed at the structures the
reader trusts (FORMATS.md §1): meta-page fields, page headers (page number, links,
entry count, ``hf_offset``, level, type), index arrays and the item headers they point
at (type bytes, lengths, overflow/duplicate page numbers, ``tlen``); the rest are random
bit flips, byte runs, truncation (torn files) and swapped or duplicated pages.

Each case reads the whole file (the structured walk, or the salvage scan in one case of
four, with and without checksum verification), calls ``details()``, and must end in
records or a :class:`~shelfmigrate.errors.ShelfmigrateError` within ``CASE_BUDGET_S``
seconds - nothing else.  The address space is capped as in ``tests/test_fuzz.py`` (its
``memory_cap`` fixture and ``time_limit`` are reused), so an unbounded allocation
shows up as a MemoryError failure instead of the OOM killer.

Default: ``CASES_PER_BASE`` cases per base file.  ``SHELFMIGRATE_FUZZ_ITERATIONS`` sets
the number per base file for long opt-in runs (e.g. 20000); ``SHELFMIGRATE_FUZZ_SEED``
changes the seed.  Case ``i`` of base ``B`` uses ``random.Random(f"{SEED}:bdb:{B}:{i}")``;
a failing case's file is kept under ``tmp_path/failures``.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import traceback
from pathlib import Path

import pytest
from test_bdb import synthesize_queue_extents
from test_fuzz import memory_cap, time_limit  # noqa: F401 - memory_cap is a fixture

from shelfmigrate.errors import ShelfmigrateError
from shelfmigrate.formats.bdb import BerkeleyDBReader
from shelfmigrate.options import ReadOptions

CASES_PER_BASE = int(os.environ.get("SHELFMIGRATE_FUZZ_ITERATIONS", "200"))
SEED = os.environ.get("SHELFMIGRATE_FUZZ_SEED", "shelfmigrate-fuzz-1")
CASE_BUDGET_S = 20.0
MAX_REPORTED = 10

BDB = Path(__file__).resolve().parent.parent / "fixtures" / "bdb"
BASES = [
    "hash-le-512",
    "hash-overflow-be",
    "hash-dup-le",
    "btree-dup-be",
    "btree-overflow-le",
    "btree-dupsort-le",
    "hash-chksum-le",
    "recno-var",
    "queue-le",
    "subdbs",
]

#: salvage refuses these outright (tested in test_bdb.py), so fuzzing it there tests nothing
NO_SALVAGE = {"recno-var", "subdbs"}
# meta-page offsets worth hitting (§1.2, §1.3): pgno, magic, version, pagesize, encrypt,
# type, metaflags, free, last_pgno, nparts, counts, flags, then the access-method fields
META_FIELDS = [
    8,
    12,
    16,
    20,
    24,
    25,
    26,
    28,
    32,
    36,
    40,
    44,
    48,
    72,
    76,
    80,
    84,
    88,
    92,
    96,
    100,
    104,
]
# page-header fields (§1.4): pgno, prev, next (u32); entries, hf_offset (u16); level, type (u8)
HEADER_U32 = [8, 12, 16]
HEADER_U16 = [20, 22]
HEADER_U8 = [24, 25]
INTERESTING_U32 = [0, 1, 2, 3, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000, 511, 512, 4096]
INTERESTING_U16 = [0, 1, 2, 0xFFFF, 0x8000, 25, 26, 31, 32, 511, 512]


class Layout:
    """Byte order and page size of a base file, to aim mutations."""

    def __init__(self, data: bytes):
        magic_le = struct.unpack_from("<I", data, 12)[0]
        self.order = "<" if magic_le in (0x061561, 0x053162, 0x042253) else ">"
        self.page_size = struct.unpack_from(self.order + "I", data, 20)[0]
        self.pages = len(data) // self.page_size
        self.overhead = 32 if data[26] & 1 else 26


def put(data: bytearray, order: str, fmt: str, offset: int, value: int) -> None:
    size = struct.calcsize(fmt)
    if offset >= 0 and offset + size <= len(data):
        struct.pack_into(order + fmt, data, offset, value)


def targeted(rng: random.Random, data: bytearray, layout: Layout) -> str:
    """One mutation aimed at a structure the reader trusts; returns its description."""
    order, ps = layout.order, layout.page_size
    what = rng.randrange(5)
    if what == 0:
        field = rng.choice(META_FIELDS)
        value = rng.choice(INTERESTING_U32 + [rng.getrandbits(32), rng.randrange(layout.pages + 3)])
        put(data, order, "I", field, value)
        return f"meta u32 @{field} = {value:#x}"
    pgno = rng.randrange(1, max(2, layout.pages))
    base = pgno * ps
    if what == 1:
        kind = rng.randrange(3)
        if kind == 0:
            field = rng.choice(HEADER_U32)
            value = rng.choice([rng.randrange(layout.pages + 2), *INTERESTING_U32])
            put(data, order, "I", base + field, value)
        elif kind == 1:
            field = rng.choice(HEADER_U16)
            value = rng.choice(INTERESTING_U16 + [rng.getrandbits(16)])
            put(data, order, "H", base + field, value)
        else:
            field = rng.choice(HEADER_U8)
            value = rng.randrange(20) if field == 25 else rng.getrandbits(8)
            put(data, order, "B", base + field, value)
        return f"page {pgno} header @{field} = {value:#x}"
    if base + 26 > len(data):
        return "no page"
    entries = struct.unpack_from(order + "H", data, base + 20)[0]
    if entries == 0 or base + layout.overhead + 2 * entries > len(data):
        put(data, order, "H", base + 20, rng.choice(INTERESTING_U16))
        return f"page {pgno} entries"
    slot = rng.randrange(min(entries, (ps - layout.overhead) // 2))
    slot_at = base + layout.overhead + 2 * slot
    if what == 2:
        value = rng.choice(INTERESTING_U16 + [rng.getrandbits(16)])
        put(data, order, "H", slot_at, value)
        return f"page {pgno} index[{slot}] = {value:#x}"
    item = base + struct.unpack_from(order + "H", data, slot_at)[0]
    if what == 3:
        # item header: hash type byte @0, btree len @0 / type @2, page number @4, tlen @8
        field = rng.choice([0, 1, 2, 4, 8])
        if field in (4, 8):
            value = rng.choice([rng.randrange(layout.pages + 2), *INTERESTING_U32])
            put(data, order, "I", item + field, value)
        elif field == 0 and rng.random() < 0.5:
            value = rng.randrange(8)
            put(data, order, "B", item, value)
        else:
            value = rng.choice(INTERESTING_U16 + [rng.getrandbits(16)])
            put(data, order, "H", item + field, value)
        return f"page {pgno} item @{item - base} field {field} = {value:#x}"
    if 0 <= item < len(data):
        data[item] = rng.getrandbits(8)
    return f"page {pgno} item byte @{item - base}"


def random_mutation(rng: random.Random, data: bytearray, layout: Layout) -> tuple[bytearray, str]:
    ps = layout.page_size
    what = rng.randrange(5)
    if what == 0:
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        return data, f"bit flip @{at}"
    if what == 1:
        at = rng.randrange(len(data))
        n = rng.randint(1, 32)
        data[at : at + n] = bytes(rng.getrandbits(8) for _ in range(len(data[at : at + n])))
        return data, f"random run @{at}+{n}"
    if what == 2:
        cut = rng.randrange(1, len(data))
        return data[:cut], f"truncated to {cut}"
    if layout.pages < 3:
        return data, "no-op"
    a, b = rng.sample(range(1, layout.pages), 2)
    pa, pb = bytes(data[a * ps : (a + 1) * ps]), bytes(data[b * ps : (b + 1) * ps])
    if what == 3:
        data[a * ps : (a + 1) * ps], data[b * ps : (b + 1) * ps] = pb, pa
        return data, f"swapped pages {a} and {b}"
    data[b * ps : (b + 1) * ps] = pa
    return data, f"page {a} copied over page {b}"


def mutate(
    rng: random.Random, original: bytes, layout: Layout | None = None
) -> tuple[bytes, list[str]]:
    """Mutate ``original``; ``layout`` (byte order, page size) is read from it unless given."""
    data = bytearray(original)
    layout = layout or Layout(original)
    notes = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if rng.random() < 0.6:
            notes.append(targeted(rng, data, layout))
        else:
            data, note = random_mutation(rng, data, layout)
            notes.append(note)
        if not data:
            data = bytearray(original[:1])
    return bytes(data), notes


def read_case(path: Path, options: ReadOptions) -> int:
    count = 0
    with BerkeleyDBReader(path, options) as reader:
        reader.details()
        for record in reader.records():
            assert record.raw is not None or record.error is not None
            count += 1
        reader.details()
    return count


def _run_case(path: Path, options: ReadOptions, outcomes: dict[str, int]) -> str | None:
    """Read one case; count its outcome, or describe the exception that is a finding."""
    try:
        with time_limit(CASE_BUDGET_S):
            read_case(path, options)
        outcomes["records"] += 1
    except ShelfmigrateError:
        outcomes["error"] += 1
    except BaseException as exc:  # noqa: BLE001 - anything else is the finding
        if isinstance(exc, KeyboardInterrupt):
            raise
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return f"{type(exc).__name__}: {exc} at {Path(frame.filename).name}:{frame.lineno}"
    return None


@pytest.mark.parametrize("base", BASES)
def test_fuzz_bdb_reader(base: str, tmp_path: Path, memory_cap: None) -> None:  # noqa: F811
    source = BDB / f"{base}.db"
    if not source.exists():
        pytest.skip(f"fixture {source.name} is not there")
    original = source.read_bytes()
    failures: list[str] = []
    outcomes = {"records": 0, "error": 0}
    case_path = tmp_path / f"{base}.db"
    for i in range(CASES_PER_BASE):
        rng = random.Random(f"{SEED}:bdb:{base}:{i}")
        data, notes = mutate(rng, original)
        salvage = base not in NO_SALVAGE and rng.random() < 0.25
        options = ReadOptions(salvage=salvage, verify_checksums=rng.random() < 0.7)
        case_path.write_bytes(data)
        problem = _run_case(case_path, options, outcomes)
        if problem is not None:
            keep = tmp_path / "failures"
            keep.mkdir(exist_ok=True)
            shutil.copyfile(case_path, keep / f"{base}-{i}.db")
            failures.append(
                f"seed {SEED!r} base {base} case {i} ({'; '.join(notes)}; {options}): {problem}"
            )
            if len(failures) >= MAX_REPORTED:
                break
    assert not failures, "\n".join(failures)
    # the mutations must reach both outcomes, or they test nothing
    assert outcomes["records"] and outcomes["error"], outcomes


def test_fuzz_queue_extent_files(tmp_path: Path, memory_cap: None) -> None:  # noqa: F811
    """A queue with extent files (synthesized as in test_bdb.py): one of its files mutated per case."""
    source = BDB / "queue-le.db"
    if not source.exists():
        pytest.skip("fixture queue-le.db is not there")
    main = synthesize_queue_extents(tmp_path / "base", source, 2)
    files = sorted(main.parent.iterdir())
    originals = {f.name: f.read_bytes() for f in files}
    layout = Layout(originals[main.name])
    case = tmp_path / "case"
    failures: list[str] = []
    outcomes = {"records": 0, "error": 0}
    for i in range(CASES_PER_BASE):
        rng = random.Random(f"{SEED}:bdb:queue-extents:{i}")
        shutil.rmtree(case, ignore_errors=True)
        case.mkdir()
        target = rng.choice(sorted(originals))
        for name, data in originals.items():
            if name == target:
                data, notes = mutate(rng, data, layout)
            (case / name).write_bytes(data)
        options = ReadOptions(salvage=rng.random() < 0.25)
        problem = _run_case(case / main.name, options, outcomes)
        if problem is not None:
            failures.append(
                f"seed {SEED!r} queue-extents case {i} ({target}: {'; '.join(notes)}): {problem}"
            )
            if len(failures) >= MAX_REPORTED:
                break
    assert not failures, "\n".join(failures)
    assert outcomes["records"] and outcomes["error"], outcomes


def test_mutations_are_reproducible() -> None:
    original = (BDB / "hash-le-512.db").read_bytes() if (BDB / "hash-le-512.db").exists() else None
    if original is None:
        pytest.skip("fixture hash-le-512.db is not there")
    first = mutate(random.Random(f"{SEED}:bdb:x:7"), original)
    again = mutate(random.Random(f"{SEED}:bdb:x:7"), original)
    assert first == again
