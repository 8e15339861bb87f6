"""The marshal container reader, ``inspect`` on marshal files, and fixture coverage.

Fixture evidence comes from fixtures/marshal/ (written by CPython 2.7 and 3.6-3.13,
oracles by the same interpreters; see the README there).  The type codes of each
fixture are listed by a small walker written here, independent of the reader, so
that "every code of the issue is covered" is checked on the bytes themselves.
"""

from __future__ import annotations

import base64
import io
import json
import marshal as cpython_marshal
import os
import struct
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import shelfmigrate
from shelfmigrate.cli import app
from shelfmigrate.codecs import marshal as m
from shelfmigrate.errors import DecodeError, FormatError
from shelfmigrate.options import ReadOptions
from shelfmigrate.pipeline import open_reader

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "marshal"

#: The interpreters that wrote the fixtures and the format versions each writes.
INTERPRETERS = {
    "2.7.18": range(3),
    **{v: range(5) for v in ("3.6.15", "3.7.16", "3.8.18", "3.9.18")},
    **{v: range(5) for v in ("3.10.13", "3.11.7", "3.12.1", "3.13.0")},
}

#: The type codes the issue lists (plus the structural ones every dump uses).
PY2_CODES = set("0NFTS.iIlfgxystRu([{<>")
PY3_CODES = set("0NFTS.ilfgxystuaAzZ)([{<>r") | {"FLAG_REF"}


def oracles() -> dict[str, dict[str, Any]]:
    return {
        p.name[: -len(".expected.json")]: json.loads(p.read_text("ascii"))
        for p in sorted(FIXTURES.glob("*.expected.json"))
    }


# ----------------------------------------------------------------------------- a type-code walker


def walk_codes(data: bytes, pos: int = 0) -> tuple[set[str], int]:
    """The type codes of the dump at ``pos`` (FLAG_REF listed as such) and where it ends.

    Trusted data only (the fixtures): it checks nothing.  Written from the format
    (CPython's Python/marshal.c layout), not from the reader under test.
    """
    codes: set[str] = set()
    stack: list[int] = []  # items left in each open container; -1 for a dict
    while True:
        code = data[pos]
        pos += 1
        if code & 0x80:
            codes.add("FLAG_REF")
        char = chr(code & 0x7F)
        codes.add(char)
        items = 0
        if char in "ir" or char == "R":
            pos += 4
        elif char in "Ig":
            pos += 8
        elif char == "y":
            pos += 16
        elif char == "l":
            pos += 4 + 2 * abs(struct.unpack_from("<i", data, pos)[0])
        elif char == "f":
            pos += 1 + data[pos]
        elif char == "x":
            pos += 1 + data[pos]
            pos += 1 + data[pos]
        elif char in "stuaA":
            pos += 4 + struct.unpack_from("<i", data, pos)[0]
        elif char in "zZ":
            pos += 1 + data[pos]
        elif char in "([<>":
            items = struct.unpack_from("<i", data, pos)[0]
            pos += 4
        elif char == ")":
            items = data[pos]
            pos += 1
        elif char == "{":
            items = -1
        elif char == "0":
            stack.pop()  # the end of a dict
        elif char not in "NFTS.":
            raise AssertionError(f"walker: unexpected code {char!r} at {pos - 1}")
        if items:
            stack.append(items)
            continue
        while stack and stack[-1] > 0:  # count one item off the open containers
            stack[-1] -= 1
            if stack[-1]:
                break
            stack.pop()
        if not stack:
            return codes, pos


def codes_of_file(data: bytes) -> set[str]:
    codes: set[str] = set()
    pos = 0
    while pos < len(data):
        found, pos = walk_codes(data, pos)
        codes |= found
    return codes


# ----------------------------------------------------------------------------- fixture evidence


def test_every_interpreter_wrote_every_version():
    """Each (interpreter, version) has a single-object fixture, a stream and a code object."""
    singles: set[tuple[str, int]] = set()
    streams: set[str] = set()
    codes: set[str] = set()
    for name, oracle in oracles().items():
        writers = [oracle["python"], *oracle["also_written_by"]]
        if "refused" in oracle:
            codes.update(writers)
        elif "dumps" in oracle:
            streams.update(writers)
            # the stream holds one dump at every version the interpreter writes
            versions = {d["version"] for d in oracle["dumps"]} - {None}
            assert versions == set(INTERPRETERS[oracle["python"]]), name
        else:
            singles.update((w, oracle["marshal_version"]) for w in writers)
    assert singles == {(p, v) for p, versions in INTERPRETERS.items() for v in versions}
    assert streams == set(INTERPRETERS)
    assert codes == set(INTERPRETERS)


