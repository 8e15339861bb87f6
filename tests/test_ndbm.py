"""NDBM ``.dir``/``.pag`` pairs: GDBM's compatibility library and classic sdbm.

Fixtures in ``fixtures/ndbm/`` (see its README): ``gdbm-compat.dir/.pag`` written
through libgdbm_compat's ``dbm_open`` (oracle: ``gdbm_dump`` of the ``.pag``), and
``sdbm.dir/.pag`` written by Perl's ``SDBM_File`` (oracle: Perl's own ``each %h``
listing as hex, in the order Perl enumerates).  The big-endian sdbm file is built
from the real one by swapping every u16 of each page's offset table (FORMATS.md
§4.1); no big-endian machine is available to write one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from test_gdbm import RAW, pairs, parse_ascii_dump

import shelfmigrate
from shelfmigrate.detect import detect
from shelfmigrate.errors import FormatError, SourceError
from shelfmigrate.formats.ndbm import PROBE_BYTES, NdbmClassicReader, NdbmGdbmReader
from shelfmigrate.pipeline import open_reader
from shelfmigrate.records import key_to_bytes

NDBM_FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ndbm"
PAGE = 1024


def sdbm_oracle() -> list[tuple[bytes, bytes]]:
    out = []
    for line in (NDBM_FIX / "sdbm.hex").read_text().splitlines():
        key, _, value = line.partition(" ")
        out.append((bytes.fromhex(key), bytes.fromhex(value)))
    return out


def copy_pair(tmp_path: Path, base: str, new_base: str = "db") -> Path:
    for suffix in (".dir", ".pag"):
        shutil.copyfile(NDBM_FIX / f"{base}{suffix}", tmp_path / f"{new_base}{suffix}")
    return tmp_path / new_base


def sdbm_to_big_endian(data: bytes) -> bytes:
    buf = bytearray(data)
    for at in range(0, len(buf), PAGE):
        (n,) = struct.unpack_from("<H", buf, at)
        shorts = struct.unpack_from(f"<{n + 1}H", buf, at)
        struct.pack_into(f">{n + 1}H", buf, at, *shorts)
    return bytes(buf)


# --------------------------------------------------------------------------- classic sdbm


@pytest.mark.parametrize("name", ["sdbm", "sdbm.dir", "sdbm.pag"])
def test_sdbm_matches_perl(name: str) -> None:
    reader = NdbmClassicReader(NDBM_FIX / name)
    expected = sdbm_oracle()
    assert len(expected) > 200
    assert pairs(reader) == expected  # Perl enumerates pages in file order too
    assert reader.count() == len(expected)
    info = reader.details()
    assert (info["page_size"], info["byte_order"]) == (1024, "little")
    assert info["files"] == [str(NDBM_FIX / "sdbm.pag"), str(NDBM_FIX / "sdbm.dir")]


@pytest.mark.parametrize("name", ["sdbm", "sdbm.dir", "sdbm.pag"])
def test_sdbm_through_detection(name: str, tmp_path: Path) -> None:
    reader = open_reader(NDBM_FIX / name)
    assert reader.format_name == "ndbm-classic"
    assert pairs(reader) == sdbm_oracle()


def test_sdbm_odd_pairs_are_exact() -> None:
    got = dict(sdbm_oracle())
    assert got[b"\xff\x00\xfe"] == b"binary key"
    assert got[b"empty"] == b""
    assert got[b""] == b"empty key"
    assert got[b"near-max"] == b"m" * 900
    assert b"sdbm-key-3" not in got
    assert dict(pairs(NdbmClassicReader(NDBM_FIX / "sdbm"))) == got


def test_sdbm_big_endian(tmp_path: Path) -> None:
    base = copy_pair(tmp_path, "sdbm")
    pag = base.with_suffix(".pag")
    pag.write_bytes(sdbm_to_big_endian(pag.read_bytes()))
    reader = NdbmClassicReader(base)
    assert reader.details()["byte_order"] == "big"
    assert pairs(reader) == sdbm_oracle()


def _damage_page(tmp_path: Path, beyond_probe: bool) -> tuple[Path, int]:
    base = copy_pair(tmp_path, "sdbm")
    pag = base.with_suffix(".pag")
    data = bytearray(pag.read_bytes())
    pages = [at for at in range(0, len(data), PAGE) if data[at : at + 2] != b"\0\0"]
    bad = next(at for at in pages if (at >= PROBE_BYTES) == beyond_probe)
    struct.pack_into("<H", data, bad, 3)  # an odd item count: not a valid page
    pag.write_bytes(bytes(data))
    return base, bad


def test_sdbm_damaged_page_is_a_record_error(tmp_path: Path) -> None:
    base, bad = _damage_page(tmp_path, beyond_probe=True)
    records = list(NdbmClassicReader(base).records())
    errors = [r for r in records if r.error is not None]
    assert len(errors) == 1
    assert f"page {bad // PAGE} at offset {bad} is not a valid ndbm page" in str(errors[0].error)
    good = [(key_to_bytes(r.key), r.raw) for r in records if r.error is None]
    assert 0 < len(good) < len(sdbm_oracle())
    assert set(good) < set(sdbm_oracle())


def test_sdbm_damaged_page_in_the_probe_window(tmp_path: Path) -> None:
    base, _ = _damage_page(tmp_path, beyond_probe=False)
    with pytest.raises(FormatError, match=r"db\.pag at offset 0: not a classic ndbm/sdbm"):
        NdbmClassicReader(base)


def test_sdbm_truncated_pag(tmp_path: Path) -> None:
    base = copy_pair(tmp_path, "sdbm")
    pag = base.with_suffix(".pag")
    pag.write_bytes(pag.read_bytes()[:1500])
    with pytest.raises(FormatError, match=r"db\.pag at offset 0: not a classic ndbm/sdbm"):
        NdbmClassicReader(base)


def test_missing_partner(tmp_path: Path) -> None:
    base = copy_pair(tmp_path, "sdbm")
    os.remove(base.with_suffix(".dir"))
    with pytest.raises(SourceError, match=r"db\.dir: ndbm index file"):
        NdbmClassicReader(base.with_suffix(".pag"))


def test_detect_fixture_pairs_are_readable() -> None:
    detect_dir = NDBM_FIX.parent / "detect"
    assert len(pairs(open_reader(detect_dir / "sdbm"))) == 20
    assert pairs(open_reader(detect_dir / "ndbm-gdbm")) == [(b"alpha", b"one")]


# --------------------------------------------------------------------------- gdbm-compat


@pytest.mark.parametrize("name", ["gdbm-compat", "gdbm-compat.dir", "gdbm-compat.pag"])
def test_gdbm_compat_matches_gdbm_dump(name: str) -> None:
    reader = NdbmGdbmReader(NDBM_FIX / name)
    expected = parse_ascii_dump(NDBM_FIX / "gdbm-compat.dump")
    assert len(expected) > 100
    assert pairs(reader) == expected
    info = reader.details()
    assert info["format"] == "ndbm-gdbm"
    assert (info["dir_kind"], info["compat_version"]) == ("header", "1.23.0")
    assert info["files"] == [str(NDBM_FIX / "gdbm-compat.pag"), str(NDBM_FIX / "gdbm-compat.dir")]
    assert info["block_size"] == 4096 and info["layout"] == "LP64"


def test_gdbm_compat_through_detection_and_convert(tmp_path: Path) -> None:
    assert detect(NDBM_FIX / "gdbm-compat").format == "ndbm-gdbm"
    dst = tmp_path / "out.jsonl"
    report = shelfmigrate.convert(NDBM_FIX / "gdbm-compat", dst, read_options=RAW, progress=False)
    assert report.failed == 0
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    got = [
        (
            key_to_bytes(r["key"])
            if isinstance(r["key"], str)
            else base64.b64decode(r["key"]["$bytes"]),
            base64.b64decode(r["value"]["$bytes"]),
        )
        for r in rows
    ]
    assert got == parse_ascii_dump(NDBM_FIX / "gdbm-compat.dump")


def test_gdbm_18_style_hard_linked_dir(tmp_path: Path) -> None:
    shutil.copyfile(NDBM_FIX / "gdbm-compat.pag", tmp_path / "old.pag")
    os.link(tmp_path / "old.pag", tmp_path / "old.dir")
    reader = NdbmGdbmReader(tmp_path / "old")
    assert reader.details()["dir_kind"] == "hardlink"
    assert pairs(reader) == parse_ascii_dump(NDBM_FIX / "gdbm-compat.dump")
    assert open_reader(tmp_path / "old").format_name == "ndbm-gdbm"
