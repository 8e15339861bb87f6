"""shelfmigrate: move data out of legacy Python persistence formats, safely.

The library API::

    import shelfmigrate

    for record in shelfmigrate.open_reader("old.shelf"):   # lazy, in on-disk order
        ...
    report = shelfmigrate.convert("old.shelf", "new.sqlite")
"""

from __future__ import annotations

from typing import Any

from .errors import (
    DecodeError,
    DestinationError,
    EncodeError,
    FormatError,
    RecordError,
    ShelfmigrateError,
    SourceError,
    UnsafePickleError,
    UnsupportedFormatError,
    UsageError,
)
from .options import ReadOptions, WriteOptions
from .records import Record
from .stubs import Stub

__version__ = "0.1.0"

__all__ = [
    "DecodeError",
    "DestinationError",
    "EncodeError",
    "FormatError",
    "ReadOptions",
    "Record",
    "RecordError",
    "ShelfmigrateError",
    "SourceError",
    "Stub",
    "UnsafePickleError",
    "UnsupportedFormatError",
    "UsageError",
    "WriteOptions",
    "__version__",
    "convert",
    "open_reader",
    "open_writer",
    "verify",
]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in the codecs; keep `import shelfmigrate` light.
    if name in ("convert", "open_reader", "open_writer"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "verify":
        # (The module is not called ``verify``: importing it would bind that name to the module.)
        from .verification import verify

        return verify
    raise AttributeError(f"module 'shelfmigrate' has no attribute {name!r}")