def test_fixtures_cover_every_type_code():
    """The union of type codes per family covers the issue's list (walked on the bytes)."""
    found: dict[int, set[str]] = {2: set(), 3: set()}
    for name, oracle in oracles().items():
        if "refused" in oracle:
            continue
        data = (FIXTURES / f"{name}.marshal").read_bytes()
        found[2 if oracle["python"].startswith("2.") else 3] |= codes_of_file(data)
    assert found[2] >= PY2_CODES, PY2_CODES - found[2]
    assert found[3] >= PY3_CODES, PY3_CODES - found[3]
    # the Python 2-only and Python 3-only marks stay where they belong
    assert not found[2] & {"FLAG_REF", "r", "a", "A", "z", "Z", ")"}
    assert not found[3] & {"I", "R"}


def test_survey_lists_the_same_type_codes_as_the_walker():
    for name, oracle in oracles().items():
        if "refused" in oracle:
            continue
        data = (FIXTURES / f"{name}.marshal").read_bytes()
        walked = codes_of_file(data)
        info = m.survey(data)
        assert info["error"] is None
        assert set(info["type_codes"]) == walked - {"FLAG_REF"}, name
        assert info["flag_ref"] == ("FLAG_REF" in walked), name


def _dumps_with_versions() -> list[tuple[str, bytes, int, int]]:
    """(fixture, dump bytes, true version, python major) for every dump of every fixture."""
    out = []
    for name, oracle in oracles().items():
        if "refused" in oracle:
            continue
        data = (FIXTURES / f"{name}.marshal").read_bytes()
        major = int(oracle["python"][0])
        default = 2 if major == 2 else 4
        if "dumps" in oracle:
            for d in oracle["dumps"]:
                version = default if d["version"] is None else d["version"]
                out.append((name, data[d["start"] : d["end"]], version, major))
        else:
            out.append((name, data, oracle["marshal_version"], major))
    return out


def test_inferred_version_range_holds_the_true_version():
    """What survey says about the version is never wrong (a range, as tight as bytes allow)."""
    exact = 0
    for name, raw, version, major in _dumps_with_versions():
        seen = [0] * 256
        m._load_one(raw, 0, None, 1, None, None, False, seen)
        low, high, evidence = m.infer_version(seen, major if major == 2 else 3)
        assert low <= version <= high, (name, version, low, high, evidence)
        exact += low == high
    assert exact  # Python 2 versions 1 and 2 are told exactly


@pytest.mark.parametrize(
    ("name", "version", "python"),
    [
        ("py27_v0", "0-1", 2),
        ("py27_v1", "1", 2),
        ("py27_v2", "2", 2),
        ("py36_v0", "0-1", None),  # Python 3 version 0-2 data carries no mark of Python 3
        ("py36_v2", "\u22652", None),
        ("py36_v3", "\u22653", 3),
        ("py36_v4", "\u22654", 3),
        ("py310_v4", "\u22654", 3),
    ],
)
def test_reader_details_and_count(name, version, python):
    with open_reader(FIXTURES / f"{name}.marshal", format="marshal") as reader:
        assert reader.count() == 1
        details = reader.details()
    assert details["marshal_version"] == version
    assert details["python"] == python
    assert details["objects"] == 1
    assert details["error"] is None
    assert f"marshal format version {version}" in details["summary"]


def test_reader_details_of_streams():
    oracle = oracles()
    with open_reader(FIXTURES / "py27_stream.marshal") as reader:
        assert reader.count() == len(oracle["py27_stream"]["dumps"]) == 8
        details = reader.details()
    assert details["python"] == 2
    assert details["marshal_versions"] == {"0-1": 1, "1": 1, "2": 1, "\u22651": 2, "any (0-2)": 3}
    assert details["highest_version_feature"] == 2
    assert details["marshal_version"].startswith("mixed: ")
    with open_reader(FIXTURES / "py36_stream.marshal") as reader:
        assert reader.count() == len(oracle["py36_stream"]["dumps"]) == 10
        details = reader.details()
    assert details["python"] == 3
    assert details["highest_version_feature"] == 4
    assert details["flag_ref"] is True
    assert details["marshal_versions"] == {"0-1": 2, "\u22652": 1, "\u22653": 4, "\u22654": 3}


