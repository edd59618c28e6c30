"""CPython's own unpicklers, made inert: every global they import is a recorder.

The differential test asks the real readers what a stream does, so nothing real may ever
be reached. Three doors lead from a pickle to code, and each is shut here:

- `find_class` (GLOBAL, STACK_GLOBAL, INST, and EXT through copyreg's registry: both the
  C and the pure-Python reader route EXT through `self.find_class`) is overridden and never
  imports: it returns a fresh recorder class;
- `persistent_load` (PERSID, BINPERSID) returns a recorder;
- every other value on the stack is one the unpickler builds itself (None, numbers,
  strings, bytes, bytearray, tuples, lists, dicts, sets, memoryviews) or a recorder, so
  REDUCE, BUILD (`__setstate__`), APPEND (`extend`/`append`), SETITEM (`__setitem__`),
  ADDITEMS (`add`) and NEWOBJ (`__new__`) can only reach a builtin's own method or a
  recorder's, which writes an event to the log and returns another recorder.

A recorder behaves as the most permissive real object could: every attribute exists,
every call succeeds. That is the attacker's model of a global: the reader goes on where a
real object might let it. Events are (kind, subject) pairs; the subject of a global is its
(module, name), of anything else a short tag.

`tests/scan/differential/test_recorders.py` proves the doors stay shut: a recorder-only
reader fed `os.system` streams, in a fresh interpreter under an audit hook, imports and
runs nothing.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import resource
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from joblib.numpy_pickle import NumpyUnpickler

Subject = tuple[str, str] | str
Event = tuple[str, Subject]

# Event kinds, strongest last: what the stream made the reader do with a value.
IMPORT = "import"
CALL = "call"  # REDUCE, INST, OBJ: the object is called
NEW = "new"  # NEWOBJ, NEWOBJ_EX: cls.__new__(cls, ...)
MUTATE = "mutate"  # a global's attributes or items changed (BUILD, SETITEM, APPEND, ADDITEMS)
METHOD = "method"  # a method of a value called by the reader itself (**kwargs calls .keys())
PERSISTENT = "persistent"


@dataclass(slots=True)
class Log:
    events: list[Event] = field(default_factory=list)

    def add(self, kind: str, subject: Subject) -> None:
        self.events.append((kind, subject))


# --- recorders -------------------------------------------------------------------------


class Inert:
    """What calling, instantiating or fetching anything returns: records, never acts.

    `owner` is set on an attribute fetched from a global: calling it is a call of the
    global's method (METHOD), which the stream made happen through that global. Methods of
    other values are the values' own business (METHOD on a tag), not the stream's calls.
    """

    __slots__ = ("_log", "_method", "_owner", "_tag")

    def __init__(self, log: Log, tag: str, owner: tuple[str, str] | None = None, method: bool = False) -> None:
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_tag", tag)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_method", method or owner is not None)

    def __call__(self, *args: object, **kwargs: object) -> Inert:
        if self._owner is not None:
            self._log.add(METHOD, self._owner)
        else:
            self._log.add(METHOD if self._method else CALL, self._tag)
        return Inert(self._log, f"result of {self._tag}")

    def __getattr__(self, name: str) -> Inert:
        if name.startswith("__") and name.endswith("__"):
            # Special lookups (copy, pickling, __reduce_ex__, __index__) never see a recorder.
            raise AttributeError(name)
        return Inert(self._log, f"{self._tag}.{name}", method=True)

    def __setattr__(self, name: str, value: object) -> None:
        self._log.add("set", self._tag)

    def __setitem__(self, key: object, value: object) -> None:
        self._log.add("set", self._tag)

    def __setstate__(self, state: object) -> None:
        self._log.add("set", self._tag)

    def append(self, value: object) -> None:
        self._log.add("set", self._tag)

    def extend(self, values: object) -> None:
        self._log.add("set", self._tag)

    def add(self, value: object) -> None:
        self._log.add("set", self._tag)

    def __reduce_ex__(self, protocol: object) -> object:
        raise TypeError("recorders are never pickled")

    def __repr__(self) -> str:
        return f"<inert {self._tag}>"


class _GlobalMeta(type):
    """The metaclass of a recorded global: calls and changes to the class are logged."""

    _log: Log
    _name: tuple[str, str]

    def __call__(cls, *args: object, **kwargs: object) -> Inert:
        cls._log.add(CALL, cls._name)
        return Inert(cls._log, f"result of {cls._name[0]}.{cls._name[1]}")

    def __getattr__(cls, name: str) -> Inert:
        if name.startswith("__") and name.endswith("__") and name != "__getinitargs__":
            raise AttributeError(name)
        return Inert(cls._log, f"{cls._name[0]}.{cls._name[1]}.{name}", owner=cls._name)

    def __setattr__(cls, name: str, value: object) -> None:
        cls._log.add(MUTATE, cls._name)

    def __setitem__(cls, key: object, value: object) -> None:
        cls._log.add(MUTATE, cls._name)

    # BUILD looks __setstate__ up on the global itself; APPEND(S)/ADDITEMS look up
    # extend/append/add: on a class these come from its metaclass, bound to the class.
    def __setstate__(cls, state: object) -> None:
        cls._log.add(MUTATE, cls._name)

    def append(cls, value: object) -> None:
        cls._log.add(MUTATE, cls._name)

    def extend(cls, values: object) -> None:
        cls._log.add(MUTATE, cls._name)

    def add(cls, value: object) -> None:
        cls._log.add(MUTATE, cls._name)


def _recorded_new(cls: Any, *args: object, **kwargs: object) -> Inert:
    cls._log.add(NEW, cls._name)
    return Inert(cls._log, f"instance of {cls._name[0]}.{cls._name[1]}")


def make_global(log: Log, module: str, name: str) -> type:
    """A fresh class standing for `module.name`: a type, so the C reader's NEWOBJ accepts it."""
    log.add(IMPORT, (module, name))
    namespace = {"__new__": _recorded_new, "__slots__": (), "__module__": "recorded"}
    cls = _GlobalMeta.__new__(_GlobalMeta, "Recorded", (), namespace)
    type.__setattr__(cls, "_log", log)
    type.__setattr__(cls, "_name", (module, name))
    return cls


