"""Decide what a path holds, by content (never by its name alone).

``detect(path)`` returns a :class:`Detection`: the registry name of the format, the
file that was actually sniffed, a one-line human description, machine-readable
details and, for files that are recognised but can never be read (encrypted or
heap Berkeley DB, pre-3.1 Berkeley DB, partitioned/compressed/external-file
databases ...), a ``refusal`` that says why and what to do instead.

Names first, then content
-------------------------
:func:`resolve_paths` turns what an application passed to ``dbm.open`` /
``shelve.open`` (``NAME``) into the real files, in this order (the first that
exists wins):

1. ``NAME`` itself: a directory (LevelDB), or a file; a file called ``X.dat``
   with ``X.dir`` or ``X.bak`` beside it is a dbm.dumb group, ``X.dir``/``X.pag``
   with the partner present is an ndbm group (``X.dir`` with ``X.dat`` beside it
   and no ``X.pag`` is dbm.dumb);
2. ``NAME.pag`` + ``NAME.dir`` (ndbm: GDBM compat or classic sdbm/ndbm);
3. ``NAME.db`` (Berkeley-DB-backed or DB 1.85 ndbm, and Python 2 names);
4. ``NAME.dat`` (dbm.dumb, with ``NAME.dir`` and/or ``NAME.bak``);
5. a lone ``NAME.dir`` or ``NAME.pag`` (sniffed, usually to say which partner is missing).

Order of the content checks (first match wins)
----------------------------------------------
A directory is only ever LevelDB (``CURRENT`` naming an existing ``MANIFEST-*``).
The ndbm group is GDBM compat when ``.dir`` is GDBM's 16-byte header (or a hard
link to ``.pag``) or ``.pag`` starts with a GDBM magic, else classic sdbm/ndbm when
the ``.pag`` pages pass the structural check of FORMATS.md §4.1. The dbm.dumb
group is decided by its ``.dir`` text. A single file is checked in this order:

1. empty file -> error;
2. SQLite (16-byte magic at 0);
3. Berkeley DB 2.x-18.x (magic at offset 12, both byte orders);
4. Berkeley DB 1.85 hash / btree (magic at offset 0);
5. GDBM (magic at offset 0, both byte orders);
6. GDBM ASCII and binary dumps (text headers);
7. gzip -> JSON lines inside;
8. JSON lines;
9. pickle (first opcodes checked with ``pickletools`` on a bounded prefix, never
   unpickled) - before marshal because both may start with ``(``;
10. marshal, last and conservatively: a tiny bounded structural walk that never
    builds objects.

Magic formats come first because their signatures are long and contain NUL bytes
that no text format has; the text and opcode formats are ambiguous and come last.
A magic that matches but whose header is implausible (truncated file, page size that
is not a power of two ...) does not stop the search; if nothing else matches, the
error names what was seen ("Berkeley DB hash magic at offset 12 but ...").

Each file is read for at most a few KiB, except: the first line of a JSON-lines file
(up to 1 MiB), a pickle prefix (64 KiB), a dbm.dumb ``.dir`` (read whole, in chunks,
to count its entries), SQLite's schema (through the ``sqlite3`` module, read-only)
and a LevelDB directory listing.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import pickletools
import re
import sqlite3
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs.pickleops import PickleWalkError, iter_opcodes
from .errors import FormatError, SourceError
from .formats._pages import is_power_of_two

__all__ = [
    "FORMAT_BDB_BTREE",
    "FORMAT_BDB_HASH",
    "FORMAT_BDB_HEAP",
    "FORMAT_BDB_QUEUE",
    "FORMAT_BDB185_BTREE",
    "FORMAT_BDB185_HASH",
    "FORMAT_DUMB",
    "FORMAT_GDBM",
    "FORMAT_GDBM_DUMP_ASCII",
    "FORMAT_GDBM_DUMP_BINARY",
    "FORMAT_JSONL",
    "FORMAT_LEVELDB",
    "FORMAT_MARSHAL",
    "FORMAT_NDBM_CLASSIC",
    "FORMAT_NDBM_GDBM",
    "FORMAT_PICKLE",
    "FORMAT_SQLITE",
    "FORMATS",
    "Detection",
    "ResolvedPaths",
    "detect",
    "resolve_paths",
]

FORMAT_BDB_HASH = "bdb-hash"
FORMAT_BDB_BTREE = "bdb-btree"  # includes recno (details["access_method"] == "recno")
FORMAT_BDB_QUEUE = "bdb-queue"
FORMAT_BDB_HEAP = "bdb-heap"
FORMAT_BDB185_HASH = "bdb185-hash"
FORMAT_BDB185_BTREE = "bdb185-btree"
FORMAT_GDBM = "gdbm"
FORMAT_GDBM_DUMP_ASCII = "gdbm-dump-ascii"
FORMAT_GDBM_DUMP_BINARY = "gdbm-dump-binary"
FORMAT_NDBM_GDBM = "ndbm-gdbm"
FORMAT_NDBM_CLASSIC = "ndbm-classic"
FORMAT_DUMB = "dumb"
FORMAT_SQLITE = "sqlite"
FORMAT_LEVELDB = "leveldb"
FORMAT_JSONL = "jsonl"
FORMAT_PICKLE = "pickle"
FORMAT_MARSHAL = "marshal"

FORMATS: tuple[str, ...] = (
    FORMAT_BDB_HASH,
    FORMAT_BDB_BTREE,
    FORMAT_BDB_QUEUE,
    FORMAT_BDB_HEAP,
    FORMAT_BDB185_HASH,
    FORMAT_BDB185_BTREE,
    FORMAT_GDBM,
    FORMAT_GDBM_DUMP_ASCII,
    FORMAT_GDBM_DUMP_BINARY,
    FORMAT_NDBM_GDBM,
    FORMAT_NDBM_CLASSIC,
    FORMAT_DUMB,
    FORMAT_SQLITE,
    FORMAT_LEVELDB,
    FORMAT_JSONL,
    FORMAT_PICKLE,
    FORMAT_MARSHAL,
)

HEAD_SIZE = 4096  # bytes read for every magic check
JSONL_MAX_LINE = 1 << 20  # first JSON-lines record may be this long
PICKLE_WINDOW = 64 * 1024
MARSHAL_WINDOW = 512
MARSHAL_MAX_ITEMS = 256


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found.

    ``format`` is one of the ``FORMAT_*`` names; ``path`` the main file actually
    sniffed (``NAME.dat`` for a dumb shelf given as ``NAME``, the ``.pag`` of an ndbm
    pair, the directory of a LevelDB database); ``details["files"]`` lists every file
    involved. ``refusal`` is set when the file is recognised but can never be read.
    """

    format: str
    path: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)
    refusal: str | None = None


@dataclass(frozen=True)
class ResolvedPaths:
    """The real files behind a name given to ``dbm.open`` / ``shelve.open``.

    ``kind`` is ``"file"``, ``"directory"``, ``"dumb"`` (``.dat`` + ``.dir``/``.bak``)
    or ``"ndbm"`` (``.dir`` + ``.pag``); ``main`` is the file or directory to sniff
    (``.dat`` for dumb, ``.pag`` for ndbm); ``files`` every existing file of the
    group, ``main`` first.
    """

    given: str
    kind: str
    main: str
    files: tuple[str, ...]


# --------------------------------------------------------------------------- file access


def _source_error(path: str, exc: OSError) -> SourceError:
    if isinstance(exc, PermissionError):
        return SourceError(path, "permission denied")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return SourceError(path, "no such file or directory")
    return SourceError(path, exc.strerror or str(exc))


