"""Typed JSON: JSON text that gives back exactly the value it was made from.

The format is a contract: DESIGN.md, section "Records and typed JSON
(contract)", and the README's "Typed JSON" section.  In short, a value JSON
can hold as it is (None, bool, int of any size, str, finite float, list, and
a dict whose keys are all str, none starting with ``$``) is written as plain
JSON; anything else is an object whose ``$`` member names the type::

    (1, 2)                       {"$tuple":[1,2]}
    {1: "a"}                     {"$dict":[[1,"a"]]}
    b"hi"                        {"$bytes":"aGk="}
    float("nan")                 {"$float":"nan"}
    Stub("m.C", state={"x": 1})  {"$class":"m.C","$state":{"x":1}}

A dict with a ``$`` key is always written in the ``$dict`` form, so a ``$`` key
in a JSON object is always a tag.  :func:`decode` is the exact inverse of
:func:`encode` for the typed style.

``refs="keep"`` writes a container that is reached more than once (shared, or
part of a cycle) once, tagged and numbered (``{"$list":[...],"$id":1}``), and
every later occurrence as ``{"$ref":1}``.  ``refs="expand"`` (the default)
writes shared containers out in full, up to ``max_nodes`` values and
``max_chars`` characters, and refuses a cycle.

``style="plain"`` is a lossy, one-way rendering for tools that want ordinary
JSON: no tags, nothing to decode it with.

Functions: :func:`encode` / :func:`decode` (text), :func:`to_jsonable` /
:func:`from_jsonable` (the structure ``json`` dumps and loads),
:func:`encode_record` / :func:`decode_record` (one JSON-lines record) and
:func:`canonical` (one text for equal values, to compare values as text).

Robustness: every walk here is iterative, so no input raises RecursionError;
nesting deeper than ``max_depth`` is an EncodeError / DecodeError; ints of any
size are written and read exactly without touching
``sys.set_int_max_str_digits``.  Speed: the hot path (dicts with str keys and
lists of str, int, float, bool and None) is one quick type scan, then the C
JSON encoder on the value itself; decoding text with no ``"$`` in it is just
the C JSON parser.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copyreg
import datetime as _dt
import decimal
import fractions
import itertools
import json
import json.decoder
import json.encoder
import math
import re
import uuid
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..errors import DecodeError, EncodeError, UsageError
from ..stubs import Stub

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NODES",
    "canonical",
    "decode",
    "decode_record",
    "encode",
    "encode_record",
    "from_jsonable",
    "to_jsonable",
]

#: Containers nested deeper than this are refused (EncodeError / DecodeError).
DEFAULT_MAX_DEPTH = 1000
#: At most this many values (after expanding shared references) in one value.
DEFAULT_MAX_NODES = 10_000_000
#: At most this many characters of str, bytes (as base64) and long ints in one value.
DEFAULT_MAX_CHARS = 256 * 1024 * 1024

STYLES = ("typed", "plain")
REFS = ("expand", "keep")

_SCALAR_TYPES = (str, int, float, bool, type(None))
_EMPTY = ()

# Classes that are allowed (they are real objects after decoding) but have no
# tag of their own: written in the $class form, decoded back to the real type.
_DICT_CLASSES: dict[type, str] = {
    OrderedDict: "collections.OrderedDict",
    Counter: "collections.Counter",
    defaultdict: "collections.defaultdict",
}
_DICT_CLASS_BY_NAME = {name: cls for cls, name in _DICT_CLASSES.items()}
_FRACTION = "fractions.Fraction"

# The only default_factory values a defaultdict may have (by dotted name).
_FACTORY_NAMES: dict[Any, str | None] = {
    None: None,
    list: "builtins.list",
    dict: "builtins.dict",
    set: "builtins.set",
    frozenset: "builtins.frozenset",
    tuple: "builtins.tuple",
    int: "builtins.int",
    float: "builtins.float",
    str: "builtins.str",
    bytes: "builtins.bytes",
    bool: "builtins.bool",
    OrderedDict: "collections.OrderedDict",
    Counter: "collections.Counter",
}
_FACTORIES = {name: factory for factory, name in _FACTORY_NAMES.items()}

_CONTAINERS = frozenset({list, tuple, dict, set, frozenset, OrderedDict, Counter, defaultdict})
_BIG_INT = 1 << 3000  # ints beyond this go through the path that counts their digits

_CONSTANTS = {"Ellipsis": Ellipsis, "StopIteration": StopIteration}
_FLOAT_TAGS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# --------------------------------------------------------------------------
# Integers of any size.  Python 3.11+ refuses str(int) and int(str) beyond
# sys.get_int_max_str_digits() digits (4300 by default); we never change that
# global setting, we split the number into pieces that always convert.

_SAFE_DIGITS = 600  # below sys.int_info.str_digits_check_threshold (640): never refused
_SAFE_LIMIT = 10**_SAFE_DIGITS


@lru_cache(maxsize=64)
def _pow10(k: int) -> int:
    return 10**k


def _split_width(ndigits: int) -> int:
    """A power-of-two multiple of 300 digits, at most half of ``ndigits`` (cache friendly)."""
    k = _SAFE_DIGITS // 2
    while k * 4 <= ndigits:
        k *= 2
    return k


def _digits(n: int) -> str:
    """Decimal digits of ``n >= 0``, whatever the int max str digits limit is."""
    if n < _SAFE_LIMIT:
        return int.__repr__(n)
    k = _split_width(int(n.bit_length() * 0.30102999566398))
    hi, lo = divmod(n, _pow10(k))
    return _digits(hi) + _digits(lo).zfill(k)


def _int_text(n: int) -> str:
    """``str(n)`` for an int of any size."""
    try:
        return int.__repr__(n)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return "-" + _digits(-n) if n < 0 else _digits(n)


def _int_from_digits(d: str) -> int:
    if len(d) <= _SAFE_DIGITS:
        return int(d)
    k = _split_width(len(d))
    return _int_from_digits(d[:-k]) * _pow10(k) + _int_from_digits(d[-k:])


def _parse_int(s: str) -> int:
    """``int(s)`` for a JSON integer of any length."""
    try:
        return int(s)
    except ValueError:
        pass
    negative = s[:1] == "-"
    d = s[1:] if negative else s
    if not (d.isascii() and d.isdigit()):
        raise ValueError(f"not an integer: {s[:40]!r}")
    n = _int_from_digits(d)
    return -n if negative else n


# --------------------------------------------------------------------------
# JSON text out.  The C encoder does the work; it refuses ints longer than
# the int max str digits limit and overflows the C stack on deep nesting, and
# then an iterative writer with exactly the same output takes over.


def _not_jsonable(o: object) -> Any:
    raise EncodeError(f"internal error: {type(o).__name__} is not a JSON type")


_encode_str = json.encoder.encode_basestring  # the ensure_ascii=False string encoder


def _make_encoder(sort_keys: bool) -> Callable[[Any, int], Any]:
    """The C encoder, made once (``json.dumps`` makes one per call): ``enc(obj, 0)`` -> chunks."""
    maker = getattr(json.encoder, "c_make_encoder", None)
    if maker is not None:
        try:
            enc = maker(None, _not_jsonable, _encode_str, None, ":", ",", sort_keys, False, False)
            sample = "".join(enc({"b": [1, -0.0, "\u00e9", None, True], "a": {}}, 0))
            expected = '"b":[1,-0.0,"\u00e9",null,true]'
            if sample == (
                '{"a":{},' + expected + "}" if sort_keys else "{" + expected + ',"a":{}}'
            ):
                return enc
        except Exception:  # a Python whose private encoder differs: use the public one
            pass
    encoder = json.JSONEncoder(
        ensure_ascii=False,
        allow_nan=False,
        check_circular=False,
        separators=(",", ":"),
        sort_keys=sort_keys,
        default=_not_jsonable,
    )
    return lambda obj, _level: (encoder.encode(obj),)


_encoder = _make_encoder(False)
_sorted_encoder = _make_encoder(True)

_COMMA = (",",)
_CLOSE_LIST = ("]",)
_CLOSE_OBJ = ("}",)


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _dump_iterative(obj: Any, sort_keys: bool) -> str:
    """The C encoder's output for ``obj``, without recursion and for ints of any size."""
    out: list[str] = []
    stack: list[Any] = [obj]
    while stack:
        o = stack.pop()
        t = type(o)
        if t is tuple:  # a piece of punctuation pushed below
            out.append(o[0])
        elif t is str:
            out.append(_encode_str(o))
        elif t is int:
            out.append(_int_text(o))
        elif t is float:
            if o - o != 0.0:
                raise EncodeError("internal error: a non-finite float reached the JSON writer")
            out.append(float.__repr__(o))
        elif o is None:
            out.append("null")
        elif o is True:
            out.append("true")
        elif o is False:
            out.append("false")
        elif t is list:
            if not o:
                out.append("[]")
                continue
            out.append("[")
            stack.append(_CLOSE_LIST)
            for i in range(len(o) - 1, -1, -1):
                stack.append(o[i])
                if i:
                    stack.append(_COMMA)
        elif t is dict:
            if not o:
                out.append("{}")
                continue
            items = sorted(o.items(), key=_first) if sort_keys else list(o.items())
            out.append("{")
            stack.append(_CLOSE_OBJ)
            for i in range(len(items) - 1, -1, -1):
                k, v = items[i]
                if type(k) is not str:
                    _not_jsonable(k)
                stack.append(v)
                stack.append((_encode_str(k) + ":",))
                if i:
                    stack.append(_COMMA)
        else:
            _not_jsonable(o)
    return "".join(out)


