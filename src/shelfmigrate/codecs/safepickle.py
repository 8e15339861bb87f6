"""The allowlist unpickler: the one decoder for every pickle shelfmigrate reads.

Nothing named in a pickle is ever imported or called.  The C unpickler does the
parsing (it is fast and loads deep structures without recursion); every global
it asks for goes through :meth:`_Policy.resolve`, which hands back only objects
written in this module:

1. The Python 2 name mapping is applied first (``__builtin__`` -> ``builtins``,
   ``copy_reg`` -> ``copyreg``, ``__builtin__.long`` -> ``builtins.int``, ...), from
   the data tables of :mod:`_compat_pickle`.  It is applied whatever the protocol,
   which only makes more legacy spellings readable: names are never imported.
2. :data:`DEFAULT_ALLOWLIST` names give a *validating* stand-in: a class whose
   ``__new__`` checks the argument shape and builds the real value
   (``datetime``, ``Decimal``, ``set``, ...), or a callable that checks its
   arguments (``_codecs.encode``, ``copyreg._reconstructor``), or a reference that
   refuses to be called (``builtins.int``, used as a ``defaultdict`` factory or a
   ``_reconstructor`` base).
3. :data:`GADGETS` names (and dunder segments, private interpreter modules and
   protocol-4 attribute walks) raise :class:`UnsafePickleError`, also in stub mode:
   a stub never hides an attack.
4. Names given with ``allow=`` are imported for real: the caller trusts them.
5. Anything else becomes, with ``stubs=True``, a per-name :class:`Stub` subclass
   whose instances record the arguments, state and items the pickle gave them.

BUILD, APPEND and friends can only ever reach objects of this module: every
class handed out has a metaclass whose ``__setstate__``/``append``/``extend``
refuse and whose ``__setattr__`` refuses, every callable handed out refuses
``__setstate__``, and values built by the stand-ins are checked after the load
(an ``OrderedDict`` that was given attributes, a ``defaultdict`` whose factory
was replaced, a ``Fraction`` whose slots were rewritten, a ``UUID`` that never
got its state: all refused).

Python 2 ``str`` (the STRING/BINSTRING/SHORT_BINSTRING opcodes) follows
``py2_str``:

* ``"latin1"``: ``encoding="latin1"``, exactly what ``pickle.loads`` does.
* ``"bytes"``: ``encoding="bytes"``, Python 2 ``str`` stays ``bytes``.
* ``"auto"`` (default): text when the bytes are valid UTF-8, else ``bytes``.  The
  first reading decodes Python 2 ``str`` as strict ASCII in C (ASCII text is the
  same in every mode).  Only when that fails is the pickle read again with a
  private codec that returns marker ``str`` subclasses, which the post-load walk
  turns into ``str`` or ``bytes``.  Bytes made on purpose (``_codecs.encode``,
  ``bytes(...)``, BINBYTES) are never markers, so they stay ``bytes``.  Python 2
  compared a non-ASCII ``str`` unequal to every ``unicode``; the markers do the
  same during the load, and when a decoded key would collide with another key,
  it is kept as ``bytes`` instead (nothing is dropped).

Stub representation (see ``DESIGN.md``, typed JSON): ``name`` is the mapped
dotted name; ``args`` a list of the positional arguments of REDUCE / NEWOBJ /
INST / OBJ, or None when there were none.  NEWOBJ_EX keyword arguments are
appended to ``args`` as one final dict and also kept in ``stub.kwargs``.
``state`` is the BUILD state exactly as given (a second BUILD is refused);
``listitems`` come from APPEND/APPENDS and a ``list`` base of
``copyreg._reconstructor``; ``dictitems`` is a list of ``[key, value]`` lists from
SETITEM/SETITEMS and a ``dict`` base.  Another ``_reconstructor`` base (``int``,
``str``, ``tuple``, ...) gives ``args=[base_state]``, which is what protocol 2
writes for the same object.  A ``datetime``/``time`` whose tzinfo is a stub
(``pytz``) becomes ``Stub("datetime.datetime", args=[naive_value, tz_stub])``.
A class referenced as a value (not instantiated) comes back as its stub class
(``issubclass(x, Stub)``, name in ``x.global_name``); an allowlisted one comes back
as the real class or function.

Speed: a pickle that names no global at all is read by C ``pickle.loads``
itself, guarded by an audit hook (see "The fast path" below); only pickles with
globals, non-ASCII Python 2 ``str`` or anything odd take the full path (a C
unpickler subclass per pickle plus, when globals were used, the post-load walk).

Pre-scan: before any byte reaches the C unpickler (fast path, full path and
each pickle of :func:`load_stream`), :func:`.pickle_scan.scan` walks every
opcode with its argument and refuses unknown opcodes, a missing STOP, any
declared length past the end of the data (BINBYTES8/BINUNICODE8/BYTEARRAY8
would otherwise be allocated before they are read) and memo indexes larger than
the pickle's size (the C memo array grows to the largest PUT/LONG_BINPUT index).
It returns the end of the pickle, so trailing data is refused before loading and
a stream is cut into exact pickles.

Limits and structure (see :mod:`.pickle_scan`): the strict pre-scan refuses
pickles over 1 GiB, values over 256 MiB, LONG4 over 64 KiB, text INT/LONG over
100,000 digits, a second PROTO with a different value and out-of-band buffers
(NEXT_BUFFER/READONLY_BUFFER).  A text INT/LONG longer than the host's ``int()``
accepts (``sys.get_int_max_str_digits()``, process-wide, never changed here)
makes the load fail once; the pickle is then read again with those opcodes
rewritten as equal LONG4 of the same size (:func:`.pickle_scan.rewrite_text_ints`).

Structure: plain ``pickle.loads`` ignores a MARK still open at STOP and
assigns ``list[k] = v`` for a SETITEM on a list; neither is ever written by a
pickler, and both are refused here, on both paths, before loading.  The strict
pre-scan proves the structure (every MARK consumed, SETITEM(S) only on a dict
or an object made by a global, APPEND(S) only on a list or such an object,
ADDITEMS only on a set or such an object, no stack underflow) in three steps,
each sound on its own (see :mod:`.pickle_scan`):

1. the *structured run*, the same regex call that checks the opcodes, for the
   shapes picklers write (the text grammar: protocol 0 values nested four
   levels; the binary run: three MARK groups deep): about 0.3 us more than
   the flat scan.  Its patterns take 0.13 s (text) and 0.23 s (binary) to
   compile, so a :class:`SafeUnpickler` compiles one only after
   _COMPILE_AFTER records that needed it (until then step 2 reads them);
2. otherwise the *skeleton proof*: the opcode bytes alone (one ``findall``), a
   Python walk of their stack effects, and its verdict kept per skeleton, so a
   store's repeated shapes cost about 3 us (protocol 4) to 5 us (protocol 0)
   each.  A :class:`SafeUnpickler` whose structured run failed on a record
   goes straight to this step for the next _STRUCTURED_RETRY records (records
   of one store look alike);
3. otherwise :func:`.pickle_scan.check_structure`, the exact walk with the
   memo (about 7 us on a small pickle), which refuses with a message naming
   the opcode.  It also runs for a BYTEARRAY8 opcode (the only built-in
   besides list that APPEND(S) extends) and for more tuple opcodes than 1000
   (:func:`.pickle_scan.tuple_bound`; the C unpickler hashes a tuple used as a
   key recursively, and a 1,000,000-deep one overflows the C stack).

Stand-ins and stubs refuse BUILD/APPEND/SETITEM on themselves.

Nesting depth: a value needs a container opcode per level, so a pickle with at
most 1000 of them (:func:`.pickle_scan.nesting_bound`, byte counts) cannot nest
deeper than 1000 and costs nothing more.  Above that the loaded value is
measured by :func:`_check_depth`: ``marshal.dumps`` for plain values (C, about
a sixth of the load; its fixed limit is 2000 levels) and an iterative walk
(1000 levels) for values with stubs or allowlisted objects.  The C unpickler
itself loads deep values without recursion, so measuring after loading is safe.
"""

from __future__ import annotations

import _compat_pickle
import _pickle
import codecs
import collections
import copyreg
import datetime
import decimal
import fractions
import functools
import importlib
import itertools
import marshal
import operator
import os
import pickle
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from ..errors import DecodeError, ShelfmigrateError, UnsafePickleError, UsageError
from ..stubs import Stub
from .pickle_scan import _NCAP as _SMALL_PICKLE
from .pickle_scan import _SBY_CAP as _STRUCTURED_BY_SIZE
from .pickle_scan import _TBY_CAP as _TEXT_BY_SIZE
from .pickle_scan import (
    _U64,
    BINARY_FIRST,
    BY_SKELETON,
    MAX_DEPTH,
    RUN_IF_COMPILED,
    RUN_STRUCTURED,
    SKIP_STRUCTURED,
    Incomplete,
    check_structure,
    nesting_bound,
    rewrite_text_ints,
    scan,
    scan_stream,
)

__all__ = [
    "DEFAULT_ALLOWLIST",
    "GADGETS",
    "SafeUnpickler",
    "is_python2",
    "load_stream",
    "loads",
    "map_py2_name",
    "protocol_of",
    "stub_class",
]

PY2_STR_MODES = ("auto", "bytes", "latin1")

# Caps on what one argument of an allowlisted constructor may be.
_MAX_DECIMAL_CHARS = 10_000
_MAX_FRACTION_BITS = 100_000
# At most this many distinct stub classes and resolved names are cached; beyond
# that they are still made, just not kept (a pickle full of made-up names must
# not grow memory for the rest of the run).
_MAX_CACHED_NAMES = 10_000


# --------------------------------------------------------------------------
# Python 2 names

_PY2_MODULES: dict[str, str] = dict(_compat_pickle.IMPORT_MAPPING)
_PY2_MODULES.setdefault("exceptions", "builtins")
_PY2_NAMES: dict[tuple[str, str], tuple[str, str]] = dict(_compat_pickle.NAME_MAPPING)


def map_py2_name(module: str, name: str) -> tuple[str, str]:
    """Return the Python 3 spelling of a global, as Python 3's unpickler maps it."""
    pair = _PY2_NAMES.get((module, name))
    if pair is not None:
        return pair
    return _PY2_MODULES.get(module, module), name