def _stat(path: str) -> os.stat_result | None:
    """``os.stat`` that says None for "does not exist" and raises SourceError otherwise."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _source_error(path, exc) from exc


def _is_file(path: str) -> bool:
    st = _stat(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def _exists(path: str) -> bool:
    return _stat(path) is not None


def _open_binary(path: str):
    return open(path, "rb")  # noqa: SIM115 - wrapped by callers


class _File:
    """A regular file, read through bounded, cached prefixes."""

    def __init__(self, path: str):
        self.path = path
        st = _stat(path)
        if st is None:
            raise SourceError(path, "no such file or directory")
        if stat.S_ISDIR(st.st_mode):
            raise FormatError(path, "is a directory, not a LevelDB database")
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(path, "not a regular file")
        self.size = st.st_size
        self._prefix = b""

    def read(self, n: int) -> bytes:
        """The first ``min(n, size)`` bytes of the file."""
        n = min(n, self.size)
        if len(self._prefix) < n:
            try:
                with _open_binary(self.path) as fh:
                    self._prefix = fh.read(n)
            except OSError as exc:
                raise _source_error(self.path, exc) from exc
        return self._prefix[:n]

    @property
    def head(self) -> bytes:
        return self.read(HEAD_SIZE)


def _hex(data: bytes, n: int = 16) -> str:
    return " ".join(f"{b:02x}" for b in data[:n])


def _order_name(order: str) -> str:
    return "little" if order == "<" else "big"


# --------------------------------------------------------------------------- resolve_paths


def resolve_paths(path: str | os.PathLike[str]) -> ResolvedPaths:
    """Find the real files behind ``path`` (see the module docstring for the order).

    Raises :class:`SourceError` when neither ``path`` nor any side file exists.
    """
    given = os.fsdecode(os.fspath(path))
    st = _stat(given)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return ResolvedPaths(given, "directory", given, (given,))
        base, ext = os.path.splitext(given)
        if ext == ".dat":
            group = _dumb_group(given, base)
            if group is not None:
                return group
        elif ext == ".dir":
            if _is_file(base + ".pag"):
                return ResolvedPaths(given, "ndbm", base + ".pag", (base + ".pag", given))
            if _is_file(base + ".dat"):
                group = _dumb_group(given, base)
                if group is not None:
                    return group
        elif ext == ".bak" and _is_file(base + ".dat"):
            group = _dumb_group(given, base)
            if group is not None:
                return group
        elif ext == ".pag" and _is_file(base + ".dir"):
            return ResolvedPaths(given, "ndbm", given, (given, base + ".dir"))
        return ResolvedPaths(given, "file", given, (given,))

    if _is_file(given + ".pag") and _is_file(given + ".dir"):
        return ResolvedPaths(given, "ndbm", given + ".pag", (given + ".pag", given + ".dir"))
    st = _stat(given + ".db")
    if st is not None:
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        return ResolvedPaths(given, kind, given + ".db", (given + ".db",))
    if _is_file(given + ".dat"):
        group = _dumb_group(given, given)
        if group is not None:
            return group
        return ResolvedPaths(given, "dumb", given + ".dat", (given + ".dat",))
    for ext in (".dir", ".pag"):
        if _exists(given + ext):
            return ResolvedPaths(given, "file", given + ext, (given + ext,))
    raise SourceError(
        given,
        "no such file or directory (also looked for NAME.db, NAME.dat/.dir/.bak and NAME.pag/.dir)",
    )


def _dumb_group(given: str, base: str) -> ResolvedPaths | None:
    dat = base + ".dat"
    if not _is_file(dat):
        return None
    side = tuple(p for p in (base + ".dir", base + ".bak") if _is_file(p))
    if not side:
        return None
    return ResolvedPaths(given, "dumb", dat, (dat, *side))


# --------------------------------------------------------------------------- detect


def detect(path: str | os.PathLike[str]) -> Detection:
    """Sniff ``path`` and say which format it is.

    Raises :class:`SourceError` for a missing or unreadable path and
    :class:`FormatError` for content that is not recognised (the message says what
    was looked at).
    """
    resolved = resolve_paths(path)
    if resolved.kind == "directory":
        return _detect_directory(resolved.main)
    if resolved.kind == "dumb":
        return _detect_dumb(resolved)
    if resolved.kind == "ndbm":
        return _detect_ndbm(resolved)
    return _detect_file(_File(resolved.main), resolved)


def _detect_file(f: _File, resolved: ResolvedPaths) -> Detection:
    if f.size == 0:
        raise FormatError(f.path, "empty file")
    hints: list[str] = []
    for sniff in (
        _sniff_sqlite,
        _sniff_bdb,
        _sniff_bdb185,
        _sniff_gdbm,
        _sniff_gdbm_dump,
        _sniff_gzip_jsonl,
        _sniff_jsonl,
        _sniff_pickle,
        _sniff_marshal,
    ):
        found = sniff(f, hints)
        if found is not None:
            if resolved.given != f.path:
                found.details.setdefault("resolved_from", resolved.given)
            return found
    _lone_side_file(f, hints)
    if not any("JSON" in h for h in hints) and _looks_text(f.head.rstrip(b"\x00")):
        first_line = f.head.lstrip().split(b"\n", 1)[0][:60].decode("ascii", "replace")
        hints.append(f"text that is not JSON lines (first line {first_line!r})")
    msg = "not a recognised format"
    if hints:
        msg += ": " + "; ".join(hints)
    raise FormatError(f.path, f"{msg} (first bytes {_hex(f.head)})")


def _lone_side_file(f: _File, hints: list[str]) -> None:
    """A ``.dir`` / ``.pag`` whose partner is missing: say so instead of "unrecognised"."""
    base, ext = os.path.splitext(f.path)
    head = f.head
    if ext == ".dir" and head[:4] == b"GDBM" and f.size == 16:
        raise SourceError(f.path, f"GDBM ndbm-compat index without its data file {base}.pag")
    if ext == ".dir" and head[:1] in (b"'", b'"'):
        raise SourceError(f.path, f"dbm.dumb index without its data file {base}.dat")
    if ext == ".pag":
        hints.append(f"a lone .pag file (classic ndbm/sdbm needs {base}.dir beside it)")


# --------------------------------------------------------------------------- SQLite

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_ENCODINGS = {1: "utf-8", 2: "utf-16le", 3: "utf-16be"}


def _sniff_sqlite(f: _File, hints: list[str]) -> Detection | None:
    head = f.head
    if not head.startswith(_SQLITE_MAGIC):
        return None
    if len(head) < 100:
        hints.append(f"SQLite magic but the file is only {f.size} bytes (header needs 100)")
        return None

    def u32(off: int) -> int:
        return struct.unpack_from(">I", head, off)[0]

    (page_size,) = struct.unpack_from(">H", head, 16)
    page_size = 65536 if page_size == 1 else page_size
    write_version, read_version = head[18], head[19]
    page_count, schema_format, encoding = u32(28), u32(44), u32(56)
    user_version, application_id, version_number = u32(60), u32(68), u32(96)
    wal_path, shm_path = f.path + "-wal", f.path + "-shm"
    wal = _is_file(wal_path)
    files = [f.path] + [p for p in (wal_path, shm_path, f.path + "-journal") if _is_file(p)]
    tables, columns, warnings = _sqlite_schema(f.path, wal)
    layout, layout_table = _sqlite_layout(tables, columns)
    details: dict[str, Any] = {
        "page_size": page_size,
        "text_encoding": _SQLITE_ENCODINGS.get(encoding, f"unknown ({encoding})"),
        "write_version": write_version,
        "read_version": read_version,
        "journal": "wal" if read_version == 2 or write_version == 2 else "rollback",
        "page_count": page_count,
        "schema_format": schema_format,
        "user_version": user_version,
        "application_id": application_id,
        "sqlite_version": f"{version_number // 1000000}.{version_number // 1000 % 1000}.{version_number % 1000}",
        "tables": tables,
        "columns": columns,
        "layout": layout,
        "layout_table": layout_table,
        "wal": wal,
        "files": files,
        "file_size": f.size,
    }
    if warnings:
        details["warnings"] = warnings
    shown = ", ".join(tables) if tables else "none"
    desc = (
        f"SQLite 3 database, page size {page_size}, {details['text_encoding'].upper()}, "
        f"layout {layout} (tables: {shown})"
    )
    if wal:
        desc += ", with a -wal file"
    return Detection(FORMAT_SQLITE, f.path, desc, details)


def _sqlite_schema(
    path: str, wal: bool
) -> tuple[list[str], dict[str, list[dict[str, Any]]], list[str]]:
    """Table names, columns and warnings, read through the sqlite3 module, writing nothing.

    With no (or an empty) ``-wal`` the database is opened ``immutable=1``: nothing is
    created beside it. With a ``-wal`` holding data it is opened ``mode=ro`` so the WAL
    is applied (a ``-shm`` that this connection had to create is removed afterwards);
    if that cannot be done (a read-only folder, say) the main file alone is read and a
    warning says so.
    """
    wal_path, shm_path = path + "-wal", path + "-shm"
    live_wal = wal and os.path.getsize(wal_path) > 0
    base = Path(os.path.abspath(path)).as_uri()
    attempts = [(base + "?mode=ro", True)] if live_wal else []
    attempts.append((base + "?mode=ro&immutable=1", False))
    warnings: list[str] = []
    for number, (uri, applies_wal) in enumerate(attempts, 1):
        had_shm, had_wal = _exists(shm_path), _exists(wal_path)
        try:
            tables, columns = _read_sqlite_schema(uri)
        except sqlite3.OperationalError as exc:
            if number < len(attempts):
                warnings.append(
                    f"the -wal file could not be applied ({exc}); schema read from the main file only"
                )
                continue
            raise FormatError(
                path, f"SQLite header found but the database cannot be read: {exc}"
            ) from exc
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise FormatError(
                path, f"SQLite header found but the schema cannot be read: {exc}"
            ) from exc
        finally:
            if applies_wal and not had_shm:
                with contextlib.suppress(OSError):
                    os.remove(shm_path)
            if not had_wal and _exists(wal_path) and os.path.getsize(wal_path) == 0:
                with contextlib.suppress(OSError):
                    os.remove(wal_path)
        return tables, columns, warnings
    raise AssertionError("unreachable")  # pragma: no cover


def _read_sqlite_schema(uri: str) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    con = sqlite3.connect(uri, uri=True)
    try:
        rows = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
        ).fetchall()
        tables = [r[0] for r in rows]
        columns: dict[str, list[dict[str, Any]]] = {}
        for name in tables:
            quoted = '"' + name.replace('"', '""') + '"'
            info = con.execute(f"PRAGMA table_info({quoted})").fetchall()
            unique_cols: set[str] = set()
            for idx in con.execute(f"PRAGMA index_list({quoted})").fetchall():
                if idx[2]:  # unique
                    idx_name = '"' + idx[1].replace('"', '""') + '"'
                    cols = con.execute(f"PRAGMA index_info({idx_name})").fetchall()
                    if len(cols) == 1:
                        unique_cols.add(cols[0][2])
            columns[name] = [
                {
                    "name": c[1],
                    "type": (c[2] or "").upper(),
                    "notnull": bool(c[3]),
                    "pk": bool(c[5]),
                    "unique": c[1] in unique_cols,
                }
                for c in info
            ]
    finally:
        con.close()
    return tables, columns


def _sqlite_layout(
    tables: list[str], columns: dict[str, list[dict[str, Any]]]
) -> tuple[str, str | None]:
    def sig(name: str) -> list[tuple[str, str]]:
        return [(c["name"].lower(), c["type"]) for c in columns[name]]

    for name in tables:
        cols = columns[name]
        if (
            name.lower() == "dict"
            and sig(name) == [("key", "BLOB"), ("value", "BLOB")]
            and all(c["notnull"] for c in cols)
            and cols[0]["unique"]
        ):
            return "dbm.sqlite3", name
    for name in tables:
        if name == "records" and [c for c, _ in sig(name)] == ["key", "value"]:
            return "kv", name
    if tables and all(
        sig(name) == [("key", "TEXT"), ("value", "BLOB")] and columns[name][0]["pk"]
        for name in tables
    ):
        return "sqlitedict", tables[0]
    for name in tables:
        if [t for _, t in sig(name)] == ["TEXT", "TEXT"] and [c for c, _ in sig(name)] == [
            "key",
            "value",
        ]:
            return "json-table", name
    return "table", None


# --------------------------------------------------------------------------- Berkeley DB 2.x+

_BDB_MAGICS = {
    0x00061561: ("hash", FORMAT_BDB_HASH, 8),
    0x00053162: ("btree", FORMAT_BDB_BTREE, 9),
    0x00042253: ("queue", FORMAT_BDB_QUEUE, 10),
    0x00074582: ("heap", FORMAT_BDB_HEAP, 14),
}
_BDB_RENAME_MAGIC = 0x00030800
_BDB_MIN_VERSION = {"hash": 7, "btree": 8, "queue": 2, "heap": 1}
_BDB_OLD_RELEASE = {
    "hash": {5: "2.x", 6: "3.0"},
    "btree": {6: "2.x", 7: "3.0"},
    "queue": {1: "3.0"},
}
_ENCRYPT_NAMES = {1: "AES"}
# access-method flags (u32 at 48)
_BTM_DUP, _BTM_RECNO, _BTM_RECNUM, _BTM_FIXEDLEN = 0x001, 0x002, 0x004, 0x008
_BTM_RENUMBER, _BTM_SUBDB, _BTM_DUPSORT, _BTM_COMPRESS, _BTM_SLICED = (
    0x010,
    0x020,
    0x040,
    0x080,
    0x100,
)
_HASHM_DUP, _HASHM_SUBDB, _HASHM_DUPSORT, _HASHM_SLICED = 0x01, 0x02, 0x04, 0x08
# metaflags (u8 at 26)
_DBMETA_CHKSUM, _DBMETA_PART_RANGE, _DBMETA_PART_CALLBACK, _DBMETA_SLICED = 0x01, 0x02, 0x04, 0x08


def _sniff_bdb(f: _File, hints: list[str]) -> Detection | None:
    head = f.head
    if len(head) < 16:
        return None
    order = magic = None
    for o in "<>":
        (m,) = struct.unpack_from(o + "I", head, 12)
        if m in _BDB_MAGICS or m == _BDB_RENAME_MAGIC:
            order, magic = o, m
            break
    if order is None or magic is None:
        return None
    if magic == _BDB_RENAME_MAGIC:
        if len(head) >= 512 and is_power_of_two(struct.unpack_from(order + "I", head, 20)[0]):
            raise FormatError(
                f.path,
                "Berkeley DB file caught in the middle of a rename (magic 0x00030800): "
                "open it once with the Berkeley DB library (db_recover) or restore a backup",
            )
        return None
    am, fmt, want_type = _BDB_MAGICS[magic]
    if len(head) < 512:
        hints.append(
            f"Berkeley DB {am} magic at offset 12 but the file is only {f.size} bytes "
            "(a meta page needs 512): truncated"
        )
        return None

    def u32(off: int) -> int:
        return struct.unpack_from(order + "I", head, off)[0]

    version, page_size = u32(16), u32(20)
    encrypt_alg, page_type, metaflags = head[24], head[25], head[26]
    if not (is_power_of_two(page_size) and 512 <= page_size <= 65536):
        hints.append(f"Berkeley DB {am} magic at offset 12 but page size {page_size} is invalid")
        return None
    old = version < _BDB_MIN_VERSION[am]
    if not old and page_type != want_type:
        hints.append(
            f"Berkeley DB {am} magic at offset 12 but page type {page_type} (expected {want_type})"
        )
        return None
    flags = u32(48)
    encrypted = encrypt_alg != 0
    details: dict[str, Any] = {
        "magic": f"0x{magic:08x}",
        "byte_order": _order_name(order),
        "version": version,
        "page_size": page_size,
        "page_type": page_type,
        "access_method": am,
        "encrypt_alg": encrypt_alg,
        "encrypted": encrypted,
        "checksum": bool(metaflags & _DBMETA_CHKSUM),
        "metaflags": metaflags,
        "flags": flags,
        "free": u32(28),
        "last_pgno": u32(32),
        "nparts": u32(36),
        "key_count": u32(40),
        "record_count": u32(44),
        "duplicates": False,
        "dupsort": False,
        "subdatabases": False,
        "file_size": f.size,
        "files": [f.path],
    }
    warnings: list[str] = []
    if f.size % page_size:
        warnings.append(f"file size {f.size} is not a multiple of the page size (torn last page)")
    sliced = bool(metaflags & _DBMETA_SLICED)
    compressed = False
    blob_threshold = 0
    if am == "btree":
        details["duplicates"] = bool(flags & (_BTM_DUP | _BTM_DUPSORT))
        details["dupsort"] = bool(flags & _BTM_DUPSORT)
        details["subdatabases"] = bool(flags & _BTM_SUBDB)
        details["recnum"] = bool(flags & _BTM_RECNUM)
        compressed = bool(flags & _BTM_COMPRESS)
        details["compressed"] = compressed
        sliced = sliced or (version >= 10 and bool(flags & _BTM_SLICED))
        if flags & _BTM_RECNO:
            am = details["access_method"] = "recno"
            details["fixed_length"] = bool(flags & _BTM_FIXEDLEN)
            details["renumber"] = bool(flags & _BTM_RENUMBER)
        if not encrypted and not old:
            details.update(minkey=u32(76), re_len=u32(80), re_pad=u32(84), root=u32(88))
            if version >= 10:
                blob_threshold = u32(92)
                details["blob_threshold"] = blob_threshold
                details["blob_file_id"] = u32(96) | u32(100) << 32
    elif am == "hash":
        details["duplicates"] = bool(flags & (_HASHM_DUP | _HASHM_DUPSORT))
        details["dupsort"] = bool(flags & _HASHM_DUPSORT)
        details["subdatabases"] = bool(flags & _HASHM_SUBDB)
        sliced = sliced or (version >= 10 and bool(flags & _HASHM_SLICED))
        if not encrypted and not old:
            details.update(
                max_bucket=u32(72),
                high_mask=u32(76),
                low_mask=u32(80),
                ffactor=u32(84),
                nelem=u32(88),
            )
            if version >= 10:
                blob_threshold = u32(224)
                details["blob_threshold"] = blob_threshold
                details["blob_file_id"] = u32(228) | u32(232) << 32
    elif am == "queue" and not encrypted and not old:
        page_ext = u32(92)
        details.update(
            first_recno=u32(72),
            cur_recno=u32(76),
            re_len=u32(80),
            re_pad=u32(84),
            rec_page=u32(88),
            page_ext=page_ext,
        )
        if page_ext:
            extents = _queue_extents(f.path)
            details["extent_files"] = extents
            details["files"] = [f.path, *extents]
            where = f"__dbq.{os.path.basename(f.path)}.N"
            warnings.append(
                f"queue data lives in extent files {where}"
                + ("" if extents else ", and none was found next to the file")
            )
    elif am == "heap" and not encrypted:
        details.update(
            curregion=u32(72), nregions=u32(76), gbytes=u32(80), bytes=u32(84), region_size=u32(88)
        )
    details["sliced"] = sliced
    if warnings:
        details["warnings"] = warnings

    refusal = bdb_refusal(am, details, old, sliced, compressed, blob_threshold)
    order_text = _order_name(order)
    desc = f"Berkeley DB {am} v{version}, {order_text}-endian, page size {page_size}"
    if details["checksum"]:
        desc += ", checksummed"
    if encrypted:
        desc += f", encrypted ({_ENCRYPT_NAMES.get(encrypt_alg, f'algorithm {encrypt_alg}')})"
    if details["duplicates"]:
        desc += ", with duplicates"
    if details["subdatabases"]:
        desc += ", with subdatabases"
    if compressed:
        desc += ", compressed"
    return Detection(fmt, f.path, desc, details, refusal)


def sniff_berkeley_db(path: str) -> tuple[Detection | None, list[str]]:
    """``path`` looked at as a Berkeley DB 2.x+ file only, and the reasons when it is not one.

    For the Berkeley DB reader, which must refuse (or describe) a file exactly as
    detection does when it is called with ``--from bdb-*``.
    """
    hints: list[str] = []
    return _sniff_bdb(_File(path), hints), hints


def bdb_refusal(
    am: str, d: dict[str, Any], old: bool, sliced: bool, compressed: bool, blob_threshold: int
) -> str | None:
    """Why a Berkeley DB file with these facts cannot be read, and what to do; None if it can."""
    if d["encrypted"]:
        alg = d["encrypt_alg"]
        return (
            f"encrypted Berkeley DB file (encrypt_alg={alg}, {_ENCRYPT_NAMES.get(alg, 'unknown')}): "
            "shelfmigrate cannot decrypt it; decrypt it first: `db_dump -P <password> FILE > dump.txt` "
            "then `db_load -f dump.txt NEWFILE` (without -P), or use the original application"
        )
    if old:
        kind = "btree" if am == "recno" else am
        release = _BDB_OLD_RELEASE.get(kind, {}).get(d["version"], "2.x/3.0")
        return (
            f"pre-3.1 Berkeley DB ({kind} version {d['version']}, written by Berkeley DB {release}): "
            "run `db_upgrade FILE` (any Berkeley DB release up to 5.3) on a copy first, then migrate the copy"
        )
    if am == "heap":
        return (
            "Berkeley DB heap database (DB_HEAP, 5.2+): heap databases are not supported - no Python "
            "dbm/shelve creates them and their record ids are not keys; export the records with "
            "`db_dump FILE` and load them into a btree with `db_load -t btree`"
        )
    if d["nparts"] or d["metaflags"] & (_DBMETA_PART_RANGE | _DBMETA_PART_CALLBACK):
        return (
            f"partitioned Berkeley DB database (nparts={d['nparts']}): the data lives in other "
            "partition files; dump it with `db_dump` and reload it with `db_load` as one database"
        )
    if sliced:
        return (
            "sliced Berkeley DB 18.x database: the data lives in slice files elsewhere; dump it with "
            "`db_dump` (18.x) and reload it with `db_load` as one plain database"
        )
    if compressed:
        return (
            "compressed Berkeley DB btree (DB->set_bt_compress): items are stored compressed and cannot "
            "be read without the library; dump it with `db_dump` and reload it with `db_load` without compression"
        )
    if blob_threshold or d.get("blob_file_id"):
        return (
            f"Berkeley DB external-file (blob) storage is enabled (blob_threshold={blob_threshold}): large "
            "values live in files of another directory; dump it with `db_dump` (18.x) and reload it "
            "with `db_load` without external files"
        )
    return None


def _queue_extents(path: str) -> list[str]:
    folder = os.path.dirname(path) or "."
    prefix = f"__dbq.{os.path.basename(path)}."
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, n) for n in names if n.startswith(prefix))


# --------------------------------------------------------------------------- Berkeley DB 1.85


def _sniff_bdb185(f: _File, hints: list[str]) -> Detection | None:
    head = f.head
    if len(head) < 8:
        return None
    if head[:4] == b"\x00\x06\x15\x61":
        return _bdb185_hash(f, head, hints)
    for order in "<>":
        if struct.unpack_from(order + "I", head, 0)[0] == 0x00053162:
            return _bdb185_btree(f, head, order, hints)
    return None


def _bdb185_hash(f: _File, head: bytes, hints: list[str]) -> Detection | None:
    if len(head) < 68:
        hints.append(
            f"DB 1.85 hash magic at offset 0 but the file is only {f.size} bytes: truncated"
        )
        return None
    (version, lorder, bsize, bshift, dsize, ssize, sshift, ovfl_point, last_freed, max_bucket) = (
        struct.unpack_from(">10I", head, 4)
    )
    high_mask, low_mask, ffactor, nkeys, hdrpages = struct.unpack_from(">5I", head, 44)
    if version not in (1, 2) or lorder not in (1234, 4321):
        hints.append(
            f"DB 1.85 hash magic at offset 0 but version {version} / lorder {lorder} are invalid"
        )
        return None
    if not (is_power_of_two(bsize) and bsize <= 65536 and 1 << bshift == bsize):
        hints.append(
            f"DB 1.85 hash magic at offset 0 but bucket size {bsize} (shift {bshift}) is invalid"
        )
        return None
    order = "little" if lorder == 1234 else "big"
    details: dict[str, Any] = {
        "magic": "0x00061561",
        "version": version,
        "header_byte_order": "big",
        "byte_order": order,
        "lorder": lorder,
        "bsize": bsize,
        "page_size": bsize,
        "ffactor": ffactor,
        "max_bucket": max_bucket,
        "nkeys": nkeys,
        "hdrpages": hdrpages,
        "file_size": f.size,
        "files": [f.path],
    }
    desc = f"Berkeley DB 1.85 hash v{version}, pages {order}-endian, bucket size {bsize}"
    return Detection(FORMAT_BDB185_HASH, f.path, desc, details)


def _bdb185_btree(f: _File, head: bytes, order: str, hints: list[str]) -> Detection | None:
    if len(head) < 24:
        hints.append(
            f"DB 1.85 btree magic at offset 0 but the file is only {f.size} bytes: truncated"
        )
        return None
    version, psize, free, nrecs, flags = struct.unpack_from(order + "5I", head, 4)
    if version != 3 or not (is_power_of_two(psize) and 128 <= psize <= 65536):
        hints.append(
            f"DB 1.85 btree magic at offset 0 but version {version} / page size {psize} are invalid"
        )
        return None
    am = "recno" if flags & 0x80 else "btree"
    details: dict[str, Any] = {
        "magic": "0x00053162",
        "version": version,
        "byte_order": _order_name(order),
        "page_size": psize,
        "access_method": am,
        "flags": flags,
        "duplicates": not flags & 0x20,
        "free": free,
        "nrecs": nrecs,
        "file_size": f.size,
        "files": [f.path],
    }
    if f.size % psize:
        details["warnings"] = [f"file size {f.size} is not a multiple of the page size"]
    desc = f"Berkeley DB 1.85 {am} v{version}, {_order_name(order)}-endian, page size {psize}"
    return Detection(FORMAT_BDB185_BTREE, f.path, desc, details)


# --------------------------------------------------------------------------- GDBM

_GDBM_MAGICS = {
    0x13579ACE: ("old", None),
    0x13579ACD: ("standard", 4),
    0x13579ACF: ("standard", 8),
    0x13579AD0: ("numsync", 4),
    0x13579AD1: ("numsync", 8),
}
# layout name -> (offset width, bucket header size H, element size E): bucket_elems == (bucket_size - H) // E + 1
_GDBM_LAYOUTS = {"ILP32": (4, 80, 20), "LP64": (8, 136, 24), "i386-LFS": (8, 108, 24)}


def _gdbm_magic(head: bytes) -> tuple[str, int] | None:
    if len(head) < 4:
        return None
    for order in "<>":
        (m,) = struct.unpack_from(order + "I", head, 0)
        if m in _GDBM_MAGICS:
            return order, m
    return None


def _gdbm_header(path: str, head: bytes, size: int, hints: list[str]) -> dict[str, Any] | None:
    """Parse a GDBM file header (FORMATS.md §3.1-3.3); None (with a hint) when implausible."""
    found = _gdbm_magic(head)
    if found is None:
        return None
    order, magic = found
    variant, width = _GDBM_MAGICS[magic]
    widths = [width] if width else [8, 4]
    if len(head) < min(32 if w == 4 else 40 for w in widths):
        hints.append(f"GDBM magic at offset 0 but the file is only {size} bytes: truncated header")
        return None
    candidates: list[tuple[int, dict[str, Any]]] = []
    for w in widths:
        if len(head) < (32 if w == 4 else 40):
            continue
        if w == 4:
            fields = struct.unpack_from(order + "iiIiiiiI", head, 0)
        else:
            fields = struct.unpack_from(order + "iiQiiiiQ", head, 0)
        _, block_size, dir_off, dir_size, dir_bits, bucket_size, bucket_elems, next_block = fields
        if not (
            block_size > 0
            and 0 <= dir_bits < 48
            and dir_size == (1 << dir_bits) * w
            and bucket_size > 0
            and bucket_elems > 0
        ):
            continue
        layout = None
        for name, (lw, h, e) in _GDBM_LAYOUTS.items():
            if lw == w and bucket_size >= h and bucket_elems == (bucket_size - h) // e + 1:
                layout = name
                break
        cand = {
            "block_size": block_size,
            "dir_offset": dir_off,
            "dir_size": dir_size,
            "dir_bits": dir_bits,
            "bucket_size": bucket_size,
            "bucket_elems": bucket_elems,
            "next_block": next_block,
            "offset_width": w * 8,
            "layout": layout,
            "header_size": 32 if w == 4 else 40,
        }
        candidates.append((int(layout is not None) + int(dir_off + dir_size <= size), cand))
    if not candidates:
        hints.append("GDBM magic at offset 0 but the header fields are implausible")
        return None
    candidates.sort(key=lambda c: -c[0])
    header = candidates[0][1]
    ambiguous = len(candidates) > 1 and candidates[0][0] == candidates[1][0]
    details: dict[str, Any] = {
        "magic": f"0x{magic:08x}",
        "variant": variant,
        "byte_order": _order_name(order),
        **header,
        "file_size": size,
    }
    warnings = []
    if header["layout"] is None:
        warnings.append(
            "bucket_elems does not match any known struct layout (ILP32, LP64, i386-LFS)"
        )
    if header["dir_offset"] + header["dir_size"] > size:
        warnings.append("the directory lies beyond the end of the file (truncated?)")
    if ambiguous:
        details["offset_width"] = None
        details["layout"] = None
        warnings.append("old (pre-1.9) header: offset width could not be determined")
    if variant == "numsync":
        off = header["header_size"]
        if len(head) >= off + 8:
            ext_version, numsync = struct.unpack_from(order + "iI", head, off)
            details["ext_version"] = ext_version
            details["numsync"] = numsync
    if warnings:
        details["warnings"] = warnings
    return details


def _gdbm_description(d: dict[str, Any]) -> str:
    header = "old pre-1.9" if d["variant"] == "old" else d["variant"]
    if d["offset_width"] is None:
        width = "unknown offset width"
    else:
        width = f"{d['offset_width']}-bit offsets"
        if d["layout"] == "i386-LFS":
            width += " (i386 large-file layout)"
    return f"GDBM file ({header} header), {width}, {d['byte_order']}-endian, block size {d['block_size']}"


def _sniff_gdbm(f: _File, hints: list[str]) -> Detection | None:
    details = _gdbm_header(f.path, f.head, f.size, hints)
    if details is None:
        return None
    details["files"] = [f.path]
    return Detection(FORMAT_GDBM, f.path, _gdbm_description(details), details)


_GDBM_ASCII_DUMP = b"# GDBM dump file created by"
_GDBM_BINARY_DUMP = b"!\r\n! GDBM FLAT FILE DUMP"


def _sniff_gdbm_dump(f: _File, hints: list[str]) -> Detection | None:
    head = f.head
    if head.startswith(_GDBM_ASCII_DUMP):
        first, _, rest = head.partition(b"\n")
        details: dict[str, Any] = {"files": [f.path], "file_size": f.size}
        m = re.search(rb"GDBM version ([0-9][0-9.]*[0-9])", first)
        if m:
            details["gdbm_version"] = m.group(1).decode("ascii")
        for line in rest.split(b"\n"):
            if line.startswith(b"# End of header"):
                break
            if line.startswith(b"#:"):
                for item in line[2:].split(b","):
                    name, eq, value = item.partition(b"=")
                    if eq:
                        details.setdefault(
                            name.decode("latin-1").strip(), value.decode("latin-1").strip()
                        )
        dump_format = details.get("format", "standard")
        desc = f"GDBM ASCII dump (dump version {details.get('version', '?')}, {dump_format} format"
        desc += f", made by GDBM {details['gdbm_version']})" if "gdbm_version" in details else ")"
        return Detection(FORMAT_GDBM_DUMP_ASCII, f.path, desc, details)
    if head.startswith(_GDBM_BINARY_DUMP):
        details = {"files": [f.path], "file_size": f.size}
        end = head.find(b"\r\n!\r\n")
        if end < 0:
            hints.append("GDBM binary dump header without its end marker")
            return None
        details["header_size"] = end + 5
        m = re.search(rb"GDBM version ([0-9][0-9.]*[0-9])", head[:end])
        if m:
            details["gdbm_version"] = m.group(1).decode("ascii")
        desc = "GDBM binary dump"
        if "gdbm_version" in details:
            desc += f" (made by GDBM {details['gdbm_version']})"
        return Detection(FORMAT_GDBM_DUMP_BINARY, f.path, desc, details)
    return None


# --------------------------------------------------------------------------- JSON lines


def _first_jsonl_record(data: bytes, complete: bool) -> tuple[str, Any]:
    """("ok", obj) / ("more", None) when the first line is cut / ("no", reason)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    stripped = data.lstrip(b" \t\r\n")
    if not stripped:
        return ("more", None) if not complete else ("no", "only blank lines")
    if stripped[:1] != b"{":
        return "no", None
    line, nl, _ = stripped.partition(b"\n")
    if not nl and not complete:
        return "more", None
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "no", "first line is not valid JSON"
    if not isinstance(obj, dict):
        return "no", "first line is not a JSON object"
    if "key" not in obj or "value" not in obj:
        return "no", 'first JSON line has no "key" and "value" members'
    return "ok", obj


