"""Pieces the benchmark scripts share (run them from the repository root: ``python bench/X.py``)."""

from __future__ import annotations

import subprocess
import sys

_LAUNCHER = (
    "import resource, subprocess, sys;"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss_mib(argv: list[str]) -> float:
    """Peak RSS in MiB of the command ``argv``, run to completion.

    Linux carries a process's RSS high-water mark across fork+exec, so a child forked
    straight from a large benchmark process would report that process's size. A small
    intermediate python starts the measured command and reads RUSAGE_CHILDREN.
    """
    result = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv], check=True, capture_output=True, text=True
    )
    return int(result.stdout.strip()) / 1024


def convert_command(*args: str) -> list[str]:
    """``python -m shelfmigrate convert ARGS --no-progress`` with this interpreter."""
    return [sys.executable, "-m", "shelfmigrate", "convert", *args, "--no-progress"]