# --------------------------------------------------------------------------
# Gadgets: names that are refused, also in stub mode (stubbing would hide them)

_RUNS = "runs a shell command"
_OS = "operating-system access (runs programs, reads and writes files)"
_CODE = "runs arbitrary Python code"
_NESTED = "nested deserialisation (a pickle inside the pickle)"
_FILES = "file or network access"

GADGETS: dict[str, str] = {
    # processes and the operating system
    "os": _OS,
    "os.system": _RUNS,
    "os.popen": _RUNS,
    "posix": _OS + " (the C twin of os)",
    "posix.system": _RUNS,
    "nt": _OS + " (the C twin of os on Windows)",
    "nt.system": _RUNS,
    "posixpath": "path functions that read the environment and the filesystem",
    "ntpath": "path functions that read the environment and the filesystem",
    "subprocess": "runs programs",
    "subprocess.getoutput": _RUNS,
    "subprocess.check_output": "runs a program",
    "commands": _RUNS + " (Python 2 commands module)",
    "pty": "spawns processes on a terminal",
    "multiprocessing": "starts processes and runs callables",
    "asyncio": "runs programs and callbacks",
    "signal": "installs signal handlers",
    "ctypes": "calls native code",
    "cffi": "calls native code",
    "pip": "installs packages (runs setup code)",
    "ensurepip": "runs pip",
    "venv": "creates environments and runs pip",
    "site": "changes the import path and runs .pth code",
    "atexit": "registers callables to run at exit",
    "sys": "interpreter internals (sys.modules, tracing hooks)",
    "gc": "interpreter internals (reaches every live object)",
    "threading": "starts threads that run callables",
    "sched": "runs callables",
    "faulthandler": "writes to files and registers signal handlers",
    "resource": "changes process limits",
    "fcntl": "file-descriptor control",
    "mmap": "maps files into memory",
    "winreg": "reads and writes the Windows registry",
    "msvcrt": "Windows process internals",
    # code runners
    "runpy": _CODE,
    "code": _CODE,
    "codeop": "compiles Python code",
    "timeit": _CODE,
    "cProfile": _CODE,
    "profile": _CODE,
    "trace": _CODE,
    "pdb": _CODE,
    "bdb": _CODE,
    "doctest": _CODE,
    "pydoc": "runs code and pagers (pydoc.locate, pipepager)",
    "idlelib": _CODE,
    "lib2to3": _CODE,
    "importlib": "imports modules by name",
    "pkgutil": "imports modules by name (pkgutil.resolve_name)",
    "zipimport": "imports modules",
    "imp": "imports modules",
    "inspect": "introspection that reaches any object",
    "typing.get_type_hints": "evaluates strings as code",
    "typing.ForwardRef": "evaluates strings as code",
    "logging.config": "builds objects from configuration ('()' factories)",
    "logging.handlers": _FILES,
    "logging.FileHandler": "opens files",
    "mailcap": _RUNS,
    "unittest.mock": "calls and patches arbitrary objects",
    "distutils": _FILES,
    "setuptools": "runs build code",
    "test": "CPython's test package (runs code)",
    # callable wrappers and attribute walkers
    "functools": "wraps callables (partial, reduce)",
    "operator": "calls and walks attributes (attrgetter, methodcaller)",
    "itertools": "lazy iterator adapters that hide calls",
    "types": "builds functions and code objects",
    "marshal": "loads code objects",
    "weakref": "registers callbacks",
    "string": "format-string attribute lookups (Formatter, Template)",
    "copyreg": "mutates the pickle registry and calls constructors",
    "copy_reg": "mutates the pickle registry and calls constructors",
    "uuid": "runs programs (only uuid.UUID is allowed)",
    "abc": "class machinery",
    "builtins.eval": "evaluates Python code",
    "builtins.exec": "executes Python code",
    "builtins.compile": "compiles Python code",
    "builtins.execfile": "executes a Python file",
    "builtins.getattr": "reads any attribute (reaches everything)",
    "builtins.slice": "lets SETITEM grow a list by itself (l[0:0] = l doubles it): a memory bomb",
    "builtins.setattr": "writes any attribute",
    "builtins.delattr": "deletes any attribute",
    "builtins.hasattr": "runs attribute lookups",
    "builtins.open": "opens files",
    "builtins.file": "opens files",
    "builtins.input": "reads the terminal",
    "builtins.raw_input": "reads the terminal",
    "builtins.__import__": "imports modules",
    "builtins.reload": "reloads modules",
    "builtins.globals": "exposes interpreter namespaces",
    "builtins.locals": "exposes interpreter namespaces",
    "builtins.vars": "exposes object namespaces",
    "builtins.dir": "introspection",
    "builtins.breakpoint": "starts a debugger",
    "builtins.help": "starts a pager",
    "builtins.type": "builds classes",
    "builtins.super": "reaches base-class methods",
    "builtins.memoryview": "raw buffer access",
    "builtins.object.__new__": "creates objects of any class",
    "builtins.range": "lazy sequence (denial of service when expanded)",
    "builtins.map": "lazy call adapter",
    "builtins.filter": "lazy call adapter",
    "builtins.iter": "calls until a sentinel",
    "builtins.next": "advances iterators",
    "builtins.apply": "calls anything",
    "builtins.print": "writes output (a common probe)",
    "builtins.exit": "exits the interpreter",
    "builtins.quit": "exits the interpreter",
    "builtins.classmethod": "descriptor construction",
    "builtins.staticmethod": "descriptor construction",
    "builtins.property": "descriptor construction",
    # nested deserialisation
    "pickle": _NESTED,
    "cPickle": _NESTED,
    "pickletools": _NESTED,
    "shelve": _NESTED + " and opens files",
    "dbm": _NESTED + " and opens files",
    "anydbm": "opens database files",
    "dumbdbm": "opens database files",
    "whichdb": "opens database files",
    "gdbm": "opens database files",
    "dbhash": "opens database files",
    "bsddb": "opens database files",
    "joblib": _NESTED,
    "dill": _NESTED,
    "cloudpickle": _NESTED,
    "yaml": _NESTED + " (yaml.load)",
    "jsonpickle": _NESTED,
    "numpy.load": _NESTED,
    "numpy.lib.npyio": _NESTED,
    "numpy.testing": _CODE + " (numpy.testing._private.utils.runstring)",
    "numpy.f2py": "evaluates strings as code",
    "numpy.ctypeslib": "loads native libraries",
    "numpy.distutils": _CODE,
    "pandas.read_pickle": _NESTED,
    "pandas.io": _FILES,
    "pandas.read_csv": "reads files",
    "torch.load": _NESTED,
    "torch.serialization": _NESTED,
    "torch.storage._load_from_bytes": _NESTED,
    "torch.hub": "downloads and runs code",
    "torch.utils.collect_env": _RUNS,
    "torch.utils.bottleneck": _CODE,
    "torch.utils._config_module": _CODE,
    "torch._inductor": "compiles and loads native code",
    "torch._dynamo": _CODE,
    "torch.jit.unsupported_tensor_ops": _CODE,
    "torch.fx.experimental.symbolic_shapes": _CODE,
    "mlflow": _CODE,
    # files and network
    "io": _FILES + " (io.open, FileIO)",
    "StringIO": "file objects (Python 2)",
    "cStringIO": "file objects (Python 2)",
    "codecs": _FILES + " (codecs.open) and decoders that decompress",
    "_codecs": "codec machinery: only _codecs.encode(str, 'latin1') is allowed",
    "_codecs.decode": "decodes with any codec (zlib/base64 bombs, nested payloads)",
    "tempfile": _FILES,
    "shutil": _FILES,
    "glob": "lists the filesystem",
    "fileinput": "reads files",
    "linecache": "reads files",
    "zipfile": _FILES,
    "tarfile": _FILES,
    "gzip": _FILES,
    "bz2": _FILES,
    "lzma": _FILES,
    "zlib": "decompression bombs",
    "sqlite3": _FILES,
    "socket": _FILES,
    "ssl": _FILES,
    "select": _FILES,
    "selectors": _FILES,
    "socketserver": _FILES,
    "SocketServer": _FILES,
    "http": _FILES,
    "httplib": _FILES,
    "urllib": _FILES,
    "urllib2": _FILES,
    "requests": _FILES,
    "aiohttp": _FILES,
    "xmlrpc": _FILES,
    "xmlrpclib": _FILES,
    "imaplib": _FILES + " (IMAP4_stream runs a command)",
    "smtplib": _FILES,
    "ftplib": _FILES,
    "poplib": _FILES,
    "nntplib": _FILES,
    "telnetlib": _FILES,
    "webbrowser": "starts a browser (runs a program)",
    "xml.etree.ElementTree.parse": "reads files",
    "xml.dom.minidom.parse": "reads files",
    "xml.sax": "reads files and URLs",
    "pathlib.Path": _FILES + " (Path methods read and write files)",
}

# Gadget modules: an attribute of that name in another module is almost surely
# the module itself (``fnmatch`` ``os`` is the os module).
_GADGET_MODULES = frozenset(
    {k for k in GADGETS if "." not in k} | {"builtins", "__builtin__", "__builtins__"}
)
# Segments that show a protocol-4 dotted name walking towards code execution
# (``fnmatch`` ``os.system``, ``mod`` ``Cls.eval``).
_GADGET_SEGMENTS = frozenset(
    _GADGET_MODULES
    | {k.split(".", 1)[1] for k in GADGETS if k.startswith("builtins.")}
    | {"system", "popen", "getoutput"}
)