# A lone surrogate (pickle and marshal carry them in str) cannot be written as UTF-8;
# JSON spells it as a \\uXXXX escape, which json.loads turns back into the same str.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogates(text: str) -> str:
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _dumps(obj: Any) -> str:
    try:
        text = "".join(_encoder(obj, 0))
    except (ValueError, RecursionError):  # a very long int, or very deep nesting
        text = _dump_iterative(obj, False)
    return _escape_surrogates(text)


def _dumps_sorted(obj: Any) -> str:
    try:
        text = "".join(_sorted_encoder(obj, 0))
    except (ValueError, RecursionError):
        text = _dump_iterative(obj, True)
    return _escape_surrogates(text)


# --------------------------------------------------------------------------
# JSON text in.


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"not valid JSON: {name} is not a JSON number")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_big_int_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)
_scan_once = _decoder.scan_once

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def _json_error(exc: json.JSONDecodeError) -> DecodeError:
    return DecodeError(f"not valid JSON: {exc.msg} at position {exc.pos}")


def _loads(text: str, json_depth_limit: int) -> tuple[Any, int]:
    """Parse JSON text; return the value and its nesting depth when it was measured (else 0)."""
    try:  # the quick way, for text with no surrounding whitespace and nothing unusual
        obj, end = _scan_once(text, 0)
        if end == len(text):
            return obj, 0
    except (StopIteration, ValueError, RecursionError):
        pass  # the careful way below says what went wrong
    try:
        return _decoder.decode(text), 0
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None
    except RecursionError:  # nested deeper than the C parser goes
        return _parse_deep(text, json_depth_limit)
    except ValueError:  # an int longer than sys.get_int_max_str_digits()
        pass
    try:
        return _big_int_decoder.decode(text), 0
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None
    except RecursionError:
        return _parse_deep(text, json_depth_limit)
    except ValueError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None


def _parse_key(s: str, i: int) -> tuple[str, int]:
    if s[i : i + 1] != '"':
        raise DecodeError(f"not valid JSON: expecting a property name at position {i}")
    key, i = json.decoder.scanstring(s, i + 1, True)
    i = _WS.match(s, i).end()
    if s[i : i + 1] != ":":
        raise DecodeError(f"not valid JSON: expecting ':' at position {i}")
    return key, _WS.match(s, i + 1).end()


def _parse_deep(s: str, limit: int) -> tuple[Any, int]:
    """An iterative JSON parser, for input nested deeper than the C parser can go.

    Same result as ``json.loads`` (NaN and Infinity refused), or DecodeError
    when the input nests more than ``limit`` arrays and objects.
    """
    try:
        return _parse_deep_unchecked(s, limit)
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None


def _parse_deep_unchecked(s: str, limit: int) -> tuple[Any, int]:
    ws = _WS.match
    stack: list[list[Any]] = []  # [container, pending key]
    deepest = 0
    end = len(s)
    i = ws(s, 0).end()
    while True:
        c = s[i : i + 1]
        if c == "{" or c == "[":
            if len(stack) >= limit:
                raise DecodeError(f"JSON nested deeper than {limit} levels")
            deepest = max(deepest, len(stack) + 1)
            i = ws(s, i + 1).end()
            if c == "{":
                if s[i : i + 1] == "}":
                    value: Any = {}
                    i += 1
                else:
                    key, i = _parse_key(s, i)
                    stack.append([{}, key])
                    continue
            elif s[i : i + 1] == "]":
                value = []
                i += 1
            else:
                stack.append([[], None])
                continue
        elif c == '"':
            value, i = json.decoder.scanstring(s, i + 1, True)
        elif s.startswith("null", i):
            value, i = None, i + 4
        elif s.startswith("true", i):
            value, i = True, i + 4
        elif s.startswith("false", i):
            value, i = False, i + 5
        else:
            m = _NUMBER.match(s, i)
            if m is None:
                raise DecodeError(f"not valid JSON: expecting a value at position {i}")
            integer, frac, exp = m.groups()
            value = float(m.group()) if frac or exp else _parse_int(integer)
            i = m.end()
        # A value is complete: hand it to its container, then read what follows.
        while True:
            if not stack:
                i = ws(s, i).end()
                if i != end:
                    raise DecodeError(f"not valid JSON: extra data at position {i}")
                return value, deepest
            top = stack[-1]
            container = top[0]
            if type(container) is list:
                container.append(value)
            else:
                container[top[1]] = value
            i = ws(s, i).end()
            c = s[i : i + 1]
            if c == ",":
                i = ws(s, i + 1).end()
                if type(container) is dict:
                    top[1], i = _parse_key(s, i)
                break
            if c == ("]" if type(container) is list else "}"):
                i += 1
                value = container
                stack.pop()
                continue
            raise DecodeError(f"not valid JSON: expecting ',' or a closing bracket at position {i}")


def _as_text(text: str | bytes | bytearray | memoryview) -> str:
    if type(text) is str:
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"typed JSON is not valid UTF-8: {exc}") from None
    raise TypeError(f"typed JSON must be str or bytes, not {type(text).__name__}")


