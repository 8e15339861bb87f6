"""Benchmark: a Berkeley DB hash shelf -> JSON-lines with raw values, ours vs native.

The source is a 200,000-record Berkeley DB hash file (page size 4096, like a Python 2
``dbhash`` shelf) of pickled small dicts (~100-200 bytes each), made by the native
``db5.3_load -t hash`` from a dump text this script generates. Everything below runs
on that same file, in the same run, so the printed ratios are comparable on a noisy
shared machine; absolute times are not.

  ours        shelfmigrate.convert(FILE, out.jsonl, read_options=ReadOptions(values="raw"))
              in this process (the pure-Python reader)
  native pipe db5.3_dump FILE | python parser.py > out.jsonl: libdb's own dump tool and
              a small, efficient Python parser writing the same JSON-lines
              ({"key": ..., "value": {"$bytes": base64}}) -- what a user would script
  berkeleydb  a cursor loop over the file with the ``berkeleydb`` binding (PyPI,
              built against the same libdb 5.3) writing the same JSON-lines; installed
              on first use into ~/.cache/shelfmigrate-bench/venv-berkeleydb (--venv to
              move it, skipped if the install fails)

The two baselines run as child processes, so their times include one interpreter
start; that start-up time is printed too, and so is ``db5.3_dump`` alone writing to
/dev/null (for reference: how much of the pipe is the native tool itself). Before timing, the outputs are checked to
hold the same multiset of records. Memory: peak RSS (ru_maxrss) of our conversion in
a child process at 100,000 and 200,000 records.

    python bench/bench_bdb.py [--records 200000] [--repeat 3] [--venv DIR] [--no-memory]

Needs db5.3_load / db5.3_dump (Debian: db5.3-util) and, for the third baseline,
libdb5.3-dev and a compiler (berkeleydb builds from source).
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import peak_rss_mib

import shelfmigrate
import shelfmigrate.formats.bdb
import shelfmigrate.formats.jsonl
import shelfmigrate.pipeline  # noqa: F401 - imported up front so no timed run pays for imports
from shelfmigrate.options import ReadOptions

DB_LOAD = os.environ.get("DB_LOAD", "db5.3_load")
DB_DUMP = os.environ.get("DB_DUMP", "db5.3_dump")
DEFAULT_VENV = Path.home() / ".cache" / "shelfmigrate-bench" / "venv-berkeleydb"
PAGE_SIZE = 4096

# ---------------------------------------------------------------------------
# Baseline programs (run as child processes; stdlib only, plus berkeleydb for the second)

#: reads `db_dump` (default hex format) on stdin, writes JSON-lines on stdout
PIPE_PARSER = r"""
import sys
from binascii import b2a_base64, unhexlify
from json import dumps

def main():
    lines = sys.stdin.buffer
    for line in lines:
        if line == b"HEADER=END\n":
            break
    out = sys.stdout
    batch = []
    append = batch.append
    for key_line in lines:
        if key_line[0] != 32:  # "DATA=END": data lines start with a space
            break
        value_line = next(lines)
        key = unhexlify(key_line[1:-1])
        try:
            key_json = dumps(key.decode("utf-8"), ensure_ascii=False)
        except UnicodeDecodeError:
            key_json = '{"$bytes":"%s"}' % b2a_base64(key, newline=False).decode("ascii")
        value = b2a_base64(unhexlify(value_line[1:-1]), newline=False).decode("ascii")
        append('{"key":%s,"value":{"$bytes":"%s"}}\n' % (key_json, value))
        if len(batch) >= 10000:
            out.writelines(batch)
            batch.clear()
    out.writelines(batch)

main()
"""

#: berkeleydb cursor loop: argv = SOURCE OUT
BERKELEYDB_LOOP = r"""
import sys
from binascii import b2a_base64
from json import dumps
from berkeleydb import db

def main(src, dst):
    handle = db.DB()
    handle.open(src, None, db.DB_UNKNOWN, db.DB_RDONLY)
    cursor = handle.cursor()
    with open(dst, "w", encoding="utf-8") as out:
        batch = []
        append = batch.append
        item = cursor.first()
        while item is not None:
            key, value = item
            try:
                key_json = dumps(key.decode("utf-8"), ensure_ascii=False)
            except UnicodeDecodeError:
                key_json = '{"$bytes":"%s"}' % b2a_base64(key, newline=False).decode("ascii")
            append('{"key":%s,"value":{"$bytes":"%s"}}\n'
                   % (key_json, b2a_base64(value, newline=False).decode("ascii")))
            if len(batch) >= 10000:
                out.writelines(batch)
                batch.clear()
            item = cursor.next()
        out.writelines(batch)
    cursor.close()
    handle.close()