def _sniff_jsonl(f: _File, hints: list[str]) -> Detection | None:
    size = 64 * 1024
    while True:
        data = f.read(size)
        state, reason = _first_jsonl_record(data, len(data) >= f.size)
        if state == "more" and size < JSONL_MAX_LINE:
            size = JSONL_MAX_LINE
            continue
        break
    if state != "ok":
        if isinstance(reason, str):
            hints.append(f"JSON text that is not JSON lines ({reason})")
        elif state == "more":
            hints.append(f"first line longer than {JSONL_MAX_LINE} bytes")
        return None
    details = {"compressed": False, "files": [f.path], "file_size": f.size}
    return Detection(
        FORMAT_JSONL, f.path, 'JSON lines (one {"key", "value"} object per line)', details
    )


def _sniff_gzip_jsonl(f: _File, hints: list[str]) -> Detection | None:
    head = f.head
    if not head.startswith(b"\x1f\x8b"):
        return None
    raw = f.read(JSONL_MAX_LINE)
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = dec.decompress(raw, JSONL_MAX_LINE)
    except zlib.error as exc:
        hints.append(f"gzip data that cannot be decompressed ({exc})")
        return None
    complete = dec.eof or (len(raw) >= f.size and not dec.unconsumed_tail)
    state, reason = _first_jsonl_record(data, complete)
    if state != "ok":
        hints.append(
            "gzip-compressed data that is not JSON lines" + (f" ({reason})" if reason else "")
        )
        return None
    details = {"compressed": True, "compression": "gzip", "files": [f.path], "file_size": f.size}
    return Detection(
        FORMAT_JSONL,
        f.path,
        'JSON lines, gzip-compressed (one {"key", "value"} object per line)',
        details,
    )