def test_forced_python_is_reported():
    options = ReadOptions(marshal_python=3)
    with open_reader(FIXTURES / "py27_v0.marshal", format="marshal", options=options) as reader:
        details = reader.details()
        (record,) = list(reader.records())
    assert details["python"] == 3 and details["python_forced"] is True
    assert "(forced)" in details["summary"]
    assert record.value[b"s_utf8"] == b"caf\xc3\xa9"  # read as Python 3: 's' is bytes
    with open_reader(FIXTURES / "py27_v0.marshal", options=ReadOptions(py2_str="auto")) as reader:
        assert next(reader.records()).value["s_utf8"] == "caf\xe9"  # detected: Python 2
    # version 1+ Python 2 data forced to Python 3 stops at its first 'R', saying why
    with open_reader(FIXTURES / "py27_v2.marshal", format="marshal", options=options) as reader:
        assert reader.count() is None
        assert "Python 2 code" in reader.details()["error"]


def test_inspect_json_and_text():
    result = CliRunner().invoke(app, ["inspect", "--json", str(FIXTURES / "py36_v4.marshal")])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "marshal"
    assert info["records"] == 1
    assert info["source"]["marshal_version"] == "\u22654"
    assert info["source"]["python"] == 3
    result = CliRunner().invoke(app, ["inspect", str(FIXTURES / "py27_stream.marshal")])
    assert result.exit_code == 0, result.output
    assert "records: 8" in result.stdout
    assert "marshal format version mixed: 0-1 (1 dump), 1 (1 dump), 2 (1 dump)" in result.stdout
    assert "Python 2, 8 objects" in result.stdout


# ----------------------------------------------------------------------------- damage and refusal


def _write_stream(path: Path, values: list[Any]) -> list[int]:
    starts = []
    with open(path, "wb") as f:
        for value in values:
            starts.append(f.tell())
            cpython_marshal.dump(value, f)
    return starts


def test_damaged_dump_ends_the_stream_after_the_good_ones(tmp_path):
    path = tmp_path / "s.marshal"
    starts = _write_stream(path, [{"a": 1}, [1, 2], "three", 4.5])
    raw = bytearray(path.read_bytes())
    raw[starts[2]] = ord("?")  # the third dump's type code
    path.write_bytes(bytes(raw))
    with open_reader(path, format="marshal") as reader:
        got = []
        with pytest.raises(FormatError, match=rf"dump number 2: .*offset {starts[2]}"):
            for record in reader.records():
                got.append((record.key, record.value))
        assert got == [(0, {"a": 1}), (1, [1, 2])]
        assert reader.count() is None  # the number of dumps is not known past the damage
        details = reader.details()
    assert details["objects"] == 2
    assert f"offset {starts[2]}" in details["error"]
    assert "stopped at a damaged dump" in details["summary"]
    dst = tmp_path / "out.jsonl"
    with pytest.raises(FormatError):
        shelfmigrate.convert(path, dst, from_format="marshal", progress=False)
    assert not dst.exists()


def test_code_objects_are_refused_through_the_reader(tmp_path):
    for name in ("py27_code", "py36_code", "py313_code"):
        path = FIXTURES / f"{name}.marshal"
        with (
            open_reader(path, format="marshal") as reader,
            pytest.raises(FormatError, match=r"code objects are refused \(never built"),
        ):
            list(reader.records())
    # a code object after good dumps: the good ones come first, then the refusal
    path = tmp_path / "mixed.marshal"
    path.write_bytes(cpython_marshal.dumps([1]) + (FIXTURES / "py311_code.marshal").read_bytes())
    with open_reader(path, format="marshal") as reader:
        records = reader.records()
        assert next(records).value == [1]
        with pytest.raises(FormatError, match="dump number 1: code objects are refused"):
            next(records)