main(sys.argv[1], sys.argv[2])
"""

#: our conversion in a child process (its peak RSS is read by benchlib.peak_rss_mib)
OURS_CHILD = r"""
import sys
import shelfmigrate
from shelfmigrate.options import ReadOptions
shelfmigrate.convert(sys.argv[1], sys.argv[2], read_options=ReadOptions(values="raw"),
                     progress=False)
"""

IMPORT_ONLY_CHILD = r"""
import shelfmigrate, shelfmigrate.formats.bdb, shelfmigrate.formats.jsonl, shelfmigrate.pipeline
"""


# ---------------------------------------------------------------------------
# Source file


def make_value(i: int) -> bytes:
    """A shelf-like value: a pickled small dict (about 100-200 bytes)."""
    record = {
        "id": i,
        "name": f"user-{i}",
        "email": f"user{i}@example.org",
        "tags": ["a", "b", str(i % 7)] + ["extra"] * (i % 4),
        "score": i / 3,
        "active": i % 2 == 0,
    }
    return pickle.dumps(record, protocol=2)


def make_source(path: str, records: int) -> None:
    """A Berkeley DB hash file written by the native db_load from a generated dump text."""
    hexlify = binascii.hexlify
    parts = [f"VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize={PAGE_SIZE}\nHEADER=END\n"]
    for i in range(records):
        key = f"user:{i:08d}".encode()
        parts.append(f" {hexlify(key).decode()}\n {hexlify(make_value(i)).decode()}\n")
    parts.append("DATA=END\n")
    subprocess.run([DB_LOAD, "-t", "hash", path], input="".join(parts).encode("ascii"), check=True)


# ---------------------------------------------------------------------------
# The timed runs


def run_ours(src: str, out: str) -> None:
    shelfmigrate.convert(src, out, read_options=ReadOptions(values="raw"), progress=False)


def run_pipe(src: str, out: str, parser: str) -> None:
    with open(out, "wb") as handle:
        dump = subprocess.Popen([DB_DUMP, src], stdout=subprocess.PIPE)
        parse = subprocess.Popen([sys.executable, parser], stdin=dump.stdout, stdout=handle)
        assert dump.stdout is not None
        dump.stdout.close()  # so db_dump gets SIGPIPE if the parser dies
        if parse.wait() != 0 or dump.wait() != 0:
            raise SystemExit("native pipe failed")


def run_dump_alone(src: str) -> None:
    subprocess.run([DB_DUMP, src], stdout=subprocess.DEVNULL, check=True)


def run_berkeleydb(src: str, out: str, python: str, loop: str) -> None:
    subprocess.run([python, loop, src, out], check=True)


def timed(func, out: str) -> float:
    if os.path.exists(out):
        os.unlink(out)
    start = time.perf_counter()
    func(out)
    return time.perf_counter() - start


def records_multiset(path: str) -> list[tuple[str, str]]:
    """The records of a JSON-lines output, normalised and sorted (order-free comparison)."""
    items = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            obj = json.loads(line)
            items.append(
                (json.dumps(obj["key"], sort_keys=True), json.dumps(obj["value"], sort_keys=True))
            )
    items.sort()
    return items


def ensure_venv(venv: Path) -> str | None:
    """The python of a venv with berkeleydb, made on first use; None if it cannot be built."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import berkeleydb.db"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    print(f"creating {venv} and installing berkeleydb ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = dict(os.environ, BERKELEYDB_DIR=os.environ.get("BERKELEYDB_DIR", "/usr"))
        env["YES_I_HAVE_THE_RIGHT_TO_USE_THIS_BERKELEY_DB_VERSION"] = "1"
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "berkeleydb",
            ],
            check=True,
            env=env,
        )
        subprocess.run(probe, check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"  berkeleydb unavailable ({exc}); that baseline is skipped")
        return None
    return str(python)


