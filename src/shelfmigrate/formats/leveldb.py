"""LevelDB directories, read and written through plyvel."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from ..codecs import typedjson
from ..errors import (
    DestinationError,
    DuplicateKeyError,
    EncodeError,
    FormatError,
    MissingDependencyError,
    SourceError,
    UsageError,
)
from ..options import WriteOptions
from ..records import Record, key_from_bytes, key_to_bytes
from ._publish import AtomicTarget
from .base import Reader, Writer


def import_plyvel() -> Any:
    """plyvel, or MissingDependencyError saying how to install it."""
    try:
        import plyvel
    except ImportError:
        raise MissingDependencyError(
            "LevelDB support needs plyvel: python -m pip install plyvel"
        ) from None
    return plyvel


_IMMUTABLE_SUFFIXES = (".ldb", ".sst")  # table files are never changed once written


def snapshot_leveldb(path: str) -> str:
    """A private copy of a LevelDB directory to open: table files hard-linked where possible."""
    snapshot = tempfile.mkdtemp(prefix="shelfmigrate-leveldb-")
    try:
        for entry in os.scandir(path):
            if entry.name == "LOCK" or not entry.is_file(follow_symlinks=False):
                continue
            target = os.path.join(snapshot, entry.name)
            if entry.name.endswith(_IMMUTABLE_SUFFIXES):
                try:
                    os.link(entry.path, target)
                    continue
                except OSError:
                    pass  # another file system, or links not allowed: copy instead
            shutil.copyfile(entry.path, target)
    except OSError as exc:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise SourceError(path, f"cannot read LevelDB directory: {exc.strerror or exc}") from None
    return snapshot


class LevelDBReader(Reader):
    """Reads every key/value pair of a LevelDB database, in key order."""

    format_name = "leveldb"
    auto_values = "sniff"

    def __init__(self, path: str | os.PathLike[str], options=None):
        super().__init__(path, options)
        if not os.path.isdir(self.path):
            raise SourceError(self.path, "a LevelDB database is a directory")
        if not os.path.exists(os.path.join(self.path, "CURRENT")):
            raise FormatError(self.path, "not a LevelDB database (no CURRENT file)")
        plyvel = import_plyvel()
        # LevelDB has no read-only mode: opening a database replays its log and rewrites
        # LOG, MANIFEST and CURRENT.  So we open a private snapshot of the directory.
        self._snapshot = snapshot_leveldb(self.path)
        try:
            self.db = plyvel.DB(self._snapshot, create_if_missing=False)
        except (plyvel.Error, OSError) as exc:
            shutil.rmtree(self._snapshot, ignore_errors=True)
            raise FormatError(self.path, f"cannot open LevelDB database: {exc}") from None

    def records(self) -> Iterator[Record]:
        for key, value in self.db.iterator():
            yield Record(key_from_bytes(key), raw=value)

    def details(self) -> dict[str, Any]:
        return {"format": self.format_name, "path": self.path}

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
        shutil.rmtree(self._snapshot, ignore_errors=True)


class LevelDBWriter(Writer):
    """Writes records into a new LevelDB directory, one write batch per pipeline batch.

    Keys are the source key bytes (str as UTF-8, int as decimal text); values are
    typed JSON in UTF-8 (``--encode json``), pickles (``pickle``) or the stored bytes (``raw``).
    """

    format_name = "leveldb"

    def __init__(self, path: str | os.PathLike[str], options: WriteOptions | None = None):
        super().__init__(path, options)
        if self.options.duplicates == "list" and self.options.encode == "raw":
            raise UsageError(
                "--duplicates list needs --encode json or pickle (raw bytes cannot be grouped)"
            )
        if self.options.duplicates == "list" and self.options.refs == "keep":
            raise UsageError("--duplicates list cannot be combined with --refs keep")
        self.target = AtomicTarget(self.path, overwrite=self.options.overwrite, is_dir=True)
        self.db: Any = None
        self._encode_value = typedjson.value_encoder(
            style=self.options.json_style, refs=self.options.refs
        )

    def open(self) -> None:
        plyvel = import_plyvel()
        temp = self.target.prepare()
        try:
            self.db = plyvel.DB(temp, create_if_missing=True, error_if_exists=True)
        except (plyvel.Error, OSError) as exc:
            self.target.discard()
            raise DestinationError(self.path, f"cannot create LevelDB output: {exc}") from None

    def encode(self, record: Record) -> tuple[bytes, bytes]:
        if record.subdb is not None:
            raise UsageError(
                "the source has subdatabases and a LevelDB holds one key space: choose one with "
                "--subdb NAME (one run per subdatabase), or write SQLite (a subdb column) or JSON-lines"
            )
        try:
            key = key_to_bytes(record.key)
        except TypeError as exc:
            raise EncodeError(str(exc)) from None
        how = self.options.encode
        if how == "json":
            return key, self._encode_value(record.value).encode("utf-8")
        if how == "pickle":
            from .sqlite import pickle_value

            if (
                record.codec == "pickle"
                and isinstance(record.raw, bytes)
                and self.options.duplicates != "list"
            ):
                return key, record.raw
            return key, pickle_value(record.value)
        stored = record.raw if record.raw is not None else record.value
        if isinstance(stored, str):
            stored = stored.encode("utf-8")
        if not isinstance(stored, bytes):
            raise EncodeError(
                f"--encode raw needs stored bytes; this value is {type(stored).__name__}"
            )
        return key, stored

    def write_batch(self, items: list[Any]) -> None:
        policy = self.options.duplicates
        if policy == "last":
            with self.db.write_batch() as batch:
                for key, value in items:
                    batch.put(key, value)
            return
        pending: dict[bytes, bytes] = {}
        get = self.db.get
        for key, value in items:
            earlier = pending.get(key)
            if earlier is None:
                earlier = get(key)
            if earlier is not None:
                if policy == "refuse":
                    raise DuplicateKeyError(
                        self.path,
                        f"the source has key {key_from_bytes(key)!r} more than once; choose "
                        f"--duplicates list (keep every value in a list) or --duplicates last",
                    )
                if policy == "list":
                    value = self._append(earlier, value)
            elif policy == "list":
                value = self._start_list(value)
            pending[key] = value
        with self.db.write_batch() as batch:
            for key, value in pending.items():
                batch.put(key, value)

    def _start_list(self, value: bytes) -> bytes:
        if self.options.encode == "json":
            return b"[" + value + b"]"
        from ..codecs import safepickle
        from .sqlite import pickle_value

        return pickle_value([safepickle.loads(value)])

    def _append(self, earlier: bytes, value: bytes) -> bytes:
        if self.options.encode == "json":
            return earlier[:-1] + b"," + value + b"]"
        from ..codecs import safepickle
        from .sqlite import pickle_value

        values = safepickle.loads(earlier)
        values.append(safepickle.loads(value))
        return pickle_value(values)

    def commit(self) -> None:
        self.db.close()
        self.target.publish()

    def abort(self) -> None:
        if self.db is not None and not self.db.closed:
            self.db.close()
        self.target.discard()
