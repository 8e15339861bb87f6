"""The dbm.dumb reader: every way Python 2 and 3 write the index, duplicates, damage."""

from __future__ import annotations

from pathlib import Path

import pytest

import shelfmigrate
from shelfmigrate.errors import FormatError, SourceError
from shelfmigrate.formats import dumb
from shelfmigrate.formats.dumb import DumbReader, parse_dir_line


def make_dumb(tmp_path: Path, lines: list[str], values: dict[int, bytes]) -> Path:
    """A .dat/.dir pair: ``values`` maps positions to stored bytes, ``lines`` is the index."""
    base = tmp_path / "db"
    size = max((pos + len(v) for pos, v in values.items()), default=0)
    data = bytearray(size)
    for pos, value in values.items():
        data[pos : pos + len(value)] = value
    (tmp_path / "db.dat").write_bytes(bytes(data))
    (tmp_path / "db.dir").write_bytes("".join(lines).encode("latin-1"))
    return base


def pairs(base: Path) -> list[tuple[object, bytes | None]]:
    with DumbReader(base) as reader:
        return [(r.key, r.raw) for r in reader.records()]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("'plain', (0, 3)\n", b"plain"),
        ('"it\'s", (0, 3)\n', b"it's"),
        ("'caf\\xe9', (0, 3)\n", b"caf\xe9"),  # Python 2 escapes non-ASCII
        ("'caf\xc3\xa9', (0, 3)\n", b"caf\xc3\xa9"),  # Python 3 writes printable Latin-1 as is
        ("'tab\\there\\n', (0, 3)\n", b"tab\there\n"),
        ("'q\\'uote', (0, 3)\n", b"q'uote"),
        ("b'bytes', (0, 3)\n", b"bytes"),  # very old Python 3
        ("u'caf\\xe9', (0, 3)\n", "café".encode()),  # a Python 2 unicode key
        ("'long', (0L, 3L)\n", b"long"),  # Python 2 longs
    ],
)
def test_index_line_forms(line, key):
    assert parse_dir_line(line) == (key, 0, 3)


@pytest.mark.parametrize(
    "line",
    [
        "key, (0, 3)\n",
        "'unterminated, (0, 3)\n",
        "'k', (0)\n",
        "'k', (-1, 3)\n",
        "'k', (0, 3) extra\n",
        "__import__('os'), (0, 3)\n",
    ],
)
def test_malformed_index_lines_are_format_errors(line):
    with pytest.raises(FormatError, match="not a dbm.dumb index entry"):
        parse_dir_line(line, "x.dir", 7)


def test_every_line_form_reads_through_the_reader(tmp_path):
    base = make_dumb(
        tmp_path,
        ["'a', (0, 2)\n", "'caf\\xe9', (512, 2)\n", "'caf\xc3\xa9', (1024, 2)\n"],
        {0: b"v1", 512: b"v2", 1024: b"v3"},
    )
    assert pairs(base) == [("a", b"v1"), (b"caf\xe9", b"v2"), ("café", b"v3")]


@pytest.mark.parametrize("exact_up_to", [200_000, 0], ids=["exact-filter", "bit-filter"])
def test_a_key_on_several_lines_takes_its_last_line(tmp_path, monkeypatch, exact_up_to):
    monkeypatch.setattr(dumb, "_EXACT_FILTER_LINES", exact_up_to)
    lines = [
        "'k', (0, 3)\n",
        "'other', (512, 3)\n",
        "'k', (1024, 3)\n",
        "'x', (1536, 1)\n",
        "'k', (2048, 3)\n",
    ]
    base = make_dumb(
        tmp_path, lines, {0: b"old", 512: b"oth", 1024: b"mid", 1536: b"x", 2048: b"new"}
    )
    assert pairs(base) == [("other", b"oth"), ("x", b"x"), ("k", b"new")]


def test_many_keys_without_duplicates_lose_nothing_in_the_bit_filter(tmp_path, monkeypatch):
    monkeypatch.setattr(dumb, "_EXACT_FILTER_LINES", 0)
    lines = [f"'key{i}', ({i * 8}, 8)\n" for i in range(20_000)]
    base = make_dumb(tmp_path, lines, {i * 8: f"{i:08d}".encode() for i in range(20_000)})
    got = pairs(base)
    assert len(got) == 20_000
    assert got[12345] == ("key12345", b"00012345")


def test_values_out_of_index_order_are_read_exactly(tmp_path):
    # Positions jump backwards and far ahead: the read window must never serve stale bytes.
    values = {700_000: b"far", 0: b"first", 512: b"second", 300_000: b"middle"}
    lines = [
        "'far', (700000, 3)\n",
        "'first', (0, 5)\n",
        "'second', (512, 6)\n",
        "'middle', (300000, 6)\n",
    ]
    base = make_dumb(tmp_path, lines, values)
    assert pairs(base) == [
        ("far", b"far"),
        ("first", b"first"),
        ("second", b"second"),
        ("middle", b"middle"),
    ]


def test_a_value_beyond_the_end_of_dat_is_a_record_error(tmp_path):
    base = make_dumb(tmp_path, ["'ok', (0, 2)\n", "'gone', (512, 9)\n"], {0: b"ok"})
    with DumbReader(base) as reader:
        records = list(reader.records())
    assert records[0].raw == b"ok"
    assert records[1].key == "gone" and records[1].raw is None
    assert "beyond the end" in str(records[1].error)


def test_missing_index_with_a_backup_says_how_to_recover(tmp_path):
    base = make_dumb(tmp_path, ["'a', (0, 1)\n"], {0: b"x"})
    (tmp_path / "db.dir").rename(tmp_path / "db.bak")
    with pytest.raises(
        SourceError, match=r"index file is missing; a backup index .*db\.bak exists"
    ):
        DumbReader(base)


def test_missing_data_file(tmp_path):
    base = make_dumb(tmp_path, ["'a', (0, 1)\n"], {0: b"x"})
    (tmp_path / "db.dat").unlink()
    (tmp_path / "db.dat").mkdir()
    with pytest.raises(shelfmigrate.ShelfmigrateError):
        list(DumbReader(str(base) + ".dir").records())


def test_count_is_the_number_of_index_lines(tmp_path):
    base = make_dumb(tmp_path, ["'a', (0, 1)\n", "'b', (1, 1)"], {0: b"xy"})
    assert DumbReader(base).count() == 2