def interpreter_start(python: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(max(repeat, 3)):
        start = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS runs")
    args = parser.parse_args()
    for tool in (DB_LOAD, DB_DUMP):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install db5.3-util)")
    print(f"shelfmigrate from {os.path.dirname(shelfmigrate.__file__)}")
    bdb_python = ensure_venv(args.venv)

    with tempfile.TemporaryDirectory(prefix="shelfmigrate-bench-bdb-") as tmp:
        src = os.path.join(tmp, "shelf.db")
        start = time.perf_counter()
        make_source(src, args.records)
        size = os.path.getsize(src)
        print(
            f"made a {args.records:,}-record Berkeley DB hash file ({size / 2**20:.1f} MiB, "
            f"page size {PAGE_SIZE}) with {DB_LOAD} in {time.perf_counter() - start:.1f} s"
        )
        parser_py = os.path.join(tmp, "parse_dump.py")
        loop_py = os.path.join(tmp, "berkeleydb_loop.py")
        Path(parser_py).write_text(PIPE_PARSER, encoding="utf-8")
        Path(loop_py).write_text(BERKELEYDB_LOOP, encoding="utf-8")

        ours_name = "shelfmigrate (pure Python, in-process)"
        pipe_name = f"native pipe ({DB_DUMP} | python parser)"
        dump_alone = f"  of which {DB_DUMP} alone (> /dev/null)"  # reference only, no output
        runs = {
            ours_name: (lambda out: run_ours(src, out), os.path.join(tmp, "ours.jsonl")),
            pipe_name: (lambda out: run_pipe(src, out, parser_py), os.path.join(tmp, "pipe.jsonl")),
            dump_alone: (lambda out: run_dump_alone(src), os.path.join(tmp, "unused")),
        }
        if bdb_python:
            runs["berkeleydb cursor loop (child process)"] = (
                lambda out: run_berkeleydb(src, out, bdb_python, loop_py),
                os.path.join(tmp, "berkeleydb.jsonl"),
            )
        compared = [name for name in runs if name != dump_alone]

        # Correctness first: every output holds the same records.
        for name in compared:
            func, out = runs[name]
            timed(func, out)
        reference = records_multiset(runs[ours_name][1])
        if len(reference) != args.records:
            raise SystemExit(f"ours wrote {len(reference):,} records, not {args.records:,}")
        for name in compared:
            if records_multiset(runs[name][1]) != reference:
                raise SystemExit(f"{name}: records differ from ours")
        print(f"checked: all {len(compared)} outputs hold the same {args.records:,} records")

        best_of: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
            for name, (func, out) in runs.items():
                best_of[name] = min(best_of.get(name, float("inf")), timed(func, out))
        ours_s = best_of[ours_name]
        print(f"\nbest of {args.repeat}, {args.records:,} records:")
        for name, elapsed in best_of.items():
            print(f"  {name:<44} {elapsed:7.2f} s  {args.records / elapsed:10,.0f} rec/s")
        startup = interpreter_start(sys.executable, args.repeat)
        print(
            f"  (one interpreter start, included in each child-process baseline: {startup:.3f} s)"
        )
        print("\nratios (baseline time / our time; > 1 means we are faster):")
        for name, elapsed in best_of.items():
            if name not in (ours_name, dump_alone):
                target = " (target >= 1.0)" if name == pipe_name else ""
                print(f"  vs {name:<44} {elapsed / ours_s:5.2f}x{target}")

        if not args.no_memory:
            print("\npeak RSS of our conversion in a child process (values raw -> JSON-lines):")
            base = peak_rss_mib([sys.executable, "-c", IMPORT_ONLY_CHILD])
            print(f"  after imports only:      {base:6.1f} MiB")
            peaks = {}
            for n in sorted({min(100_000, args.records), args.records}):
                mem_src = src
                if n != args.records:
                    mem_src = os.path.join(tmp, f"mem{n}.db")
                    make_source(mem_src, n)
                out = os.path.join(tmp, f"mem{n}.jsonl")
                peaks[n] = peak_rss_mib([sys.executable, "-c", OURS_CHILD, mem_src, out])
                os.unlink(out)
                print(f"  {n:>9,} records:        {peaks[n]:6.1f} MiB")
            if len(peaks) == 2:
                low, high = sorted(peaks)
                print(
                    f"  {high:,} / {low:,} peak RSS ratio: {peaks[high] / peaks[low]:.2f} "
                    "(flat memory: about 1.0)"
                )


if __name__ == "__main__":
    main()
