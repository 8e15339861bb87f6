"""The shelfmigrate command line: thin, it parses options and calls the library."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from . import __version__
from .errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, ShelfmigrateError
from .options import ReadOptions, WriteOptions, allow_names

app = typer.Typer(
    name="shelfmigrate",
    help="Move data out of legacy Python persistence formats (shelve, dbm, pickle, marshal) safely.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Options shared by several commands, declared once.
VALUES = typer.Option("auto", "--values", help="Value codec: auto|pickle|marshal|json|raw.")
ALLOW = typer.Option(
    None, "--allow", help="Allow one more class or function for pickles (MODULE.NAME); repeatable."
)
ALLOW_FILE = typer.Option(
    None, "--allow-file", help="A file of MODULE.NAME lines to allow (# starts a comment)."
)
STUBS = typer.Option(
    True,
    "--stubs/--no-stubs",
    help="Record unknown pickled classes as inert stubs (default) or fail.",
)
PY2_STR = typer.Option(
    "auto", "--py2-str", help="Python 2 str becomes: auto (text if UTF-8, else bytes)|bytes|latin1."
)
TABLE = typer.Option(
    None, "--table", help="SQLite table to read (source) and to write (destination)."
)
SOURCE_TABLE = typer.Option(None, "--table", help="SQLite table to read.")
KEY_COLUMN = typer.Option(None, "--key-column", help="Source SQLite column holding the key.")
VALUE_COLUMN = typer.Option(None, "--value-column", help="Source SQLite column holding the value.")
FROM = typer.Option(None, "--from", help="Source format (detected from content when omitted).")
MARSHAL_PYTHON = typer.Option(
    None, "--marshal-python", help="Read marshal data as written by Python 2 or 3."
)
SUBDB = typer.Option(
    None, "--subdb", help="Berkeley DB: read only this subdatabase (default: all of them)."
)
VERIFY_CHECKSUMS = typer.Option(
    True,
    "--verify-checksums/--no-verify-checksums",
    help="Berkeley DB: check page checksums (a mismatch is an error naming the page).",
)
SALVAGE = typer.Option(
    False,
    "--salvage",
    help="Damaged Berkeley DB file: scan it page by page instead of walking its tree (labelled in the report).",
)


def _fail(message: str, code: int) -> None:
    typer.echo(f"shelfmigrate: error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line on stderr and the contract's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ShelfmigrateError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_ERROR)
        except OSError as exc:
            name = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{name}{exc.strerror or exc}", EXIT_ERROR)

    return wrapper


def _read_options(
    values: str,
    allow: list[str] | None,
    allow_file: Path | None,
    stubs: bool,
    py2_str: str,
    table,
    key_column,
    value_column,
    marshal_python=None,
    subdb: str | None = None,
    verify_checksums: bool = True,
    salvage: bool = False,
) -> ReadOptions:
    return ReadOptions(
        values=values,
        allow=allow_names(allow or (), allow_file),
        stubs=stubs,
        py2_str=py2_str,
        marshal_python=marshal_python,
        table=table,
        key_column=key_column,
        value_column=value_column,
        subdb=subdb,
        verify_checksums=verify_checksums,
        salvage=salvage,
    )


@app.command()
@handles_errors
def convert(
    src: Path = typer.Argument(..., help="Source file, directory or dbm base name."),
    dst: Path = typer.Argument(
        ...,
        help="Destination: .jsonl/.ndjson(.gz), .sqlite/.sqlite3/.db, or a directory/.ldb for LevelDB.",
    ),
    from_format: str | None = FROM,
    to_format: str | None = typer.Option(
        None, "--to", help="Destination format: jsonl|sqlite|leveldb."
    ),
    values: str = VALUES,
    allow: list[str] | None = ALLOW,
    allow_file: Path | None = ALLOW_FILE,
    stubs: bool = STUBS,
    on_error: str = typer.Option(
        "fail", "--on-error", help="fail: stop at the first bad record; skip: count it and go on."
    ),
    quarantine: Path | None = typer.Option(
        None,
        "--quarantine",
        help="Write failed records (key, stored bytes, error) to this JSON-lines file.",
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write a JSON report of the run to this file."
    ),
    py2_str: str = PY2_STR,
    marshal_python: int | None = MARSHAL_PYTHON,
    layout: str = typer.Option("kv", "--layout", help="SQLite layout: kv|dbm.sqlite3|sqlitedict."),
    table: str | None = TABLE,
    key_column: str | None = KEY_COLUMN,
    value_column: str | None = VALUE_COLUMN,
    subdb: str | None = SUBDB,
    verify_checksums: bool = VERIFY_CHECKSUMS,
    salvage: bool = SALVAGE,
    dest_table: str | None = typer.Option(
        None, "--dest-table", help="Destination SQLite table when it differs from --table."
    ),
    refs: str = typer.Option(
        "expand", "--refs", help="Shared/cyclic values: expand (cycles fail) or keep ($id/$ref)."
    ),
    json_style: str = typer.Option(
        "typed", "--json-style", help="typed (lossless) or plain (queryable, lossy)."
    ),
    duplicates: str = typer.Option(
        "refuse", "--duplicates", help="A key seen twice: refuse|list|last (SQLite and LevelDB)."
    ),
    encode: str = typer.Option("json", "--encode", help="LevelDB value encoding: json|pickle|raw."),
    batch_size: int = typer.Option(2000, "--batch-size", min=1, help="Records per write batch."),
    progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        help="Progress bar on stderr (default: when stderr is a terminal).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing destination."),
) -> None:
    """Convert SRC into DST."""
    from .pipeline import convert as run_convert

    # --table names the source table and, unless --dest-table says otherwise, the destination's.
    destination_table = dest_table or (table if layout != "dbm.sqlite3" else None)
    result = run_convert(
        src,
        dst,
        from_format=from_format,
        to_format=to_format,
        read_options=_read_options(
            values,
            allow,
            allow_file,
            stubs,
            py2_str,
            table,
            key_column,
            value_column,
            marshal_python,
            subdb,
            verify_checksums,
            salvage,
        ),
        write_options=WriteOptions(
            overwrite=overwrite,
            layout=layout,
            table=destination_table,
            refs=refs,
            json_style=json_style,
            duplicates=duplicates,
            encode=encode,
            batch_size=batch_size,
        ),
        on_error=on_error,
        quarantine=quarantine,
        report=report,
        progress=progress,
    )
    summary = f"{result.written} of {result.read} records written to {dst}"
    if result.failed:
        summary += f"; {result.failed} failed"
    typer.echo(summary, err=True)
    for warning in result.source.get("warnings") or ():
        typer.echo(f"  warning: {warning}", err=True)
    if result.source.get("mode") == "salvage":
        typer.echo("  salvage mode: records were recovered page by page (see --report)", err=True)
    for line in result.errors[:5]:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(result.exit_code)


@app.command()
@handles_errors
def inspect(
    src: Path = typer.Argument(..., help="File, directory or dbm base name to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    table: str | None = SOURCE_TABLE,
    subdb: str | None = SUBDB,
    verify_checksums: bool = VERIFY_CHECKSUMS,
    salvage: bool = SALVAGE,
    marshal_python: int | None = MARSHAL_PYTHON,
) -> None:
    """Say what SRC is: its format, details, record count and what its values look like."""
    from .inspector import inspect_source

    options = ReadOptions(
        table=table,
        subdb=subdb,
        verify_checksums=verify_checksums,
        salvage=salvage,
        marshal_python=marshal_python,
    )
    info = inspect_source(src, options=options)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    typer.echo(f"{info['path']}: {info['description']}")
    if "refusal" in info:
        typer.echo(f"  cannot be read: {info['refusal']}")
    if "note" in info:
        typer.echo(f"  {info['note']}")
    if info.get("records") is not None:
        typer.echo(f"  records: {info['records']}")
    source = info.get("source") or {}
    if isinstance(source.get("summary"), str):  # a reader's one-line description
        typer.echo(f"  {source['summary']}")
    subdatabases = source.get("subdatabases")
    if isinstance(subdatabases, list) and subdatabases:
        typer.echo(f"  subdatabases ({len(subdatabases)}; choose one with --subdb NAME):")
        for sub in subdatabases:
            name = sub.get("name") if isinstance(sub, dict) else sub
            kind = sub.get("access_method") if isinstance(sub, dict) else None
            typer.echo(f"    {name}" + (f" ({kind})" if kind else ""))
    for warning in source.get("warnings") or info["details"].get("warnings") or ():
        typer.echo(f"  warning: {warning}")
    if "values" in info:
        typer.echo(f"  values: {info['values']}")
    sample = info.get("sample")
    if sample and sample["pickle_protocols"]:
        protocols = ", ".join(f"{p} ({n})" for p, n in sample["pickle_protocols"].items())
        typer.echo(f"  pickle protocols in the first {sample['records']} values: {protocols}")
    if info.get("python2"):
        typer.echo("  written by Python 2 (Python 2 str values: see --py2-str)")


@app.command()
@handles_errors
def verify(
    src: Path = typer.Argument(..., help="The original store."),
    dst: Path = typer.Argument(..., help="The converted store."),
    values: str = VALUES,
    allow: list[str] | None = ALLOW,
    allow_file: Path | None = ALLOW_FILE,
    stubs: bool = STUBS,
    py2_str: str = PY2_STR,
    subdb: str | None = SUBDB,
    verify_checksums: bool = VERIFY_CHECKSUMS,
    salvage: bool = SALVAGE,
) -> None:
    """Check that SRC and DST hold the same (key, value) pairs; exit 1 with the first differences."""
    from .verification import verify as run_verify

    result = run_verify(
        src,
        dst,
        options=_read_options(
            values,
            allow,
            allow_file,
            stubs,
            py2_str,
            None,
            None,
            None,
            subdb=subdb,
            verify_checksums=verify_checksums,
            salvage=salvage,
        ),
    )
    if result.same:
        typer.echo(f"same: {result.source_records} records on both sides")
        raise typer.Exit(EXIT_OK)
    typer.echo(
        f"different: {result.source_records} records in source, {result.destination_records} in destination; "
        f"{result.only_in_source} only in source, {result.only_in_destination} only in destination"
    )
    for line in result.examples:
        typer.echo(f"  {line}")
    raise typer.Exit(EXIT_FINDINGS)


@app.command()
@handles_errors
def audit(
    src: list[Path] = typer.Argument(
        ..., help="Pickle files, containers (shelves, SQLite, LevelDB) or directories to audit."
    ),
    output_format: str = typer.Option("text", "--format", help="Report format: text|json|sarif."),
    fail_on: str = typer.Option(
        "dangerous",
        "--fail-on",
        help="Exit 1 when a record is at least: dangerous (also unreadable)|unknown|never.",
    ),
    glob: str | None = typer.Option(
        None, "--glob", help="In directories, audit only files matching PATTERN (default: all)."
    ),
    allow: list[str] | None = ALLOW,
    allow_file: Path | None = ALLOW_FILE,
    table: str | None = SOURCE_TABLE,
    key_column: str | None = KEY_COLUMN,
    value_column: str | None = VALUE_COLUMN,
    subdb: str | None = SUBDB,
    verify_checksums: bool = VERIFY_CHECKSUMS,
) -> None:
    """Statically audit the pickles in SRC: globals, calls and a verdict; nothing is run."""
    from .codecs import audit as audit_lib
    from .options import check_choice

    check_choice("format", output_format, ("text", "json", "sarif"))
    check_choice("fail-on", fail_on, tuple(audit_lib.FAIL_ON))
    options = _read_options(
        "raw",
        allow,
        allow_file,
        True,
        "auto",
        table,
        key_column,
        value_column,
        subdb=subdb,
        verify_checksums=verify_checksums,
    )
    items, summary = audit_lib.summarise(
        audit_lib.audit_paths(src, glob=glob, read_options=options, allow=options.allow)
    )
    render = {
        "text": audit_lib.render_text,
        "json": audit_lib.render_json,
        "sarif": audit_lib.render_sarif,
    }[output_format]
    typer.echo(render(items, summary), nl=False)
    raise typer.Exit(summary.exit_code(fail_on))


@app.command()
def formats() -> None:
    """List the readers and writers, and which optional pieces are available."""
    from importlib.util import find_spec

    from .formats import OPTIONAL_MODULES, READERS, RECOGNISED_WITHOUT_READER, WRITERS

    def availability(name: str) -> str:
        module = OPTIONAL_MODULES.get(name)
        if module is None:
            return "available"
        return (
            "available" if find_spec(module) else f"needs {module} (python -m pip install {module})"
        )

    typer.echo("readers:")
    for name in READERS:
        typer.echo(f"  {name:<18} {availability(name)}")
    typer.echo("writers:")
    for name in WRITERS:
        typer.echo(f"  {name:<18} {availability(name)}")
    typer.echo("recognised, not read (refused with the reason):")
    for name, title in RECOGNISED_WITHOUT_READER.items():
        typer.echo(f"  {name:<18} {title}")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"shelfmigrate {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """Move data out of legacy Python persistence formats (shelve, dbm, pickle, marshal) safely."""


def main() -> None:
    """Console-script entry point."""
    app(prog_name="shelfmigrate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
