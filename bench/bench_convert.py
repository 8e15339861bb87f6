"""Benchmark: a dbm.dumb shelf of pickled small dicts -> SQLite (and JSON-lines, LevelDB).

Everything is timed in the same run, so the printed ratios are comparable on a
noisy shared machine; absolute times are not.

Baselines (both on the same shelf, into the same kind of SQLite table):
  tutorial  the loop our users come from: stdlib shelve, REPLACE INTO per row,
            json.dumps, one commit at the end
  best      the best hand-written script: stdlib shelve (plain pickle),
            executemany in one transaction, json.dumps
Memory: peak RSS of `shelfmigrate convert` in a child process for 100,000 and
1,000,000 records (--memory).

    python bench/bench_convert.py [--records 200000] [--repeat 3] [--memory]
"""

from __future__ import annotations

import argparse
import dbm.dumb
import json
import os
import shelve
import sqlite3
import tempfile
import time

from benchlib import convert_command, peak_rss_mib

import shelfmigrate
import shelfmigrate.codecs.safepickle
import shelfmigrate.codecs.typedjson
import shelfmigrate.formats.dumb
import shelfmigrate.formats.jsonl
import shelfmigrate.formats.leveldb
import shelfmigrate.formats.sqlite
import shelfmigrate.pipeline  # noqa: F401 - imported up front so no timed run pays for imports


def make_value(i: int) -> dict:
    return {
        "id": i,
        "name": f"user-{i}",
        "tags": ["a", "b", str(i % 7)],
        "score": i / 3,
        "active": i % 2 == 0,
    }


def make_shelf(base: str, records: int, protocol: int | None = None) -> None:
    """A real dbm.dumb shelf, written by the standard library (``shelve``'s protocol by default)."""
    with shelve.Shelf(dbm.dumb.open(base, "n"), protocol=protocol) as shelf:
        for i in range(records):
            shelf[f"key-{i:08d}"] = make_value(i)


def tutorial_loop(base: str, out: str) -> None:
    con = sqlite3.connect(out)
    con.execute("CREATE TABLE my_data(key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)")
    with shelve.Shelf(dbm.dumb.open(base, "r")) as shelf:
        for key in shelf:
            con.execute(
                "REPLACE INTO my_data (key, value) VALUES (?, ?);", (key, json.dumps(shelf[key]))
            )
    con.commit()
    con.close()


def best_script(base: str, out: str) -> None:
    con = sqlite3.connect(out)
    con.execute("CREATE TABLE my_data(key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)")
    with shelve.Shelf(dbm.dumb.open(base, "r")) as shelf, con:
        con.executemany(
            "INSERT INTO my_data VALUES (?, ?)", ((k, json.dumps(shelf[k])) for k in shelf)
        )
    con.close()


def ours(base: str, out: str) -> None:
    shelfmigrate.convert(base + ".dat", out, progress=False)


def timed(func, base: str, out: str) -> float:
    if os.path.isdir(out):
        import shutil

        shutil.rmtree(out)
    elif os.path.exists(out):
        os.unlink(out)
    start = time.perf_counter()
    func(base, out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak RSS at 100k and 1M records"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shelfmigrate-bench-") as tmp:
        base = os.path.join(tmp, "shelf")
        start = time.perf_counter()
        make_shelf(base, args.records)
        print(
            f"made a {args.records:,}-record dbm.dumb shelf in {time.perf_counter() - start:.1f} s"
        )
        runs = {
            "tutorial loop (shelve, REPLACE per row)": (tutorial_loop, "tutorial.sqlite"),
            "best script (shelve, executemany)": (best_script, "best.sqlite"),
            "shelfmigrate -> SQLite": (ours, "ours.sqlite"),
            "shelfmigrate -> JSON-lines": (ours, "ours.jsonl"),
            "shelfmigrate -> LevelDB": (ours, "ours.ldb"),
        }
        best_of: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
            for name, (func, out) in runs.items():
                elapsed = timed(func, base, os.path.join(tmp, out))
                best_of[name] = min(best_of.get(name, float("inf")), elapsed)
        ours_sqlite = best_of["shelfmigrate -> SQLite"]
        print(f"\nbest of {args.repeat}, {args.records:,} records:")
        for name, elapsed in best_of.items():
            print(f"  {name:<42} {elapsed:7.2f} s  {args.records / elapsed:10,.0f} rec/s")
        print("\nratios (higher is better for shelfmigrate):")
        print(
            f"  vs tutorial loop: {best_of['tutorial loop (shelve, REPLACE per row)'] / ours_sqlite:5.2f}x faster (target >= 2.5x)"
        )
        print(
            f"  vs best script:   {best_of['best script (shelve, executemany)'] / ours_sqlite:5.2f}x faster (target >= 2.5x)"
        )

        if args.memory:
            peaks = {}
            for n in (100_000, 1_000_000):
                mem_base = os.path.join(tmp, f"mem{n}")
                make_shelf(mem_base, n)
                peaks[n] = peak_rss_mib(
                    convert_command(mem_base + ".dat", os.path.join(tmp, f"mem{n}.sqlite"))
                )
                print(f"  peak RSS, {n:>9,} records -> SQLite: {peaks[n]:6.1f} MiB")
                for suffix in (".dat", ".dir", ".bak"):
                    if os.path.exists(mem_base + suffix):
                        os.unlink(mem_base + suffix)
            ratio = peaks[1_000_000] / peaks[100_000]
            print(f"  1M / 100k peak RSS ratio: {ratio:.2f} (target <= 1.2, and < 100 MiB)")


if __name__ == "__main__":
    main()