class _Pipe(io.RawIOBase):
    """A non-seekable binary source (like a pipe): it cannot say how much is left."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("code", [b"(", b"[", b"s", b"u", b"<", b"a"])
def test_huge_declared_size_on_a_pipe_reads_no_more_than_there_is(code):
    """A size of 2**31-1 on a small non-seekable stream fails without a 2 GiB read."""
    data = cpython_marshal.dumps([1, 2]) + code + struct.pack("<i", 2**31 - 1) + b"N" * 100
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="truncated"):
            list(m.load_stream(io.BufferedReader(_Pipe(data))))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_stream_from_a_pipe_matches_the_oracle():
    oracle = oracles()["py36_stream"]
    data = (FIXTURES / "py36_stream.marshal").read_bytes()
    got = list(m.load_stream(io.BufferedReader(_Pipe(data))))
    assert [(s, e) for _, s, e in got] == [(d["start"], d["end"]) for d in oracle["dumps"]]


# ----------------------------------------------------------------------------- the command line


def _field(line: str, name: str) -> Any:
    """The value under key ``name`` (text or bytes) in a typed-JSON record of the py27 sample."""
    record = json.loads(line)
    encoded = {"$bytes": base64.b64encode(name.encode()).decode()}
    value = record["value"]
    pairs = value["$dict"] if isinstance(value, dict) and "$dict" in value else value.items()
    for key, item in pairs:
        if key in (name, encoded):
            return item
    raise KeyError(name)


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ([], "caf\xe9"),  # detected as Python 2, str decoded when UTF-8 (--py2-str auto)
        (["--py2-str", "bytes"], {"$bytes": base64.b64encode(b"caf\xc3\xa9").decode()}),
        (["--py2-str", "latin1"], "caf\xc3\xa9"),
        (["--marshal-python", "3"], {"$bytes": base64.b64encode(b"caf\xc3\xa9").decode()}),
        (["--marshal-python", "2"], "caf\xe9"),
    ],
)
def test_cli_convert_options(tmp_path, args, want):
    dst = tmp_path / "out.jsonl"
    src = FIXTURES / "py27_v0.marshal"
    result = CliRunner().invoke(app, ["convert", str(src), str(dst), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    (line,) = dst.read_text("utf-8").splitlines()
    assert _field(line, "s_utf8") == want


def test_cli_refuses_a_code_object_clearly(tmp_path):
    dst = tmp_path / "out.jsonl"
    src = FIXTURES / "py311_code.marshal"
    result = CliRunner().invoke(app, ["convert", "--from", "marshal", str(src), str(dst)])
    assert result.exit_code == 2
    assert "code objects are refused (never built, never run)" in result.stderr
    assert not dst.exists()


# ----------------------------------------------------------------------------- live interpreters

PYENV = Path("/root/.pyenv/versions")


@pytest.mark.parametrize("version", sorted(INTERPRETERS))
def test_live_interpreter_output_is_committed_and_read(version, tmp_path):
    """Each installed interpreter writes the fixtures again: same bytes as committed, read right.

    Skips when the interpreter is not installed (the committed fixtures still test the
    reader everywhere).
    """
    from test_marshal_codec import same

    python = PYENV / version / "bin" / "python"
    if not python.exists():
        pytest.skip(f"CPython {version} is not installed")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    script = FIXTURES / "make_marshal_fixtures.py"
    subprocess.run([str(python), str(script), "--child", str(tmp_path)], env=env, check=True)
    committed = {p.read_bytes() for p in FIXTURES.glob("*.marshal")}
    made = sorted(tmp_path.glob("*.marshal"))
    assert len(made) == len(INTERPRETERS[version]) + 2  # every version, a stream, a code object
    for path in made:
        data = path.read_bytes()
        assert data in committed, f"{path.name} of {version} differs from the committed fixtures"
        oracle = json.loads(path.with_suffix(".expected.json").read_text("ascii"))
        if "refused" in oracle:
            with pytest.raises(DecodeError, match="code objects are refused"):
                m.loads(data)
        elif "dumps" in oracle:
            got = list(m.load_stream(data))
            assert [(s, e) for _, s, e in got] == [(d["start"], d["end"]) for d in oracle["dumps"]]
            for (value, _, _), dump in zip(got, oracle["dumps"], strict=True):
                assert same(value, dump["value"], "auto")
        else:
            assert same(m.loads(data), oracle["value"], "auto")


def test_marshal_python_option_is_checked_on_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shelfmigrate.cli import app

    src = tmp_path / "v.marshal"
    src.write_bytes(cpython_marshal.dumps({"k": [b"abc", "x", 1]}, 2))
    for command in (["inspect", str(src)], ["convert", str(src), str(tmp_path / "o.jsonl")]):
        result = CliRunner().invoke(app, [*command, "--marshal-python", "5"])
        assert result.exit_code == 2
        assert "--marshal-python takes 2|3, not 5" in result.output
    forced = CliRunner().invoke(app, ["inspect", str(src), "--marshal-python", "2"])
    assert forced.exit_code == 0 and "Python 2 (forced)" in forced.output
