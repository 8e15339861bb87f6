"""inspect(): what a source is, how many records it has, and what its values look like."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

from . import detect as _detect
from .errors import UsageError
from .formats import READERS
from .options import ReadOptions, check_read_options
from .pipeline import open_reader
from .values import guess_codec, looks_like_pickle

SAMPLE_SIZE = 100


def inspect_source(
    path: str | os.PathLike[str], *, options: ReadOptions | None = None
) -> dict[str, Any]:
    """A JSON-able description of ``path``: format, details, count and a value sample."""
    if options is not None:
        check_read_options(options)
    detection = _detect.detect(path)
    info: dict[str, Any] = {
        "path": detection.path,
        "format": detection.format,
        "description": detection.description,
        "details": detection.details,
        "readable": detection.format in READERS and detection.refusal is None,
    }
    if detection.refusal:
        info["refusal"] = detection.refusal
    if not info["readable"]:
        if detection.refusal is None:
            info["note"] = "recognised, but this version has no reader for this format yet"
        return info
    try:
        reader = open_reader(path, options=options)
    except UsageError as exc:  # several SQLite tables, say: describe the file all the same
        info["note"] = exc.args[0]
        return info
    try:
        info["records"] = reader.count()
        info["source"] = reader.details()
        info.update(_sample(reader))
    finally:
        reader.close()
    return info


def _sample(reader: Any) -> dict[str, Any]:
    """The value codec guess, pickle protocols and Python 2 origin over the first records."""
    from .codecs import safepickle

    if reader.values_are_decoded:
        return {"values": "typed (decoded by the container)"}
    codecs: Counter[str] = Counter()
    protocols: Counter[int] = Counter()
    python2 = 0
    sampled = 0
    for record in itertools.islice(reader.records(), SAMPLE_SIZE):
        if record.raw is None:
            continue
        sampled += 1
        codecs[guess_codec(record.raw)] += 1
        if looks_like_pickle(record.raw):
            protocols[safepickle.protocol_of(record.raw)] += 1
            if safepickle.is_python2(record.raw):
                python2 += 1
    auto = (
        reader.auto_values
        if reader.auto_values != "sniff"
        else (codecs.most_common(1)[0][0] if codecs else "raw")
    )
    return {
        "values": auto,
        "sample": {
            "records": sampled,
            "codecs": dict(codecs),
            "pickle_protocols": {str(k): v for k, v in sorted(protocols.items())},
            "python2_pickles": python2,
        },
        "python2": bool(python2),
    }
