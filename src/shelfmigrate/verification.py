"""verify(): do two stores hold the same multiset of (key, decoded value)?"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .codecs import typedjson
from .errors import RecordError
from .options import ReadOptions
from .pipeline import ValueDecoder, open_reader
from .records import key_to_bytes

MAX_SHOWN = 10


def _comparable_key(key: object) -> str:
    # Byte-keyed stores cannot keep 1 and "1" apart, so keys compare by their stored bytes.
    try:
        return "b:" + key_to_bytes(key).hex()
    except TypeError:
        return "t:" + typedjson.canonical(key)


def _entries(path: str | os.PathLike[str], options: ReadOptions) -> Iterator[tuple[str, str]]:
    """(comparable key, canonical value text) for every record of a store."""
    reader = open_reader(path, options=options)
    decoder = ValueDecoder(reader, options)
    try:
        for record in reader.records():
            key = _comparable_key(record.key)
            if record.subdb is not None:
                key = f"s:{record.subdb}\x00{key}"
            if record.error is not None:
                yield key, f"<unreadable: {record.error.detail}>"
                continue
            try:
                decoder(record)
                yield key, typedjson.canonical(record.value)
            except RecordError as exc:
                yield key, f"<undecodable: {exc.detail}>"
    finally:
        reader.close()


def _digest(key: str, value: str) -> bytes:
    return hashlib.blake2b(
        f"{key}\x00{value}".encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


@dataclass
class VerifyResult:
    """Counts on both sides and the first differences, as readable lines."""

    source_records: int = 0
    destination_records: int = 0
    only_in_source: int = 0
    only_in_destination: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """True when both sides hold the same multiset."""
        return self.only_in_source == 0 and self.only_in_destination == 0


def verify(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, options: ReadOptions | None = None
) -> VerifyResult:
    """Compare the (key, value) multisets of ``src`` and ``dst``, in memory bounded by digests."""
    options = options or ReadOptions()
    balance: Counter[bytes] = Counter()
    result = VerifyResult()
    for key, value in _entries(src, options):
        balance[_digest(key, value)] += 1
        result.source_records += 1
    for key, value in _entries(dst, options):
        balance[_digest(key, value)] -= 1
        result.destination_records += 1
    differing = {digest: count for digest, count in balance.items() if count}
    result.only_in_source = sum(c for c in differing.values() if c > 0)
    result.only_in_destination = -sum(c for c in differing.values() if c < 0)
    if differing:
        result.examples = _examples(src, dst, options, differing)
    return result


def _examples(src, dst, options: ReadOptions, differing: dict[bytes, int]) -> list[str]:
    lines: list[str] = []
    for side, path, sign in (("only in source", src, 1), ("only in destination", dst, -1)):
        for key, value in _entries(path, options):
            if len(lines) >= MAX_SHOWN:
                return lines
            if differing.get(_digest(key, value), 0) * sign > 0:
                shown = value if len(value) <= 200 else value[:200] + "..."
                lines.append(f"{side}: key {_readable_key(key)} value {shown}")
    return lines


def _readable_key(key: str) -> str:
    if key.startswith("s:"):
        subdb, _, key = key[2:].partition("\x00")
        return f"{_readable_key(key)} in subdatabase {subdb!r}"
    if key.startswith("b:"):
        raw = bytes.fromhex(key[2:])
        try:
            return repr(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(raw)
    return key[2:]