# --------------------------------------------------------------------------- pickle

# Opcodes a protocol 0/1 pickle can start with (what pickle.dump writes first).
_OPCODES_BY_NAME = {op.name: op for op in pickletools.opcodes}
_PICKLE_P01_START = frozenset(b"NIJKMLFGSUTVX(])}cPQ")


def _pickle_start(byte: int, nxt: int | None) -> bool:
    if byte == 0x80:
        return nxt is not None and 2 <= nxt <= 5
    return byte in _PICKLE_P01_START


def _scan_pickle(data: bytes) -> tuple[int, int, int | None]:
    """Walk the opcodes of one pickle in ``data``: (ops, protocol, end offset or None).

    The end is None when the data runs out (or goes wrong) before STOP, and when STOP
    directly follows a MARK (``pickletools.dis`` would let the mark pass for an object).
    """
    ops = 0
    proto = 0
    end = None
    previous = None
    try:
        for name, _pos, arg_start, arg_end in iter_opcodes(data):
            ops += 1
            opcode = _OPCODES_BY_NAME[name]
            proto = data[arg_start] if name == "PROTO" else max(proto, opcode.proto)
            if name == "STOP":
                if previous != "MARK":
                    end = arg_end
                break
            previous = name
    except PickleWalkError:
        end = None
    return ops, proto, end