def _gadget_reason(dotted: str) -> str | None:
    """The reason ``dotted`` (or a prefix of it: module or class) is a gadget."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        reason = GADGETS.get(".".join(parts[:i]))
        if reason is not None:
            return reason
    return None


def _shape_problem(module: str, name: str) -> str | None:
    """Why a (mapped) global may not even become a stub, or None."""
    mparts = module.split(".")
    nparts = name.split(".")
    if module != "__main__":
        for part in mparts:
            if part.startswith("__") and part.endswith("__"):
                return f"dunder module segment {part!r} reaches interpreter internals"
        if mparts[0].startswith("_"):
            return "private interpreter module"
    for part in nparts:
        if part.startswith("__") and part.endswith("__"):
            return f"dunder attribute {part!r} reaches interpreter internals"
        if part in _GADGET_MODULES:
            return f"attribute reaches module {part!r}"
    if len(nparts) > 1:
        # A protocol-4 dotted name: the unpickler would walk attributes.  Only
        # nested classes (Outer.Inner) may be stubbed; methods, functions and
        # module attributes (fnmatch os.system) are walks out of the class.
        if module == "builtins":
            return "attribute walk under builtins"
        for part in nparts:
            if part.startswith("_"):
                return f"attribute walk through private name {part!r}"
            if part in _GADGET_SEGMENTS:
                return f"attribute walk reaches {part!r}"
            if not part[:1].isupper():
                return (
                    f"protocol-4 attribute walk to {part!r} "
                    "(only nested classes, spelled Outer.Inner, can be stubbed)"
                )
    return None


def _valid_dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


# --------------------------------------------------------------------------
# Python 2 str: the marker type and the marker codec


class _Py2Str(str):
    """A non-ASCII Python 2 ``str`` during an ``auto`` load: its bytes, surrogate-escaped.

    Equal only to another marker with the same bytes (as Python 2 compared a
    non-ASCII ``str`` with ``unicode``); the post-load walk turns it into ``str``
    (valid UTF-8) or ``bytes``.  Always holds a surrogate, so CPython never swaps
    it for a cached one-character string.
    """

    __slots__ = ()

    @property
    def raw(self) -> bytes:
        return str.encode(self, "ascii", "surrogateescape")

    def __eq__(self, other: object) -> bool:
        return type(other) is _Py2Str and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((_Py2Str, str(self)))

    def __reduce__(self) -> Any:
        raise TypeError("internal Python 2 str marker")


def _py2_decode(data: Any, errors: str = "strict") -> tuple[str, int]:
    try:
        return str(data, "ascii"), len(data)  # ASCII: the same text in every mode
    except UnicodeDecodeError:
        return _Py2Str(str(data, "ascii", "surrogateescape")), len(data)


def _py2_encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    raise UnicodeError("shelfmigrate_py2str is a decode-only codec")


_PY2_CODEC = "shelfmigrate_py2str"


def _codec_search(name: str) -> codecs.CodecInfo | None:
    if name == _PY2_CODEC:
        return codecs.CodecInfo(_py2_encode, _py2_decode, name=_PY2_CODEC)
    return None


codecs.register(_codec_search)


# --------------------------------------------------------------------------
# What find_class hands out


def _refuse_build(owner: Any, state: Any = None) -> None:
    raise UnsafePickleError(
        f"refused BUILD on global {owner.global_name}: only instances made by this load take state"
    )


def _refuse_items(owner: Any, what: str, *args: Any) -> None:
    raise UnsafePickleError(f"refused {what} on global {owner.global_name}: it is not a container")


class _GlobalMeta(type):
    """Metaclass of every class find_class hands out.

    BUILD, APPEND and APPENDS on the class object itself refuse (these data
    descriptors win over the class's own instance methods), and nothing can set
    or delete an attribute of the class, so a pickle cannot poison a class that
    later records share.
    """

    global_name: str

    def __setattr__(cls, name: str, value: Any) -> None:
        raise UnsafePickleError(f"refused setting attribute {name!r} of global {cls.global_name}")

    def __delattr__(cls, name: str) -> None:
        raise UnsafePickleError(f"refused deleting attribute {name!r} of global {cls.global_name}")

    __setstate__ = property(lambda cls: functools.partial(_refuse_build, cls))
    # The C unpickler runs APPEND as well as APPENDS through ``extend`` when present.
    append = property(lambda cls: functools.partial(_refuse_items, cls, "APPEND/APPENDS"))
    extend = property(lambda cls: functools.partial(_refuse_items, cls, "APPEND/APPENDS"))
    add = property(lambda cls: functools.partial(_refuse_items, cls, "ADDITEMS"))


class _StubMeta(_GlobalMeta):
    """Metaclass of the per-name stub classes."""


class _GlobalFunc:
    """An allowlisted function, or a reference that may not be called."""

    __slots__ = ("global_name", "target", "_impl")

    def __init__(self, global_name: str, target: Any, impl: Callable[..., Any]):
        object.__setattr__(self, "global_name", global_name)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "_impl", impl)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise DecodeError(f"{self.global_name} called with keyword arguments")
        return self._impl(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError(f"refused setting attribute {name!r} of global {self.global_name}")

    def __setstate__(self, state: Any) -> None:
        _refuse_build(self, state)

    def __reduce__(self) -> Any:
        raise TypeError(f"{self.global_name} stand-in cannot be pickled")

    def __repr__(self) -> str:
        return f"<safepickle global {self.global_name}>"


def _factory(global_name: str, target: Any, build: Callable[..., Any]) -> type:
    """A class standing for ``target``: calling it, NEWOBJ or INST run ``build(*args)``."""

    def __new__(cls: type, /, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise DecodeError(f"{global_name} called with keyword arguments")
        return build(*args)

    namespace = {
        "__slots__": (),
        "__new__": __new__,
        "__module__": __name__,
        "__qualname__": f"Safe[{global_name}]",
        "global_name": global_name,
        "target": target,
    }
    return _GlobalMeta(f"Safe[{global_name}]", (), namespace)


def _reference(global_name: str, target: Any) -> _GlobalFunc:
    def refuse(*args: Any) -> Any:
        raise UnsafePickleError(
            f"refused call of {global_name}: it may only be referenced "
            "(a defaultdict factory or a copyreg._reconstructor base), not called"
        )

    return _GlobalFunc(global_name, target, refuse)


# ---- stubs


class _StubBase(Stub, metaclass=_StubMeta):
    """Instances record what the pickle did to an object of a class that is not allowed."""

    __slots__ = ("kwargs",)
    global_name = "?"

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Any:
        self = object.__new__(cls)
        object.__setattr__(self, "name", cls.global_name)
        if kwargs:
            args = (*args, kwargs)
        object.__setattr__(self, "kwargs", kwargs or None)
        object.__setattr__(self, "args", list(args) if args else None)
        object.__setattr__(self, "state", None)
        object.__setattr__(self, "listitems", None)
        object.__setattr__(self, "dictitems", None)
        return self

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        """Everything was recorded by ``__new__``."""

    def __setstate__(self, state: Any) -> None:
        if self.state is not None:
            raise DecodeError(f"BUILD applied twice to an object of class {self.name}")
        self.state = state

    def append(self, item: Any) -> None:
        if self.listitems is None:
            self.listitems = []
        self.listitems.append(item)

    def extend(self, items: Any) -> None:
        if self.listitems is None:
            self.listitems = []
        self.listitems.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.dictitems is None:
            self.dictitems = []
        self.dictitems.append([key, value])

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"a stub of {self.name} cannot be pickled again")


_STUB_CLASSES: dict[str, type] = {}


def stub_class(name: str) -> type:
    """The stub class for dotted class name ``name`` (one per name, cached)."""
    cls = _STUB_CLASSES.get(name)
    if cls is None:
        namespace = {
            "__slots__": (),
            "__module__": __name__,
            "__qualname__": f"Stub[{name}]",
            "global_name": name,
        }
        cls = _StubMeta(f"Stub[{name}]", (_StubBase,), namespace)
        if len(_STUB_CLASSES) < _MAX_CACHED_NAMES:
            cls = _STUB_CLASSES.setdefault(name, cls)
    return cls


def _new_stub(name: str, *args: Any) -> Any:
    cls = stub_class(name)
    return cls.__new__(cls, *args)


# ---- argument checks shared by the stand-ins


def _fail(what: str, message: str) -> DecodeError:
    return DecodeError(f"{what}: {message}")


def _arity(what: str, args: tuple[Any, ...], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise _fail(what, f"called with {len(args)} arguments, expected {expected}")


def _raw_bytes(value: Any, what: str) -> bytes:
    """Bytes from a bytes object, a py2 str marker or latin-1 text (py2 str read as text)."""
    t = type(value)
    if t is bytes:
        return value
    if t is _Py2Str:
        return value.raw
    if t is str:
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise _fail(what, "text state is not latin-1") from None
    raise _fail(what, f"expected a byte string, got {t.__name__}")


def _ascii_text(value: Any, what: str) -> str:
    """Text from str, or from a py2 str read as bytes or as a marker (must be ASCII)."""
    t = type(value)
    if t is str:
        return value
    if t is bytes or t is _Py2Str:
        raw = value if t is bytes else value.raw
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise _fail(what, "non-ASCII byte string") from None
    raise _fail(what, f"expected a string, got {t.__name__}")


def _encoding_name(value: Any, what: str) -> None:
    if type(value) in (str, bytes):
        name = value if type(value) is str else value.decode("ascii", "replace")
        if name.lower().replace("_", "-") in ("latin-1", "latin1"):
            return
    raise _fail(what, f"only the latin-1 codec is allowed, not {value!r:.40}")


def _latin1_bytes(what: str, text: Any, encoding: Any) -> bytes:
    _encoding_name(encoding, what)
    t = type(text)
    if t is _Py2Str:
        return text.raw
    if t is not str:
        raise _fail(what, f"expected text, got {t.__name__}")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise _fail(what, "text is not latin-1") from None


def _is_int(value: Any) -> bool:
    return type(value) is int


# ---- builtins


def _build_set(kind: type, what: str) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        _arity(what, args, 0, 1)
        if not args:
            return kind()
        if type(args[0]) not in (list, tuple, set, frozenset):
            raise _fail(what, f"expected a list of members, got {type(args[0]).__name__}")
        return kind(args[0])

    return build


def _build_complex(*args: Any) -> complex:
    what = "builtins.complex"
    _arity(what, args, 0, 2)
    for a in args:
        if type(a) not in (int, float):
            raise _fail(what, f"expected numbers, got {type(a).__name__}")
    return complex(*args)


class _LoadingBytearray(bytearray):
    """What the ``builtins.bytearray`` stand-in builds: a bytearray that the rest
    of the pickle cannot change.  SETITEM, APPEND(S) and BUILD on it are refused
    (a pickler never fills a bytearray; plain ``pickle.loads`` would assign
    ``b[k] = v`` or extend it); the post-load walk makes it an exact bytearray."""

    __slots__ = ()

    def __setitem__(self, *_args: Any) -> None:
        _refuse_fill("SETITEM(S)")

    def append(self, *_args: Any) -> None:
        _refuse_fill("APPEND(S)")

    extend = append

    def __setstate__(self, *_args: Any) -> None:
        _refuse_fill("BUILD")


def _refuse_fill(opcode: str) -> None:
    raise UnsafePickleError(
        f"refused {opcode} on builtins.bytearray: a pickle fills only dicts, lists and sets"
    )


def _build_bytes_like(kind: type, what: str) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        _arity(what, args, 0, 2)
        if not args:
            return kind()
        if len(args) == 2:
            return kind(_latin1_bytes(what, args[0], args[1]))
        if type(args[0]) in (bytes, bytearray):
            return kind(args[0])
        # Never an int (bytearray(2**36) allocates 64 GiB), never an iterable.
        raise _fail(what, f"refused argument of type {type(args[0]).__name__}")

    return build


def _codecs_encode(*args: Any) -> bytes:
    what = "_codecs.encode"
    _arity(what, args, 2, 2)
    return _latin1_bytes(what, args[0], args[1])


# ---- datetime


def _tzinfo(value: Any, what: str) -> Any:
    if value is None or type(value) is datetime.timezone:
        return value
    if isinstance(value, _StubBase):
        return value
    raise _fail(what, f"tzinfo must be a datetime.timezone or a stub, got {type(value).__name__}")


def _with_tz(what: str, naive: Any, tz: Any) -> Any:
    if tz is None:
        return naive
    if isinstance(tz, _StubBase):
        # The real constructor needs a tzinfo instance; keep both parts, inert.
        return _new_stub(what, naive, tz)
    return naive.replace(tzinfo=tz)


def _datetime_parts(what: str, args: tuple[Any, ...], size: int) -> tuple[bytes, Any]:
    _arity(what, args, 1, 2)
    state = _raw_bytes(args[0], f"{what} state")
    if len(state) != size:
        raise _fail(what, f"state must be {size} bytes, got {len(state)}")
    return state, _tzinfo(args[1] if len(args) == 2 else None, what)


def _int_args(what: str, args: tuple[Any, ...], low: int, high: int) -> tuple[int, ...]:
    _arity(what, args, low, high)
    if not all(_is_int(a) for a in args):
        raise _fail(what, "expected a state string or integer fields")
    return args


def _build_datetime(*args: Any) -> Any:
    what = "datetime.datetime"
    if args and not _is_int(args[0]):
        s, tz = _datetime_parts(what, args, 10)
        naive = datetime.datetime(
            s[0] << 8 | s[1],
            s[2] & 0x7F,
            s[3],
            s[4],
            s[5],
            s[6],
            s[7] << 16 | s[8] << 8 | s[9],
            fold=s[2] >> 7,
        )
        return _with_tz(what, naive, tz)
    return datetime.datetime(*_int_args(what, args, 3, 7))


def _build_date(*args: Any) -> Any:
    what = "datetime.date"
    if args and not _is_int(args[0]):
        _arity(what, args, 1, 1)
        s, _ = _datetime_parts(what, args, 4)
        return datetime.date(s[0] << 8 | s[1], s[2], s[3])
    return datetime.date(*_int_args(what, args, 3, 3))


def _build_time(*args: Any) -> Any:
    what = "datetime.time"
    if args and not _is_int(args[0]):
        s, tz = _datetime_parts(what, args, 6)
        naive = datetime.time(
            s[0] & 0x7F, s[1], s[2], s[3] << 16 | s[4] << 8 | s[5], fold=s[0] >> 7
        )
        return _with_tz(what, naive, tz)
    return datetime.time(*_int_args(what, args, 0, 4))


def _build_timedelta(*args: Any) -> Any:
    return datetime.timedelta(*_int_args("datetime.timedelta", args, 0, 3))


def _build_timezone(*args: Any) -> Any:
    what = "datetime.timezone"
    _arity(what, args, 1, 2)
    if type(args[0]) is not datetime.timedelta:
        raise _fail(what, f"offset must be a timedelta, got {type(args[0]).__name__}")
    if len(args) == 2:
        return datetime.timezone(args[0], _ascii_text(args[1], what))
    return datetime.timezone(args[0])


# ---- numbers


def _build_decimal(*args: Any) -> Any:
    what = "decimal.Decimal"
    _arity(what, args, 0, 1)
    if not args:
        return decimal.Decimal()
    text = _ascii_text(args[0], what)
    if len(text) > _MAX_DECIMAL_CHARS:
        raise _fail(what, f"{len(text)} characters is over the {_MAX_DECIMAL_CHARS} cap")
    return decimal.Decimal(text)


def _build_fraction(*args: Any) -> Any:
    what = "fractions.Fraction"
    _arity(what, args, 0, 2)
    if len(args) == 1 and not _is_int(args[0]):
        text = _ascii_text(args[0], what)
        if len(text) > _MAX_DECIMAL_CHARS:
            raise _fail(what, f"{len(text)} characters is over the {_MAX_DECIMAL_CHARS} cap")
        return fractions.Fraction(text)
    for a in args:
        if not _is_int(a):
            raise _fail(what, f"expected integers, got {type(a).__name__}")
        if a.bit_length() > _MAX_FRACTION_BITS:
            raise _fail(what, f"integer over the {_MAX_FRACTION_BITS}-bit cap")
    return fractions.Fraction(*args)


# ---- uuid


class _PendingUUID(uuid.UUID):
    """A ``uuid.UUID`` made by NEWOBJ or ``_reconstructor``, waiting for its one BUILD."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        what = "uuid.UUID"
        try:
            self.int  # noqa: B018 - probing the slot
        except AttributeError:
            pass
        else:
            raise _fail(what, "BUILD applied twice")
        if type(state) is not dict:
            raise _fail(what, f"state must be a dict, got {type(state).__name__}")
        fields = {_ascii_text(k, what): v for k, v in state.items()}
        if "int" not in fields or not set(fields) <= {"int", "is_safe"}:
            raise _fail(
                what, f"state must be {{'int': n[, 'is_safe': ...]}}, got keys {sorted(fields)}"
            )
        n = fields["int"]
        if not _is_int(n) or not 0 <= n < 1 << 128:
            raise _fail(what, "int must be an integer in [0, 2**128)")
        safe = fields.get("is_safe")
        if safe is not None and safe not in (0, -1):
            raise _fail(what, f"is_safe must be 0, -1 or None, got {safe!r:.40}")
        object.__setattr__(self, "int", n)
        object.__setattr__(self, "is_safe", uuid.SafeUUID(safe))


def _build_uuid(*args: Any) -> Any:
    if args:
        raise _fail(
            "uuid.UUID", "only NEWOBJ/_reconstructor with no arguments, then BUILD, is allowed"
        )
    return object.__new__(_PendingUUID)


# ---- collections


def _pairs(what: str, value: Any) -> Any:
    if type(value) is dict:
        return value
    if type(value) not in (list, tuple):
        raise _fail(what, f"expected a list of pairs or a dict, got {type(value).__name__}")
    for pair in value:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise _fail(what, "expected [key, value] pairs")
    return value


def _build_ordereddict(*args: Any) -> Any:
    what = "collections.OrderedDict"
    _arity(what, args, 0, 1)
    return collections.OrderedDict(_pairs(what, args[0])) if args else collections.OrderedDict()


def _build_counter(*args: Any) -> Any:
    what = "collections.Counter"
    _arity(what, args, 0, 1)
    if not args:
        return collections.Counter()
    if type(args[0]) is not dict:
        raise _fail(what, f"expected a dict of counts, got {type(args[0]).__name__}")
    return collections.Counter(args[0])


_DEFAULT_FACTORIES = frozenset(
    {list, dict, set, frozenset, tuple, int, float, str, bytes, bool}
    | {collections.OrderedDict, collections.Counter}
)


def _build_defaultdict(*args: Any) -> Any:
    what = "collections.defaultdict"
    _arity(what, args, 0, 2)
    factory = None
    if args and args[0] is not None:
        # Keyed by the id of our own stand-ins, which live as long as the module.
        factory = _FACTORY_OF.get(id(args[0]))
        if factory is None:
            shown = getattr(args[0], "global_name", type(args[0]).__name__)
            raise _fail(what, f"refused default factory {shown}")
    result = collections.defaultdict(factory)
    if len(args) == 2:
        if type(args[1]) is not dict:
            raise _fail(what, f"expected a dict of items, got {type(args[1]).__name__}")
        result.update(args[1])
    return result


# ---- copyreg._reconstructor


def _reconstructor(*args: Any) -> Any:
    what = "copyreg._reconstructor"
    _arity(what, args, 3, 3)
    cls, base, state = args
    base_type = _BASE_OF.get(id(base))  # our own stand-ins only: they never die
    if base_type is None:
        shown = getattr(base, "global_name", type(base).__name__)
        raise _fail(what, f"refused base {shown}")
    if type(cls) is _StubMeta:
        obj = cls.__new__(cls)
        if base_type is object:
            if state is not None:
                raise _fail(what, "object base with a state")
        elif base_type is dict:
            if type(state) is not dict:
                raise _fail(what, "dict base needs a dict state")
            obj.dictitems = [[k, v] for k, v in state.items()]
        elif base_type is list:
            if type(state) is not list:
                raise _fail(what, "list base needs a list state")
            obj.listitems = state
        else:
            accepted = _BASE_STATES[base_type]
            if type(state) not in accepted:
                raise _fail(what, f"{base_type.__name__} base with a {type(state).__name__} state")
            obj.args = [state]
        return obj
    if cls is _WRAPPERS["uuid.UUID"]:
        if base_type is not object or state is not None:
            raise _fail(what, "uuid.UUID must be reconstructed from object with no state")
        return _build_uuid()
    shown = getattr(cls, "global_name", type(cls).__name__)
    raise _fail(what, f"refused class {shown}")


_BASE_STATES: dict[type, tuple[type, ...]] = {
    tuple: (tuple,),
    set: (set, list),
    frozenset: (frozenset, list),
    int: (int,),
    float: (float,),
    str: (str, _Py2Str, bytes),
    bytes: (bytes, str, _Py2Str),
}


# ---- the default allowlist table


def _make_wrappers() -> dict[str, Any]:
    w: dict[str, Any] = {}
    for kind in (object, list, dict, tuple, int, float, str, bool):
        name = f"builtins.{kind.__name__}"
        w[name] = _reference(name, kind)
    w["builtins.set"] = _factory("builtins.set", set, _build_set(set, "builtins.set"))
    w["builtins.frozenset"] = _factory(
        "builtins.frozenset", frozenset, _build_set(frozenset, "builtins.frozenset")
    )
    w["builtins.complex"] = _factory("builtins.complex", complex, _build_complex)
    w["builtins.bytearray"] = _factory(
        "builtins.bytearray", bytearray, _build_bytes_like(_LoadingBytearray, "builtins.bytearray")
    )
    w["builtins.bytes"] = _factory(
        "builtins.bytes", bytes, _build_bytes_like(bytes, "builtins.bytes")
    )
    w["builtins.Ellipsis"] = Ellipsis
    w["builtins.NotImplemented"] = NotImplemented
    import _codecs

    w["_codecs.encode"] = _GlobalFunc("_codecs.encode", _codecs.encode, _codecs_encode)
    w["copyreg._reconstructor"] = _GlobalFunc(
        "copyreg._reconstructor", copyreg._reconstructor, _reconstructor
    )
    for name, target, build in (
        ("datetime.datetime", datetime.datetime, _build_datetime),
        ("datetime.date", datetime.date, _build_date),
        ("datetime.time", datetime.time, _build_time),
        ("datetime.timedelta", datetime.timedelta, _build_timedelta),
        ("datetime.timezone", datetime.timezone, _build_timezone),
        ("decimal.Decimal", decimal.Decimal, _build_decimal),
        ("fractions.Fraction", fractions.Fraction, _build_fraction),
        ("uuid.UUID", uuid.UUID, _build_uuid),
        ("collections.OrderedDict", collections.OrderedDict, _build_ordereddict),
        ("collections.Counter", collections.Counter, _build_counter),
        ("collections.defaultdict", collections.defaultdict, _build_defaultdict),
    ):
        w[name] = _factory(name, target, build)
    return w


_WRAPPERS: dict[str, Any] = _make_wrappers()

#: Mapped ``module.name`` globals that load without ``allow=``; each goes through
#: a validating stand-in (see the module docstring).
DEFAULT_ALLOWLIST: frozenset[str] = frozenset(_WRAPPERS)

_NAME_OF_FACTORY: dict[Any, str] = {
    **{
        kind: f"builtins.{kind.__name__}"
        for kind in (list, dict, set, frozenset, tuple, int, float, str, bytes, bool)
    },
    collections.OrderedDict: "collections.OrderedDict",
    collections.Counter: "collections.Counter",
}
_FACTORY_OF: dict[int, Any] = {id(_WRAPPERS[name]): kind for kind, name in _NAME_OF_FACTORY.items()}
_BASE_OF: dict[int, type] = {
    id(_WRAPPERS[f"builtins.{kind.__name__}"]): kind
    for kind in (object, dict, list, tuple, set, frozenset, int, float, str, bytes)
}


# --------------------------------------------------------------------------
# The policy: from (module, name) to what the unpickler gets


class _Policy:
    """Resolution of globals for one (allow, stubs) configuration; shared and cached."""

    def __init__(self, allow: frozenset[str], stubs: bool):
        self.allow = allow
        self.stubs = stubs
        self._cache: dict[tuple[str, str], Any] = {}
        # The C unpickler class bound to this policy (a class attribute is
        # cheaper than setting it on every new unpickler).
        self.unpickler_class = type("_Unpickler", (_Unpickler,), {"_policy": self})

    def resolve(self, module: str, name: str) -> Any:
        key = (module, name)
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(module, name)
            if len(self._cache) < _MAX_CACHED_NAMES:
                self._cache[key] = found
        return found

    def _resolve(self, raw_module: str, raw_name: str) -> Any:
        if type(raw_module) is not str or type(raw_name) is not str:
            raise DecodeError("malformed pickle: global names must be text")
        raw_full = f"{raw_module}.{raw_name}"
        if not (_valid_dotted(raw_module) and _valid_dotted(raw_name)):
            raise DecodeError(f"malformed pickle: invalid global name {raw_full!r:.100}")
        module, name = map_py2_name(raw_module, raw_name)
        full = f"{module}.{name}"
        shown = full if full == raw_full else f"{raw_full} (read as {full})"
        wrapper = _WRAPPERS.get(full)
        if wrapper is not None:
            return wrapper
        reason = _gadget_reason(full) or _gadget_reason(raw_full)
        if reason is not None:
            # For an attribute walk (uuid UUID.__init__.__globals__) the walk is the
            # clearer reason; otherwise the gadget's own (os.system: a shell command).
            walk = _shape_problem(module, name) if "." in name else None
            raise UnsafePickleError(f"refused global {shown}: {walk or reason}")
        if full in self.allow:
            return _import_allowed(module, name, shown)
        reason = _shape_problem(module, name)
        if reason is not None:
            raise UnsafePickleError(f"refused global {shown}: {reason}")
        if not self.stubs:
            raise DecodeError(f"class {full} is not allowed (use --allow {full} or stubs)")
        return stub_class(full)


def _import_allowed(module: str, name: str, shown: str) -> Any:
    """Import a global the caller allowed explicitly (it is trusted)."""
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raised
        raise DecodeError(
            f"allowed global {shown} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    return obj


_POLICIES: dict[tuple[frozenset[str], bool], _Policy] = {}


def _policy_for(allow: frozenset[str], stubs: bool) -> _Policy:
    key = (allow, stubs)
    policy = _POLICIES.get(key)
    if policy is None:
        policy = _Policy(allow, stubs)
        if len(_POLICIES) < 64:
            _POLICIES[key] = policy
    return policy


# --------------------------------------------------------------------------
# The C unpickler and its inputs


class _Unpickler(_pickle.Unpickler):
    """The C unpickler, with every global and persistent id going through us.

    One is made per pickle: a C unpickler cannot be reused (MEMOIZE numbers
    entries from the memo's running length, which ``memo.clear()`` does not reset,
    and assigning ``memo`` on a used unpickler crashes CPython 3.11).
    """

    _policy: _Policy
    _used = False  # set on the instance by the first find_class

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        self._used = True
        return self._policy.resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise DecodeError(
            "refused persistent id (PERSID/BINPERSID): external references are not supported"
        )


class _BytesSource:
    """A file-like view of one bytes object for the C unpickler.

    ``peek`` hands over everything at once, so the C code parses straight from
    this buffer; ``read`` is then only called to report how much was consumed,
    which is how we see trailing bytes after STOP.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def peek(self, n: int = 0) -> Any:
        if self.pos == 0:
            return self.data
        return memoryview(self.data)[self.pos :]

    def read(self, n: int = -1) -> Any:
        start = self.pos
        end = len(self.data) if n is None or n < 0 else min(start + n, len(self.data))
        self.pos = end
        return memoryview(self.data)[start:end]

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> Any:
        end = self.data.find(b"\n", self.pos)
        return self.read(-1 if end < 0 else end + 1 - self.pos)


class _StreamSource:
    """A buffered reader over a binary file that cuts out one pickle at a time."""

    def __init__(self, fileobj: BinaryIO, base: int, chunk: int = 1 << 16):
        self.file = fileobj
        self.buf = bytearray()
        self.pos = 0  # index in buf of the next pickle
        self.base = base  # file offset of buf[0]
        self.eof = False
        self.chunk = chunk
        self.size = _file_size(fileobj)  # absolute file size, None when unknown

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _fill(self, need: int) -> None:
        """Read until ``buf`` holds ``need`` bytes from ``pos`` (or the file ends)."""
        while len(self.buf) - self.pos < need and not self.eof:
            want = min(max(self.chunk, need - (len(self.buf) - self.pos)), 1 << 20)
            data = self.file.read(want)
            if not data:
                self.eof = True
            else:
                self.buf += data

    def start_record(self) -> bool:
        """Forget the bytes already read; True when there is another pickle to read."""
        del self.buf[: self.pos]
        self.base += self.pos
        self.pos = 0
        self._fill(1)
        return self.pos < len(self.buf)

    def _limit(self) -> int | None:
        """How long ``buf`` will be once the file is read to its end (None: unknown)."""
        if self.eof:
            return len(self.buf)
        if self.size is not None:
            return max(self.size - self.base, len(self.buf))
        return None

    def take_pickle(self) -> bytes:
        """The bytes of the pickle at ``pos`` (found by the scan); ``pos`` moves past it."""
        start = resume = self.pos
        while True:
            try:
                end = scan_stream(self.buf, start, resume, self._limit())
                break
            except Incomplete as more:
                resume = more.resume
                # Grow geometrically, so a long pickle is read (and walked) in
                # O(size); a declared length past the end of the file never
                # gets here (the scan refuses it).
                grow = max(more.needed - len(self.buf), len(self.buf) - start, self.chunk)
                before = len(self.buf)
                self._fill(before - self.pos + grow)
                if len(self.buf) == before:
                    self.eof = True
        self.pos = end
        return bytes(self.buf[start:end])


def _file_size(fileobj: BinaryIO) -> int | None:
    try:
        return os.fstat(fileobj.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pass
    getbuffer = getattr(fileobj, "getbuffer", None)  # io.BytesIO
    if getbuffer is not None:
        try:
            return len(getbuffer())
        except (TypeError, ValueError, BufferError):
            pass
    return None


# --------------------------------------------------------------------------
# After the load: put exact types back and check what the stand-ins made

_ATOMS = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        complex,
        bytes,
        bytearray,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        decimal.Decimal,
        uuid.UUID,
        type(Ellipsis),
        type(NotImplemented),
    }
)
_IS_ATOM = _ATOMS.__contains__
_DICTS = frozenset({dict, collections.OrderedDict, collections.Counter, collections.defaultdict})


class _Finisher:
    """One iterative walk over a loaded value (cycles and sharing kept, no recursion).

    Mutable containers are fixed in place, so their identity never changes;
    tuples and frozensets are rebuilt only when something inside changed, once
    per original object.
    """

    def __init__(self, lenient: bool):
        self.lenient = lenient
        self.memo: dict[int, tuple[Any, Any]] = {}  # id -> (original, replacement)
        self.seen: dict[int, Any] = {}
        self.todo: list[Any] = []

    def run(self, root: Any) -> Any:
        if type(root) in _ATOMS:
            return root
        new_root = self.fix(root)
        todo = self.todo
        while todo:
            obj = todo.pop()
            t = type(obj)
            if t is list:
                self.fix_list(obj)
            elif t in _DICTS:
                self.fix_dict(obj)
            elif t is set:
                self.fix_set(obj)
            else:
                self.fix_stub(obj)
        return new_root

    def fix(self, x: Any) -> Any:
        t = type(x)
        if t in _ATOMS:
            return x
        if t is list or t is set or t in _DICTS or type(t) is _StubMeta:
            if id(x) not in self.seen:
                self.seen[id(x)] = x
                self.todo.append(x)
            return x
        if t is tuple or t is frozenset:
            return self.fix_immutable(x)
        if t is _Py2Str:
            raw = x.raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw
        if t is _LoadingBytearray:
            found = self.memo.get(id(x))
            if found is None:
                found = self.memo[id(x)] = (x, bytearray(x))
            return found[1]
        if t is _PendingUUID:
            try:
                x.int  # noqa: B018 - probing the slot
            except AttributeError:
                raise DecodeError("uuid.UUID object never got its state (BUILD missing)") from None
            object.__setattr__(x, "__class__", uuid.UUID)
            return x
        if t is fractions.Fraction:
            n, d = x._numerator, x._denominator
            if not (_is_int(n) and _is_int(d) and d > 0):
                raise DecodeError("fractions.Fraction was given state (refused BUILD)")
            return x
        if t is _GlobalFunc:
            return x.target
        if t is _GlobalMeta:
            return x.target
        if t is _StubMeta:
            return x
        if self.lenient:
            return x
        raise DecodeError(
            f"pickle produced an object of unexpected type {t.__module__}.{t.__qualname__}"
        )

    def fix_immutable(self, root: Any) -> Any:
        memo = self.memo
        found = memo.get(id(root))
        if found is not None:
            return found[1]
        stack: list[tuple[Any, Iterator[Any], list[Any]]] = [(root, iter(root), [])]
        while stack:
            obj, members, done = stack[-1]
            descended = False
            for child in members:
                ct = type(child)
                if ct in _ATOMS:
                    done.append(child)
                elif ct is tuple or ct is frozenset:
                    found = memo.get(id(child))
                    if found is None:
                        stack.append((child, iter(child), []))
                        descended = True
                        break
                    done.append(found[1])
                else:
                    done.append(self.fix(child))
            if descended:
                continue
            stack.pop()
            if any(a is not b for a, b in zip(done, obj, strict=True)):
                if type(obj) is tuple:
                    new: Any = tuple(done)
                else:
                    new = frozenset(_no_collisions(list(obj), done, "frozenset"))
            else:
                new = obj
            memo[id(obj)] = (obj, new)
            if stack:
                stack[-1][2].append(new)
        return memo[id(root)][1]

    def fix_list(self, obj: list[Any]) -> None:
        fix, atoms = self.fix, _ATOMS
        for i, v in enumerate(obj):
            if type(v) not in atoms:
                nv = fix(v)
                if nv is not v:
                    obj[i] = nv

    def fix_dict(self, obj: dict[Any, Any]) -> None:
        t = type(obj)
        if t is collections.OrderedDict or t is collections.Counter:
            if vars(obj):
                raise UnsafePickleError(
                    f"refused BUILD on {t.__module__}.{t.__qualname__}: it takes no state"
                )
        elif t is collections.defaultdict:
            factory = obj.default_factory
            if factory is not None and factory not in _DEFAULT_FACTORIES:
                raise UnsafePickleError(
                    "refused BUILD on collections.defaultdict: default_factory replaced"
                )
        fix, atoms = self.fix, _ATOMS
        updates = []
        for k, v in obj.items():  # fix() never changes obj: containers are only queued
            if type(k) not in atoms and fix(k) is not k:
                break
            if type(v) not in atoms:
                nv = fix(v)
                if nv is not v:
                    updates.append((k, nv))
        else:
            for k, nv in updates:
                obj[k] = nv
            return
        # A key changes (a Python 2 str, a global, a tuple holding one): rebuild in order.
        keys = list(obj)
        new_keys = [fix(k) for k in keys]
        values = [fix(obj[k]) for k in keys]
        new_keys = _no_collisions(keys, new_keys, "dict")
        obj.clear()
        for k, v in zip(new_keys, values, strict=True):
            obj[k] = v

    def fix_set(self, obj: set[Any]) -> None:
        if all(type(m) in _ATOMS for m in obj):
            return
        members = list(obj)
        new = [self.fix(m) for m in members]
        if any(a is not b for a, b in zip(new, members, strict=True)):
            new = _no_collisions(members, new, "set")
            obj.clear()
            obj.update(new)

    def fix_stub(self, obj: Any) -> None:
        fix = self.fix
        for field in ("args", "state", "listitems", "dictitems", "kwargs"):
            value = getattr(obj, field)
            if value is not None:
                new = fix(value)
                if new is not value:
                    object.__setattr__(obj, field, new)


def _check_depth(root: Any) -> None:
    """Refuse a loaded value that nests too deeply (no recursion here).

    Run only when the pickle has more container opcodes than MAX_DEPTH.  A value
    of plain built-in types is measured by ``marshal.dumps`` (C, about a sixth
    of the load's time; it refuses more than 2000 levels, its own fixed
    limit, and writes shared objects once); a value marshal does not take (stubs,
    datetimes, ...) by :func:`_walk_depth` (MAX_DEPTH levels).
    """
    try:
        marshal.dumps(root)
        return
    except ValueError as exc:
        if "too deeply nested" in str(exc):
            raise DecodeError(
                "pickle nested too deeply: more than 2000 levels of containers (the depth limit)"
            ) from None
    _walk_depth(root, MAX_DEPTH)


def _walk_depth(root: Any, limit: int) -> None:
    """Refuse a value that nests more than ``limit`` containers deep (no recursion).

    The depth of a node is 1 + the deepest of its children, computed once per
    object (while a node is on the path, it holds the deepest child seen so
    far, which a cycle back to it reuses).
    """
    depth: dict[int, int] = {}
    stack: list[tuple[Any, Iterator[Any]]] = []
    node = root
    while True:
        kids = _children(node) if id(node) not in depth else None
        if kids is not None:
            depth[id(node)] = 0
            stack.append((node, iter(kids)))
            if len(stack) > limit:
                raise DecodeError(
                    f"pickle nested too deeply: more than {limit} levels of containers "
                    f"(the depth limit)"
                )
        if not stack:
            return
        parent, children = stack[-1]
        for child in children:
            if type(child) in _ATOMS:
                continue
            if id(child) in depth:  # done already (shared), or on the path (a cycle)
                if depth[id(child)] > depth[id(parent)]:
                    depth[id(parent)] = depth[id(child)]
                    if depth[id(parent)] + len(stack) > limit:
                        raise DecodeError(
                            f"pickle nested too deeply: more than {limit} levels of containers "
                            f"(the depth limit)"
                        )
                continue
            node = child
            break
        else:
            stack.pop()
            d = depth[id(parent)] + 1
            depth[id(parent)] = d
            if stack:
                up = stack[-1][0]
                if d > depth[id(up)]:
                    depth[id(up)] = d
            node = None
            if not stack:
                return


def _children(x: Any) -> Iterable[Any] | None:
    """The children of a container that are not atoms (filtered in C), or None for a leaf."""
    t = type(x)
    if t is list or t is tuple or t is set or t is frozenset:
        return itertools.compress(x, map(operator.not_, map(_IS_ATOM, map(type, x))))
    if isinstance(x, dict):
        types = map(type, itertools.chain(x.keys(), x.values()))
        both = itertools.chain(x.keys(), x.values())
        return itertools.compress(both, map(operator.not_, map(_IS_ATOM, types)))
    if isinstance(x, Stub):
        return [
            getattr(x, name, None) for name in ("args", "kwargs", "state", "listitems", "dictitems")
        ]
    return None


def _no_collisions(originals: list[Any], converted: list[Any], what: str) -> list[Any]:
    """Keep a decoded py2 str as bytes where its text would collide with another member."""
    if len(set(converted)) == len(converted):
        return converted
    counts = collections.Counter(converted)
    out = [
        o.raw if type(o) is _Py2Str and counts[c] > 1 else c
        for o, c in zip(originals, converted, strict=True)
    ]
    if len(set(out)) != len(out):
        raise DecodeError(
            f"{what} members collide once Python 2 strings are decoded (use py2_str='bytes')"
        )
    return out


# --------------------------------------------------------------------------
# Errors


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_decode_error(exc: BaseException, where: str = "") -> ShelfmigrateError:
    """Turn whatever the load raised into one of our errors with one clear line."""
    if isinstance(exc, ShelfmigrateError):
        if where:
            exc.detail = f"{where}: {exc.detail}"
            exc.args = (exc.detail,)
        return exc
    prefix = f"{where}: " if where else ""
    if isinstance(exc, EOFError) or (
        isinstance(exc, pickle.UnpicklingError) and "truncated" in str(exc)
    ):
        message = "truncated pickle (the data ends before STOP)"
    elif isinstance(exc, MemoryError):
        message = "pickle needs too much memory (a declared length or memo index is too large)"
    elif isinstance(exc, RecursionError):
        message = "pickle is nested too deeply"
    elif isinstance(exc, pickle.UnpicklingError):
        message = f"malformed pickle: {_one_line(exc)}"
    else:
        message = f"malformed pickle: {type(exc).__name__}: {_one_line(exc)}"
    return DecodeError(prefix + message)


# --------------------------------------------------------------------------
# The fast path: plain C ``pickle.loads`` for pickles that name no global
#
# Constructing a C unpickler per record costs about half a ``pickle.loads``, so
# a pickle that turns out to name no global at all (most records: dicts, lists,
# text, numbers, bytes) is read by ``_pickle.loads`` itself, with two guards:
#
# * Globals: the default ``find_class`` raises the documented audit event
#   ``pickle.find_class`` before it maps or imports anything.  Our audit hook
#   raises when the Python frame that called the C loader is the fast path of
#   ``SafeUnpickler.loads`` (no per-load flag to set), so the load stops there
#   and the record goes the full way (our ``find_class``).  Any other caller of
#   ``pickle.loads`` in the process is unaffected.  Without globals, no opcode
#   can reach a callable or a class: BUILD, APPEND and SETITEM only meet the
#   built-in types the opcodes make.
# * Exactly one pickle: ``pickle.loads`` ignores bytes after STOP.  The pre-scan
#   (:mod:`.pickle_scan`, run first on both paths) walks the same opcodes the C
#   unpickler reads and returns the offset just past the first STOP; data with
#   bytes after it is refused before any loading.
# * PERSID (no ``persistent_load``), EXT codes (see ``_EXT_CACHE``) and Python 2
#   ``str`` in ``auto`` mode (decoded as strict ASCII, so a non-ASCII one fails)
#   also fall back to the full path.

# EXT1/2/4 look in copyreg's cache before calling find_class; the registry is
# empty unless someone registered codes, so the cache is normally empty too.  It
# is cleared before each load so that an object cached by another unpickler is
# never handed to ours (both paths).
_EXT_CACHE: dict[int, Any] = copyreg._extension_cache  # type: ignore[attr-defined]
_FAST_CODE: Any = None  # SafeUnpickler.loads.__code__, set below


class NotBytesError(DecodeError, TypeError):
    """The value handed to the pickle decoder is not bytes (a record error in a
    conversion, a TypeError for callers of :func:`loads`)."""


class _GlobalInFastPath(Exception):
    """Raised by the audit hook: the pickle names a global, take the full path."""


def _audit_hook(event: str, args: Any) -> None:
    if event == "pickle.find_class":
        try:
            caller = sys._getframe(1).f_code
        except ValueError:  # called with no Python frame above: not ours
            return
        if caller is _FAST_CODE:
            raise _GlobalInFastPath


# --------------------------------------------------------------------------
# The public decoder


class SafeUnpickler:
    """A configured, reusable safe decoder.

    :param allow: extra mapped ``module.name`` globals to load for real (trusted).
    :param stubs: turn classes that are not allowed into :class:`Stub` records;
        with False they are a :class:`DecodeError`.
    :param py2_str: ``"auto"``, ``"bytes"`` or ``"latin1"``: what a Python 2 ``str``
        becomes (see the module docstring).

    Cheap to keep, and safe to share between threads: each load makes its own C
    unpickler (the only shared state is a hint for choosing the fast path).
    """

    def __init__(self, *, allow: Iterable[str] = (), stubs: bool = True, py2_str: str = "auto"):
        if isinstance(allow, str):
            allow = (allow,)
        names = frozenset(allow)
        for name in names:
            if type(name) is not str or "." not in name or not _valid_dotted(name):
                raise UsageError(f"--allow takes a dotted module.Name, not {name!r}")
        if py2_str not in PY2_STR_MODES:
            raise UsageError(
                f"--py2-str must be one of {', '.join(PY2_STR_MODES)}, not {py2_str!r}"
            )
        self.allow = names
        self.stubs = bool(stubs)
        self.py2_str = py2_str
        self._policy = _policy_for(names, self.stubs)
        self._lenient = bool(names - DEFAULT_ALLOWLIST)
        # Keyword arguments of the C unpickler; "auto" keeps the default (strict
        # ASCII): a non-ASCII Python 2 str raises, and the pickle is read again
        # with the marker codec.
        self._kwargs = {
            "auto": {},
            "latin1": {"encoding": "latin1"},
            "bytes": {"encoding": "bytes"},
        }[py2_str]
        self._fast_loads: Callable[[bytes], Any] = (
            functools.partial(_pickle.loads, **self._kwargs) if self._kwargs else _pickle.loads
        )
        # Whether to try the fast path: False after a record that named globals,
        # True again after one that did not (records of a store look alike).
        self._try_fast = _FAST_PATH
        # Records left before the structured pre-scan run is tried again, and
        # records read before its pattern was compiled (see _prescan).
        self._structured_skip = 0
        self._uncompiled = 0

    # -- internals

    def _run(self, source: Any, kwargs: dict[str, str]) -> tuple[Any, bool]:
        if _EXT_CACHE:
            _EXT_CACHE.clear()
        unpickler = self._policy.unpickler_class(source, **kwargs)
        value = unpickler.load()
        return value, unpickler._used

    def _run_py2(self, source: Any) -> Any:
        """Second reading of a pickle with non-ASCII Python 2 str (``auto`` mode)."""
        value, _used = self._run(source, {"encoding": _PY2_CODEC})
        return value

    def _read_py2(self, data: bytes) -> tuple[_BytesSource, Any]:
        source = _BytesSource(data)
        try:
            return source, self._run_py2(source)
        except Exception as exc:
            raise _as_decode_error(exc) from None

    def _finish(self, value: Any) -> Any:
        return _Finisher(self._lenient).run(value)

    # -- API

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode exactly one pickle; see :func:`loads`."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise NotBytesError(f"a pickle is bytes, this value is {type(data).__name__}")
            data = bytes(data)
        # The pre-scan (pickle_scan): every opcode, declared length and memo
        # index is checked before any byte reaches the C unpickler, and the
        # pickle's end is known, so the C loader reads exactly these opcodes.
        # Its common case inline: a small pickle whose structured run is
        # compiled already and proves it (what scan(data, 0, True) does first).
        size = len(data)
        deep = inline = ascii_failed = False
        match = None
        if 0 < size < _SMALL_PICKLE:
            match = _RUN_BY_FIRST_BYTE[data[0]][size]
        if match is None or self._structured_skip:
            deep = self._prescan(data, RUN_STRUCTURED)
        else:
            # (The binary run takes PROTO and any FRAME at offset 0; the text
            # grammar takes a whole protocol 0 value, or nothing.)
            found = match(data)
            pos = 0 if found is None else found.end()
            if pos != size - 1 or data[pos] != 0x2E or size > MAX_DEPTH:
                deep = self._prescan(data, pos)
            else:
                inline = True
        if self._try_fast:
            # The fast path (see above).  Only this call of the C loader is
            # guarded by the audit hook: it must stay in this very function.
            try:
                if _EXT_CACHE:
                    _EXT_CACHE.clear()
                value = self._fast_loads(data)
            except _GlobalInFastPath:
                self._try_fast = False
            except UnicodeDecodeError:
                # Most likely a non-ASCII Python 2 str: the full path need not
                # try strict ASCII again.
                ascii_failed = True
            except Exception:  # anything odd: the full path decides and reports
                pass
            else:
                if deep:
                    _check_depth(value)
                return value
        if (
            inline
            and size > 11
            and data[0] == 0x80
            and data[2] == 0x95
            and _U64(data, 3)[0] > size - 11
        ):
            # The inline run takes any FRAME at offset 0 (the C unpickler then
            # refuses one past the end): the whole pre-scan names the problem.
            self._prescan(data, RUN_STRUCTURED)
        return self._full_loads(data, ascii_failed, deep)

    def _prescan(self, data: bytes, resume: int) -> bool:
        """The strict pre-scan, from where the inline structured run stopped
        (``resume``); True when the loaded value's depth must be measured."""
        if self._structured_skip:
            # The structured run did not take this store's last records: the
            # flat walk and the skeleton proof straight away, and the run is
            # tried again every _STRUCTURED_RETRY records.
            self._structured_skip -= 1
            resume = SKIP_STRUCTURED
        elif (
            resume == RUN_STRUCTURED
            and self._uncompiled < _COMPILE_AFTER[BINARY_FIRST[data[0]] if data else 0]
        ):
            # Its pattern is not compiled for this size: compile it only once
            # this unpickler has read about as many records as pay it back;
            # until then the skeleton proof does (see _COMPILE_AFTER).
            self._uncompiled += 1
            resume = RUN_IF_COMPILED
        checks: list[tuple[int, int]] = []
        end = scan(data, 0, True, checks, resume)
        unproven = False
        for check in checks:
            if check is BY_SKELETON:
                if resume >= 0 or resume == RUN_STRUCTURED:  # the run was tried, and failed
                    self._structured_skip = _STRUCTURED_RETRY
            else:
                unproven = True
        if end == len(data):
            return False
        if end < 0 and -end == len(data):
            # More checks are due (see "Limits and structure" above): the
            # exact structure walk before loading when the scan could not
            # prove the structure, the depth of the loaded value when it can
            # be deep.
            if unproven:
                check_structure(data)
            return nesting_bound(data) > MAX_DEPTH
        end = abs(end)
        raise DecodeError(f"trailing data: {len(data) - end} bytes after STOP at offset {end}")

    def _full_loads(self, data: bytes, ascii_failed: bool = False, deep: bool = False) -> Any:
        """The C unpickler subclass, for a pickle that :func:`scan` accepted.

        ``deep``: the loaded value must be walked for its depth (:func:`_check_depth`).
        """
        try:
            value = self._full_load(data, ascii_failed)
        except DecodeError as exc:
            # A text INT/LONG longer than the host's int() takes: read it again
            # with those opcodes rewritten as LONG4 (pickle_scan.rewrite_text_ints).
            if "integer string conversion" not in str(exc):
                raise
            fixed = rewrite_text_ints(data)
            if fixed == data:
                raise
            value = self._full_load(fixed, ascii_failed)
        if deep:
            _check_depth(value)
        return value

    def _full_load(self, data: bytes, ascii_failed: bool) -> Any:
        if ascii_failed and self.py2_str == "auto":
            source, value = self._read_py2(data)
            used = True
        else:
            source = _BytesSource(data)
            try:
                value, used = self._run(source, self._kwargs)
            except UnicodeDecodeError as exc:
                if self.py2_str != "auto":
                    raise _as_decode_error(exc) from None
                source, value = self._read_py2(data)
                used = True
            except Exception as exc:
                raise _as_decode_error(exc) from None
        if source.pos != len(data):
            raise DecodeError(
                f"trailing data: {len(data) - source.pos} bytes after STOP at offset {source.pos}"
            )
        if not used:
            self._try_fast = _FAST_PATH
            return value
        try:
            return self._finish(value)
        except ShelfmigrateError:
            raise
        except Exception as exc:
            raise _as_decode_error(exc) from None

    def load_stream(self, fileobj: BinaryIO) -> Iterator[tuple[Any, int, bytes]]:
        """Decode consecutive pickles; see :func:`load_stream`."""
        try:
            base = fileobj.tell()
        except (AttributeError, OSError, ValueError):
            base = 0
        source = _StreamSource(fileobj, base)
        while source.start_record():
            start = source.offset
            try:
                # The scan finds where this pickle ends (reading as much as it
                # needs); exactly those bytes are then checked and loaded.
                raw = source.take_pickle()
                value = self.loads(raw)
            except Exception as exc:
                raise _as_decode_error(exc, f"pickle at offset {start}") from None
            yield value, start, raw


_FAST_CODE = SafeUnpickler.loads.__code__


def _install_fast_path() -> bool:
    """Install the audit hook, and check that it really stops a global in the fast path."""
    global _FAST_PATH
    try:
        sys.addaudithook(_audit_hook)
    except Exception:  # another audit hook may refuse new hooks
        return False
    _FAST_PATH = True
    probe = SafeUnpickler()
    # A harmless global: with a working hook the fast path gives up on it (and
    # says so by clearing _try_fast); the full path then returns builtins.int.
    value = probe.loads(b"cbuiltins\nint\n.")
    return value is int and probe._try_fast is False


# Records a SafeUnpickler reads with the skeleton proof alone after the
# structured run failed to take one (records of a store look alike).
_STRUCTURED_RETRY = 64
# The loader's inline structured run, by the pickle's first byte (PROTO and
# protocol 1's binary first opcodes: the binary run; others: the text grammar).
_RUN_BY_FIRST_BYTE = tuple(
    _STRUCTURED_BY_SIZE if binary else _TEXT_BY_SIZE for binary in BINARY_FIRST
)
# Records a SafeUnpickler reads with the skeleton proof before it compiles a
# structured run's pattern, (text grammar, binary run): about what the compile
# costs (0.13 s and 0.23 s) over what the skeleton proof costs more per record
# (about 5 us at protocol 0, 3 us at protocol 4), so a conversion never pays
# more than about twice the better of the two choices, and a small one never
# compiles.
_COMPILE_AFTER = (30_000, 80_000)

_FAST_PATH = False
_FAST_PATH = _install_fast_path()
_DEFAULT_DECODER = SafeUnpickler()
_DECODERS: dict[tuple[Any, bool, str], SafeUnpickler] = {}


def _decoder(allow: Iterable[str], stubs: bool, py2_str: str) -> SafeUnpickler:
    if not allow and stubs is True and py2_str == "auto":
        return _DEFAULT_DECODER
    if isinstance(allow, str):
        allow = (allow,)
    elif type(allow) is not tuple and type(allow) is not frozenset:
        allow = tuple(allow)  # a list may change between calls: key on a copy
    key = (allow, bool(stubs), py2_str)
    decoder = _DECODERS.get(key)
    if decoder is None:
        decoder = SafeUnpickler(allow=allow, stubs=stubs, py2_str=py2_str)
        if len(_DECODERS) < 64:
            _DECODERS[key] = decoder
    return decoder


def loads(
    data: bytes | bytearray | memoryview,
    *,
    allow: Iterable[str] = (),
    stubs: bool = True,
    py2_str: str = "auto",
) -> Any:
    """Decode exactly one pickle without running anything from it.

    Raises :class:`DecodeError` (malformed, truncated, trailing bytes after STOP,
    refused feature, class not allowed with ``stubs=False``) or
    :class:`UnsafePickleError` (a gadget), each with one clear line.
    """
    if not allow and stubs is True and py2_str == "auto":
        return _DEFAULT_DECODER.loads(data)
    return _decoder(allow, stubs, py2_str).loads(data)


def load_stream(
    fileobj: BinaryIO,
    *,
    allow: Iterable[str] = (),
    stubs: bool = True,
    py2_str: str = "auto",
) -> Iterator[tuple[Any, int, bytes]]:
    """Decode consecutive pickles from a binary file until end of file.

    Yields ``(value, start_offset, raw_bytes)`` per pickle; ``loads(raw_bytes)``
    gives the same value.  Offsets count from the file's position at the start
    (``tell()``, or 0 when the file cannot tell).  Each pickle is read on its
    own: memo references into an earlier pickle (several ``dump`` calls of one
    ``Pickler``) are an error.  A damaged or truncated pickle raises
    :class:`DecodeError` naming its offset, and ends the stream.  Memory holds
    one pickle (plus a read-ahead chunk) at a time.
    """
    return _decoder(allow, stubs, py2_str).load_stream(fileobj)


# --------------------------------------------------------------------------
# Looking at a pickle without loading it

# opcode -> (argument kind, first protocol).  Kinds: an int is a fixed size;
# "line"/"line2" are one/two newline-ended lines; "len1"/"len4"/"len8" are a
# little-endian length followed by that many bytes.
_OPCODES: dict[int, tuple[Any, int]] = {
    **{ord(c): (0, 0) for c in "(.012NRabdlst"},
    **{ord(c): ("line", 0) for c in "FILPSVgp"},
    ord("c"): ("line2", 0),
    ord("i"): ("line2", 0),
    ord("J"): (4, 1),
    ord("K"): (1, 1),
    ord("M"): (2, 1),
    ord("G"): (8, 1),
    ord("T"): ("len4", 1),
    ord("U"): ("len1", 1),
    ord("X"): ("len4", 1),
    ord("h"): (1, 1),
    ord("j"): (4, 1),
    ord("q"): (1, 1),
    ord("r"): (4, 1),
    **{ord(c): (0, 1) for c in "}])euoQ"},
    0x80: (1, 2),
    0x81: (0, 2),
    0x82: (1, 2),
    0x83: (2, 2),
    0x84: (4, 2),
    **{code: (0, 2) for code in (0x85, 0x86, 0x87, 0x88, 0x89)},
    0x8A: ("len1", 2),
    0x8B: ("len4", 2),
    ord("B"): ("len4", 3),
    ord("C"): ("len1", 3),
    0x8C: ("len1", 4),
    0x8D: ("len8", 4),
    0x8E: ("len8", 4),
    **{code: (0, 4) for code in (0x8F, 0x90, 0x91, 0x92, 0x93, 0x94)},
    0x95: (8, 4),
    0x96: ("len8", 5),
    0x97: (0, 5),
    0x98: (0, 5),
}


def _opcodes(data: bytes, limit: int = 1 << 20) -> Iterator[tuple[int, int, bytes]]:
    """Yield (opcode, offset, argument bytes) up to STOP; stops quietly on damage."""
    pos, n = 0, len(data)
    for _ in range(limit):
        if pos >= n:
            return
        code = data[pos]
        spec = _OPCODES.get(code)
        if spec is None:
            return
        kind, _proto = spec
        start = pos + 1
        if kind == "line" or kind == "line2":
            end = data.find(b"\n", start)
            if kind == "line2" and end >= 0:
                end = data.find(b"\n", end + 1)
            if end < 0:
                return
            arg, pos = data[start:end], end + 1
        elif isinstance(kind, int):
            arg, pos = data[start : start + kind], start + kind
        else:
            width = {"len1": 1, "len4": 4, "len8": 8}[kind]
            if start + width > n:
                return
            size = int.from_bytes(data[start : start + width], "little")
            arg, pos = data[start + width : start + width + size], start + width + size
        if pos > n:
            return
        yield code, start - 1, arg
        if code == ord("."):
            return


def protocol_of(data: bytes) -> int:
    """The pickle protocol of ``data``.

    A PROTO opcode (protocols 2 and up) gives its value.  Without one the pickle
    is protocol 0 or 1, which differ only in opcodes: the answer is 1 as soon as
    an opcode that protocol 0 does not have appears (binary ints, strings, puts,
    EMPTY_LIST/DICT/TUPLE, APPENDS, SETITEMS, OBJ, ...), and 0 if none does before
    STOP (or the data cannot be parsed).
    """
    data = bytes(data)
    if len(data) >= 2 and data[0] == 0x80:
        return data[1]
    for code, _pos, _arg in _opcodes(data):
        if _OPCODES[code][1] >= 1:
            return 1
    return 0


def is_python2(data: bytes) -> bool | None:
    """Guess whether a pickle was written by Python 2.

    * False: protocol 3 or higher, or opcodes / names only Python 3 writes
      (BINBYTES, SHORT_BINUNICODE, ``_codecs.encode`` for bytes, a ``builtins`` global).
    * True: Python 2 ``str`` opcodes (STRING, BINSTRING, SHORT_BINSTRING), or, with no
      Python 3 sign, globals spelled the Python 2 way (``__builtin__``, ``copy_reg``,
      ``exceptions``).  Python 3 also writes those at protocols 0 to 2, so this last
      case is a guess.
    * None: nothing tells (for example a protocol 2 list of ints).
    """
    data = bytes(data)
    if protocol_of(data) >= 3:
        return False
    py2_names = False
    for code, _pos, arg in _opcodes(data):
        if code in (ord("S"), ord("T"), ord("U")):
            return True
        if _OPCODES[code][1] >= 3:
            return False
        if code in (ord("c"), ord("i")):
            module = arg.split(b"\n", 1)[0]
            if module in (b"_codecs", b"builtins"):
                return False
            if module in (b"__builtin__", b"copy_reg", b"exceptions"):
                py2_names = True
    return True if py2_names else None
