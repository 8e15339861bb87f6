"""Seeded, bounded fuzzing of every reader on malformed input.

Each base input (a dbm.dumb ``.dat``/``.dir`` pair, mutated one file at a time;
Python 2 and Python 3 pickle streams; a JSON-lines output, plain and gzipped; an
SQLite database; the marshal fixtures) is mutated with ``random.Random`` (bit
flips, byte replacements, truncation, chunk duplication and deletion, inserted
random bytes, and for the ``.dir`` text also edits of its lines and numbers),
then read whole with ``shelfmigrate.convert(src, out.jsonl, on_error="skip")``:
detection, the container reader, the value decoder, the typed-JSON encoder and
the atomic writer.  Even cases let detection pick the reader; odd cases force the
kind's reader (``from_format``), so damaged input that detection would turn away
still reaches the reader itself.

The only acceptable outcomes of a case are success (every record read is
written or counted as failed) or a :class:`shelfmigrate.errors.ShelfmigrateError`.
A case fails on any other exception, on taking longer than
``CASE_BUDGET_S`` seconds, on writing anything to stderr, or on leaving files
behind (a temporary output in the destination folder, a side file beside the
source).

Reproducing: case ``i`` of kind ``K`` uses ``random.Random(f"{SEED}:{K}:{i}")``
and every failure message names the seed, kind and iteration; the mutated input
of a failing case is kept under the test's ``tmp_path/failures``.

Environment:

* ``SHELFMIGRATE_FUZZ_ITERATIONS`` (default 300) sets the number of cases per
  kind, for long opt-in runs, e.g.
  ``SHELFMIGRATE_FUZZ_ITERATIONS=20000 python -m pytest tests/test_fuzz.py``;
* ``SHELFMIGRATE_FUZZ_SEED`` (default ``shelfmigrate-fuzz-1``) changes the base
  seed, to explore other cases.

Safety net: on Linux the address space is capped (current size + 1 GiB) while a
fuzz test runs, so a memory bomb in the input becomes a MemoryError instead of
the kernel's OOM killer (a 9-byte pickle can ask the C unpickler for
gigabytes; see ``test_memo_index_does_not_allocate_memory``).

Known bugs in src/ that the fuzzer hits are pinned by their own strict-xfail
tests at the end of this file and are not counted again by the fuzz loop (see
``KNOWN_BUGS``); remove an entry when its bug is fixed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shelfmigrate
from shelfmigrate.errors import FormatError, ShelfmigrateError

ITERATIONS = int(os.environ.get("SHELFMIGRATE_FUZZ_ITERATIONS", "300"))
SEED = os.environ.get("SHELFMIGRATE_FUZZ_SEED", "shelfmigrate-fuzz-1")
CASE_BUDGET_S = 20.0
MEMORY_HEADROOM = 1 << 30
MAX_REPORTED = 10


# ---------------------------------------------------------------------------
# Mutations


def _span(rng: random.Random, size: int, longest: int = 64) -> tuple[int, int]:
    start = rng.randrange(size)
    return start, min(size, start + rng.randint(1, longest))


def mutate_bytes(
    rng: random.Random, data: bytes, rounds: int | None = None
) -> tuple[bytes, list[str]]:
    """Apply 1-4 random byte-level mutations; return the result and what was done."""
    buf = bytearray(data)
    done: list[str] = []
    for _ in range(rounds or rng.randint(1, 4)):
        size = len(buf)
        op = rng.randrange(7)
        if size == 0 or op == 6:
            at = rng.randrange(size + 1)
            junk = rng.randbytes(rng.randint(1, 16))
            buf[at:at] = junk
            done.append(f"insert {junk.hex()} at {at}")
        elif op == 0:
            at, bit = rng.randrange(size), rng.randrange(8)
            buf[at] ^= 1 << bit
            done.append(f"flip bit {bit} at {at}")
        elif op == 1:
            at = rng.randrange(size)
            buf[at] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
            done.append(f"set byte {at} to {buf[at]:#04x}")
        elif op == 2:
            at = rng.randrange(size + 1)
            del buf[at:]
            done.append(f"truncate at {at}")
        elif op == 3:
            start, end = _span(rng, size)
            at = rng.randrange(size + 1)
            buf[at:at] = buf[start:end]
            done.append(f"duplicate [{start}:{end}] at {at}")
        elif op == 4:
            start, end = _span(rng, size)
            del buf[start:end]
            done.append(f"delete [{start}:{end}]")
        else:  # overwrite a chunk with random bytes
            start, end = _span(rng, size, 8)
            buf[start:end] = rng.randbytes(end - start)
            done.append(f"randomise [{start}:{end}]")
    return bytes(buf), done


_NUMBER = re.compile(rb"\d+")
_TEXT_JUNK = (
    b"\\",
    b"\\x",
    b"\\u12",
    b"\\N{",
    b"'",
    b'"',
    b"(",
    b")",
    b",",
    b"L",
    b"\r",
    b"\n",
    b"-1",
)


def mutate_dir_text(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    """Mutations that keep a ``.dir`` index looking like one: edit its lines and numbers."""
    lines = data.split(b"\n")
    done: list[str] = []
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        at = rng.randrange(len(lines))
        if op == 0:  # a number becomes another (often huge) one
            numbers = list(_NUMBER.finditer(lines[at]))
            if numbers:
                m = rng.choice(numbers)
                new = str(rng.choice((0, 1, rng.randrange(1 << 16), 10**30, 2**63))).encode()
                lines[at] = lines[at][: m.start()] + new + lines[at][m.end() :]
                done.append(f"line {at}: number -> {new.decode()}")
                continue
        if op == 1:
            lines.insert(at, lines[rng.randrange(len(lines))])
            done.append(f"duplicate a line at {at}")
        elif op == 2 and len(lines) > 1:
            del lines[at]
            done.append(f"delete line {at}")
        elif op == 3:
            other = rng.randrange(len(lines))
            lines[at], lines[other] = lines[other], lines[at]
            done.append(f"swap lines {at} and {other}")
        else:
            junk = rng.choice(_TEXT_JUNK)
            pos = rng.randrange(len(lines[at]) + 1)
            lines[at] = lines[at][:pos] + junk + lines[at][pos:]
            done.append(f"line {at}: insert {junk!r} at {pos}")
    return b"\n".join(lines), done


# ---------------------------------------------------------------------------
# Fuzz targets


Prepare = Callable[[random.Random, Path], tuple[Path, list[str]]]
"""Write one mutated input into a folder; return the path to convert and what was done."""


def _dumb_target(part: str) -> Callable[[Path], Prepare]:
    def factory(fixtures_dir: Path) -> Prepare:
        base = fixtures_dir / "dumb" / "py27_shelf_p0"
        originals = {s: (base.parent / (base.name + s)).read_bytes() for s in (".dat", ".dir")}

        def prepare(rng: random.Random, folder: Path) -> tuple[Path, list[str]]:
            data = originals[part]
            if part == ".dir" and rng.random() < 0.5:
                mutated, done = mutate_dir_text(rng, data)
            else:
                mutated, done = mutate_bytes(rng, data)
            for suffix, original in originals.items():
                (folder / ("shelf" + suffix)).write_bytes(mutated if suffix == part else original)
            return folder / "shelf", [f"{part}: {d}" for d in done]

        return prepare

    return factory


def _file_target(*names: str) -> Callable[[Path], Prepare]:
    def factory(fixtures_dir: Path) -> Prepare:
        files = [(Path(n).name, (fixtures_dir / n).read_bytes()) for n in names]
        return _bytes_prepare(files)

    return factory


def _bytes_prepare(
    files: list[tuple[str, bytes]],
) -> Prepare:
    def prepare(rng: random.Random, folder: Path) -> tuple[Path, list[str]]:
        name, data = files[rng.randrange(len(files))]
        mutated, done = mutate_bytes(rng, data)
        path = folder / name
        path.write_bytes(mutated)
        return path, [f"{name}: {d}" for d in done]

    return prepare


def _marshal_target(fixtures_dir: Path) -> Prepare:
    files = sorted((fixtures_dir / "marshal").glob("*.marshal"))
    if not files:
        pytest.skip("no marshal fixtures")
    return _bytes_prepare([(f.name, f.read_bytes()) for f in files])


def _jsonl_target(gzipped: bool) -> Callable[[Path], Prepare]:
    def factory(fixtures_dir: Path) -> Prepare:
        return _bytes_prepare([(_JSONL_NAMES[gzipped], _jsonl_output(fixtures_dir, gzipped))])

    return factory


_JSONL_NAMES = {False: "records.jsonl", True: "records.jsonl.gz"}
_JSONL_CACHE: dict[bool, bytes] = {}


def _jsonl_output(fixtures_dir: Path, gzipped: bool) -> bytes:
    """A JSON-lines output of shelfmigrate itself (the dumb shelf, converted once)."""
    if gzipped not in _JSONL_CACHE:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            src_dir = Path(folder)
            for suffix in (".dat", ".dir"):
                shutil.copyfile(
                    fixtures_dir / "dumb" / ("py27_shelf_p0" + suffix), src_dir / ("s" + suffix)
                )
            dst = src_dir / _JSONL_NAMES[gzipped]
            shelfmigrate.convert(src_dir / "s", dst)
            _JSONL_CACHE[gzipped] = dst.read_bytes()
    return _JSONL_CACHE[gzipped]


#: kind -> (preparer factory, reader name, number of cases).  Even cases let detection
#: choose the reader; odd ones force the kind's reader (``from_format``), so that damaged
#: input that detection would turn away still reaches the reader itself.
TARGETS: dict[str, tuple[Callable[[Path], Prepare], str, int]] = {
    "dumb-dat": (_dumb_target(".dat"), "dumb", ITERATIONS),
    "dumb-dir": (_dumb_target(".dir"), "dumb", ITERATIONS),
    "pickle-py27-p0": (_file_target("pickles/py27_stream_p0.pkl"), "pickle", ITERATIONS),
    "pickle-py311-p4": (_file_target("pickles/py311_stream_p4.pkl"), "pickle", ITERATIONS),
    "jsonl": (_jsonl_target(False), "jsonl", ITERATIONS),
    "jsonl-gz": (_jsonl_target(True), "jsonl", max(1, ITERATIONS // 3)),
    "sqlite": (_file_target("sqlite/tutorial.sqlite"), "sqlite", ITERATIONS),
    "marshal": (_marshal_target, "marshal", ITERATIONS),
}


# ---------------------------------------------------------------------------
# Known bugs (each pinned by a strict xfail below); remove an entry once fixed.


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return traceback.extract_tb(exc.__traceback__)


def _raised_in(exc: BaseException, filename_end: str, function: str | None = None) -> bool:
    return any(
        f.filename.replace(os.sep, "/").endswith(filename_end)
        and (function is None or f.name == function)
        for f in _frames(exc)
    )


@dataclasses.dataclass(frozen=True)
class KnownBug:
    test: str
    matches: Callable[[BaseException | None, str], bool]


KNOWN_BUGS: list[KnownBug] = []


def known_bug(exc: BaseException | None, err: str) -> str | None:
    for bug in KNOWN_BUGS:
        if bug.matches(exc, err):
            return bug.test
    return None


# ---------------------------------------------------------------------------
# Running cases


class CaseTimeout(BaseException):
    """Raised by the alarm when one case runs past its budget (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def memory_cap() -> Iterator[None]:
    """Cap the address space while fuzzing, so a memory bomb cannot invoke the OOM killer."""
    try:
        import resource

        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _describe(exc: BaseException) -> str:
    frames = [f for f in _frames(exc) if "shelfmigrate" in f.filename] or _frames(exc)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {str(exc)[:200]}{where}"


def run_case(
    src: Path, out: Path, from_format: str | None
) -> tuple[BaseException | None, str | None, float]:
    """Convert ``src`` into ``out/out.jsonl``: (unexpected exception, problem, seconds)."""
    dst = out / "out.jsonl"
    started = time.perf_counter()
    exc: BaseException | None = None
    problem: str | None = None
    expected_output: list[str] = []
    try:
        with time_limit(CASE_BUDGET_S):
            report = shelfmigrate.convert(
                src, dst, from_format=from_format, on_error="skip", progress=False
            )
    except ShelfmigrateError:
        pass
    except CaseTimeout as timeout:
        problem = f"hang: {timeout}"
    except Exception as error:  # anything else is a bug
        exc = error
    else:
        expected_output = ["out.jsonl"]
        if report.read != report.written + report.failed:
            problem = f"report does not add up: {report.to_dict()['records']}"
    elapsed = time.perf_counter() - started
    # Whatever happened, the destination folder holds the output or nothing at all.
    if problem is None and sorted(os.listdir(out)) != expected_output:
        problem = f"the destination folder holds {sorted(os.listdir(out))}, not {expected_output}"
    if problem is None and exc is None and elapsed > CASE_BUDGET_S:
        problem = f"took {elapsed:.1f} s (budget {CASE_BUDGET_S} s)"
    return exc, problem, elapsed


# Damaged Python 2 STRING opcodes and .dir literals hold bad escapes; CPython warns.
@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
@pytest.mark.parametrize("kind", list(TARGETS))
def test_fuzz_reader(
    kind: str,
    fixtures_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    memory_cap: None,
) -> None:
    factory, reader, iterations = TARGETS[kind]
    fuzz_cases(kind, factory(fixtures_dir), reader, iterations, tmp_path, capfd)


def fuzz_cases(
    kind: str,
    prepare: Prepare,
    reader: str,
    iterations: int,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Run ``iterations`` seeded cases of ``kind`` through :func:`run_case`; assert they all pass.

    ``prepare(rng, folder)`` writes one mutated input into ``folder`` and returns
    its path and the mutations made.  Odd cases force ``reader``; even cases let
    detection choose.  Failing inputs are kept under ``tmp_path/failures``.
    """
    src_dir, out = tmp_path / "src", tmp_path / "out"
    failures: list[str] = []
    known: dict[str, int] = {}
    capfd.readouterr()
    for iteration in range(iterations):
        shutil.rmtree(src_dir, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        src_dir.mkdir()
        out.mkdir()
        rng = random.Random(f"{SEED}:{kind}:{iteration}")
        src, mutations = prepare(rng, src_dir)
        inputs = sorted(os.listdir(src_dir))
        from_format = reader if iteration % 2 else None
        exc, problem, elapsed = run_case(src, out, from_format)
        err = capfd.readouterr().err
        if problem is None and exc is None and err:
            bug = known_bug(None, err)
            if bug:
                known[bug] = known.get(bug, 0) + 1
            else:
                problem = f"wrote to stderr: {err[-300:]!r}"
        if exc is not None:
            bug = known_bug(exc, err)
            if bug:
                known[bug] = known.get(bug, 0) + 1
            else:
                problem = f"unexpected {_describe(exc)}"
        if problem is None and sorted(os.listdir(src_dir)) != inputs:
            problem = f"left {sorted(set(os.listdir(src_dir)) - set(inputs))} beside the source"
        if problem is not None:
            keep = tmp_path / "failures" / f"{kind}-{iteration}"
            shutil.copytree(src_dir, keep, dirs_exist_ok=True)
            failures.append(
                f"seed={SEED!r} kind={kind} iteration={iteration} from_format={from_format} "
                f"(random.Random({f'{SEED}:{kind}:{iteration}'!r})), {elapsed:.2f} s: {problem}\n"
                f"    mutations: {'; '.join(mutations)}\n    input kept in {keep}"
            )
    assert not failures, (
        f"{len(failures)} of {iterations} {kind} cases failed "
        f"(known bugs also hit: {known or 'none'}); first ones:\n"
        + "\n".join(failures[:MAX_REPORTED])
    )


def test_mutations_are_reproducible() -> None:
    data = bytes(range(256)) * 4
    first = mutate_bytes(random.Random(f"{SEED}:x:7"), data)
    again = mutate_bytes(random.Random(f"{SEED}:x:7"), data)
    assert first == again
    assert mutate_dir_text(random.Random("d"), b"'a', (0, 1)\n") == mutate_dir_text(
        random.Random("d"), b"'a', (0, 1)\n"
    )


# ---------------------------------------------------------------------------
# Minimal reproductions of the bugs the fuzzer found.  Fixed ones stay as
# regression tests; open ones are strict xfails (they must start passing when
# src/ is fixed, and then their KNOWN_BUGS entry goes too).


def test_jsonl_invalid_utf8_is_a_format_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"key": "a", "value": 1}\n{"key": "b", "value": "\xff"}\n')
    with pytest.raises(FormatError, match="bad.jsonl"):
        list(shelfmigrate.open_reader(src))


def test_corrupt_gzip_json_lines_is_a_format_error(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(b'{"key": 1, "value": 2}\n' * 50, mtime=0))
    data[10] ^= 0xFF  # first byte of the deflate stream: "invalid code lengths set"
    src = tmp_path / "z.jsonl.gz"
    src.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="z.jsonl.gz"):
        list(shelfmigrate.open_reader(src, format="jsonl"))


@pytest.mark.parametrize("dst_name", ["o.jsonl", "o.sqlite", "o.ldb"])
@pytest.mark.parametrize("codec", ["pickle", "marshal"])
def test_lone_surrogate_in_a_value_can_be_written(
    tmp_path: Path, codec: str, dst_name: str
) -> None:
    import marshal
    import pickle

    value = ["ok", "\ud800"]
    src = tmp_path / f"s.{codec}"
    src.write_bytes(pickle.dumps(value, protocol=4) if codec == "pickle" else marshal.dumps(value))
    dst = tmp_path / dst_name
    report = shelfmigrate.convert(src, dst, on_error="skip")
    assert (report.read, report.written, report.failed) == (1, 1, 0)
    if dst_name.endswith(".jsonl"):
        assert "\\ud800" in dst.read_text(encoding="utf-8")  # escaped: the file is valid UTF-8
        assert [r.value for r in shelfmigrate.open_reader(dst)] == [value]


def test_json_table_null_value_does_not_crash(tmp_path: Path) -> None:
    src = tmp_path / "t.sqlite"
    con = sqlite3.connect(src)
    con.execute("CREATE TABLE t (key TEXT, value TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [("a", "1"), ("b", None)])
    con.commit()
    con.close()
    report = shelfmigrate.convert(src, tmp_path / "o.jsonl", on_error="skip")
    assert report.read == 2
    assert report.written + report.failed == 2


@pytest.mark.parametrize("format", [None, "sqlite"])
def test_sqlite_error_message_in_bad_utf8_is_a_format_error(
    copy_fixture, format: str | None
) -> None:
    src = copy_fixture("sqlite/tutorial.sqlite")
    data = src.read_bytes()
    at = data.index(b"PRIMARY")
    src.write_bytes(data[: at + 3] + b"\xca" + data[at + 4 :])
    with pytest.raises(ShelfmigrateError):
        list(shelfmigrate.open_reader(src, format=format))


@pytest.mark.parametrize("format", [None, "sqlite"])
def test_sqlite_undecodable_column_type_is_a_format_error(copy_fixture, format: str | None) -> None:
    """PRAGMA table_info returns a declared type that is not UTF-8: a FormatError, not a crash."""
    src = copy_fixture("sqlite/tutorial.sqlite")
    data = src.read_bytes()
    at = data.index(b"value TEXT NOT NULL") + len(b"value TEXT N")
    src.write_bytes(data[:at] + b"\xff" + data[at + 1 :])  # NOT -> N\xffT
    with pytest.raises(FormatError, match="tutorial.sqlite"):
        list(shelfmigrate.open_reader(src, format=format))


def test_memo_index_does_not_allocate_memory() -> None:
    import tracemalloc

    from shelfmigrate.codecs import safepickle

    bomb = b"\x80\x02N" + b"r" + struct.pack("<I", 4_000_000) + b"."
    tracemalloc.start()
    try:
        with contextlib.suppress(ShelfmigrateError):
            safepickle.loads(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"a {len(bomb)}-byte pickle made the decoder allocate {peak} bytes"


def test_oversized_bytearray8_writes_nothing_on_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from shelfmigrate.codecs import safepickle

    data = b"\x80\x02c__main__\nNew\n\x96" + struct.pack("<Q", 1 << 60) + b"."
    capfd.readouterr()
    with pytest.raises(ShelfmigrateError):
        safepickle.loads(data)
    assert capfd.readouterr().err == ""


def test_stream_source_with_oversized_length_is_refused(tmp_path: Path) -> None:
    """Not a bug: a declared length past the end of a stream is a clean FormatError."""
    src = tmp_path / "s.pkl"
    src.write_bytes(b"\x80\x02}q\x00." + b"\x80\x05\x8e" + struct.pack("<Q", 1 << 40) + b"ab.")
    with pytest.raises(ShelfmigrateError, match="s.pkl"):
        list(shelfmigrate.open_reader(src))
