"""Parse the native ``db_dump`` oracles committed next to the Berkeley DB fixtures.

The fixtures in ``fixtures/bdb/`` were dumped by the real ``db5.3_dump`` (see
``fixtures/bdb/README.md``). This module turns those text files into Python values so
the reader's tests can compare records without needing any native tool.

API (all paths may be ``str`` or ``Path``):

``load_dump(path) -> list[tuple[bytes | int | None, bytes]]``
    The records of a dump file in the order ``db_dump`` printed them (which is the
    database's cursor order: key order for btree, page/bucket order for hash, record
    number order for recno/queue). Duplicates appear as repeated keys. Keys are
    ``bytes``; for ``type=recno``/``type=queue`` dumps made with ``-k`` (header
    ``keys=1``) the key is the record number as an ``int``. A recno/queue dump made
    *without* ``-k`` has no key lines; its keys are ``None`` (record numbers unknown,
    gaps invisible). Both the default hex format (``format=bytevalue``) and the
    printable format (``db_dump -p``, ``format=print``, backslash escapes ``\\\\`` and
    ``\\xx``) are understood. If the file holds several dumped databases (plain
    ``db_dump`` of a file with subdatabases), only the first one is returned; use
    :func:`load_dump_sections` for all of them.

``load_dump_sections(path) -> list[tuple[dict, list[...]]]``
    Every ``VERSION=… HEADER=END … DATA=END`` section of a dump file as
    ``(header, records)``.

``dump_header(path) -> dict[str, str | int]``
    The header of the first section: ``type`` (``"btree"``, ``"hash"``, ``"recno"``,
    ``"queue"``), ``format``, ``database`` (subdatabase name, when dumped with ``-s``),
    and numeric fields as ints: ``VERSION``, ``db_pagesize``, ``duplicates``,
    ``dupsort``, ``keys``, ``re_len``, ``re_pad`` (db_dump prints it in hex),
    ``h_ffactor``, ``h_nelem``, ``bt_minkey``, ``recnum``, ``renumber``,
    ``extentsize``, ``db_lorder``, ``chksum``, ``subdatabases`` — whichever
    ``db_dump`` printed (absent fields mean the default: e.g. no ``duplicates`` line
    means no duplicates).

``load_fixture(stem) -> dict[str | None, list[...]]``
    For a fixture ``<stem>.db``: if ``<stem>.subdbs`` exists (the output of
    ``db_dump -l``: one subdatabase name per line), returns ``{name: records}`` read
    from ``<stem>.<name>.dump`` for every listed name; otherwise
    ``{None: load_dump("<stem>.dump")}``. ``stem`` may be given with or without the
    ``.db`` suffix.

``subdb_names(path) -> list[str]``
    The names in a ``.subdbs`` file, in the order ``db_dump -l`` listed them
    (the master database's key order).

Nothing here imports the reader or any native module.
"""

from __future__ import annotations

import binascii
from os import PathLike
from pathlib import Path
from typing import Union

StrPath = Union[str, "PathLike[str]"]
DumpKey = bytes | int | None
DumpRecord = tuple[DumpKey, bytes]

#: header fields whose values db_dump prints as numbers (re_pad in hex, as ``0x20``)
_NUMERIC_FIELDS = frozenset(
    {
        "VERSION",
        "db_pagesize",
        "duplicates",
        "dupsort",
        "keys",
        "re_len",
        "re_pad",
        "h_ffactor",
        "h_nelem",
        "bt_minkey",
        "recnum",
        "renumber",
        "extentsize",
        "db_lorder",
        "chksum",
        "subdatabases",
    }
)

#: access methods whose ``-k`` key lines are record numbers
_RECORD_NUMBER_TYPES = frozenset({"recno", "queue"})

_HEADER_END = "HEADER=END"
_DATA_END = "DATA=END"


def _decode_printable(text: str, path: StrPath, line_number: int) -> bytes:
    """Undo ``db_dump -p`` escaping: ``\\\\`` is a backslash, ``\\xx`` a hex byte."""
    if "\\" not in text:
        return text.encode("latin-1")
    out = bytearray()
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char != "\\":
            out += char.encode("latin-1")
            position += 1
            continue
        if text.startswith("\\\\", position):
            out.append(0x5C)
            position += 2
            continue
        pair = text[position + 1 : position + 3]
        try:
            out.append(int(pair, 16))
        except ValueError:
            raise ValueError(
                f"{path}:{line_number}: bad escape {text[position : position + 3]!r}"
            ) from None
        position += 3
    return bytes(out)


