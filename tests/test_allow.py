"""--allow and --allow-file: extend the unpickler's allowlist, never to a gadget."""

from __future__ import annotations

import json
import pickle
from collections import deque

import pytest
from typer.testing import CliRunner

from shelfmigrate.cli import app
from shelfmigrate.errors import UsageError
from shelfmigrate.options import allow_names

runner = CliRunner()


def test_allow_file_lines_comments_and_blank_lines(tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text(
        "# extra classes\ncollections.deque\n\n  fractions.Fraction  # inline comment\n"
    )
    assert allow_names(["decimal.Decimal"], path) == {
        "collections.deque",
        "fractions.Fraction",
        "decimal.Decimal",
    }


@pytest.mark.parametrize("bad", ["os", "os.", ".system", "os system", "os.system()"])
def test_allow_names_must_be_module_dot_name(bad):
    with pytest.raises(UsageError, match="MODULE.NAME"):
        allow_names([bad])


def test_allow_file_with_a_bad_line_names_the_line(tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("collections.deque\nnot a name\n")
    with pytest.raises(UsageError, match=r"allow.txt line 2: expected MODULE.NAME"):
        allow_names((), path)


def test_missing_allow_file_is_exit_2(tmp_path):
    pkl = tmp_path / "v.pkl"
    pkl.write_bytes(pickle.dumps([1]))
    result = runner.invoke(
        app,
        ["convert", str(pkl), str(tmp_path / "o.jsonl"), "--allow-file", str(tmp_path / "nope")],
    )
    assert result.exit_code == 2
    assert "cannot read the allow file" in result.output


def test_allow_file_turns_a_stub_into_the_real_class(tmp_path):
    pkl = tmp_path / "v.pkl"
    pkl.write_bytes(pickle.dumps(deque([1, 2])))
    out = tmp_path / "stub.jsonl"
    assert runner.invoke(app, ["convert", str(pkl), str(out)]).exit_code == 0
    assert json.loads(out.read_text())["value"]["$class"] == "collections.deque"
    allow = tmp_path / "allow.txt"
    allow.write_text("collections.deque\n")
    audit = runner.invoke(
        app,
        ["audit", str(pkl), "--allow-file", str(allow), "--format", "json", "--fail-on", "unknown"],
    )
    assert audit.exit_code == 0, audit.output


def test_a_gadget_cannot_be_allowed(tmp_path):
    import os

    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps(Payload()))
    allow = tmp_path / "allow.txt"
    allow.write_text("posix.system\nos.system\n")
    result = runner.invoke(
        app, ["convert", str(pkl), str(tmp_path / "o.jsonl"), "--allow-file", str(allow)]
    )
    assert result.exit_code != 0
    assert "system" in result.output
    assert not canary.exists()
    assert not (tmp_path / "o.jsonl").exists()


def test_an_allowed_class_without_a_tag_is_written_in_the_class_form(tmp_path):
    pkl = tmp_path / "v.pkl"
    pkl.write_bytes(pickle.dumps(deque([1, (2, 3)], maxlen=3)))
    out = tmp_path / "allowed.jsonl"
    result = runner.invoke(app, ["convert", str(pkl), str(out), "--allow", "collections.deque"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["value"] == {
        "$class": "collections.deque",
        "$args": [{"$tuple": []}, 3],
        "$listitems": [1, {"$tuple": [2, 3]}],
    }
