"""SQLite: read dbm.sqlite3 files, sqlitedict files, JSON tables, our own kv layout and any table.

The source is always opened read-only (``mode=ro``); SQLite itself applies a
``-wal`` file beside the database, so committed rows that live only in the WAL
are read too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..codecs import typedjson
from ..errors import (
    DestinationError,
    DuplicateKeyError,
    EncodeError,
    FormatError,
    SourceError,
    UsageError,
)
from ..options import WriteOptions
from ..records import Record, key_from_bytes, key_to_bytes
from ._publish import AtomicTarget
from .base import Reader, Writer

SQLITE_MAGIC = b"SQLite format 3\x00"

# Python's sqlite3 raises UnicodeDecodeError when SQLite's own error message is not UTF-8
# (a damaged schema can put arbitrary bytes in it).
SQLITE_READ_ERRORS = (sqlite3.Error, UnicodeDecodeError)

#: table and column names of the layouts we recognise
DBM_SQLITE3_TABLE = "Dict"
KV_TABLE = "records"


def quote_name(name: str) -> str:
    """An SQL identifier in double quotes, whatever it contains."""
    return '"' + name.replace('"', '""') + '"'


class ReadOnlyDatabase:
    """An SQLite file opened for reading only, leaving nothing new beside it.

    Without a ``-wal`` holding data the file is opened ``immutable=1`` (SQLite then
    creates no side files at all); with one, ``mode=ro`` so that SQLite applies the
    WAL, and the ``-shm`` it had to create is removed on close.
    """

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise SourceError(path, "no such file" if not os.path.exists(path) else "not a file")
        with open(path, "rb") as handle:
            if handle.read(16) != SQLITE_MAGIC:
                raise FormatError(path, "not an SQLite database")
        self.path = path
        self._shm = path + "-shm"
        wal = path + "-wal"
        self.live_wal = os.path.exists(wal) and os.path.getsize(wal) > 0
        self._had_shm = os.path.exists(self._shm)
        mode = "mode=ro" if self.live_wal else "mode=ro&immutable=1"
        uri = Path(os.path.abspath(path)).as_uri() + "?" + mode
        try:
            self.con = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except SQLITE_READ_ERRORS as exc:
            self.close()
            raise FormatError(path, f"cannot open SQLite database: {exc}") from None

    def close(self) -> None:
        """Close the connection and remove the side file this connection created."""
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None  # type: ignore[assignment]
        if self.live_wal and not self._had_shm:
            with contextlib.suppress(OSError):
                os.remove(self._shm)


def table_columns(con: sqlite3.Connection, table: str) -> list[tuple[str, str, bool]]:
    """``(name, declared type, is primary key)`` for each column of ``table``."""
    rows = con.execute(f"PRAGMA table_info({quote_name(table)})").fetchall()
    return [(row[1], (row[2] or "").upper(), bool(row[5])) for row in rows]


def user_tables(con: sqlite3.Connection) -> list[str]:
    """The tables of the database, without SQLite's own."""
    rows = con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    return [row[0] for row in rows]


def classify_table(con: sqlite3.Connection, table: str) -> str:
    """Which known layout a table has: dbm.sqlite3, sqlitedict, kv, json-table or table."""
    columns = table_columns(con, table)
    shape = [(name.lower(), decl) for name, decl, _ in columns]
    if table == DBM_SQLITE3_TABLE and shape == [("key", "BLOB"), ("value", "BLOB")]:
        return "dbm.sqlite3"
    if shape == [("key", "TEXT"), ("value", "BLOB")] and columns[0][2]:
        return "sqlitedict"
    if (
        table == KV_TABLE
        and [name for name, _ in shape] in (["key", "value"], ["subdb", "key", "value"])
        and shape[-1][1] == "TEXT"
    ):
        return "kv"
    if shape == [("key", "TEXT"), ("value", "TEXT")]:
        return "json-table"
    if [name for name, _ in shape] == ["key", "value"]:
        return "key-value"
    return "table"


#: what ``--values auto`` means for each layout
_AUTO_VALUES = {
    "dbm.sqlite3": "sniff",
    "sqlitedict": "pickle",
    "kv": "typedjson",
    "json-table": "json",
    "key-value": "sniff",
    "table": "none",
}


