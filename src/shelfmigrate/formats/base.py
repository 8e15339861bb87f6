"""What every container reader and writer provides.

A reader yields :class:`~shelfmigrate.records.Record` objects lazily, in
on-disk order, holding the stored bytes (``raw``) and, where the container
itself stores typed values (SQLite columns, JSON-lines), the value already.
A writer takes batches and publishes its output atomically on ``commit()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

from ..options import ReadOptions, WriteOptions
from ..records import Record


class Reader:
    """Base of the container readers; subclasses set the class attributes and ``records()``."""

    #: registry name of the format
    format_name: ClassVar[str] = ""
    #: the value codec ``--values auto`` picks for this container
    auto_values: ClassVar[str] = "raw"
    #: True when records come with their values already decoded (no value codec applies)
    values_are_decoded: ClassVar[bool] = False

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions | None = None):
        self.path = os.fspath(path)
        self.options = options or ReadOptions()

    def records(self) -> Iterator[Record]:
        """Every record, lazily, in on-disk order."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def count(self) -> int | None:
        """The number of records when it is cheap to know, else ``None``."""
        return None

    def details(self) -> dict[str, Any]:
        """Machine-readable facts about the source, for ``inspect`` and the report."""
        return {"format": self.format_name, "path": self.path}

    def close(self) -> None:
        """Release files and connections (idempotent)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Writer:
    """Base of the container writers: ``open()``, ``write_batch()`` ..., then ``commit()`` or ``abort()``."""

    format_name: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike[str], options: WriteOptions | None = None):
        self.path = os.fspath(path)
        self.options = options or WriteOptions()

    def open(self) -> None:
        """Create the temporary output beside the destination."""
        raise NotImplementedError

    def write_batch(self, records: list[Record]) -> None:
        """Write decoded records; raises RecordError for a record that cannot be encoded."""
        raise NotImplementedError

    def commit(self) -> None:
        """Finish the output and move it into place atomically."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove everything this writer created; the destination is left as it was."""
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """Facts about the destination for the report."""
        return {"format": self.format_name, "path": self.path}

    def __enter__(self) -> Writer:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
