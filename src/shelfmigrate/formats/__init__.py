"""The format registry: one line per reader or writer, imported lazily on first use.

Names are the ones :mod:`shelfmigrate.detect` returns.  Formats that detection
recognises but that are not read (Berkeley DB heap) are listed in
``RECOGNISED_WITHOUT_READER`` so that ``convert`` can say so plainly.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

READERS: dict[str, str] = {
    "dumb": "shelfmigrate.formats.dumb:DumbReader",
    "sqlite": "shelfmigrate.formats.sqlite:SQLiteReader",
    "leveldb": "shelfmigrate.formats.leveldb:LevelDBReader",
    "jsonl": "shelfmigrate.formats.jsonl:JsonLinesReader",
    "pickle": "shelfmigrate.formats.pickles:PickleStreamReader",
    "marshal": "shelfmigrate.formats.marshals:MarshalStreamReader",
    "gdbm": "shelfmigrate.formats.gdbm:GdbmReader",
    "gdbm-dump-ascii": "shelfmigrate.formats.gdbm_dump:GdbmAsciiDumpReader",
    "gdbm-dump-binary": "shelfmigrate.formats.gdbm_dump:GdbmBinaryDumpReader",
    "ndbm-gdbm": "shelfmigrate.formats.ndbm:NdbmGdbmReader",
    "ndbm-classic": "shelfmigrate.formats.ndbm:NdbmClassicReader",
    "bdb-hash": "shelfmigrate.formats.bdb:BerkeleyDBReader",
    "bdb-btree": "shelfmigrate.formats.bdb:BerkeleyDBReader",
    "bdb-queue": "shelfmigrate.formats.bdb:BerkeleyDBReader",
    "bdb185-hash": "shelfmigrate.formats.bdb185:BerkeleyDB185Reader",
    "bdb185-btree": "shelfmigrate.formats.bdb185:BerkeleyDB185Reader",
}

WRITERS: dict[str, str] = {
    "jsonl": "shelfmigrate.formats.jsonl:JsonLinesWriter",
    "sqlite": "shelfmigrate.formats.sqlite:SQLiteWriter",
    "leveldb": "shelfmigrate.formats.leveldb:LevelDBWriter",
}

RECOGNISED_WITHOUT_READER: dict[str, str] = {
    "bdb-heap": "Berkeley DB heap",
}

#: extra pieces a format needs, for ``formats`` and for error messages
OPTIONAL_MODULES: dict[str, str] = {"leveldb": "plyvel"}


def load_class(dotted: str) -> Any:
    """Import ``package.module:Class`` and return the class."""
    module_name, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def reader_class(name: str, path: str | None = None) -> Any:
    """The reader class registered as ``name`` (``path`` only names the source in errors)."""
    from ..errors import ShelfmigrateError, UnsupportedFormatError, UsageError

    if name in READERS:
        return load_class(READERS[name])
    if name in RECOGNISED_WITHOUT_READER:
        why = "but shelfmigrate does not read them"
        if path is not None:
            from ..detect import detect

            # detection's refusal says why and what to do; a file that is not even
            # of that format keeps the plain reason
            with contextlib.suppress(ShelfmigrateError):
                refusal = detect(path).refusal
                why = f"not read: {refusal}" if refusal else why
        raise UnsupportedFormatError(
            path, f"{RECOGNISED_WITHOUT_READER[name]} files are recognised, {why}"
        )
    raise UsageError(f"unknown source format {name!r} (known: {', '.join(READERS)})")


def writer_class(name: str) -> Any:
    """The writer class registered as ``name``."""
    from ..errors import UsageError

    if name not in WRITERS:
        raise UsageError(f"unknown destination format {name!r} (known: {', '.join(WRITERS)})")
    return load_class(WRITERS[name])
