"""Options shared by readers, decoders and writers (one place, so the CLI and the API agree)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
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
    #: Berkeley DB: read only this subdatabase (``None``: all of them, each record naming its own)
    subdb: str | None = None
    #: verify page checksums where the format has them (Berkeley DB ``DB_CHKSUM``)
    verify_checksums: bool = True
    #: read a damaged file page by page instead of walking its structure (labelled in the report)
    salvage: bool = False


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


def check_read_options(options: ReadOptions) -> None:
    """Raise UsageError for a ReadOptions field outside its choices."""
    check_choice("values", options.values, VALUE_CODECS)
    check_choice("py2-str", options.py2_str, PY2_STR_POLICIES)
    if options.marshal_python is not None:
        check_choice("marshal-python", options.marshal_python, (2, 3))


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def allow_names(
    names: Iterable[str] = (), allow_file: str | os.PathLike[str] | None = None
) -> frozenset[str]:
    """The ``--allow`` names plus those of ``--allow-file`` (one MODULE.NAME a line, ``#`` comments)."""
    from .errors import SourceError, UsageError

    allowed = set()
    for name in names:
        if not _DOTTED_NAME.fullmatch(name):
            raise UsageError(f"--allow takes MODULE.NAME, not {name!r}")
        allowed.add(name)
    if allow_file is not None:
        try:
            with open(allow_file, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(allow_file, f"cannot read the allow file: {exc}") from None
        for lineno, line in enumerate(lines, 1):
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            if not _DOTTED_NAME.fullmatch(name):
                raise UsageError(
                    f"{os.fspath(allow_file)} line {lineno}: expected MODULE.NAME, got {name!r}"
                )
            allowed.add(name)
    return frozenset(allowed)
