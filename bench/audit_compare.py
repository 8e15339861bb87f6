"""Benchmark: `shelfmigrate audit` vs picklescan vs fickling on the hostile pickle corpus.

Detection (tests/pickle_corpus.py, every case written to its own file in a temp
dir, the canary path pointing into that dir) and throughput (10,000 small
realistic pickles: dicts, datetimes, OrderedDicts, sets, tuples, protocols 0-5),
all measured in the same run.

The external tools live in their own virtual environment (default
~/.cache/shelfmigrate-bench/venv-audit, made on first use with
`pip install picklescan fickling typing_extensions`; fickling 0.1.x imports
typing_extensions on 3.11 without declaring it).  They run in a worker process
of that venv (this same file, `--worker TOOL`), which reads every file into
memory and then calls the tool's per-bytes Python API in-process, so no timing
includes process start-up.  A per-case timeout (--case-timeout) and an address
space limit (4 GiB) keep a tool that hangs or balloons on a DoS case from taking
the run down; a worker that dies is restarted after the case that killed it.

What counts as "detected" (flagged) for each tool:
  ours        audit_pickle(data).verdict == dangerous   (unreadable and unknown
              are counted separately and are NOT detections in the main table)
  picklescan  scanner.scan_bytes(BytesIO(data), name, ".pkl") - what its CLI
              does for a .pkl file - reports issues_count > 0 (dangerous globals);
              "suspicious" (unknown globals) and scan_err are shown separately
  fickling    StackedPickle.load(BytesIO(data), fail_on_decode_error=False) and
              check_safety() on each pickle, as `fickling --check-safety` does:
              flagged when any severity > LIKELY_SAFE or has_invalid_opcode (the
              rule of fickling.load / fickling.is_likely_safe)
An exception, timeout or worker crash is an "error", never a detection (a note
gives the fail-closed count: flagged + errors).
False alarm: a benign or py2 case (a legitimate value) flagged; for ours, a
verdict of dangerous or unreadable (`--fail-on dangerous` fails on both).

    python bench/audit_compare.py [--throughput 10000] [--repeat 3] [--venv DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import marshal
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_VENV = Path.home() / ".cache" / "shelfmigrate-bench" / "venv-audit"
EXTERNAL = ("picklescan", "fickling")
PIP_PACKAGES = ("picklescan", "fickling", "typing_extensions")


# ---------------------------------------------------------------------------
# The worker (runs inside the external tools' venv; stdlib + the tool only)


class _CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _CaseTimeout()


def _make_scanner(tool: str):
    """A function bytes -> (flagged, detail) using the tool's in-process API."""
    import logging

    logging.disable(logging.CRITICAL)  # picklescan logs every finding
    if tool == "picklescan":
        from picklescan import scanner

        def scan(data: bytes):
            result = scanner.scan_bytes(io.BytesIO(data), "value.pkl", ".pkl")
            detail = {
                "dangerous_globals": result.issues_count,
                "suspicious_globals": result.suspicious_count,
                "scan_err": bool(result.scan_err),
            }
            return result.issues_count > 0, detail

        return scan
    if tool == "fickling":
        from fickling.analysis import Severity, check_safety
        from fickling.fickle import StackedPickle

        def scan(data: bytes):
            # as `fickling --check-safety` does: every stacked pickle in the file
            stacked = StackedPickle.load(io.BytesIO(data), fail_on_decode_error=False)
            severity, invalid = Severity.LIKELY_SAFE, False
            for pickled in stacked:
                severity = max(severity, check_safety(pickled).severity)
                invalid = invalid or bool(pickled.has_invalid_opcode)
            detail = {"severity": severity.name, "invalid_opcode": invalid, "pickles": len(stacked)}
            return severity > Severity.LIKELY_SAFE or invalid, detail

        return scan
    raise SystemExit(f"unknown tool {tool!r}")


