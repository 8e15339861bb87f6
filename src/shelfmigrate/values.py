"""Value codecs: turn a container's stored value into a Python object (one place for ``--values``).

Every pickle goes through :mod:`shelfmigrate.codecs.safepickle` and every marshal
dump through the pure-Python :mod:`shelfmigrate.codecs.marshal`: nothing from the
input is ever imported or called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import DecodeError
from .options import ReadOptions

Decoder = Callable[[Any], Any]


_PICKLE_PROTO_BYTES = frozenset(range(2, 6))
# First opcodes of protocol 0/1 pickles of the values shelves hold.
_PICKLE_TEXT_STARTS = frozenset(b"(}]clSVIFLNXUTKJMGhjqrpgaedt)")


def looks_like_pickle(raw: Any) -> bool:
    """True when ``raw`` starts and ends the way a pickle does (cheap, no parsing)."""
    if not isinstance(raw, bytes | bytearray) or len(raw) < 2 or raw[-1:] != b".":
        return False
    if raw[0] == 0x80:
        return raw[1] in _PICKLE_PROTO_BYTES
    return raw[0] in _PICKLE_TEXT_STARTS


def _looks_like_json(raw: Any) -> bool:
    text = raw.decode("utf-8", "strict") if isinstance(raw, bytes | bytearray) else raw
    if not isinstance(text, str):
        return False
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def guess_codec(raw: Any) -> str:
    """The codec ``--values auto`` settles on for a container whose kind of values is unknown."""
    if looks_like_pickle(raw):
        return "pickle"
    try:
        if _looks_like_json(raw):
            return "typedjson"
    except UnicodeDecodeError:
        pass
    return "raw"


def _decode_json(raw: Any) -> Any:
    if raw is None:  # SQL NULL in a JSON column: the same absence JSON calls null
        return None
    if not isinstance(raw, str | bytes | bytearray):
        raise DecodeError(f"JSON text is a string, this value is {type(raw).__name__}")
    try:
        return json.loads(raw)
    except RecursionError:
        raise DecodeError("JSON value nested too deeply") from None
    except ValueError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None


def _identity(raw: Any) -> Any:
    return raw


def make_decoder(name: str, options: ReadOptions) -> Decoder:
    """The function that decodes one stored value with codec ``name``."""
    if name == "pickle":
        from .codecs import safepickle

        unpickler = safepickle.SafeUnpickler(
            allow=options.allow, stubs=options.stubs, py2_str=options.py2_str
        )
        # loads itself refuses a value that is not bytes, with a DecodeError.
        return unpickler.loads
    if name == "marshal":
        from .codecs import marshal

        python, py2_str = options.marshal_python, options.py2_str

        def decode_marshal(raw: Any) -> Any:
            if not isinstance(raw, bytes | bytearray):
                raise DecodeError(f"a marshal dump is bytes, this value is {type(raw).__name__}")
            return marshal.loads(bytes(raw), python=python, py2_str=py2_str)

        return decode_marshal
    if name == "json":
        return _decode_json
    if name == "typedjson":
        from .codecs import typedjson

        return typedjson.decode
    if name in ("raw", "none"):
        return _identity
    raise ValueError(f"unknown value codec {name!r}")