def _decode_line(line: str, printable: bool, path: StrPath, line_number: int) -> bytes:
    if not line.startswith(" "):
        raise ValueError(f"{path}:{line_number}: data line without the leading space: {line!r}")
    body = line[1:]
    if printable:
        return _decode_printable(body, path, line_number)
    try:
        return binascii.unhexlify(body)
    except (binascii.Error, ValueError):
        raise ValueError(f"{path}:{line_number}: bad hex data line {line!r}") from None


def _parse_header_value(name: str, value: str) -> str | int:
    if name in _NUMERIC_FIELDS:
        try:
            return int(value, 0)
        except ValueError:
            return value
    return value


def load_dump_sections(path: StrPath) -> list[tuple[dict[str, str | int], list[DumpRecord]]]:
    """Every database section of a ``db_dump`` output file as ``(header, records)``."""
    with open(path, encoding="latin-1", newline="\n") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    sections: list[tuple[dict[str, str | int], list[DumpRecord]]] = []
    index = 0
    while index < len(lines):
        if lines[index] == "":
            index += 1
            continue
        header: dict[str, str | int] = {}
        while True:
            if index >= len(lines):
                raise ValueError(f"{path}: header without {_HEADER_END}")
            line = lines[index]
            index += 1
            if line == _HEADER_END:
                break
            name, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}:{index}: bad header line {line!r}")
            header[name] = _parse_header_value(name, value)
        printable = header.get("format") == "print"
        numbered = header.get("type") in _RECORD_NUMBER_TYPES
        has_keys = header.get("keys", 1 if not numbered else 0) == 1
        data_lines: list[tuple[int, str]] = []
        while True:
            if index >= len(lines):
                raise ValueError(f"{path}: data without {_DATA_END}")
            line = lines[index]
            index += 1
            if line == _DATA_END:
                break
            data_lines.append((index, line))
        records: list[DumpRecord] = []
        if has_keys:
            if len(data_lines) % 2:
                raise ValueError(f"{path}: odd number of key/value lines")
            for (key_no, key_line), (value_no, value_line) in zip(
                data_lines[0::2], data_lines[1::2], strict=True
            ):
                key_bytes = _decode_line(key_line, printable, path, key_no)
                value = _decode_line(value_line, printable, path, value_no)
                key: DumpKey = int(key_bytes.decode("ascii")) if numbered else key_bytes
                records.append((key, value))
        else:
            for value_no, value_line in data_lines:
                records.append((None, _decode_line(value_line, printable, path, value_no)))
        sections.append((header, records))
    return sections


def load_dump(path: StrPath) -> list[DumpRecord]:
    """Records of the (first) database in a ``db_dump`` output file; see the module doc."""
    sections = load_dump_sections(path)
    if not sections:
        raise ValueError(f"{path}: no database in the dump")
    return sections[0][1]


def dump_header(path: StrPath) -> dict[str, str | int]:
    """Header fields of the (first) database in a ``db_dump`` output file."""
    sections = load_dump_sections(path)
    if not sections:
        raise ValueError(f"{path}: no database in the dump")
    return sections[0][0]


def subdb_names(path: StrPath) -> list[str]:
    """Subdatabase names listed by ``db_dump -l`` (one per line)."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.rstrip("\n")]


def _stem(stem_path: StrPath) -> Path:
    path = Path(stem_path)
    if path.suffix == ".db":
        path = path.with_suffix("")
    return path


def load_fixture(stem_path: StrPath) -> dict[str | None, list[DumpRecord]]:
    """Oracle records of fixture ``<stem>.db``: ``{None: records}`` or ``{subdb: records}``."""
    stem = _stem(stem_path)
    listing = stem.parent / (stem.name + ".subdbs")
    if listing.exists():
        return {
            name: load_dump(stem.parent / f"{stem.name}.{name}.dump")
            for name in subdb_names(listing)
        }
    return {None: load_dump(stem.parent / (stem.name + ".dump"))}
