"""Shared fixtures for the tests: where the fixture files are, and copying them safely.

SQLite fixtures must always be opened from a copy (opening a WAL database can
create side files beside it), so tests go through :func:`copy_fixture`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"

#: side files that belong to a fixture and travel with it
_DUMB_SUFFIXES = (".dat", ".dir", ".bak")
_SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The repository's ``fixtures/`` folder."""
    return FIXTURES_DIR


def copy_fixture_into(name: str, folder: Path, new_name: str | None = None) -> Path:
    """Copy the fixture ``name`` (relative to ``fixtures/``) and its side files into ``folder``.

    * a dbm.dumb base name or any of its ``.dat``/``.dir``/``.bak`` files copies the
      whole group and returns the path in the same form as ``name``;
    * an SQLite file copies its ``-wal`` (and ``-shm``/``-journal``) with it;
    * a directory (LevelDB) is copied as a tree.

    ``new_name`` renames the copy (for a dumb group: the new base name, with the
    suffix of ``name`` kept).
    """
    source = FIXTURES_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    suffix = next((s for s in _DUMB_SUFFIXES if source.name.endswith(s)), "")
    base = source.with_name(source.name[: len(source.name) - len(suffix)]) if suffix else source
    if (
        base.with_name(base.name + ".dat").is_file()
        and base.with_name(base.name + ".dir").is_file()
    ):
        new_base = folder / (new_name or base.name)
        for side in _DUMB_SUFFIXES:
            part = base.with_name(base.name + side)
            if part.exists():
                shutil.copyfile(part, new_base.with_name(new_base.name + side))
        return new_base.with_name(new_base.name + suffix)
    if not source.exists():
        raise FileNotFoundError(f"no fixture {name!r} under {FIXTURES_DIR}")
    target = folder / (new_name or source.name)
    if source.is_dir():
        shutil.copytree(source, target)
        return target
    shutil.copyfile(source, target)
    for side in _SQLITE_SIDE_SUFFIXES:
        part = source.with_name(source.name + side)
        if part.exists():
            shutil.copyfile(part, target.with_name(target.name + side))
    return target


@pytest.fixture
def copy_fixture(tmp_path: Path) -> Callable[..., Path]:
    """``copy_fixture(name, new_name=None)``: a private copy of a fixture (group) in ``tmp_path/src``."""

    def copy(name: str, new_name: str | None = None) -> Path:
        return copy_fixture_into(name, tmp_path / "src", new_name)

    return copy
