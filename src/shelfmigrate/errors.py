"""One exception hierarchy for shelfmigrate.

Every error a user can cause (bad input, bad options, an existing destination)
is a :class:`ShelfmigrateError` whose ``str()`` is one clear line naming the file
and, where known, the offset or key.  The CLI prints that line and exits with
:attr:`ShelfmigrateError.exit_code`; nothing else reaches the user as a traceback.
"""

from __future__ import annotations

import os
from typing import Any

EXIT_OK = 0
EXIT_FINDINGS = 1  # the run finished but records failed, or audit/verify found problems
EXIT_ERROR = 2  # bad usage or unreadable input


class ShelfmigrateError(Exception):
    """Base of every error shelfmigrate raises on purpose."""

    exit_code = EXIT_ERROR


class UsageError(ShelfmigrateError):
    """Options that do not fit together, or a value an option does not take."""


class MissingDependencyError(ShelfmigrateError):
    """An optional piece is not installed; the message names what to install."""


class SourceError(ShelfmigrateError):
    """The source cannot be read: missing, not a file, or not what it claims to be."""

    def __init__(
        self, path: str | os.PathLike[str] | None, message: str, *, offset: int | None = None
    ):
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        self.detail = message
        where = self.path or "<input>"
        if offset is not None:
            where = f"{where} at offset {offset}"
        super().__init__(f"{where}: {message}")


class FormatError(SourceError):
    """The source is damaged or malformed for the format it was read as."""


class UnsupportedFormatError(SourceError):
    """The source is recognised, but this format or feature cannot be read (yet, or ever)."""


class DestinationError(ShelfmigrateError):
    """The destination cannot be written: it exists, or its folder is not writable."""

    def __init__(self, path: str | os.PathLike[str], message: str):
        self.path = os.fspath(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}")


class DuplicateKeyError(DestinationError):
    """The source holds the same key twice and the destination keeps one value per key."""


class RecordError(ShelfmigrateError):
    """One record could not be decoded or encoded; ``--on-error`` decides what happens."""

    exit_code = EXIT_FINDINGS

    def __init__(self, message: str, *, key: Any = None):
        self.key = key
        self.detail = message
        super().__init__(message)

    def with_key(self, key: Any) -> RecordError:
        """Return this error with the record key filled in (when it was not known yet)."""
        if self.key is None:
            self.key = key
        return self

    def __str__(self) -> str:
        if self.key is None:
            return self.detail
        return f"record {self.key!r}: {self.detail}"


class DecodeError(RecordError):
    """A stored value could not be turned into a Python object (or was refused)."""


class UnsafePickleError(DecodeError):
    """A pickle tried to reach something that is never allowed (a gadget, state poisoning, ...)."""


class EncodeError(RecordError):
    """A decoded value cannot be written in the destination's encoding (cycle, size bound, ...)."""
