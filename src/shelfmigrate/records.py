"""The record that flows through the pipeline, and how container keys become record keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import RecordError


class _NotDecoded:
    """Marker for a record whose stored bytes have not been decoded yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_DECODED"


NOT_DECODED: Any = _NotDecoded()


@dataclass(slots=True)
class Record:
    """One key/value pair.

    ``raw`` is the value exactly as the container stored it (``None`` when the
    container stores typed values, like SQLite columns); ``value`` is the decoded
    Python object, or :data:`NOT_DECODED` until the pipeline's decode step ran;
    ``codec`` names what decoded ``raw`` (``"pickle"``, ``"json"``, ...).
    ``subdb`` names the sub-database a record came from, where a file has several.
    ``error`` is set by a reader that found this one record damaged (the stream goes on).
    """

    key: Any
    value: Any = NOT_DECODED
    raw: bytes | None = None
    codec: str | None = None
    subdb: str | None = None
    error: RecordError | None = None


def key_from_bytes(key: bytes) -> str | bytes:
    """A container key as typed JSON wants it: text when it is valid UTF-8, else bytes."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


def key_to_bytes(key: Any) -> bytes:
    """The bytes a key-value store should use for ``key`` (str as UTF-8, int as decimal text)."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError:
            raise TypeError("key holds a lone surrogate, which has no UTF-8 form") from None
    if isinstance(key, bool) or not isinstance(key, int):
        raise TypeError(f"key of type {type(key).__name__} has no byte form")
    return str(key).encode("ascii")
