"""Benchmark: shelf -> SQLite with the safe unpickler vs the same conversion with plain pickle.loads.

Issue target: the safe decoder keeps >= 0.8x the speed of plain ``pickle.loads``
over the whole conversion (read, decode, encode, write).

A 200,000-record ``dbm.dumb`` shelf of small dicts (as in bench_convert.py) is
written by the standard library, then, interleaved, best of --repeat:

  convert() (safe)  ``shelfmigrate.convert(shelf, out.sqlite)``, as users call it
  pipeline, safe    the same conversion built by hand from the public pieces
                    (``pipeline.open_reader`` / ``open_writer`` / ``run`` with a
                    ``ReadOptions()``), decoder untouched
  pipeline, plain   the same hand-built conversion with the pickle decoder swapped
                    for plain ``pickle.loads``: ``make_decoder`` is monkeypatched in
                    this process only (``shelfmigrate.pipeline`` imported the name
                    from ``shelfmigrate.values``, so both names are patched), for
                    the duration of that run; src/ is not touched

The headline ratio is plain time / safe time of the two hand-built runs (the
same code path but for the decoder); convert() is shown as a check that the
hand-built pipeline is what convert() does.  The SQLite outputs of the safe and
plain runs are compared row by row, and the plain run asserts that the patched
decoder really decoded every record.

    python bench/bench_safe_vs_plain.py [--records 200000] [--repeat 3] [--protocol N]

``--protocol 0`` measures a shelf as Python 2 wrote it (text pickles, nested
values filled one SETITEM at a time), which the pre-scan's text grammar reads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import sqlite3
import sys
import tempfile
import time

import shelfmigrate
import shelfmigrate.codecs.safepickle
import shelfmigrate.codecs.typedjson
import shelfmigrate.formats.dumb
import shelfmigrate.formats.sqlite
import shelfmigrate.pipeline as pipeline
import shelfmigrate.values as values
from shelfmigrate import ReadOptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convert import make_shelf  # noqa: E402 - the same shelf as the main benchmark

_original_make_decoder = values.make_decoder
_plain_calls = 0


def _plain_make_decoder(name, options):
    """make_decoder, but the pickle codec is plain pickle.loads (benchmark only)."""
    if name != "pickle":
        return _original_make_decoder(name, options)
    loads = pickle.loads

    def decode_plain(raw):
        global _plain_calls
        _plain_calls += 1
        return loads(raw)

    return decode_plain


def _bare_plain_make_decoder(name, options):
    return pickle.loads if name == "pickle" else _original_make_decoder(name, options)


@contextlib.contextmanager
def plain_pickle(counting: bool):
    patched = _plain_make_decoder if counting else _bare_plain_make_decoder
    saved = (values.make_decoder, pipeline.make_decoder)
    values.make_decoder = pipeline.make_decoder = patched
    try:
        yield
    finally:
        values.make_decoder, pipeline.make_decoder = saved


def hand_built(src: str, out: str) -> shelfmigrate.pipeline.Report:
    options = ReadOptions()
    reader = pipeline.open_reader(src, options=options)
    writer = pipeline.open_writer(out)
    return pipeline.run(reader, writer, read_options=options, progress=False)


def run_convert(src: str, out: str):
    return shelfmigrate.convert(src, out, progress=False)


def run_safe(src: str, out: str):
    return hand_built(src, out)


def run_plain(src: str, out: str):
    with plain_pickle(counting=False):
        return hand_built(src, out)


def fresh(path: str) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


def timed(func, src: str, out: str) -> float:
    fresh(out)
    start = time.perf_counter()
    report = func(src, out)
    elapsed = time.perf_counter() - start
    assert report.status == "ok", report.to_dict()
    return elapsed


def dump(path: str) -> list:
    con = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return [(t, con.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()) for t in tables]
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--protocol",
        type=int,
        default=None,
        help="pickle protocol of the shelf (default: shelve's, 4; 0 is what Python 2 shelves hold)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shelfmigrate-bench-") as tmp:
        base = os.path.join(tmp, "shelf")
        start = time.perf_counter()
        make_shelf(base, args.records, args.protocol)
        src = base + ".dat"
        print(f"shelfmigrate imported from {os.path.dirname(shelfmigrate.__file__)}")
        protocol = (
            "shelve's default protocol" if args.protocol is None else f"protocol {args.protocol}"
        )
        print(
            f"made a {args.records:,}-record dbm.dumb shelf ({protocol}) "
            f"in {time.perf_counter() - start:.1f} s"
        )

        # correctness first (untimed): the patch is really used, and the outputs agree
        safe_out, plain_out = (
            os.path.join(tmp, "check-safe.sqlite"),
            os.path.join(tmp, "check-plain.sqlite"),
        )
        report = hand_built(src, safe_out)
        with plain_pickle(counting=True):
            plain_report = hand_built(src, plain_out)
        assert (
            values.make_decoder is _original_make_decoder
            and pipeline.make_decoder is _original_make_decoder
        )
        assert _plain_calls == args.records, (_plain_calls, args.records)
        same = dump(safe_out) == dump(plain_out)
        print(
            f"check: safe run read {report.read:,} / wrote {report.written:,} (values: {report.values}); "
            f"plain run decoded {_plain_calls:,} records with pickle.loads, wrote {plain_report.written:,}; "
            f"SQLite outputs identical: {'yes' if same else 'NO'}"
        )
        fresh(safe_out)
        fresh(plain_out)

        runs = {
            "convert() (safe unpickler)": run_convert,
            "pipeline, safe unpickler": run_safe,
            "pipeline, plain pickle.loads": run_plain,
        }
        best: dict[str, float] = {}
        out = os.path.join(tmp, "out.sqlite")
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
            for name, func in runs.items():
                best[name] = min(best.get(name, float("inf")), timed(func, src, out))
        print(f"\nbest of {args.repeat}, {args.records:,} records, dbm.dumb shelf -> SQLite:")
        for name, elapsed in best.items():
            print(f"  {name:<32} {elapsed:7.2f} s  {args.records / elapsed:10,.0f} rec/s")
        ratio = best["pipeline, plain pickle.loads"] / best["pipeline, safe unpickler"]
        ratio_convert = best["pipeline, plain pickle.loads"] / best["convert() (safe unpickler)"]
        print(
            f"\nsafe speed / plain speed: {ratio:.2f}x  (convert(): {ratio_convert:.2f}x)  (target >= 0.8x)"
        )


if __name__ == "__main__":
    main()
