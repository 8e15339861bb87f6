"""Seeded, bounded fuzzing of the GDBM, gdbm_dump and ndbm readers.

Same rules and machinery as ``tests/test_fuzz.py``: each case mutates a real
fixture with ``random.Random(f"{SEED}:{kind}:{i}")`` and converts it with
``shelfmigrate.convert(..., on_error="skip")``; the only acceptable outcomes are
success (every record read is written or counted as failed) or a
``ShelfmigrateError``, within the time budget, with nothing on stderr and nothing
left beside the source.  Even cases let detection choose the reader, odd cases
force this kind's reader.

Random byte mutations of a GDBM file mostly land in record data, which the reader
copies without looking at, so half of the GDBM cases instead write hostile integers
(0, -1, huge, just past the end, pointing at the header ...) into the fields that
steer the walk: the header, the directory and the bucket headers and element tables.

``SHELFMIGRATE_FUZZ_ITERATIONS`` (default 120 here) sets the cases per kind and
``SHELFMIGRATE_FUZZ_SEED`` the base seed, as for the other fuzz tests.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from test_fuzz import fuzz_cases, memory_cap, mutate_bytes  # noqa: F401 - memory_cap is a fixture
from test_gdbm import gdbm_to_big_endian, with_magic

from shelfmigrate.formats.gdbm import read_header

ITERATIONS = int(os.environ.get("SHELFMIGRATE_FUZZ_ITERATIONS", "120"))
FIX = Path(__file__).resolve().parent.parent / "fixtures"

Prepare = Callable[[random.Random, Path], tuple[Path, list[str]]]


def _hostile_int(rng: random.Random, size: int) -> int:
    return rng.choice(
        (0, 1, -1, 4, 512, size - 1, size, size + 1, size - 8, 1 << 31, -(1 << 31), 1 << 62)
    )


def _gdbm_hot_spots(data: bytes) -> tuple[str, list[tuple[int, int]]]:
    """The byte order and the (offset, width) of the fields that steer a GDBM walk."""
    header = read_header("fixture", data[:4096], len(data))
    order, layout = header.byte_order, header.layout
    width = layout.offset_width
    spots = [(at, 4) for at in range(0, layout.header_size, 4)]
    entries = struct.unpack_from(
        f"{order}{header.dir_size // width}{'Q' if width == 8 else 'I'}", data, header.dir_offset
    )
    spots += [(header.dir_offset + i * width, width) for i in range(len(entries))]
    for bucket in set(entries):
        spots += [(bucket + at, 4) for at in range(0, min(header.bucket_size, 400), 4)]
    return order, spots


def _gdbm_prepare(make: Callable[[], bytes], name: str) -> Prepare:
    original = make()
    order, spots = _gdbm_hot_spots(original)

    def prepare(rng: random.Random, folder: Path) -> tuple[Path, list[str]]:
        if rng.random() < 0.5:
            data, done = mutate_bytes(rng, original)
        else:
            buf = bytearray(original)
            done = []
            for _ in range(rng.randint(1, 3)):
                at, width = rng.choice(spots)
                value = _hostile_int(rng, len(buf))
                fmt = order + ("q" if width == 8 else "i")
                value = max(min(value, (1 << (8 * width - 1)) - 1), -(1 << (8 * width - 1)))
                struct.pack_into(fmt, buf, at, value)
                done.append(f"set {width}-byte field at {at} to {value}")
            data = bytes(buf)
        path = folder / name
        path.write_bytes(data)
        return path, done

    return prepare


def _file_prepare(source: Path, name: str) -> Prepare:
    original = source.read_bytes()

    def prepare(rng: random.Random, folder: Path) -> tuple[Path, list[str]]:
        data, done = mutate_bytes(rng, original)
        path = folder / name
        path.write_bytes(data)
        return path, done

    return prepare


def _pair_prepare(
    base: Path, mutate: Callable[[random.Random, bytes], tuple[bytes, list[str]]]
) -> Prepare:
    pag = base.with_suffix(".pag").read_bytes()

    def prepare(rng: random.Random, folder: Path) -> tuple[Path, list[str]]:
        shutil.copyfile(base.with_suffix(".dir"), folder / "db.dir")
        data, done = mutate(rng, pag)
        (folder / "db.pag").write_bytes(data)
        return folder / "db", done

    return prepare


def _sdbm_mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    if rng.random() < 0.5:
        return mutate_bytes(rng, data)
    buf = bytearray(data)
    pages = [at for at in range(0, len(buf), 1024) if buf[at : at + 2] != b"\0\0"] or [0]
    done = []
    for _ in range(rng.randint(1, 3)):
        at = rng.choice(pages) + 2 * rng.randrange(8)
        value = rng.choice((0, 1, 2, 3, 1023, 1024, 1025, 0xFFFF, rng.randrange(1 << 16)))
        struct.pack_into("<H", buf, at, value)
        done.append(f"set u16 at {at} to {value}")
    return bytes(buf), done


def _targets() -> dict[str, tuple[Prepare, str]]:
    gdbm = FIX / "gdbm"
    return {
        "gdbm-lp64": (
            _gdbm_prepare(lambda: (FIX / "detect/gdbm-std.gdbm").read_bytes(), "f.gdbm"),
            "gdbm",
        ),
        "gdbm-numsync": (
            _gdbm_prepare(lambda: (gdbm / "lp64-numsync-b1024.gdbm").read_bytes(), "f.gdbm"),
            "gdbm",
        ),
        "gdbm-ilp32-be": (
            _gdbm_prepare(
                lambda: gdbm_to_big_endian((gdbm / "i386-ilp32-b512.gdbm").read_bytes()), "f.gdbm"
            ),
            "gdbm",
        ),
        "gdbm-i386-lfs-old": (
            _gdbm_prepare(
                lambda: with_magic((gdbm / "i386-lfs-b512.gdbm").read_bytes(), 0x13579ACE), "f.gdbm"
            ),
            "gdbm",
        ),
        "gdbm-dump-ascii": (
            _file_prepare(FIX / "detect/gdbm-dump.ascii", "d.dump"),
            "gdbm-dump-ascii",
        ),
        "gdbm-dump-binary": (
            _file_prepare(gdbm / "i386-lfs-b512.bin", "d.bin"),
            "gdbm-dump-binary",
        ),
        "ndbm-gdbm": (_pair_prepare(FIX / "detect/ndbm-gdbm", mutate_bytes), "ndbm-gdbm"),
        "ndbm-sdbm": (_pair_prepare(FIX / "ndbm/sdbm", _sdbm_mutate), "ndbm-classic"),
    }


TARGETS = _targets()


@pytest.mark.parametrize("kind", list(TARGETS))
def test_fuzz_gdbm_family(
    kind: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    memory_cap: None,  # noqa: F811
) -> None:
    prepare, reader = TARGETS[kind]
    fuzz_cases(kind, prepare, reader, ITERATIONS, tmp_path, capfd)


def test_hot_spot_mutations_are_reproducible(tmp_path: Path) -> None:
    prepare, _ = TARGETS["gdbm-numsync"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = prepare(random.Random("x:1"), tmp_path / "a")
    second = prepare(random.Random("x:1"), tmp_path / "b")
    assert first[1] == second[1]
    assert first[0].read_bytes() == second[0].read_bytes()