class SQLiteReader(Reader):
    """Reads one table of an SQLite database as key/value records."""

    format_name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        self.database = ReadOnlyDatabase(self.path)
        self.con = self.database.con
        self.subdb_column = False
        try:
            self.table = self._choose_table(user_tables(self.con))
            self.layout = classify_table(self.con, self.table)
            self.auto_values = _AUTO_VALUES[self.layout]
            self._plan_columns()
        except SQLITE_READ_ERRORS as exc:
            self.close()
            raise FormatError(self.path, f"cannot read the schema: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _choose_table(self, tables: list[str]) -> str:
        wanted = self.options.table
        if wanted is not None:
            if wanted not in tables:
                raise UsageError(
                    f"{self.path}: no table {wanted!r} (tables: {', '.join(tables) or 'none'})"
                )
            return wanted
        if not tables:
            raise FormatError(self.path, "the SQLite database has no tables")
        if len(tables) == 1:
            return tables[0]
        for known in (DBM_SQLITE3_TABLE, KV_TABLE):
            if known in tables:
                return known
        raise UsageError(
            f"{self.path}: has several tables ({', '.join(tables)}); choose one with --table"
        )

    def _plan_columns(self) -> None:
        """Decide the key expression and the value columns from the options and the layout."""
        columns = table_columns(self.con, self.table)
        names = [name for name, _, _ in columns]
        opts = self.options
        for given in (opts.key_column, opts.value_column):
            if given is not None and given not in names:
                raise UsageError(
                    f"{self.path}: table {self.table!r} has no column {given!r} (columns: {', '.join(names)})"
                )
        if self.layout != "table" and opts.key_column is None and opts.value_column is None:
            self.key_sql, self.value_columns = quote_name("key"), ["value"]
            self.values_are_decoded = False
            self.subdb_column = self.layout == "kv" and names[0] == "subdb"
            return
        if opts.key_column is not None:
            key_name = opts.key_column
        elif "key" in names and opts.value_column is not None:
            key_name = "key"
        else:
            integer_pk = [name for name, decl, pk in columns if pk and decl == "INTEGER"]
            key_name = integer_pk[0] if len(integer_pk) == 1 else None
        self.key_sql = quote_name(key_name) if key_name else "rowid"
        if opts.value_column is not None:
            self.value_columns = [opts.value_column]
            self.values_are_decoded = False
            if self.layout == "table":
                self.auto_values = "none"
        else:
            self.value_columns = [name for name in names if name != key_name]
            self.values_are_decoded = True
            self.layout = "table"

    def records(self) -> Iterator[Record]:
        if self.subdb_column:
            yield from self._records_by_subdb()
            return
        columns = ", ".join(quote_name(name) for name in self.value_columns)
        sql = f"SELECT {self.key_sql}, {columns} FROM {quote_name(self.table)}"
        try:
            cursor = self.con.execute(sql)
        except SQLITE_READ_ERRORS as exc:
            raise FormatError(self.path, f"cannot read table {self.table!r}: {exc}") from None
        # Byte keys of dbm-like tables are container keys (text when UTF-8); our own kv
        # layout stores a bytes key as a BLOB only when it must stay bytes.
        blob_keys = self.layout in ("dbm.sqlite3", "key-value")
        names = self.value_columns
        try:
            if self.values_are_decoded:
                for row in cursor:
                    yield Record(row[0], value=dict(zip(names, row[1:], strict=True)))
            else:
                for key, value in cursor:
                    if blob_keys and isinstance(key, bytes):
                        key = key_from_bytes(key)
                    yield Record(key, raw=value)
        except SQLITE_READ_ERRORS as exc:
            raise FormatError(
                self.path, f"error while reading table {self.table!r}: {exc}"
            ) from None

    def _records_by_subdb(self) -> Iterator[Record]:
        """Our kv layout written from a file with subdatabases: ``records(subdb, key, value)``."""
        sql = f"SELECT key, value, subdb FROM {quote_name(self.table)}"
        params: tuple[str, ...] = ()
        if self.options.subdb is not None:
            sql += " WHERE subdb = ?"
            params = (self.options.subdb,)
        try:
            for key, value, subdb in self.con.execute(sql, params):
                yield Record(key, raw=value, subdb=None if params else subdb)
        except SQLITE_READ_ERRORS as exc:
            raise FormatError(
                self.path, f"error while reading table {self.table!r}: {exc}"
            ) from None

    def count(self) -> int | None:
        try:
            return self.con.execute(f"SELECT count(*) FROM {quote_name(self.table)}").fetchone()[0]
        except SQLITE_READ_ERRORS as exc:
            raise FormatError(self.path, f"cannot count table {self.table!r}: {exc}") from None

    def details(self) -> dict[str, Any]:
        return {
            "format": self.format_name,
            "path": self.path,
            "table": self.table,
            "layout": self.layout,
            "tables": user_tables(self.con),
            "wal": os.path.exists(self.path + "-wal"),
        }

    def close(self) -> None:
        self.database.close()


# ---------------------------------------------------------------------------
# Writer

#: the declared key type for each Python key type (kv layout)
_KEY_DECLARATIONS = {str: "TEXT", bytes: "BLOB", int: "INTEGER"}
#: key types a column of each declaration stores without converting them
_KEY_TYPES_FOR = {"TEXT": (str, bytes), "BLOB": (bytes, str, int), "INTEGER": (int,)}
PICKLE_PROTOCOL = 4  # what shelve uses on Python 3.8-3.13; readable by Python 3.4+
_DEFAULT_TABLE = {"kv": KV_TABLE, "dbm.sqlite3": DBM_SQLITE3_TABLE, "sqlitedict": "unnamed"}


class SQLiteWriter(Writer):
    """Writes records into one table of a new SQLite file, in one transaction.

    Layouts: ``kv`` (``records(key PRIMARY KEY, value TEXT)`` of typed JSON),
    ``dbm.sqlite3`` (Python 3.13's ``Dict`` table of pickles, so ``shelve.open``
    opens it) and ``sqlitedict`` (sqlitedict's table of pickles).
    """

    format_name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], options: WriteOptions | None = None):
        super().__init__(path, options)
        layout = self.options.layout
        if layout == "dbm.sqlite3" and self.options.table not in (None, DBM_SQLITE3_TABLE):
            raise UsageError("--layout dbm.sqlite3 always writes the table Dict; drop --table")
        if self.options.duplicates == "list" and self.options.refs == "keep":
            raise UsageError("--duplicates list cannot be combined with --refs keep")
        self.layout = layout
        self.table = self.options.table or _DEFAULT_TABLE[layout]
        self.target = AtomicTarget(self.path, overwrite=self.options.overwrite)
        self.con: sqlite3.Connection | None = None
        self.key_declaration: str | None = None
        self._kv_encode: Any = None  # the kv encoder, made once the key column type is known
        self._insert_sql = ""
        #: kv rows carry the Berkeley DB subdatabase name (decided by the first record)
        self.by_subdb = False

    # -- set-up ---------------------------------------------------------------

    def open(self) -> None:
        temp = self.target.prepare()
        try:
            self.con = sqlite3.connect(temp, isolation_level=None, check_same_thread=False)
            # The file is private until published, so durability before the rename is moot.
            self.con.execute("PRAGMA journal_mode = OFF")
            self.con.execute("PRAGMA synchronous = OFF")
            self.con.execute("BEGIN")
        except sqlite3.Error as exc:
            self.abort()
            raise DestinationError(self.path, f"cannot create SQLite output: {exc}") from None
        if self.layout == "dbm.sqlite3":
            self._create("key BLOB UNIQUE NOT NULL, value BLOB NOT NULL")
        elif self.layout == "sqlitedict":
            self._create("key TEXT PRIMARY KEY, value BLOB")

    def _create(self, columns: str) -> None:
        assert self.con is not None
        self.con.execute(f"CREATE TABLE {quote_name(self.table)} ({columns})")
        self._insert_sql = self._insert_statement()

    def _insert_statement(self) -> str:
        table = quote_name(self.table)
        verb = "INSERT OR REPLACE" if self.options.duplicates == "last" else "INSERT"
        columns, marks, conflict = "key, value", "?, ?", "key"
        if self.by_subdb:
            columns, marks, conflict = "subdb, key, value", "?, ?, ?", "subdb, key"
        if self.options.duplicates == "list" and self.layout == "kv":
            return (
                f"INSERT INTO {table} ({columns}) VALUES ({marks}) "
                f"ON CONFLICT({conflict}) DO UPDATE SET value = json_insert(value, '$[#]', json(?))"
            )
        return f"{verb} INTO {table} ({columns}) VALUES ({marks})"

    def _declare_key(self, record: Record) -> None:
        if record.subdb is not None:
            # Subdatabases may key by text, bytes or record number: a BLOB column keeps each as is.
            self.by_subdb = True
            self.key_declaration = "BLOB"
            self._create(
                "subdb TEXT NOT NULL, key BLOB NOT NULL, value TEXT, PRIMARY KEY (subdb, key)"
            )
            return
        declaration = _KEY_DECLARATIONS.get(type(record.key), "TEXT")
        self.key_declaration = declaration
        self._create(f"key {declaration} PRIMARY KEY, value TEXT")

    # -- encoding ---------------------------------------------------------------

    def _pickled(self, record: Record) -> bytes:
        if (
            record.codec == "pickle"
            and isinstance(record.raw, bytes)
            and self.options.duplicates != "list"
        ):
            return record.raw  # validated by the safe decoder; copied byte for byte
        return pickle_value(record.value)

    def encode(self, record: Record) -> tuple[Any, ...]:
        key = record.key
        if self._kv_encode is not None:
            return self._kv_encode(record)
        if self.layout == "kv":
            return self._encode_kv(record)
        if record.subdb is not None:
            raise UsageError(
                f"the source has subdatabases and --layout {self.layout} holds one database: "
                "choose one with --subdb NAME, or use --layout kv (a subdb column) or JSON-lines"
            )
        if self.layout == "dbm.sqlite3":
            return (key_to_bytes_checked(key), self._pickled(record))
        if not isinstance(key, (str, bytes, int)) or isinstance(key, bool):
            raise EncodeError(f"sqlitedict keys are text; key of type {type(key).__name__}")
        if type(key) is str and not key.isascii():
            key_to_bytes_checked(key)
        return (key, self._pickled(record))

    def _encode_kv(self, record: Record) -> tuple[Any, ...]:
        if self._kv_encode is None:
            if self.key_declaration is None:
                self._declare_key(record)
            self._kv_encode = self._kv_encoder()
        return self._kv_encode(record)

    def _kv_encoder(self) -> Any:
        """The kv-layout encoder for this run, with options and key checks bound once."""
        allowed = _KEY_TYPES_FOR[self.key_declaration or "BLOB"]
        declaration = self.key_declaration
        encode_value = typedjson.value_encoder(
            style=self.options.json_style, refs=self.options.refs
        )
        grouped = self.options.duplicates == "list"
        by_subdb = self.by_subdb

        def encode(record: Record) -> tuple[Any, ...]:
            key = record.key
            kind = type(key)
            if (record.subdb is not None) is not by_subdb:
                raise EncodeError(
                    "records with and without a subdatabase name cannot share one table"
                )
            if kind not in allowed:
                raise EncodeError(
                    f"key of type {kind.__name__} cannot go in a {declaration} key column "
                    f"without changing it (write JSON-lines to keep it)"
                )
            if kind is str and not key.isascii():
                key_to_bytes_checked(key)  # SQLite stores text as UTF-8: a lone surrogate cannot go
            text = encode_value(record.value)
            if by_subdb:
                if grouped:
                    return (record.subdb, key, "[" + text + "]", text)
                return (record.subdb, key, text)
            if grouped:
                return (key, "[" + text + "]", text)
            return (key, text)

        return encode

    # -- writing ----------------------------------------------------------------

    def write_batch(self, items: list[Any]) -> None:
        if not items:
            return
        assert self.con is not None
        if self.options.duplicates == "list" and self.layout != "kv":
            for key, value in items:
                self._append_pickled(key, value)
            return
        inserted_before = self.con.total_changes
        try:
            self.con.executemany(self._insert_sql, items)
        except sqlite3.IntegrityError:
            # executemany stops at the offending row, after inserting the ones before it.
            failed = items[min(self.con.total_changes - inserted_before, len(items) - 1)]
            raise self._duplicate_error(failed) from None
        except sqlite3.Error as exc:
            raise DestinationError(self.path, f"SQLite write failed: {exc}") from None

    def _append_pickled(self, key: Any, value: bytes) -> None:
        """``--duplicates list`` for the pickle layouts: every value is a pickled list."""
        from ..codecs import safepickle

        assert self.con is not None
        table = quote_name(self.table)
        row = self.con.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
        item = safepickle.loads(value)
        if row is None:
            self.con.execute(
                f"INSERT INTO {table} (key, value) VALUES (?, ?)", (key, pickle_value([item]))
            )
            return
        values = safepickle.loads(row[0])
        values.append(item)
        self.con.execute(f"UPDATE {table} SET value = ? WHERE key = ?", (pickle_value(values), key))

    def _duplicate_error(self, row: tuple[Any, ...]) -> DuplicateKeyError:
        key = row[:2] if self.by_subdb else row[:1]
        return DuplicateKeyError(
            self.path,
            f"the source has key {_shown_key(key)} more than once; choose --duplicates list "
            f"(keep every value in a list) or --duplicates last (keep the last value)",
        )

    def commit(self) -> None:
        assert self.con is not None
        if self.key_declaration is None and self.layout == "kv":
            self._create("key TEXT PRIMARY KEY, value TEXT")
        self.con.execute("COMMIT")
        self.con.close()
        self.con = None
        self.target.publish()

    def abort(self) -> None:
        if self.con is not None:
            with contextlib.suppress(sqlite3.Error):
                self.con.close()
            self.con = None
        self.target.discard()

    def details(self) -> dict[str, Any]:
        return {
            "format": self.format_name,
            "path": self.path,
            "layout": self.layout,
            "table": self.table,
        }


def _shown_key(key: tuple[Any, ...]) -> str:
    if len(key) == 2:
        return f"{key[1]!r} in subdatabase {key[0]!r}"
    return repr(key[0])


def pickle_value(value: Any) -> bytes:
    """Pickle a decoded value for a pickle layout; stubs cannot be pickled faithfully."""
    import pickle

    try:
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError, ValueError) as exc:
        raise EncodeError(f"cannot pickle value: {exc}") from None


def key_to_bytes_checked(key: Any) -> bytes:
    """key_to_bytes, as an EncodeError for keys that have no byte form."""
    try:
        return key_to_bytes(key)
    except TypeError as exc:
        raise EncodeError(str(exc)) from None
