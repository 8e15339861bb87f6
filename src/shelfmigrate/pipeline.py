"""convert(): the one place that drives a conversion.

reader (lazy records) -> decode (safe codecs) -> encode (the writer's) -> batched,
atomic writer.  Memory stays flat: at most one batch of records is held at a time.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import detect as _detect
from .errors import EXIT_FINDINGS, EXIT_OK, RecordError, ShelfmigrateError, UsageError
from .formats import reader_class, writer_class
from .formats.base import Reader, Writer
from .options import (
    DUPLICATE_POLICIES,
    JSON_STYLES,
    LEVELDB_ENCODINGS,
    ON_ERROR_POLICIES,
    REFS_POLICIES,
    SQLITE_LAYOUTS,
    ReadOptions,
    WriteOptions,
    check_choice,
    check_read_options,
)
from .records import NOT_DECODED, Record
from .values import guess_codec, make_decoder

SQLITE_EXTENSIONS = (".sqlite", ".sqlite3", ".db")
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
LEVELDB_EXTENSIONS = (".ldb", ".leveldb")


# ---------------------------------------------------------------------------
# Opening sources and destinations


def open_reader(
    path: str | os.PathLike[str], *, format: str | None = None, options: ReadOptions | None = None
) -> Reader:
    """A reader for ``path``, its format detected from content unless ``format`` is given."""
    options = options or ReadOptions()
    check_read_options(options)
    path = os.fspath(path)
    if format is None:
        detection = _detect.detect(path)
        if detection.refusal:
            from .errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                detection.path, f"{detection.description}: {detection.refusal}"
            )
        format, path = detection.format, detection.path
    return reader_class(format, path)(path, options)


def destination_format(path: str | os.PathLike[str]) -> str:
    """The writer a destination path asks for, from its extension (or an existing directory)."""
    path = os.fspath(path)
    lowered = path.lower()
    if lowered.endswith(JSONL_EXTENSIONS):
        return "jsonl"
    if lowered.endswith(SQLITE_EXTENSIONS):
        return "sqlite"
    if lowered.endswith(LEVELDB_EXTENSIONS) or lowered.endswith(os.sep) or os.path.isdir(path):
        return "leveldb"
    raise UsageError(
        f"cannot tell the destination format from {path!r}: use a .jsonl/.ndjson(.gz), "
        f".sqlite/.sqlite3/.db or .ldb name, a directory, or --to jsonl|sqlite|leveldb"
    )


def open_writer(
    path: str | os.PathLike[str], *, format: str | None = None, options: WriteOptions | None = None
) -> Writer:
    """A writer for ``path`` (not opened yet), its format from ``format`` or the extension."""
    options = options or WriteOptions()
    check_choice("layout", options.layout, SQLITE_LAYOUTS)
    check_choice("refs", options.refs, REFS_POLICIES)
    check_choice("json-style", options.json_style, JSON_STYLES)
    check_choice("duplicates", options.duplicates, DUPLICATE_POLICIES)
    check_choice("encode", options.encode, LEVELDB_ENCODINGS)
    format = format or destination_format(path)
    return writer_class(format)(os.fspath(path).rstrip(os.sep) or os.fspath(path), options)


# ---------------------------------------------------------------------------
# Decoding


class ValueDecoder:
    """Applies the chosen value codec to each record; ``auto`` resolves per source."""

    def __init__(self, reader: Reader, options: ReadOptions):
        self.options = options
        requested = options.values
        if reader.values_are_decoded:
            if requested != "auto":
                raise UsageError(
                    f"--values {requested} does not apply to {reader.format_name} sources: their values are already typed"
                )
            self.name = "none"
        else:
            self.name = reader.auto_values if requested == "auto" else requested
        self.already_decoded = reader.values_are_decoded
        self._decode = None if self.name == "sniff" else make_decoder(self.name, options)

    def __call__(self, record: Record) -> None:
        if record.value is not NOT_DECODED:
            return
        if self._decode is None:  # --values auto on a container of unknown values: sniff once
            if record.raw is None:  # an SQL NULL says nothing about the other values
                record.value = None
                return
            self.name = guess_codec(record.raw)
            self._decode = make_decoder(self.name, self.options)
        record.value = self._decode(record.raw)
        record.codec = self.name

    def describe(self) -> str:
        """The codec in use, for the report."""
        return "none (values are typed)" if self.already_decoded else self.name


# ---------------------------------------------------------------------------
# Reporting


@dataclass
class Report:
    """What a conversion did; ``to_dict()`` is the ``--report`` JSON."""

    source: dict[str, Any]
    destination: dict[str, Any]
    values: str = ""
    read: int = 0
    written: int = 0
    failed: int = 0
    duration_s: float = 0.0
    status: str = "running"
    errors: list[str] = field(default_factory=list)

    MAX_ERRORS = 20

    @property
    def exit_code(self) -> int:
        """0 when every record was written, 1 when some failed."""
        return EXIT_FINDINGS if self.failed else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        rate = self.read / self.duration_s if self.duration_s > 0 else None
        return {
            "status": self.status,
            "source": self.source,
            "destination": self.destination,
            "values": self.values,
            "records": {"read": self.read, "written": self.written, "failed": self.failed},
            "duration_s": round(self.duration_s, 6),
            "records_per_s": round(rate, 1) if rate else None,
            "errors": self.errors,
        }


class Quarantine:
    """JSON-lines of records that failed: their key, stored bytes and the error."""

    def __init__(self, path: str | os.PathLike[str]):
        from .codecs import typedjson

        self._encode = typedjson.encode
        try:
            self.handle: TextIO = open(path, "w", encoding="utf-8")
        except OSError as exc:
            from .errors import DestinationError

            raise DestinationError(
                os.fspath(path), f"cannot write quarantine file: {exc.strerror}"
            ) from None

    def add(self, record: Record, error: RecordError) -> None:
        raw = record.raw
        if isinstance(raw, bytes | bytearray):
            raw_json: Any = {"$bytes": base64.b64encode(raw).decode("ascii")}
        else:
            raw_json = raw if isinstance(raw, str | int | float) or raw is None else repr(raw)
        try:
            key = json.loads(self._encode(record.key))
        except RecordError:
            key = repr(record.key)
        line = {"key": key, "raw": raw_json, "error": error.detail}
        self.handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.handle.close()


# ---------------------------------------------------------------------------
# The conversion


def _progress(
    records: Iterator[Record], total: int | None, enabled: bool | None
) -> Iterator[Record]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return records
    from tqdm import tqdm

    return iter(tqdm(records, total=total, unit="rec", file=sys.stderr, dynamic_ncols=True))


def run(
    reader: Reader,
    writer: Writer,
    *,
    read_options: ReadOptions | None = None,
    on_error: str = "fail",
    quarantine: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    report: Report | None = None,
) -> Report:
    """Stream every record of ``reader`` into ``writer`` (already constructed, not opened).

    ``report`` (made here when not given) is filled in as the run goes, so a caller
    still has the counts when the run stops with an error.
    """
    check_choice("on-error", on_error, ON_ERROR_POLICIES)
    read_options = read_options or reader.options
    decoder = ValueDecoder(reader, read_options)
    if report is None:
        report = Report(source={}, destination={})
    report.source = reader.details()
    report.destination = writer.details()
    report.values = decoder.describe()
    batch_size = max(1, writer.options.batch_size)
    started = time.perf_counter()
    with ExitStack() as stack:
        sink = stack.enter_context(_closing(Quarantine(quarantine))) if quarantine else None

        def fail(record: Record, error: RecordError) -> None:
            error.with_key(record.key)
            report.failed += 1
            if len(report.errors) < report.MAX_ERRORS:
                report.errors.append(str(error))
            if sink is not None:
                sink.add(record, error)
            if on_error == "fail":
                raise error

        writer.open()
        try:
            total = (
                reader.count() if (progress or (progress is None and sys.stderr.isatty())) else None
            )
            batch: list[Any] = []
            append, encode = batch.append, writer.encode
            records = _progress(reader.records(), total, progress)
            for report.read, record in enumerate(records, 1):  # the report counts as it goes
                if record.error is not None:
                    fail(record, record.error)
                    continue
                try:
                    if record.value is NOT_DECODED:
                        decoder(record)
                    append(encode(record))
                except RecordError as error:
                    fail(record, error)
                    continue
                if len(batch) >= batch_size:
                    writer.write_batch(batch)
                    report.written += len(batch)
                    batch.clear()
            if batch:
                writer.write_batch(batch)
                report.written += len(batch)
            writer.commit()
        except BaseException:
            writer.abort()
            report.status = "aborted"
            report.written = 0
            report.duration_s = time.perf_counter() - started
            raise
        finally:
            reader.close()
    report.values = decoder.describe()
    report.duration_s = time.perf_counter() - started
    report.status = "completed with failures" if report.failed else "ok"
    return report


class _closing:
    def __init__(self, thing: Any):
        self.thing = thing

    def __enter__(self) -> Any:
        return self.thing

    def __exit__(self, *exc: object) -> None:
        self.thing.close()


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    from_format: str | None = None,
    to_format: str | None = None,
    read_options: ReadOptions | None = None,
    write_options: WriteOptions | None = None,
    on_error: str = "fail",
    quarantine: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Report:
    """Convert ``src`` to ``dst`` and return the :class:`Report` (also written to ``report``).

    Raises a :class:`~shelfmigrate.errors.ShelfmigrateError` for unreadable input,
    bad options or an unwritable destination, and the first RecordError when
    ``on_error="fail"``; in every such case nothing is left at ``dst``.
    """
    check_choice("on-error", on_error, ON_ERROR_POLICIES)
    read_options = read_options or ReadOptions()
    writer = open_writer(dst, format=to_format, options=write_options)
    reader = open_reader(src, format=from_format, options=read_options)
    result = Report(
        source={"format": reader.format_name, "path": reader.path},
        destination={"format": writer.format_name, "path": writer.path},
    )
    try:
        return run(
            reader,
            writer,
            read_options=read_options,
            on_error=on_error,
            quarantine=quarantine,
            progress=progress,
            report=result,
        )
    except ShelfmigrateError as exc:
        if str(exc) not in result.errors:
            result.errors.append(str(exc))
        raise
    finally:
        if report is not None:
            write_report(report, result)


def write_report(path: str | os.PathLike[str], result: Report) -> None:
    """Write the report JSON to ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result.to_dict(), handle, indent=2, default=str)
        handle.write("\n")