def _sniff_pickle(f: _File, hints: list[str]) -> Detection | None:
    data = f.read(PICKLE_WINDOW)
    if not _pickle_start(data[0], data[1] if len(data) > 1 else None):
        return None
    ops, proto, end = _scan_pickle(data)
    window_cut = f.size > len(data)
    if end is None:
        # Unfinished: acceptable only when the pickle is simply longer than the window.
        if not (window_cut and ops >= 8):
            return None
    else:
        # Check stack and memo consistency of the whole first pickle (no object is built).
        try:
            pickletools.dis(data[:end], out=io.StringIO())
        except UnicodeDecodeError:
            pass  # pickletools cannot show a Python 2 str with non-ASCII bytes; the walk was fine
        except Exception:
            return None
    count = 1 if end is not None else 0
    pos = end
    trailing = False
    while pos is not None and pos < len(data) and count < 1000:
        if not _pickle_start(data[pos], data[pos + 1] if pos + 1 < len(data) else None):
            trailing = True
            break
        _, _, sub_end = _scan_pickle(data[pos:])
        if sub_end is None:
            trailing = not window_cut  # a damaged later pickle, unless the window cut it
            break
        count += 1
        pos += sub_end
    if trailing and ops < 4:
        return None  # a tiny "pickle" followed by garbage is more likely chance
    details: dict[str, Any] = {
        "protocol": proto,
        "stream": count > 1 or (pos is not None and pos < f.size and not trailing),
        "pickles_in_prefix": count,
        "trailing_data": trailing,
        "files": [f.path],
        "file_size": f.size,
    }
    if proto >= 3:
        details["python"] = 3
    if trailing:
        details["warnings"] = [f"data after pickle number {count} is not a pickle"]
    desc = f"pickle, protocol {proto}"
    if details["stream"]:
        desc = f"stream of pickles, protocol {proto} (first)"
    return Detection(FORMAT_PICKLE, f.path, desc, details)


