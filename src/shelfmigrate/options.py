"""Options shared by readers, decoders and writers (one place, so the CLI and the API agree)."""

from __future__ import annotations

from dataclasses import dataclass, field

VALUE_CODECS = ("auto", "pickle", "marshal", "json", "raw")
PY2_STR_POLICIES = ("auto", "bytes", "latin1")
ON_ERROR_POLICIES = ("fail", "skip")
SQLITE_LAYOUTS = ("kv", "dbm.sqlite3", "sqlitedict")
REFS_POLICIES = ("expand", "keep")
JSON_STYLES = ("typed", "plain")
DUPLICATE_POLICIES = ("refuse", "list", "last")
LEVELDB_ENCODINGS = ("json", "pickle", "raw")


@dataclass
class ReadOptions:
    """How to read a source and decode its values."""

    values: str = "auto"
    allow: frozenset[str] = frozenset()
    stubs: bool = True
    py2_str: str = "auto"
    marshal_python: int | None = None
    table: str | None = None
    key_column: str | None = None
    value_column: str | None = None


@dataclass
class WriteOptions:
    """How to write a destination."""

    overwrite: bool = False
    layout: str = "kv"
    table: str | None = None
    refs: str = "expand"
    json_style: str = "typed"
    duplicates: str = "refuse"
    encode: str = "json"  # LevelDB value encoding: json | pickle | raw
    batch_size: int = 2000
    extra: dict = field(default_factory=dict)


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise UsageError unless ``value`` is one of ``choices``."""
    if value not in choices:
        from .errors import UsageError

        allowed = "|".join(str(c) for c in choices)
        raise UsageError(f"--{name} takes {allowed}, not {value!r}")