def _version(tool: str) -> str:
    from importlib.metadata import version

    return version(tool)


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="audit_compare.py --worker")
    parser.add_argument("tool", choices=EXTERNAL)
    parser.add_argument("mode", choices=("cases", "throughput"))
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import resource

        limit = 4 * 1024**3
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    sys.setrecursionlimit(10_000)
    scan = _make_scanner(args.tool)
    if args.mode == "throughput":
        with open(args.input, "rb") as handle:
            values = marshal.load(handle)
        errors = flagged = 0
        best = float("inf")
        for _ in range(args.repeat):
            errors = flagged = 0
            start = time.perf_counter()
            for data in values:
                try:
                    if scan(data)[0]:
                        flagged += 1
                except Exception:
                    errors += 1
            best = min(best, time.perf_counter() - start)
        with open(args.output, "w") as out:
            json.dump(
                {
                    "seconds": best,
                    "n": len(values),
                    "flagged": flagged,
                    "errors": errors,
                    "version": _version(args.tool),
                },
                out,
            )
        return
    with open(args.input) as handle:
        files = json.load(handle)
    signal.signal(signal.SIGALRM, _on_alarm)
    with open(args.output, "a") as out:
        for index in range(args.start, len(files)):
            data = Path(files[index]).read_bytes()
            row: dict = {"i": index}
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                flagged, detail = scan(data)
                row.update(status="ok", flagged=bool(flagged), detail=detail)
            except _CaseTimeout:
                row.update(status="timeout", flagged=False, detail=f"> {args.timeout:g} s")
            except MemoryError:
                row.update(status="error", flagged=False, detail="MemoryError")
            except BaseException as exc:  # noqa: BLE001 - a crash of the tool is a result
                if isinstance(exc, KeyboardInterrupt):
                    raise
                row.update(
                    status="error", flagged=False, detail=f"{type(exc).__name__}: {exc}"[:200]
                )
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            row["seconds"] = time.perf_counter() - start
            out.write(json.dumps(row) + "\n")
            out.flush()


# ---------------------------------------------------------------------------
# The driver (runs with shelfmigrate importable)


def ensure_venv(venv: Path) -> Path:
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = [str(python), "-c", "import picklescan.scanner, fickling.analysis, fickling.fickle"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} and installing {' '.join(PIP_PACKAGES)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *PIP_PACKAGES,
        ],
        check=True,
    )
    subprocess.run(probe, check=True)
    return python