def _too_deep(text: str, obj: Any, depth: int, max_depth: int) -> bool:
    """Whether JSON ``obj`` (parsed from ``text``) nests more than ``max_depth`` arrays and objects.

    ``depth`` is the depth when the parser measured it, else 0.  Text shorter
    than two characters per level, or with few brackets, cannot be too deep:
    the usual record is settled without looking at ``obj``.
    """
    if depth:
        return depth > max_depth
    if len(text) <= 2 * max_depth or text.count("[") + text.count("{") <= max_depth:
        return False
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > max_depth:
            return True
        children = o.values() if type(o) is dict else o
        stack.extend((c, d + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def _may_have_tags(text: str) -> bool:
    # A tag is a member name starting with "$": in JSON text that is `"$` or
    # the escape `"\u0024`.  (A false positive only costs the slower path.)
    return '"$' in text or "\\u0024" in text


# --------------------------------------------------------------------------
# Encoding: the fast scan.


_NEVER_TAGGED = frozenset({int, bool, type(None)})


def _plain_tree(value: Any, max_depth: int, max_nodes: int, max_chars: int) -> bool:
    """True when ``value`` is its own typed JSON: plain types only, a tree, within the bounds.

    This is the hot path: every record goes through it.  Anything unusual (a
    tag needed, a shared container, a cycle, a bound reached) answers False and
    leaves the details to :class:`_Converter`.
    """
    t = type(value)
    if t is not dict and t is not list:
        if t is str:
            return len(value) <= max_chars
        if t is float:
            return value - value == 0.0  # False for nan and +-inf
        return t in _NEVER_TAGGED
    if max_depth < 1:
        return False
    never_tagged = _NEVER_TAGGED
    seen = stack = None  # made when the first nested container turns up
    obj = value
    depth = 1
    nodes = 1
    chars = 0
    while True:
        nodes += len(obj)
        if nodes > max_nodes:
            return False
        if type(obj) is dict:
            for k, v in obj.items():
                if type(k) is not str or "$" <= k < "%":  # i.e. k starts with "$"
                    return False
                chars += len(k)
                t = type(v)
                if t is str:
                    chars += len(v)
                elif t in never_tagged:
                    continue
                elif t is float:
                    if v - v != 0.0:
                        return False
                elif t is dict or t is list:
                    if depth >= max_depth:
                        return False
                    if stack is None:
                        stack = [(v, depth + 1)]
                        seen = {id(value), id(v)}
                    elif id(v) in seen:
                        return False
                    else:
                        seen.add(id(v))
                        stack.append((v, depth + 1))
                else:
                    return False
        else:
            for v in obj:
                t = type(v)
                if t is str:
                    chars += len(v)
                elif t in never_tagged:
                    continue
                elif t is float:
                    if v - v != 0.0:
                        return False
                elif t is dict or t is list:
                    if depth >= max_depth:
                        return False
                    if stack is None:
                        stack = [(v, depth + 1)]
                        seen = {id(value), id(v)}
                    elif id(v) in seen:
                        return False
                    else:
                        seen.add(id(v))
                        stack.append((v, depth + 1))
                else:
                    return False
        if chars > max_chars:
            return False
        if not stack:
            return True
        obj, depth = stack.pop()


# --------------------------------------------------------------------------
# Encoding: the general walk.

_VALUE = 0  # task kinds on the explicit stacks below
_EXIT = 1
_BUILD = 2
_KEYDONE = 3
_PAIRDONE = 4
_ARGSDONE = 5


def _qualname(t: type) -> str:
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", getattr(t, "__name__", repr(t)))
    return name if module in (None, "builtins") else f"{module}.{name}"


_SUBCLASSABLE = (
    dict,
    list,
    tuple,
    set,
    frozenset,
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    _dt.datetime,
    _dt.date,
    _dt.time,
    _dt.timedelta,
    decimal.Decimal,
    uuid.UUID,
    fractions.Fraction,
)


#: the types ``_leaf`` writes; anything else that is not a container goes through ``__reduce_ex__``
_LEAVES = (frozenset(_SUBCLASSABLE) - _CONTAINERS) | {type(None), bool, type(Ellipsis), type}
#: how many list or dict items one reduced object may give before it is refused
_MAX_REDUCED_ITEMS = 10_000_000


def _reduced_stub(obj: Any) -> Stub:
    """The ``$class`` form of an instance of a class that has no tag (one the user allowed).

    The object was built by the allowlist unpickler, so its class is allowed; its own
    ``__reduce_ex__`` says how pickle rebuilds it, which is what the ``$class`` form
    records: the class, constructor arguments, state and items.  Reductions through a
    function other than the class itself are not a class form and stay unsupported.
    """
    t = type(obj)
    if isinstance(obj, type):
        raise _unsupported(obj)
    try:
        reduced = obj.__reduce_ex__(2)
    except Exception:  # noqa: BLE001 - whatever the class raises, it has no class form
        raise _unsupported(obj) from None
    if type(reduced) is not tuple or not 2 <= len(reduced) <= 6:
        raise _unsupported(obj)
    func, args = reduced[0], reduced[1]
    if func is copyreg.__newobj__ and type(args) is tuple and args and args[0] is t:
        args = args[1:]
    elif func is not t or type(args) is not tuple:
        raise _unsupported(obj)
    state = reduced[2] if len(reduced) > 2 else None
    items = [_bounded_items(obj, part) for part in reduced[3:5]]
    items += [None] * (2 - len(items))
    return Stub(f"{t.__module__}.{t.__qualname__}", list(args) or None, state, items[0], items[1])


def _reduce_once(obj: Any, reduced: dict[int, tuple[Any, Stub]]) -> Stub:
    """``_reduced_stub(obj)``, the same Stub for the same object within one walk."""
    known = reduced.get(id(obj))
    if known is None:
        known = reduced[id(obj)] = (obj, _reduced_stub(obj))  # obj kept alive: ids stay unique
    return known[1]


def _bounded_items(obj: Any, iterator: Any) -> list[Any] | None:
    if iterator is None:
        return None
    out = list(itertools.islice(iterator, _MAX_REDUCED_ITEMS + 1))
    if len(out) > _MAX_REDUCED_ITEMS:
        raise EncodeError(f"a {_qualname(type(obj))} with more than {_MAX_REDUCED_ITEMS} items")
    return out


def _unsupported(obj: Any) -> EncodeError:
    t = type(obj)
    for base in _SUBCLASSABLE:
        if isinstance(obj, base):
            return EncodeError(
                f"cannot encode a value of type {_qualname(t)}: it is a subclass of "
                f"{_qualname(base)}, and only the class itself is supported"
            )
    if isinstance(obj, type):
        return EncodeError(f"cannot encode the class {_qualname(obj)} as a value")
    return EncodeError(f"cannot encode a value of type {_qualname(t)}")


def _depth_error(max_depth: int) -> EncodeError:
    return EncodeError(f"value is nested deeper than {max_depth} levels")


def _nodes_error(max_nodes: int) -> EncodeError:
    return EncodeError(
        f"value expands to more than {max_nodes} values (shared references are written "
        "out in full; use --refs keep to write each shared container once)"
    )


def _chars_error(max_chars: int) -> EncodeError:
    return EncodeError(
        f"value expands to more than {max_chars} characters (shared references are "
        "written out in full; use --refs keep to write each shared container once)"
    )


def _cycle_error(obj: Any) -> EncodeError:
    what = "stub" if isinstance(obj, Stub) else _qualname(type(obj))
    return EncodeError(
        f"reference cycle: a {what} contains itself, which a JSON tree cannot hold; "
        "use --refs keep to write it with $id/$ref"
    )


def _float_name(x: float) -> str:
    return "nan" if x != x else ("inf" if x > 0 else "-inf")


def _check_tz(obj: _dt.datetime | _dt.time) -> None:
    # isoformat() keeps only the UTC offset, so only a fixed offset
    # (datetime.timezone) comes back as it was; a zone with rules (zoneinfo,
    # pytz, dateutil) would come back as a bare offset, so it is refused.
    # The name of a named timezone(offset, "CET") is not kept (its offset is,
    # and equality holds); nor is `fold`, which isoformat() does not write.
    tz = obj.tzinfo
    if tz is not None and type(tz) is not _dt.timezone:
        raise EncodeError(
            f"cannot encode a {type(obj).__name__} with tzinfo of type {_qualname(type(tz))}: "
            "only fixed UTC offsets (datetime.timezone) can be written exactly"
        )


def _canonical_decimal(d: decimal.Decimal) -> str:
    """One text for all Decimals that are == (and one for all NaNs)."""
    if d.is_nan():
        return "sNaN" if d.is_snan() else "NaN"
    if d.is_infinite():
        return "-Infinity" if d.is_signed() else "Infinity"
    if not d:
        return "0"
    sign, digits, exponent = d.as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    return f"{'-' if sign else ''}{stripped}E{int(exponent) + len(text) - len(stripped)}"


class _Converter:
    """Python value -> JSON-able structure (tagged for the typed style)."""

    def __init__(
        self,
        *,
        plain: bool = False,
        keep: bool = False,
        canon: bool = False,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_id: int = 1,
    ):
        self.first_id = first_id  # refs=keep: the first $id to give
        self.plain = plain
        self.keep = keep
        self.canon = canon
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.max_chars = max_chars
        self.multi: set[int] = set()
        self.ids: dict[int, int] = {}

    # -- entry point ---------------------------------------------------

    def convert(self, value: Any) -> Any:
        plain, keep, canon = self.plain, self.keep, self.canon
        max_depth, max_nodes, max_chars = self.max_depth, self.max_nodes, self.max_chars
        # An allowed object with no tag becomes one Stub, the same one each time it is met.
        reduced: dict[int, tuple[Any, Stub]] = {}
        multi = self.multi = _multiple_containers(value, reduced) if keep else set()
        ids = self.ids
        # expand mode: id -> (output, values, chars, height) of a finished container,
        # reused (not walked again) when the container comes back: that is what
        # keeps a "memo bomb" cheap to measure and refuse.
        memo: dict[int, tuple[Any, int, int, int]] = {}
        active: set[int] = set()  # containers being walked: meeting one again is a cycle
        # Every container met stays referenced until the walk ends, so that no id()
        # above can be reused by another object (a stub subclass might make its
        # members on the fly).
        keepalive: list[Any] = []
        sort_key = self._text_of_member if keep else (_dumps_sorted if canon else _dumps)
        holder: list[Any] = [None]
        # Tasks: (_VALUE, value, depth, target, slot) puts the value's JSON form in
        # target[slot]; an _EXIT task closes a container.  A container's members
        # that are plain scalars are written at once, without a task.
        stack: list[Any] = [(_VALUE, value, 1, holder, 0)]
        pop = stack.pop
        push = stack.append
        exit_kind, value_kind, big, small = _EXIT, _VALUE, _BIG_INT, -_BIG_INT
        nodes = 1  # a container counts its members when it is opened
        chars = deepest = 0
        while stack:
            task = pop()
            if task[0] is exit_kind:
                _, oid, out, nodes0, chars0, saved, depth, post = task
                if post is not None:
                    post.sort(key=sort_key)
                active.discard(oid)
                memo[oid] = (out, nodes - nodes0, chars - chars0, deepest - depth + 1)
                if saved > deepest:
                    deepest = saved
                continue
            _, obj, depth, target, slot = task
            t = type(obj)
            if t is str:
                chars += len(obj)
                if chars > max_chars:
                    raise _chars_error(max_chars)
                target[slot] = obj
                continue
            if t is int:
                if obj.bit_length() > 3000:
                    chars += obj.bit_length() * 3 // 10
                    if chars > max_chars:
                        raise _chars_error(max_chars)
                target[slot] = obj
                continue
            if t is bool or obj is None:
                target[slot] = obj
                continue
            if t is float:
                if obj - obj == 0.0:
                    target[slot] = obj + 0.0 if canon else obj  # canonical: -0.0 -> 0.0
                else:
                    target[slot] = _float_name(obj) if plain else {"$float": _float_name(obj)}
                continue
            if t in _LEAVES:
                if t is bytearray and keep and id(obj) in multi:
                    n = ids.get(id(obj))
                    if n is not None:
                        target[slot] = {"$ref": n}
                        continue
                    n = ids[id(obj)] = len(ids) + self.first_id
                    keepalive.append(obj)
                    out, cost = self._leaf(obj, t)
                    out["$id"] = n
                else:
                    out, cost = self._leaf(obj, t)
                if cost:
                    chars += cost
                    if chars > max_chars:
                        raise _chars_error(max_chars)
                target[slot] = out
                continue
            if t not in _CONTAINERS and not isinstance(obj, Stub):
                obj = _reduce_once(obj, reduced)  # an allowed class with no tag: the $class form
                t = Stub

            # A container.
            if depth > max_depth:
                raise _depth_error(max_depth)
            oid = id(obj)
            keepalive.append(obj)
            n = 0
            if keep:
                if oid in multi:
                    n = ids.get(oid, 0)
                    if n:
                        target[slot] = {"$ref": n}
                        continue
                    n = ids[oid] = len(ids) + self.first_id
                exit_task = None
            else:
                if oid in active:
                    raise _cycle_error(obj)
                seen = memo.get(oid)
                if seen is not None:
                    out, sub_nodes, sub_chars, height = seen
                    nodes += sub_nodes
                    chars += sub_chars
                    if nodes > max_nodes:
                        raise _nodes_error(max_nodes)
                    if chars > max_chars:
                        raise _chars_error(max_chars)
                    bottom = depth + height - 1
                    if bottom > max_depth:
                        raise _depth_error(max_depth)
                    if bottom > deepest:
                        deepest = bottom
                    target[slot] = out
                    continue
                active.add(oid)
                exit_task = [exit_kind, oid, None, nodes, chars, deepest, depth, None]
                push(exit_task)
                deepest = depth
            d1 = depth + 1
            post = None

            if t is list or t is tuple or t is set or t is frozenset:
                if t is list or t is tuple:
                    members = obj
                else:
                    members = sorted(obj, key=sort_key) if keep else list(obj)
                    if not keep:
                        post = members  # sorted by their text once written
                inner = [None] * len(members)
                if plain or (t is list and not n):
                    out = inner
                elif t is list:
                    out = {"$list": inner, "$id": n}
                else:
                    tag = "$tuple" if t is tuple else ("$set" if t is set else "$frozenset")
                    out = {tag: inner, "$id": n} if n else {tag: inner}
                if post is not None:
                    post = inner
                nodes += len(members)
                for i in range(len(members) - 1, -1, -1):
                    c = members[i]
                    tc = type(c)
                    if tc is str:
                        chars += len(c)
                        inner[i] = c
                    elif (
                        (tc is int and small < c < big)
                        or tc is bool
                        or c is None
                        or (tc is float and c - c == 0.0 and not canon)
                    ):
                        inner[i] = c
                    else:
                        push((value_kind, c, d1, inner, i))

            elif t is dict:
                plain_keys = not n
                if plain_keys:
                    for k in obj:
                        if type(k) is not str or "$" <= k < "%":  # k starts with "$"
                            plain_keys = False
                            break
                if plain:
                    out, count = self._plain_object(obj, depth, push)
                    nodes += count
                elif plain_keys:
                    out = dict.fromkeys(obj)
                    nodes += len(obj)
                    for k, c in reversed(obj.items()):
                        chars += len(k)
                        tc = type(c)
                        if tc is str:
                            chars += len(c)
                            out[k] = c
                        elif (
                            (tc is int and small < c < big)
                            or tc is bool
                            or c is None
                            or (tc is float and c - c == 0.0 and not canon)
                        ):
                            out[k] = c
                        else:
                            push((value_kind, c, d1, out, k))
                else:
                    pairs, cost = self._push_pairs(obj.items(), d1, push)
                    nodes += 2 * len(pairs)
                    chars += cost
                    out = {"$dict": pairs, "$id": n} if n else {"$dict": pairs}
                    if canon:
                        post = pairs

            elif t in _DICT_CLASSES:
                if plain:
                    out, count = self._plain_object(obj, depth, push)
                    nodes += count
                else:
                    out = {"$class": _DICT_CLASSES[t]}
                    if t is defaultdict and not canon:  # equality ignores the factory
                        out["$args"] = [_factory_name(obj.default_factory)]
                    items: Any = obj.items()
                    if canon and t is Counter:  # Counter equality treats 0 as missing
                        items = [(k, v) for k, v in items if not _is_zero(v)]
                    pairs, cost = self._push_pairs(items, d1, push)
                    nodes += 2 * len(pairs)
                    chars += cost
                    out["$dictitems"] = pairs
                    if n:
                        out["$id"] = n
                    if canon and t is not OrderedDict:
                        post = pairs

            else:  # a Stub
                out, count, cost = self._stub_shell(obj, depth, push, n)
                nodes += count
                chars += cost

            if nodes > max_nodes:
                raise _nodes_error(max_nodes)
            if chars > max_chars:
                raise _chars_error(max_chars)
            target[slot] = out
            if exit_task is not None:
                exit_task[2] = out
                exit_task[7] = post
        return holder[0]

    # -- containers ----------------------------------------------------

    def _push_pairs(
        self, items: Any, d1: int, push: Callable[[Any], None]
    ) -> tuple[list[Any], int]:
        """[[key, value], ...] to fill in (plain scalars at once, the rest by tasks, in
        order), and the characters of the str written at once."""
        items = list(items)
        pairs = [[None, None] for _ in items]
        canon = self.canon
        chars = 0
        for i in range(len(items) - 1, -1, -1):
            item = items[i]
            if type(item) not in (tuple, list) or len(item) != 2:
                raise EncodeError(
                    f"cannot encode dict items: expected (key, value) pairs, got {_qualname(type(item))}"
                )
            pair = pairs[i]
            for j in (1, 0):  # the value's task goes below the key's
                c = item[j]
                tc = type(c)
                if tc is str:
                    chars += len(c)
                    pair[j] = c
                elif (
                    (tc is int and -_BIG_INT < c < _BIG_INT)
                    or tc is bool
                    or c is None
                    or (tc is float and c - c == 0.0 and not canon)
                ):
                    pair[j] = c
                else:
                    push((_VALUE, c, d1, pair, j))
        return pairs, chars

    def _plain_object(
        self, obj: Any, depth: int, push: Callable[[Any], None]
    ) -> tuple[dict[str, Any], int]:
        """Plain style: a dict as an object with str keys, and how many members it has."""
        items = [(self._plain_key(k, depth), v) for k, v in obj.items()]
        out = dict.fromkeys(k for k, _ in items)
        for k, v in reversed(items):
            push((_VALUE, v, depth + 1, out, k))
        return out, len(items)

    def _plain_key(self, key: Any, depth: int) -> str:
        """Plain style: a dict key as str (its plain JSON text when it is not a str already)."""
        t = type(key)
        if t is str:
            return key
        if t is int:
            return _int_text(key)
        try:  # a walk of its own: only a stub's dict items can nest keys in keys
            sub = _Converter(
                plain=True,
                max_depth=max(self.max_depth - depth, 1),
                max_nodes=self.max_nodes,
                max_chars=self.max_chars,
            ).convert(key)
        except RecursionError:
            raise EncodeError("dict keys are nested in dict keys too deeply") from None
        return sub if type(sub) is str else _dumps(sub)

    def _stub_shell(
        self, stub: Stub, depth: int, push: Callable[[Any], None], n: int
    ) -> tuple[dict[str, Any], int, int]:
        """A stub's JSON form with tasks for its members; how many members it has, and the
        characters of those written at once."""
        name, args, state = stub.name, stub.args, stub.state
        listitems, dictitems = stub.listitems, stub.dictitems
        if type(name) is not str:
            raise EncodeError(f"cannot encode a stub whose class name is a {type(name).__name__}")
        for what, value in (("args", args), ("listitems", listitems), ("dictitems", dictitems)):
            if value is not None and type(value) not in (tuple, list):
                raise EncodeError(
                    f"cannot encode stub {name}: its {what} is a {_qualname(type(value))}"
                )
        d1 = depth + 1
        if self.plain:
            out: dict[str, Any] = {"__class__": name}
            tasks = []
            if type(state) is dict:
                for k, v in state.items():
                    key = self._plain_key(k, depth)
                    if key != "__class__":
                        out[key] = None
                        tasks.append((v, out, key))
            elif state is not None:
                out["state"] = None
                tasks.append((state, out, "state"))
            if args:
                out["args"] = inner = [None] * len(args)
                tasks.extend((a, inner, i) for i, a in enumerate(args))
            if listitems is not None:
                out["items"] = inner = [None] * len(listitems)
                tasks.extend((a, inner, i) for i, a in enumerate(listitems))
            if dictitems is not None:
                for item in dictitems:
                    if type(item) not in (tuple, list) or len(item) != 2:
                        raise EncodeError(
                            f"cannot encode stub {name}: its dictitems are not (key, value) pairs"
                        )
                obj = {}
                out["items" if listitems is None else "dictitems"] = obj
                for k, v in dictitems:
                    key = self._plain_key(k, depth)
                    obj[key] = None
                    tasks.append((v, obj, key))
            for value, target, slot in reversed(tasks):
                push((_VALUE, value, d1, target, slot))
            return out, len(tasks), 0

        out = {"$class": name}
        cost = 0
        if args:
            out["$args"] = None
        if state is not None:
            out["$state"] = None
        if listitems is not None:
            out["$listitems"] = None
        if dictitems is not None:
            out["$dictitems"], cost = self._push_pairs(dictitems, d1, push)
        if listitems is not None:
            out["$listitems"] = inner = [None] * len(listitems)
            for i in range(len(listitems) - 1, -1, -1):
                push((_VALUE, listitems[i], d1, inner, i))
        if state is not None:
            push((_VALUE, state, d1, out, "$state"))
        if args:
            out["$args"] = inner = [None] * len(args)
            for i in range(len(args) - 1, -1, -1):
                push((_VALUE, args[i], d1, inner, i))
        if n:
            out["$id"] = n
        count = (len(args) if args else 0) + (state is not None)
        return out, count + len(listitems or ()) + 2 * len(dictitems or ()), cost

    def _text_of_member(self, member: Any) -> str:
        """refs=keep: a set member's sort key, its typed JSON with shared values expanded."""
        return _dumps(
            _Converter(
                max_depth=self.max_depth, max_nodes=self.max_nodes, max_chars=self.max_chars
            ).convert(member)
        )

    # -- everything that is not a container -----------------------------

    def _leaf(self, obj: Any, t: type) -> tuple[Any, int]:
        """(JSON-able form, characters it costs) of a value that holds no other value."""
        plain = self.plain
        if t is bytes or t is bytearray:
            text = base64.b64encode(obj).decode("ascii")
            if plain:
                return text, len(text)
            return ({"$bytes": text} if t is bytes else {"$bytearray": text}), len(text)
        if t is _dt.datetime:
            if plain:
                return obj.isoformat(), 0
            _check_tz(obj)
            if self.canon and obj.tzinfo is not None:
                with contextlib.suppress(OverflowError):  # one text for one instant
                    obj = obj.astimezone(_dt.timezone.utc)
            return {"$datetime": obj.isoformat()}, 0
        if t is _dt.date:
            return (obj.isoformat() if plain else {"$date": obj.isoformat()}), 0
        if t is decimal.Decimal:
            if plain:
                return str(obj), 0
            text = _canonical_decimal(obj) if self.canon else str(obj)
            return {"$decimal": text}, len(text)
        if t is complex:
            parts = []
            for x in (obj.real, obj.imag):
                if x - x == 0.0:
                    parts.append(x + 0.0 if self.canon else x)
                else:
                    parts.append(_float_name(x) if plain else {"$float": _float_name(x)})
            return (parts if plain else {"$complex": parts}), 0
        if t is _dt.time:
            if plain:
                return obj.isoformat(), 0
            _check_tz(obj)
            if self.canon and obj.tzinfo is not None:
                # time == time compares (seconds of the day - offset, microseconds)
                off = obj.utcoffset()
                secs = (
                    obj.hour * 3600 + obj.minute * 60 + obj.second - off.days * 86400 - off.seconds
                )
                return {"$time": [secs, obj.microsecond]}, 0
            return {"$time": obj.isoformat()}, 0
        if t is _dt.timedelta:
            if plain:
                return obj.total_seconds(), 0
            return {"$timedelta": [obj.days, obj.seconds, obj.microseconds]}, 0
        if t is uuid.UUID:
            return (str(obj) if plain else {"$uuid": str(obj)}), 0
        if t is fractions.Fraction:
            text = _int_text(obj.numerator)
            if obj.denominator != 1:
                text += "/" + _int_text(obj.denominator)
            return (text if plain else {"$class": _FRACTION, "$args": [text]}), len(text)
        if obj is Ellipsis or obj is StopIteration:
            name = "Ellipsis" if obj is Ellipsis else "StopIteration"
            return (name if plain else {"$const": name}), 0
        raise _unsupported(obj)


def _factory_name(factory: Any) -> str | None:
    try:
        return _FACTORY_NAMES[factory]
    except (KeyError, TypeError):
        allowed = ", ".join(["None"] + [n for n in _FACTORY_NAMES.values() if n])
        raise EncodeError(
            f"cannot encode a defaultdict whose default_factory is {factory!r}: it must be one of {allowed}"
        ) from None


def _is_zero(v: Any) -> bool:
    return type(v) in (int, float, bool, complex, decimal.Decimal, fractions.Fraction) and v == 0


def _stub_children(stub: Stub) -> list[Any]:
    children: list[Any] = []
    for seq in (stub.args, stub.listitems):
        if type(seq) in (tuple, list):
            children.extend(seq)
    if stub.state is not None:
        children.append(stub.state)
    if type(stub.dictitems) in (tuple, list):
        for item in stub.dictitems:
            if type(item) in (tuple, list):
                children.extend(item)
    return children


def _multiple_containers(value: Any, reduced: dict[int, tuple[Any, Stub]]) -> set[int]:
    """ids of the containers reached more than once from ``value`` (shared or cyclic).

    Objects with no tag are seen as their ``$class`` stubs (made once, kept in ``reduced``).
    """
    seen: dict[int, Any] = {}  # id -> the object, kept alive so that no id is reused
    multi: set[int] = set()
    stack = [value]
    while stack:
        obj = stack.pop()
        t = type(obj)
        if t in _SCALAR_TYPES:
            continue
        if t is list or t is tuple or t is set or t is frozenset:
            children: Any = obj
        elif t is dict or t in _DICT_CLASSES:
            children = [x for item in obj.items() for x in item]
        elif t is bytearray:
            children = _EMPTY
        elif isinstance(obj, Stub):
            children = _stub_children(obj)
        elif t not in _LEAVES:
            obj = _reduce_once(obj, reduced)
            children = _stub_children(obj)
        else:
            continue
        oid = id(obj)
        if oid in seen:
            multi.add(oid)
            continue
        seen[oid] = obj
        stack.extend(children)
    return multi


# --------------------------------------------------------------------------
# Decoding: JSON-able structure -> Python value.


class _Pending:
    """Stands for a tuple or set with an $id that is still being built (see _Reviver)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


_DEFERRED = object()  # returned by _Reviver._tagged when a BUILD task will place the value
_CONTAINER_TAGS = frozenset({"$list", "$dict", "$tuple", "$set", "$frozenset"})
_CLASS_MEMBERS = frozenset({"$class", "$args", "$state", "$listitems", "$dictitems", "$id"})


def _place(target: Any, slot: Any, value: Any) -> None:
    if type(target) is Stub:
        setattr(target, slot, value)
    else:
        target[slot] = value


class _Reviver:
    """Typed JSON structure -> Python value, rebuilding $id/$ref sharing and cycles.

    Mutable containers (list, dict, stubs, OrderedDict, ...) are created before
    their members, so a ``$ref`` inside one to an enclosing one just works.  A
    tuple (or set) is built after its members; a ``$ref`` to a tuple still
    being built (a cycle through a tuple, which only pickles can make) gets a
    placeholder that is replaced once the tuple exists.  That works when the
    placeholder sits in a list, a dict value or a stub's state (the usual case:
    ``t = ([t],)``); a placeholder that would have to go inside another tuple,
    a set, a dict key, stub args or a stub's dict item cannot be replaced, and
    raises DecodeError.
    """

    def __init__(self, *, inplace: bool, max_depth: int, max_nodes: int):
        self.inplace = (
            inplace  # reuse the parsed lists and dicts (decode) or copy them (from_jsonable)
        )
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.ids: dict[int, Any] = {}
        self.patches: dict[int, list[tuple[Any, Any]]] = {}

    def revive(self, root: Any) -> Any:
        inplace, max_depth, max_nodes = self.inplace, self.max_depth, self.max_nodes
        ids, patches = self.ids, self.patches
        holder: list[Any] = [None]
        stack: list[Any] = [(_VALUE, root, 1, holder, 0)]
        pop = stack.pop
        push = stack.append
        nodes = 0
        while stack:
            task = pop()
            kind = task[0]
            if kind == _VALUE:
                _, j, depth, target, slot = task
                nodes += 1
                if nodes > max_nodes:
                    raise DecodeError(f"value has more than {max_nodes} values")
                t = type(j)
                if t is str or t is int or t is float or t is bool or j is None:
                    value = j
                elif t is list:
                    if depth > max_depth:
                        raise DecodeError(f"value is nested deeper than {max_depth} levels")
                    value = j if inplace else [None] * len(j)
                    for i in range(len(j) - 1, -1, -1):
                        push((_VALUE, j[i], depth + 1, value, i))
                elif t is dict:
                    tagged = False
                    for k in j:
                        if type(k) is not str:
                            raise DecodeError(
                                f"a JSON object member name must be str, not {type(k).__name__}"
                            )
                        if k[:1] == "$":
                            tagged = True
                            break
                    if tagged:
                        value = self._tagged(j, depth, target, slot, push)
                        if value is _DEFERRED:
                            continue
                    else:
                        if depth > max_depth:
                            raise DecodeError(f"value is nested deeper than {max_depth} levels")
                        value = j if inplace else dict.fromkeys(j)
                        for k in reversed(j):
                            push((_VALUE, j[k], depth + 1, value, k))
                else:
                    raise DecodeError(f"not a JSON value: {type(j).__name__}")
                _place(target, slot, value)
                if type(value) is _Pending:
                    patches.setdefault(value.n, []).append((target, slot))
            elif kind == _KEYDONE:
                _, box, container, vj, depth = task
                key = box[0]
                self._check_no_pending((key,), "a dict key")
                try:
                    container[key] = None  # keeps the key's place in insertion order
                except TypeError:
                    raise DecodeError(
                        f"dict key of type {type(key).__name__} is not hashable"
                    ) from None
                push((_VALUE, vj, depth, container, key))
            elif kind == _BUILD:
                _, tag, items, n, target, slot = task
                self._check_no_pending(items, f"a {tag[1:]}")
                try:
                    value = (
                        tuple(items)
                        if tag == "$tuple"
                        else (set(items) if tag == "$set" else frozenset(items))
                    )
                except TypeError:
                    raise DecodeError(f"a {tag[1:]} member is not hashable") from None
                if n:
                    ids[n] = value
                    for ptarget, pslot in patches.pop(n, _EMPTY):
                        _place(ptarget, pslot, value)
                _place(target, slot, value)
            elif kind == _PAIRDONE:
                _, box, items, i = task
                self._check_no_pending(box, "a stub's dict item")
                items[i] = (box[0], box[1])
            else:  # _ARGSDONE
                _, stub, items = task
                self._check_no_pending(items, "a stub's args")
                stub.args = tuple(items)
        return holder[0]

    def _check_no_pending(self, items: Any, where: str) -> None:
        if self.patches and any(type(x) is _Pending for x in items):
            raise DecodeError(
                f"cannot rebuild a reference cycle that runs through {where} "
                "(a tuple or set that contains itself)"
            )

    def _register(self, n: int, value: Any) -> None:
        if n:
            self.ids[n] = value

    def _id_of(self, j: dict[str, Any]) -> int:
        n = j.get("$id", 0)
        if "$id" in j:
            if type(n) is not int or n < 1:
                raise DecodeError(f"$id must be a positive integer, not {n!r}")
            if n in self.ids:
                raise DecodeError(f"$id {n} is used twice")
        return n

    def _check_depth(self, depth: int) -> None:
        if depth > self.max_depth:
            raise DecodeError(f"value is nested deeper than {self.max_depth} levels")

    def _tagged(
        self, j: dict[str, Any], depth: int, target: Any, slot: Any, push: Callable[[Any], None]
    ) -> Any:
        if "$class" in j:
            return self._class(j, depth, push)
        n = self._id_of(j)
        tags = [k for k in j if k != "$id"]
        if len(tags) != 1:
            raise DecodeError(f"not a typed JSON object: members {sorted(j)}")
        tag = tags[0]
        val = j[tag]
        if tag == "$ref":
            if n:
                raise DecodeError("$ref cannot carry an $id")
            if type(val) is not int or val not in self.ids:
                raise DecodeError(f"$ref {val!r} does not name an earlier $id")
            return self.ids[val]
        if tag in _CONTAINER_TAGS:
            if type(val) is not list:
                raise DecodeError(f"{tag} must hold an array, not {type(val).__name__}")
            self._check_depth(depth)
            d1 = depth + 1
            if tag == "$list":
                out: Any = [None] * len(val)
                self._register(n, out)
                for i in range(len(val) - 1, -1, -1):
                    push((_VALUE, val[i], d1, out, i))
                return out
            if tag == "$dict":
                out = {}
                self._register(n, out)
                self._push_pairs(val, out, d1, push)
                return out
            items = [None] * len(val)
            if n:
                self.ids[n] = _Pending(n)
            push((_BUILD, tag, items, n, target, slot))
            for i in range(len(val) - 1, -1, -1):
                push((_VALUE, val[i], d1, items, i))
            return _DEFERRED
        if tag == "$bytearray":
            value = bytearray(_b64(val, tag))
            self._register(n, value)
            return value
        if n:
            raise DecodeError(f"{tag} cannot carry an $id")
        return _leaf(tag, val)

    @staticmethod
    def _push_pairs(pairs: Any, container: Any, d1: int, push: Callable[[Any], None]) -> None:
        if type(pairs) is not list:
            raise DecodeError(
                f"dict items must be an array of [key, value] pairs, not {type(pairs).__name__}"
            )
        for i in range(len(pairs) - 1, -1, -1):
            pair = pairs[i]
            if type(pair) is not list or len(pair) != 2:
                raise DecodeError("dict items must be [key, value] pairs")
            box = [None]
            push((_KEYDONE, box, container, pair[1], d1))
            push((_VALUE, pair[0], d1, box, 0))

    def _class(self, j: dict[str, Any], depth: int, push: Callable[[Any], None]) -> Any:
        name = j["$class"]
        if type(name) is not str:
            raise DecodeError(f"$class must be a str, not {type(name).__name__}")
        for k in j:
            if k not in _CLASS_MEMBERS:
                raise DecodeError(f"unexpected member {k!r} in a $class object")
        n = self._id_of(j)
        args = j.get("$args")
        listitems = j.get("$listitems")
        dictitems = j.get("$dictitems")
        if args is not None and type(args) is not list:
            raise DecodeError(f"$args must be an array, not {type(args).__name__}")
        d1 = depth + 1

        cls = _DICT_CLASS_BY_NAME.get(name)
        if cls is not None:
            if "$state" in j or listitems is not None:
                raise DecodeError(f"{name} takes only $dictitems")
            if cls is defaultdict:
                if (
                    args is None
                    or len(args) != 1
                    or type(args[0]) not in (str, type(None))
                    or args[0] not in _FACTORIES
                ):
                    raise DecodeError(
                        f"a defaultdict needs $args [factory], one of {sorted(map(str, _FACTORIES))}"
                    )
                obj: Any = defaultdict(_FACTORIES[args[0]])
            elif args is not None:
                raise DecodeError(f"{name} takes no $args")
            else:
                obj = cls()
            self._check_depth(depth)
            self._register(n, obj)
            if dictitems is not None:
                self._push_pairs(dictitems, obj, d1, push)
            return obj

        if name == _FRACTION:
            if "$state" in j or listitems is not None or dictitems is not None:
                raise DecodeError(f"{name} takes only $args")
            if args is None or len(args) != 1 or type(args[0]) is not str:
                raise DecodeError(f'{name} needs $args ["numerator/denominator"]')
            obj = _fraction(args[0])
            self._register(n, obj)
            return obj

        self._check_depth(depth)
        stub = Stub(name)
        self._register(n, stub)
        # Members are pushed last-first, so they are decoded in document order.
        if dictitems is not None:
            if type(dictitems) is not list:
                raise DecodeError("$dictitems must be an array of [key, value] pairs")
            stub.dictitems = items = [None] * len(dictitems)
            for i in range(len(dictitems) - 1, -1, -1):
                pair = dictitems[i]
                if type(pair) is not list or len(pair) != 2:
                    raise DecodeError("$dictitems must be an array of [key, value] pairs")
                box = [None, None]
                push((_PAIRDONE, box, items, i))
                push((_VALUE, pair[1], d1, box, 1))
                push((_VALUE, pair[0], d1, box, 0))
        if listitems is not None:
            if type(listitems) is not list:
                raise DecodeError("$listitems must be an array")
            stub.listitems = items = [None] * len(listitems)
            for i in range(len(listitems) - 1, -1, -1):
                push((_VALUE, listitems[i], d1, items, i))
        if "$state" in j:
            push((_VALUE, j["$state"], d1, stub, "state"))
        if args is not None:
            items = [None] * len(args)
            push((_ARGSDONE, stub, items))
            for i in range(len(args) - 1, -1, -1):
                push((_VALUE, args[i], d1, items, i))
        return stub


_FRACTION_TEXT = re.compile(r"(-?[0-9]+)(?:/([0-9]+))?")


def _fraction(text: str) -> fractions.Fraction:
    m = _FRACTION_TEXT.fullmatch(text)
    if m is None or m.group(2) is not None and not m.group(2).strip("0"):
        raise DecodeError(f"not a fraction: {text[:40]!r}")
    num, den = m.groups()
    return fractions.Fraction(_parse_int(num), _parse_int(den) if den else 1)


def _b64(val: Any, tag: str) -> bytes:
    if type(val) is not str:
        raise DecodeError(f"{tag} must hold a base64 str, not {type(val).__name__}")
    try:
        return base64.b64decode(val, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{tag} holds invalid base64") from None


def _float_part(x: Any, tag: str) -> float:
    if type(x) is float or type(x) is int:
        return float(x)
    if type(x) is dict and len(x) == 1 and x.get("$float") in _FLOAT_TAGS:
        return _FLOAT_TAGS[x["$float"]]
    raise DecodeError(f"{tag} parts must be numbers or $float objects")


def _leaf(tag: str, val: Any) -> Any:
    """Decode a tag that stands for a value without members."""
    try:
        if tag == "$bytes":
            return _b64(val, tag)
        if tag == "$float":
            if type(val) is str and val in _FLOAT_TAGS:
                return _FLOAT_TAGS[val]
            raise DecodeError(f'$float must be "nan", "inf" or "-inf", not {val!r}')
        if tag == "$complex":
            if type(val) is not list or len(val) != 2:
                raise DecodeError("$complex must hold [real, imag]")
            return complex(_float_part(val[0], tag), _float_part(val[1], tag))
        if tag == "$const":
            if type(val) is str and val in _CONSTANTS:
                return _CONSTANTS[val]
            raise DecodeError(f"unknown $const {val!r}")
        if tag == "$timedelta":
            if type(val) is not list or len(val) != 3 or any(type(x) is not int for x in val):
                raise DecodeError("$timedelta must hold [days, seconds, microseconds]")
            return _dt.timedelta(days=val[0], seconds=val[1], microseconds=val[2])
        parse = _TEXT_TAGS.get(tag)
        if parse is None:
            raise DecodeError(f"unknown typed JSON tag {tag!r}")
        if type(val) is not str:
            raise DecodeError(f"{tag} must hold a str, not {type(val).__name__}")
        return parse(val)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        raise DecodeError(f"invalid {tag} value {str(val)[:60]!r}: {exc}") from None


_UTC_OFFSET = re.compile(r"([+-])([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{6}))?)?\Z")


def _from_isoformat(cls: Any) -> Callable[[str], Any]:
    """``cls.fromisoformat``, with the UTC offset read here: some Pythons drop a
    sub-second offset (``+00:00:00.000001`` reads as UTC on 3.11)."""

    def parse(text: str) -> Any:
        m = _UTC_OFFSET.search(text)
        if m is None:
            return cls.fromisoformat(text)
        sign, hours, minutes, seconds, micros = m.groups()
        offset = _dt.timedelta(
            hours=int(hours),
            minutes=int(minutes),
            seconds=int(seconds or 0),
            microseconds=int(micros or 0),
        )
        tz = _dt.timezone(-offset if sign == "-" else offset)
        return cls.fromisoformat(text[: m.start()]).replace(tzinfo=tz)

    return parse


_TEXT_TAGS: dict[str, Callable[[str], Any]] = {
    "$datetime": _from_isoformat(_dt.datetime),
    "$date": _dt.date.fromisoformat,
    "$time": _from_isoformat(_dt.time),
    "$decimal": decimal.Decimal,
    "$uuid": uuid.UUID,
}


# --------------------------------------------------------------------------
# Public API.


def _check_options(style: str, refs: str) -> None:
    if style not in STYLES:
        raise UsageError(f"unknown JSON style {style!r}: use 'typed' or 'plain'")
    if refs not in REFS:
        raise UsageError(f"unknown refs mode {refs!r}: use 'expand' or 'keep'")
    if style == "plain" and refs == "keep":
        raise UsageError(
            "refs 'keep' needs the typed JSON style: plain JSON cannot write a reference"
        )


def _to_jsonable(
    value: Any, style: str, refs: str, max_depth: int, max_nodes: int, max_chars: int
) -> Any:
    if _plain_tree(value, max_depth, max_nodes, max_chars):
        return value
    return _Converter(
        plain=style == "plain",
        keep=refs == "keep",
        max_depth=max_depth,
        max_nodes=max_nodes,
        max_chars=max_chars,
    ).convert(value)


def to_jsonable(
    value: Any,
    *,
    style: str = "typed",
    refs: str = "expand",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Any:
    """Return the JSON-able structure (dicts, lists, str, int, float, bool, None) for ``value``.

    A value that needs no tag is returned as it is (the same object); with
    ``refs="expand"`` a shared container may appear several times as one
    object.  Raise EncodeError for a value that cannot be written.
    """
    if style != "typed" or refs != "expand":
        _check_options(style, refs)
    return _to_jsonable(value, style, refs, max_depth, max_nodes, max_chars)


def encode(
    value: Any,
    *,
    style: str = "typed",
    refs: str = "expand",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> str:
    """Return ``value`` as compact typed JSON text (or plain JSON with ``style="plain"``)."""
    if style != "typed" or refs != "expand":
        _check_options(style, refs)
    return _dumps(_to_jsonable(value, style, refs, max_depth, max_nodes, max_chars))


def value_encoder(*, style: str = "typed", refs: str = "expand") -> Callable[[Any], str]:
    """``encode`` with its options bound once: what a writer calls for every record."""
    _check_options(style, refs)
    plain, keep = style == "plain", refs == "keep"
    max_depth, max_nodes, max_chars = DEFAULT_MAX_DEPTH, DEFAULT_MAX_NODES, DEFAULT_MAX_CHARS
    plain_tree, dumps = _plain_tree, _dumps

    def encode_value(value: Any) -> str:
        if plain_tree(value, max_depth, max_nodes, max_chars):
            return dumps(value)
        converter = _Converter(
            plain=plain, keep=keep, max_depth=max_depth, max_nodes=max_nodes, max_chars=max_chars
        )
        return dumps(converter.convert(value))

    return encode_value


def encode_record(
    key: Any,
    value: Any,
    *,
    style: str = "typed",
    refs: str = "expand",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_chars: int = DEFAULT_MAX_CHARS,
    subdb: str | None = None,
) -> str:
    """Return the JSON-lines line ``{"key":K,"value":V}`` for one record (no newline).

    ``subdb`` (a Berkeley DB subdatabase name) comes first as ``"subdb"`` when given.

    Key and value are encoded separately (nothing is shared between them), but
    with ``refs="keep"`` their ``$id`` numbers run on from the key to the value,
    so the whole line is one typed JSON value too.  An EncodeError carries the
    record key.
    """
    if style != "typed" or refs != "expand":
        _check_options(style, refs)
    if type(value) is bytes and type(key) is str and style == "typed" and subdb is None:
        # The common line of a raw copy (``--values raw``): written directly, same text.
        text = binascii.b2a_base64(value, newline=False).decode("ascii")
        if len(text) <= max_chars and len(key) <= max_chars:
            key_text = _encode_str(key)
            if not key_text.isascii():
                key_text = _escape_surrogates(key_text)
            return '{"key":' + key_text + ',"value":{"$bytes":"' + text + '"}}'
    try:
        if type(key) is str and len(key) <= max_chars:
            key_json = key  # the usual key: no need to look further
            ids_used = 0
        elif refs == "keep" and not _plain_tree(key, max_depth, max_nodes, max_chars):
            converter = _Converter(
                keep=True, max_depth=max_depth, max_nodes=max_nodes, max_chars=max_chars
            )
            key_json = converter.convert(key)
            ids_used = len(converter.ids)
        else:
            key_json = _to_jsonable(key, style, refs, max_depth, max_nodes, max_chars)
            ids_used = 0
        if ids_used:
            value_json = _Converter(
                keep=True,
                max_depth=max_depth,
                max_nodes=max_nodes,
                max_chars=max_chars,
                first_id=ids_used + 1,
            ).convert(value)
        else:
            value_json = _to_jsonable(value, style, refs, max_depth, max_nodes, max_chars)
        if subdb is not None:
            return _dumps({"subdb": subdb, "key": key_json, "value": value_json})
        return _dumps({"key": key_json, "value": value_json})
    except EncodeError as exc:
        raise exc.with_key(key) from None


def canonical(
    value: Any,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> str:
    """Return one text for all values equal to ``value``, for comparing values as text.

    Typed JSON with object members sorted, unordered items (dicts, Counter,
    defaultdict, sets) sorted by their canonical text, and the values that
    compare equal in different spellings made one: -0.0 and 0.0, Decimals of
    one value, aware datetimes and times of one instant, zero Counter counts,
    a defaultdict's factory.  Two values that are == with the same types all
    the way down give the same text, and so does nan with nan.  Ordered items
    (lists, OrderedDict, a stub's items) keep their order.  Shared references
    are expanded; a cycle raises EncodeError.
    """
    if _plain_tree(value, max_depth, max_nodes, max_chars):
        text = _dumps_sorted(value)
        if "-0.0" not in text:  # else a -0.0 (or a look-alike) to make 0.0: the slow path
            return text
    converter = _Converter(
        canon=True, max_depth=max_depth, max_nodes=max_nodes, max_chars=max_chars
    )
    return _dumps_sorted(converter.convert(value))


def decode(
    text: str | bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Any:
    """Return the value that typed JSON ``text`` stands for (the inverse of :func:`encode`).

    Raise DecodeError for text that is not JSON or not valid typed JSON, or
    that is nested deeper than ``max_depth`` levels.
    """
    s = _as_text(text)
    obj, depth = _loads(s, 3 * max_depth + 3)
    if not _may_have_tags(s):
        if _too_deep(s, obj, depth, max_depth):
            raise DecodeError(f"value is nested deeper than {max_depth} levels")
        return obj
    return _Reviver(inplace=True, max_depth=max_depth, max_nodes=max_nodes).revive(obj)


def decode_record(
    line: str | bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> tuple[Any, Any]:
    """Return ``(key, value)`` from a JSON-lines line written by :func:`encode_record`."""
    key, value, _ = decode_record_in_subdb(line, max_depth=max_depth, max_nodes=max_nodes)
    return key, value


def decode_record_in_subdb(
    line: str | bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> tuple[Any, Any, str | None]:
    """Return ``(key, value, subdb)`` from a JSON-lines line; ``subdb`` is None when absent."""
    s = _as_text(line)
    obj, depth = _loads(s, 3 * max_depth + 4)
    subdb = None
    if type(obj) is dict and len(obj) == 3 and "subdb" in obj:
        subdb = obj.pop("subdb")
        if type(subdb) is not str:
            raise DecodeError('the "subdb" member of a record must be a string')
    if type(obj) is not dict or len(obj) != 2 or "key" not in obj or "value" not in obj:
        raise DecodeError(
            'a record must be a JSON object with exactly the members "key" and "value" '
            '(and "subdb" for a record of a subdatabase)'
        )
    if not _may_have_tags(s):
        if _too_deep(s, obj, depth, max_depth + 1):
            raise DecodeError(f"value is nested deeper than {max_depth} levels")
        return obj["key"], obj["value"], subdb
    reviver = _Reviver(inplace=True, max_depth=max_depth, max_nodes=max_nodes)
    key = reviver.revive(obj["key"])
    try:
        value = reviver.revive(obj["value"])
    except DecodeError as exc:
        raise exc.with_key(key) from None
    return key, value, subdb


def from_jsonable(
    obj: Any,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Any:
    """Return the value a typed JSON-able structure stands for (the inverse of :func:`to_jsonable`).

    ``obj`` is not changed: plain lists and dicts are copied.
    """
    return _Reviver(inplace=False, max_depth=max_depth, max_nodes=max_nodes).revive(obj)