# --------------------------------------------------------------------------- marshal

_MARSHAL_FLAG_REF = 0x80
_MARSHAL_CONTAINER_START = frozenset("{[()<>")
_MARSHAL_STRING_START = frozenset("sutaAzZ")
_MARSHAL_SCALAR_START = frozenset("ilIg")
_MARSHAL_START = _MARSHAL_CONTAINER_START | _MARSHAL_STRING_START | _MARSHAL_SCALAR_START
_MARSHAL_PY3_CODES = frozenset("aAzZ)r")
_MARSHAL_PY2_CODES = frozenset("RI")


class _MarshalBudget(Exception):
    """The bounded look ran out of window or items; everything seen so far was valid."""


class _MarshalBad(Exception):
    """Not marshal data."""


class _MarshalWalker:
    """Structural check of marshal data: reads type codes and lengths, builds nothing."""

    def __init__(self, data: bytes, file_size: int):
        self.data = data
        self.size = file_size
        self.pos = 0
        self.items = 0
        self.refs = 0
        self.interned = 0
        self.codes: set[str] = set()
        self.flag_ref = False

    def _take(self, n: int) -> bytes | None:
        """n bytes, or None when they run past the window but not past the file."""
        if n < 0 or self.pos + n > self.size:
            raise _MarshalBad
        if self.pos + n > len(self.data):
            self.pos = len(self.data)
            return None
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _need(self, n: int) -> bytes:
        chunk = self._take(n)
        if chunk is None:
            raise _MarshalBudget
        return chunk

    def _i32(self) -> int:
        return struct.unpack("<i", self._need(4))[0]

    def _count(self) -> int:
        n = self._i32()
        if n < 0 or n > self.size - self.pos:
            raise _MarshalBad
        return n

    def _text(self, n: int, encoding: str) -> None:
        chunk = self._take(n)
        if chunk is not None:
            try:
                chunk.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
            except UnicodeDecodeError as exc:
                raise _MarshalBad from exc
        else:
            raise _MarshalBudget

    def _float_text(self) -> None:
        n = self._need(1)[0]
        txt = self._need(n)
        try:
            float(txt.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _MarshalBad from exc

    def value(self, depth: int = 0, allow_null: bool = False) -> bool:
        """Walk one value; returns False for the TYPE_NULL that ends a dict."""
        if depth > 32:  # deep nesting is legitimate: stop looking, keep what was seen
            raise _MarshalBudget
        self.items += 1
        if self.items > MARSHAL_MAX_ITEMS:
            raise _MarshalBudget
        code = self._need(1)[0]
        if code & _MARSHAL_FLAG_REF:
            self.flag_ref = True
            self.refs += 1
        t = chr(code & 0x7F)
        self.codes.add(t)
        if t == "0":
            if allow_null and not code & _MARSHAL_FLAG_REF:
                return False
            raise _MarshalBad
        if t in "NTFS.":
            pass
        elif t == "i":
            self._need(4)
        elif t in "Ig":
            self._need(8)
        elif t == "y":
            self._need(16)
        elif t == "f":
            self._float_text()
        elif t == "x":
            self._float_text()
            self._float_text()
        elif t == "l":
            n = abs(self._i32())
            if n > self.size:
                raise _MarshalBad
            digits = self._take(2 * n)
            if digits is None:
                raise _MarshalBudget
            if any(d >= 0x8000 for d in struct.unpack(f"<{n}H", digits)):
                raise _MarshalBad
        elif t == "s":
            if self._take(self._count()) is None:
                raise _MarshalBudget
        elif t in "ut":
            self._text(self._count(), "utf-8")
            if t == "t":
                self.interned += 1
        elif t in "aA":
            self._text(self._count(), "ascii")
        elif t in "zZ":
            self._text(self._need(1)[0], "ascii")
        elif t == "R":
            if not 0 <= self._i32() < self.interned:
                raise _MarshalBad
        elif t == "r":
            if code & _MARSHAL_FLAG_REF or not 0 <= self._i32() < self.refs:
                raise _MarshalBad
        elif t in "([<>":
            for _ in range(self._count()):
                self.value(depth + 1)
        elif t == ")":
            for _ in range(self._need(1)[0]):
                self.value(depth + 1)
        elif t == "{":
            while self.value(depth + 1, allow_null=True):
                self.value(depth + 1)
        else:  # code objects ('c'), '?' and anything unknown: not claimed
            raise _MarshalBad
        return True


def _looks_text(data: bytes) -> bool:
    """Printable UTF-8 text (a character cut at the end of ``data`` is tolerated)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data" or exc.start < len(data) - 3:
            return False
        text = data[: exc.start].decode("utf-8")
    return all(c in "\t\n\r\f" or (c.isprintable() and c != "\x7f") for c in text)


def _marshal_code_object(f: _File, data: bytes) -> Detection | None:
    """A dump that is a code object (``c``): claimed, so the refusal says why."""
    if len(data) < 9 or f.size < 32:
        return None
    # Every version starts with the argument count, then another small count.
    first, second = struct.unpack_from("<ii", data, 1)
    if not (0 <= first < 256 and 0 <= second < 1 << 16):
        return None
    details = {"python": 3 if data[0] & _MARSHAL_FLAG_REF else 2, "files": [f.path]}
    return Detection(
        FORMAT_MARSHAL,
        f.path,
        "marshal data holding a code object",
        details,
        "code objects are refused: shelfmigrate never builds or runs code (a .pyc-style "
        "dump is a program, not data)",
    )


def _sniff_marshal(f: _File, hints: list[str]) -> Detection | None:
    data = f.read(MARSHAL_WINDOW)
    if data[0] & 0x7F == ord("c"):
        return _marshal_code_object(f, data)
    start = chr(data[0] & 0x7F)
    if start not in _MARSHAL_START:
        return None
    if f.size < 4 and data not in (
        b"{0",
        b"\xfb0",
    ):  # only an empty dict is that short and still telling
        return None
    if _looks_text(data):
        return None
    walker = _MarshalWalker(data, f.size)
    values = 0
    complete = False
    try:
        while walker.pos < len(data):
            # every dump of a stream starts like the first one: a container, string or number
            if chr(data[walker.pos] & 0x7F) not in _MARSHAL_START:
                return None
            walker.value()
            values += 1
        complete = walker.pos == f.size
    except _MarshalBudget:
        pass
    except (_MarshalBad, struct.error):
        return None
    if start in _MARSHAL_SCALAR_START:
        # a lone number is too weak a signal: want several values
        if values < (2 if complete else 4):
            return None
    elif not complete and walker.items < 3:
        return None
    codes = walker.codes
    if walker.flag_ref or codes & _MARSHAL_PY3_CODES:
        python: int | None = 3
    elif codes & _MARSHAL_PY2_CODES or "t" in codes:
        python = 2  # 't' leans to Python 2 (Python 3 writes it only at versions 1-2)
    # 's' and 'u' alone do not tell: Python 3 writes them too at versions 0-2
    else:
        python = None
    details: dict[str, Any] = {
        "python": python,
        "flag_ref": walker.flag_ref,
        "type_codes": sorted(codes),
        "values_checked": values,
        "complete": complete,
        "files": [f.path],
        "file_size": f.size,
    }
    who = {2: "Python 2", 3: "Python 3"}.get(python, "Python 2 or 3")  # type: ignore[arg-type]
    desc = f"marshal data (looks like {who})"
    if complete and values > 1:
        desc = f"stream of {values} marshal dumps (looks like {who})"
    return Detection(FORMAT_MARSHAL, f.path, desc, details)


# --------------------------------------------------------------------------- dbm.dumb


def _dumb_line_ok(line: bytes) -> bool:
    text = line.decode("latin-1").strip()
    text = re.sub(r"(\d)[lL](?=[,)\s])", r"\1", text)  # Python 2 longs
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return False
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], (str, bytes))
        and isinstance(value[1], tuple)
        and len(value[1]) == 2
        and all(isinstance(x, int) and x >= 0 for x in value[1])
    )


def _count_lines(path: str) -> int:
    lines = 0
    last = b"\n"
    try:
        with _open_binary(path) as fh:
            while chunk := fh.read(1 << 16):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise _source_error(path, exc) from exc
    return lines + (last != b"\n")


def _detect_dumb(r: ResolvedPaths) -> Detection:
    dat = r.main
    base = dat[: -len(".dat")]
    dir_path, bak_path = base + ".dir", base + ".bak"
    index = dir_path if dir_path in r.files else bak_path if bak_path in r.files else None
    if index is None:
        raise SourceError(dat, f"dbm.dumb data file without its index {dir_path} (nor {bak_path})")
    idx = _File(index)
    head = idx.read(HEAD_SIZE)
    if b"\n" not in head and idx.size > len(head):  # a very long first key
        head = idx.read(JSONL_MAX_LINE)
    if head and (head[:1] not in (b"'", b'"') or not _dumb_line_ok(head.split(b"\n", 1)[0])):
        if index == dir_path and bak_path not in r.files:
            raise FormatError(
                index,
                f"not a dbm.dumb index (lines should be 'key', (offset, size); first bytes {_hex(head)})",
            )
        raise FormatError(index, f"not a dbm.dumb index (first bytes {_hex(head)})")
    entries = _count_lines(index) if idx.size else 0
    dat_size = _File(dat).size
    details: dict[str, Any] = {
        "files": list(r.files),
        "index": index,
        "entries": entries,
        "dat_size": dat_size,
        "has_bak": bak_path in r.files,
    }
    names = " + ".join(os.path.basename(p) for p in r.files)
    desc = f"dbm.dumb database ({names}), {entries} entr{'y' if entries == 1 else 'ies'}"
    if index == bak_path:
        details["warnings"] = [f"{dir_path} is missing; the index is read from {bak_path}"]
        desc += f", index from {os.path.basename(bak_path)} ({os.path.basename(dir_path)} missing)"
    return Detection(FORMAT_DUMB, dat, desc, details)


# --------------------------------------------------------------------------- ndbm .dir/.pag

_SDBM_PAGE_SIZES = (1024, 4096, 8192, 512)
_SDBM_PROBE_BYTES = 64 * 1024


def _sdbm_page_state(page: bytes, order: str, page_size: int) -> bool | None:
    """True: a valid page with items; None: an empty page; False: not an sdbm page."""
    from .formats.ndbm import page_items  # the reader's own page check: one definition

    items = page_items(page, struct.Struct(order + "H"), page_size)
    if items is None:
        return False
    return True if items else None


def _probe_sdbm(pag: _File) -> dict[str, Any] | None:
    if pag.size == 0:
        return {
            "page_size": 1024,
            "byte_order": None,
            "pages": 0,
            "pages_checked": 0,
            "nonempty_pages_checked": 0,
        }
    for page_size in _SDBM_PAGE_SIZES:
        if pag.size % page_size:
            continue
        data = pag.read(max(page_size, _SDBM_PROBE_BYTES - _SDBM_PROBE_BYTES % page_size))
        pages = [data[i : i + page_size] for i in range(0, len(data) - page_size + 1, page_size)]
        for order in "<>":
            states = [_sdbm_page_state(p, order, page_size) for p in pages]
            if False in states:
                continue
            nonempty = sum(1 for s in states if s)
            if nonempty == 0 and page_size != 1024:
                continue
            return {
                "page_size": page_size,
                "byte_order": _order_name(order) if nonempty else None,
                "pages": pag.size // page_size,
                "pages_checked": len(pages),
                "nonempty_pages_checked": nonempty,
            }
    return None


def _detect_ndbm(r: ResolvedPaths) -> Detection:
    pag_path = r.main
    dir_path = pag_path[: -len(".pag")] + ".dir"
    dir_file = _File(dir_path)
    pag = _File(pag_path)
    dir_head = dir_file.read(64)
    hints: list[str] = []
    gdbm = _gdbm_header(pag_path, pag.head, pag.size, hints) if pag.size else None
    if (dir_head[:4] == b"GDBM" and dir_file.size == 16) or gdbm is not None:
        if gdbm is None:
            raise FormatError(
                pag_path,
                f"{dir_path} is a GDBM ndbm-compat index but this is not a GDBM file"
                + (f" ({'; '.join(hints)})" if hints else f" (first bytes {_hex(pag.head)})"),
            )
        details = dict(gdbm)
        details["files"] = [pag_path, dir_path]
        if dir_head[:4] == b"GDBM" and dir_file.size == 16:
            major, minor, patch = struct.unpack_from(">3I", dir_head, 4)
            details["dir_kind"] = "header"
            details["compat_version"] = f"{major}.{minor}.{patch}"
            made_by = f", GDBM {major}.{minor}.{patch}"
        elif _gdbm_magic(dir_head) is not None:
            details["dir_kind"] = "hardlink"  # GDBM 1.8: .dir is a link to .pag
            made_by = ", .dir linked to .pag (GDBM 1.8 style)"
        else:
            details["dir_kind"] = "other"
            made_by = ""
        desc = f"ndbm database from GDBM's compatibility library (.dir/.pag{made_by}): {_gdbm_description(gdbm)}"
        return Detection(FORMAT_NDBM_GDBM, pag_path, desc, details)
    probe = _probe_sdbm(pag)
    if probe is None:
        raise FormatError(
            pag_path,
            "not a recognised ndbm .pag file: neither GDBM nor classic ndbm/sdbm pages "
            f"(first bytes {_hex(pag.head)})",
        )
    details = {
        **probe,
        "files": [pag_path, dir_path],
        "dir_size": dir_file.size,
        "file_size": pag.size,
    }
    order = f", {probe['byte_order']}-endian" if probe["byte_order"] else ""
    desc = (
        f"classic ndbm/sdbm database (.dir/.pag), {probe['page_size']}-byte pages{order}, "
        f"{probe['pages']} page{'s' if probe['pages'] != 1 else ''}"
    )
    if not probe["nonempty_pages_checked"]:
        details["warnings"] = ["no items found in the pages checked"]
    return Detection(FORMAT_NDBM_CLASSIC, pag_path, desc, details)


# --------------------------------------------------------------------------- LevelDB

_LEVELDB_FILE = re.compile(
    r"^(CURRENT|LOCK|LOG|LOG\.old|MANIFEST-\d+|\d+\.(ldb|sst|log)|OPTIONS-\d+)$"
)


def _detect_directory(path: str) -> Detection:
    current = os.path.join(path, "CURRENT")
    if not _is_file(current):
        raise FormatError(path, "is a directory, not a LevelDB database (no CURRENT file)")
    content = _File(current).read(256)
    m = re.fullmatch(rb"(MANIFEST-\d+)\r?\n?", content)
    if not m:
        raise FormatError(
            path,
            f"is a directory, not a LevelDB database (CURRENT does not name a MANIFEST: {content[:40]!r})",
        )
    manifest = m.group(1).decode("ascii")
    if not _is_file(os.path.join(path, manifest)):
        raise FormatError(path, f"LevelDB CURRENT names {manifest}, which is missing")
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise _source_error(path, exc) from exc
    ours = [n for n in names if _LEVELDB_FILE.match(n)]
    tables = [n for n in ours if n.endswith((".ldb", ".sst"))]
    logs = [n for n in ours if re.fullmatch(r"\d+\.log", n)]
    details: dict[str, Any] = {
        "manifest": manifest,
        "files": [os.path.join(path, n) for n in ours],
        "table_files": len(tables),
        "log_files": len(logs),
    }
    desc = (
        f"LevelDB database ({manifest}, {len(tables)} table file{'s' if len(tables) != 1 else ''}, "
        f"{len(logs)} log file{'s' if len(logs) != 1 else ''})"
    )
    if any(n.startswith("OPTIONS-") for n in ours):
        details["rocksdb"] = True
        details["warnings"] = ["an OPTIONS-* file is present: this may be a RocksDB database"]
        desc += ", RocksDB OPTIONS file present"
    return Detection(FORMAT_LEVELDB, path, desc, details)