# --- the readers -----------------------------------------------------------------------


class _RecordingMixin:
    log: Log

    def find_class(self, module: str, name: str) -> type:
        return make_global(self.log, module, name)

    def persistent_load(self, pid: object) -> Inert:
        self.log.add(PERSISTENT, "pid")
        return Inert(self.log, "persistent")


class RecordingCUnpickler(_RecordingMixin, pickle.Unpickler):
    """The C unpickler (`pickle.load`), with recorders for globals and persistent ids."""

    def __init__(self, file: io.BytesIO, log: Log) -> None:
        self.log = log
        super().__init__(file, encoding="latin1")


class RecordingPyUnpickler(_RecordingMixin, pickle._Unpickler):
    """The pure-Python unpickler, as joblib subclasses it."""

    def __init__(self, file: io.BytesIO, log: Log) -> None:
        self.log = log
        super().__init__(file, encoding="latin1")


def _joblib_reader() -> type:
    class RecordingJoblibUnpickler(_RecordingMixin, NumpyUnpickler):
        """joblib's NumpyUnpickler (its BUILD hook included) over recorders."""

        def __init__(self, file: io.BytesIO, log: Log) -> None:
            self.log = log
            super().__init__("<differential>", file, ensure_native_byte_order=False)
            self.encoding = "latin1"

    return RecordingJoblibUnpickler


# Extension codes registered for the test, so EXT opcodes reach find_class. The names are
# dangerous-looking (recorders like any other) and used by nothing else in the generated
# streams, so an import of one is known to have come through EXT.
EXTENSIONS: dict[int, tuple[str, str]] = {
    1: ("nt", "system"),
    2: ("ext_only.copyreg", "_reconstructor"),
    300: ("ext_only.builtins", "eval"),
    70000: ("ext_only.torch", "_rebuild_parameter"),
}


def register_extensions() -> Callable[[], None]:
    """Add EXTENSIONS to copyreg for the test; returns the function that removes them."""
    added = []
    for code, (module, name) in EXTENSIONS.items():
        if copyreg._inverted_registry.get(code) is None and (module, name) not in copyreg._extension_registry:
            copyreg.add_extension(module, name, code)
            added.append((module, name, code))

    def remove() -> None:
        for module, name, code in added:
            copyreg.remove_extension(module, name, code)
        copyreg.clear_extension_cache()

    return remove


@contextlib.contextmanager
def bounded_memory(headroom: int = 1 << 30) -> Iterator[None]:
    """Cap this process's address space while readers run, so a hostile length cannot OOM the machine.

    Both readers allocate what a stream declares before reading it: the C reader's memo
    grows to twice the largest PUT index (LONG_BINPUT 0x7fffffff is 32 GiB), and
    BYTEARRAY8 allocates its length first. Under the cap those fail with MemoryError,
    which is the reader's verdict on the stream. Also silences the unraisable-exception
    reports that READONLY_BUFFER on a bytearray makes CPython print.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm_kib * 1024 + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    hook = sys.unraisablehook
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    sys.unraisablehook = lambda _: None
    try:
        yield
    finally:
        sys.unraisablehook = hook
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass(slots=True)
class Run:
    """What one reader did with one stream."""

    events: list[Event]
    completed: bool
    end: int
    """Bytes consumed up to STOP when completed (meaningless when the reader failed)."""
    error: str = ""
    value: object = None


def run_reader(reader: type, data: bytes) -> Run:
    log = Log()
    # A buffered file, as pickle.load(open(path, "rb")) reads: the C reader then peeks
    # ahead and reads linearly, and leaves the file just past STOP.
    file = io.BufferedReader(io.BytesIO(data))
    # EXT results are cached process-wide; a cached recorder would log into an old run.
    copyreg.clear_extension_cache()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # STRING's unknown escapes warn
            value = reader(file, log).load()
    except Exception as err:  # any failure (MemoryError, RecursionError included) is the reader's verdict
        return Run(log.events, False, file.tell(), f"{type(err).__name__}: {err}"[:200])
    finally:
        copyreg.clear_extension_cache()
    return Run(log.events, True, file.tell(), value=value)


READERS: dict[str, Callable[[], type]] = {
    "c": lambda: RecordingCUnpickler,
    "python": lambda: RecordingPyUnpickler,
    "joblib": _joblib_reader,
}