def load_corpus():
    import importlib.util

    path = REPO / "tests" / "pickle_corpus.py"
    spec = importlib.util.spec_from_file_location("pickle_corpus", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pickle_corpus"] = module  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module.CASES


def throughput_values(n: int) -> list[bytes]:
    """Small realistic shelf values, pickled at protocols 0-5 in turn."""
    import collections
    import datetime
    import pickle
    import random

    rng = random.Random(1234)
    base = datetime.datetime(2019, 1, 1, 12, 0, 0)
    tz = datetime.timezone(datetime.timedelta(hours=2))
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            value = {
                "id": i,
                "name": f"user-{i}",
                "tags": ["a", "b", str(i % 7)],
                "score": i / 3,
                "active": i % 2 == 0,
            }
        elif kind == 1:
            value = {
                "id": i,
                "created": base + datetime.timedelta(minutes=rng.randrange(10**6)),
                "birthday": datetime.date(1950 + i % 60, 1 + i % 12, 1 + i % 28),
                "updated": datetime.datetime(2024, 5, 1, 8, 30, tzinfo=tz),
            }
        elif kind == 2:
            value = collections.OrderedDict(
                [
                    ("sku", f"SKU{i:06d}"),
                    ("qty", rng.randrange(100)),
                    ("price", round(rng.random() * 100, 2)),
                    ("seen", datetime.date(2020, 1, 1) + datetime.timedelta(days=i % 900)),
                ]
            )
        elif kind == 3:
            value = {
                "point": (rng.random(), rng.random()),
                "labels": {"x", "y", f"z{i % 3}"},
                "blob": bytes(rng.randrange(256) for _ in range(16)),
                "none": None,
            }
        else:
            value = [f"line {j} of record {i}" for j in range(rng.randrange(1, 6))] + [
                i,
                -i,
                2**40 + i,
            ]
        out.append(pickle.dumps(value, protocol=i % 6))
    return out


def run_external(
    python: Path, tool: str, manifest: Path, files: list[str], tmp: Path, timeout: float
) -> dict[int, dict]:
    out = tmp / f"{tool}.jsonl"
    out.unlink(missing_ok=True)
    results: dict[int, dict] = {}
    start = 0
    while start < len(files):
        cmd = [
            str(python),
            "-I",
            str(Path(__file__).resolve()),
            "--worker",
            tool,
            "cases",
            str(manifest),
            str(out),
            "--start",
            str(start),
            "--timeout",
            str(timeout),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if out.exists():
            for line in out.read_text().splitlines():
                row = json.loads(line)
                results[row["i"]] = row
        start = max(results) + 1 if results else 0
        if proc.returncode != 0 and start < len(files):
            tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            results[start] = {
                "i": start,
                "status": "crash",
                "flagged": False,
                "detail": f"worker died (rc {proc.returncode}): {tail}"[:200],
                "seconds": None,
            }
            with open(out, "a") as handle:
                handle.write(json.dumps(results[start]) + "\n")
            start += 1
    return results


def run_external_throughput(
    python: Path, tool: str, values_file: Path, tmp: Path, repeat: int
) -> dict:
    out = tmp / f"{tool}-throughput.json"
    cmd = [
        str(python),
        "-I",
        str(Path(__file__).resolve()),
        "--worker",
        tool,
        "throughput",
        str(values_file),
        str(out),
        "--repeat",
        str(repeat),
    ]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--throughput", type=int, default=10_000, help="pickles in the throughput set"
    )
    parser.add_argument("--repeat", type=int, default=3, help="throughput: best of N")
    parser.add_argument(
        "--case-timeout", type=float, default=20.0, help="seconds per corpus case (external tools)"
    )
    parser.add_argument(
        "--list", action="store_true", help="list every case a tool missed or falsely flagged"
    )
    args = parser.parse_args()

    import shelfmigrate
    from shelfmigrate.codecs.audit import Verdict, audit_pickle

    python = ensure_venv(args.venv)
    cases = load_corpus()

    with tempfile.TemporaryDirectory(prefix="shelfmigrate-audit-bench-") as tmp_name:
        tmp = Path(tmp_name)
        canary = tmp / "canary"
        case_dir = tmp / "corpus"
        case_dir.mkdir()
        files = []
        for index, case in enumerate(cases):
            path = case_dir / f"{index:03d}-{case.name}.pkl"
            path.write_bytes(case.data(str(canary)))
            files.append(str(path))
        manifest = tmp / "manifest.json"
        manifest.write_text(json.dumps(files))

        # -- detection -----------------------------------------------------
        results: dict[str, dict[int, dict]] = {"shelfmigrate": {}}
        for index, path in enumerate(files):
            data = Path(path).read_bytes()
            start = time.perf_counter()
            try:
                verdict = audit_pickle(data).verdict
                row = {
                    "status": "ok",
                    "verdict": str(verdict),
                    "flagged": verdict is Verdict.DANGEROUS,
                }
            except Exception as exc:  # noqa: BLE001
                row = {
                    "status": "error",
                    "flagged": False,
                    "detail": f"{type(exc).__name__}: {exc}"[:200],
                }
            row["seconds"] = time.perf_counter() - start
            results["shelfmigrate"][index] = row
        for tool in EXTERNAL:
            print(f"running {tool} on {len(files)} corpus files ...", file=sys.stderr, flush=True)
            results[tool] = run_external(python, tool, manifest, files, tmp, args.case_timeout)

        # -- throughput ----------------------------------------------------
        values = throughput_values(args.throughput)
        values_file = tmp / "throughput.marshal"
        values_file.write_bytes(marshal.dumps(values))
        total_bytes = sum(map(len, values))
        speed: dict[str, dict] = {}
        for round_ in range(args.repeat):  # interleaved: drift on a shared machine hits all alike
            flagged = errors = 0
            start = time.perf_counter()
            for data in values:
                try:
                    if audit_pickle(data).verdict is not Verdict.SAFE:
                        flagged += 1
                except Exception:  # noqa: BLE001 - counted, like the external tools' errors
                    errors += 1
            elapsed = time.perf_counter() - start
            if elapsed < speed.get("shelfmigrate", {}).get("seconds", float("inf")):
                speed["shelfmigrate"] = {
                    "seconds": elapsed,
                    "n": len(values),
                    "flagged": flagged,
                    "errors": errors,
                    "version": shelfmigrate.__version__,
                }
            for tool in EXTERNAL:
                print(f"throughput round {round_ + 1}: {tool} ...", file=sys.stderr, flush=True)
                got = run_external_throughput(python, tool, values_file, tmp, 1)
                if got["seconds"] < speed.get(tool, {}).get("seconds", float("inf")):
                    speed[tool] = got
        canary_ran = canary.exists()

    report(cases, results, speed, args, total_bytes, canary_ran)


def report(cases, results, speed, args, total_bytes, canary_ran) -> None:
    kinds = ("hostile", "dos", "malformed", "benign", "py2")
    count = {k: sum(c.kind == k for c in cases) for k in kinds}
    legit = [i for i, c in enumerate(cases) if c.kind in ("benign", "py2")]
    tools = ("shelfmigrate", *EXTERNAL)
    label = {
        "shelfmigrate": f"shelfmigrate audit {speed['shelfmigrate']['version']}",
        "picklescan": f"picklescan {speed['picklescan']['version']}",
        "fickling": f"fickling {speed['fickling']['version']}",
    }

    def by_kind(tool, kind):
        return [i for i, c in enumerate(cases) if c.kind == kind]

    def false_alarm(tool, i):
        row = results[tool][i]
        if tool == "shelfmigrate":
            return row.get("verdict") in ("dangerous", "unreadable")
        return row["flagged"]

    def bad(row):
        return row["status"] != "ok"

    ps_rate = speed["picklescan"]["n"] / speed["picklescan"]["seconds"]
    print(
        f"\ncorpus: {len(cases)} cases ({', '.join(f'{count[k]} {k}' for k in kinds)}); "
        f"throughput set: {args.throughput:,} pickles, {total_bytes:,} bytes, protocols 0-5, best of {args.repeat}"
    )
    import shelfmigrate

    print(f"shelfmigrate imported from {Path(shelfmigrate.__file__).parent}")
    print(f"canary created by any tool: {'YES (!)' if canary_ran else 'no'}\n")
    print(
        f"| tool | hostile detected (of {count['hostile']}) | hostile missed | DoS detected (of {count['dos']}) "
        f"| malformed flagged (of {count['malformed']}) | false alarms on benign+py2 (of {len(legit)}) "
        f"| errors / timeouts / crashes | records/s | MB/s | vs picklescan |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for tool in tools:
        res = results[tool]
        hostile = by_kind(tool, "hostile")
        det = sum(res[i]["flagged"] for i in hostile)
        dos = sum(res[i]["flagged"] for i in by_kind(tool, "dos"))
        mal = sum(res[i]["flagged"] for i in by_kind(tool, "malformed"))
        # Our audit calls a record it cannot read "unreadable" (exit 2, a
        # failure under every --fail-on): shown beside the dangerous count.
        unreadable = {
            kind: sum(
                1
                for i in by_kind(tool, kind)
                if not res[i]["flagged"] and res[i].get("verdict") == "unreadable"
            )
            for kind in ("dos", "malformed")
        }
        dos = f"{dos} ({unreadable['dos']} more unreadable)" if unreadable["dos"] else dos
        mal = (
            f"{mal} ({unreadable['malformed']} more unreadable)" if unreadable["malformed"] else mal
        )
        fa = sum(false_alarm(tool, i) for i in legit)
        statuses = [res[i]["status"] for i in range(len(cases))]
        errs = (
            f"{statuses.count('error')} / {statuses.count('timeout')} / {statuses.count('crash')}"
        )
        sp = speed[tool]
        rate = sp["n"] / sp["seconds"]
        print(
            f"| {label[tool]} | {det} | {len(hostile) - det} | {dos} | {mal} | {fa} | {errs} "
            f"| {rate:,.0f} | {total_bytes / sp['seconds'] / 1e6:.1f} | {rate / ps_rate:.2f}x |"
        )

    print("\nnotes:")
    ours = results["shelfmigrate"]
    verdicts = {}
    for i, c in enumerate(cases):
        verdicts.setdefault(c.kind, {}).setdefault(ours[i].get("verdict", "error"), 0)
        verdicts[c.kind][ours[i].get("verdict", "error")] += 1
    for kind in kinds:
        print(
            f"- shelfmigrate verdicts on {kind}: "
            + ", ".join(f"{v} {n}" for v, n in sorted(verdicts[kind].items()))
        )
    match = sum(ours[i].get("verdict") == c.audit for i, c in enumerate(cases))
    xfail = sum(bool(c.audit_xfail) for c in cases)
    print(
        f"- shelfmigrate verdict == the corpus's `audit` expectation: {match} of {len(cases)} "
        f"({xfail} cases carry an audit_xfail)"
    )
    unk = sum(
        ours[i].get("verdict") == "unknown" and c.audit == "safe"
        for i, c in enumerate(cases)
        if c.kind in ("benign", "py2")
    )
    print(f"- shelfmigrate says unknown (would stub) on a legitimate value expected safe: {unk}")
    for tool in EXTERNAL:
        res = results[tool]
        hostile = by_kind(tool, "hostile")
        missed = [i for i in hostile if not res[i]["flagged"]]
        missed_err = sum(bad(res[i]) for i in missed)
        fail_closed = sum(res[i]["flagged"] or bad(res[i]) for i in hostile)
        legit_err = sum(bad(res[i]) for i in legit)
        print(
            f"- {tool}: of {len(missed)} hostile missed, {missed_err} were errors/timeouts/crashes; "
            f"fail-closed reading (flagged or error) detects {fail_closed} of {len(hostile)} hostile, "
            f"and errors on {legit_err} legitimate values"
        )
        if tool == "picklescan":
            susp = sum(
                res[i]["status"] == "ok"
                and res[i]["detail"]["suspicious_globals"] > 0
                and not res[i]["flagged"]
                for i in missed
            )
            serr = sum(res[i]["status"] == "ok" and res[i]["detail"]["scan_err"] for i in missed)
            print(
                f"  picklescan: of the hostile missed, {susp} had only 'suspicious' (unknown) globals, "
                f"{serr} had scan_err set"
            )
        times = [r["seconds"] for r in res.values() if r.get("seconds") is not None]
        slowest = max(res.values(), key=lambda r: r.get("seconds") or 0)
        print(
            f"  {tool}: corpus wall time {sum(times):.2f} s, slowest case {cases[slowest['i']].name} "
            f"({slowest['seconds'] or 0:.2f} s, {slowest['status']})"
        )
    ours_times = [r["seconds"] for r in ours.values()]
    print(
        f"- shelfmigrate: corpus wall time {sum(ours_times):.2f} s, slowest case {max(ours_times):.3f} s"
    )
    for tool in tools:
        sp = speed[tool]
        print(
            f"- throughput {tool}: {sp['n']:,} pickles in {sp['seconds']:.3f} s "
            f"(flagged as not safe: {sp['flagged']}, errors: {sp['errors']})"
        )
    ours_rate = speed["shelfmigrate"]["n"] / speed["shelfmigrate"]["seconds"]
    print(
        f"\ntarget: miss nothing and refuse no legitimate value; audit >= 3x picklescan's records/s "
        f"-> measured {ours_rate / ps_rate:.2f}x"
    )

    if args.list:
        for tool in tools:
            res = results[tool]
            print(f"\n{tool}: hostile/dos not detected")
            for i, c in enumerate(cases):
                if c.kind in ("hostile", "dos") and not res[i]["flagged"]:
                    print(
                        f"  {c.kind:8} {c.name}: {res[i].get('verdict') or res[i]['status']} {res[i].get('detail', '')}"
                    )
            print(f"{tool}: legitimate values flagged / errored")
            for i in legit:
                if false_alarm(tool, i) or bad(res[i]):
                    print(
                        f"  {cases[i].kind:8} {cases[i].name}: {res[i].get('verdict') or res[i]['status']} {res[i].get('detail', '')}"
                    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
