"""joblib: pickles read by joblib's own unpickler, with arrays inline or in sidecar files.

`joblib.load` does not use `pickle.load`. It runs CPython's pure-Python unpickler
(`pickle._Unpickler`), which reads each FRAME into a buffer, and after every BUILD whose
result is one of its array wrappers it reads more from the *file*, not from that buffer:

- `NumpyArrayWrapper` (joblib >= 0.10): the array's bytes follow in the file, after a
  padding byte unless the wrapper's `numpy_array_alignment_bytes` is None (a dump to a
  non-seekable stream); an array of Python objects follows as a complete nested pickle.
  Opcodes left in the frame after the BUILD run *before* the bytes read from the file.
- `NDArrayWrapper` (joblib < 0.10): `np.load(<folder>/<filename>, allow_pickle=True)`
  of a sidecar file; `ZNDArrayWrapper` reads raw bytes from a `.z` sidecar.
- the `ZF` container (joblib < 0.10, compressed): a zlib-compressed pickle read by
  `ZipNumpyUnpickler`, which knows only the sidecar wrappers.

This module reproduces those reads: `UnframedSource` is the Python unpickler's view of a
file (frames buffered, the file position kept apart), and the wrapper logic decides what
joblib reads next. Sidecars are followed relative to the pickle's folder and scanned as
the loader reads them; one that is missing or lies outside that folder is reported.
"""

from __future__ import annotations

import enum
import math
import mmap
import os
from dataclasses import dataclass

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.limits import ScanLimits
from bastion.scan.pickle.symbolic import EmbeddedSink, Global, Machine, PDict, Result, Use
from bastion.scan.source import ByteSource, MemorySource

# joblib's modules, and the copy scikit-learn < 0.23 vendored (old models name it).
_JOBLIB_MODULES = ("joblib.", "sklearn.externals.joblib.")
INLINE_WRAPPERS = frozenset(f"{m}numpy_pickle.NumpyArrayWrapper" for m in _JOBLIB_MODULES)
SIDECAR_WRAPPERS = frozenset(
    f"{m}{module}.{cls}"
    for m in _JOBLIB_MODULES
    for module in ("numpy_pickle", "numpy_pickle_compat")
    for cls in ("NDArrayWrapper", "ZNDArrayWrapper")
)
_RAW_SIDECARS = frozenset(name for name in SIDECAR_WRAPPERS if name.endswith(".ZNDArrayWrapper"))
# Calls that return an instance of their first argument without running its __init__.
_INSTANTIATORS = frozenset(
    {
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "builtins.object.__new__",
        "__builtin__.object.__new__",
    }
)
# Whole-file layers joblib.load opens itself: a sidecar is still next to the outer file.
_TRANSPARENT_LAYERS = frozenset({"<gzip>", "<zlib>", "<bzip2>", "<xz>", "<lzma>", "<lz4>", "<zfile>"})
_FIXED_ITEM_SIZES = {"b": 1, "?": 1, "i": 0, "u": 0, "f": 0, "c": 0, "m": 8, "M": 8, "O": 8}
_NPY_ITEM_HASOBJECT = 0x01
_MAX_STREAM_FRAME = 256 << 20


class Reader(enum.Enum):
    """Which unpickler reads the stream: it decides what a wrapper's BUILD reads next."""

    PLAIN = "pickle.load"
    """CPython's C unpickler, linear; a joblib wrapper in it makes the scan read JOBLIB too."""
    JOBLIB = "joblib.load"
    """NumpyUnpickler: Python unpickler, inline arrays and NDArrayWrapper sidecars."""
    COMPAT = "joblib.load of a ZF file"
    """ZipNumpyUnpickler: Python unpickler, sidecar wrappers only."""


# -- the Python unpickler's view of a file -------------------------------------------------

_NO_ARG = frozenset(b"(.012NQRabde}]lostu)\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98")
_FIXED_ARG = {
    ord("q"): 1, ord("h"): 1, ord("K"): 1, ord("r"): 4, ord("j"): 4, ord("J"): 4, ord("M"): 2, ord("G"): 8,
    0x80: 1, 0x95: 8, 0x82: 1, 0x83: 2, 0x84: 4,
}  # fmt: skip
_COUNTED_ARG = {
    0x8C: 1, ord("X"): 4, 0x8D: 8, ord("C"): 1, ord("B"): 4, 0x8E: 8, 0x96: 8, 0x8A: 1, 0x8B: 4, ord("U"): 1,
    ord("T"): 4,
}  # fmt: skip
_SIGNED_COUNT = frozenset({0x8B, ord("T")})
_LINE_ARGS = {ord("c"): 2, ord("i"): 2, ord("V"): 1, ord("S"): 1, ord("I"): 1, ord("L"): 1, ord("F"): 1, ord("g"): 1, ord("p"): 1, ord("P"): 1}  # fmt: skip
_FRAME = 0x95


class _Phase(enum.Enum):
    OPCODE = 0
    FIXED = 1
    COUNT = 2
    BODY = 3
    LINE = 4


class _OpcodeTracker:
    """Follows opcode boundaries in the bytes served, to spot FRAME as the unpickler does.

    The unpickler loads a frame as soon as it has read FRAME's 8-byte size; this sees
    the same bytes in the same order, whatever sizes they are read in.
    """

    __slots__ = ("collected", "frame_size", "lines", "need", "opcode", "phase")

    def __init__(self) -> None:
        self.phase = _Phase.OPCODE
        self.need = 0
        self.lines = 0
        self.opcode = 0
        self.collected = b""
        self.frame_size: int | None = None

    def feed(self, data: bytes) -> None:  # noqa: PLR0912  # one state machine
        i, end = 0, len(data)
        while i < end:
            phase = self.phase
            if phase is _Phase.OPCODE:
                code = data[i]
                i += 1
                self.opcode = code
                if code in _NO_ARG:
                    continue
                if code in _FIXED_ARG:
                    self.phase, self.need, self.collected = _Phase.FIXED, _FIXED_ARG[code], b""
                elif code in _COUNTED_ARG:
                    self.phase, self.need, self.collected = _Phase.COUNT, _COUNTED_ARG[code], b""
                elif code in _LINE_ARGS:
                    self.phase, self.lines = _Phase.LINE, _LINE_ARGS[code]
                # An unknown opcode stops the parser itself; nothing to follow.
            elif phase in (_Phase.FIXED, _Phase.COUNT):
                take = min(self.need, end - i)
                self.collected += data[i : i + take]
                i += take
                self.need -= take
                if self.need == 0:
                    self._argument_done()
            elif phase is _Phase.BODY:
                take = min(self.need, end - i)
                i += take
                self.need -= take
                if self.need == 0:
                    self.phase = _Phase.OPCODE
            else:
                nl = data.find(b"\n", i)
                if nl < 0:
                    return
                i = nl + 1
                self.lines -= 1
                if self.lines == 0:
                    self.phase = _Phase.OPCODE

    def _argument_done(self) -> None:
        if self.phase is _Phase.FIXED:
            if self.opcode == _FRAME:
                self.frame_size = int.from_bytes(self.collected, "little")
            self.phase = _Phase.OPCODE
            return
        length = int.from_bytes(self.collected, "little", signed=self.opcode in _SIGNED_COUNT)
        if length > 0:
            self.phase, self.need = _Phase.BODY, length
        else:
            self.phase = _Phase.OPCODE

    def skip_body(self, n: int) -> bool:
        """Account for `n` body bytes skipped unread; False if the tracker needs to see them."""
        if self.phase is _Phase.BODY and n <= self.need:
            self.need -= n
            if self.need == 0:
                self.phase = _Phase.OPCODE
            return True
        return n == 0


class UnframedSource:
    """`pickle._Unframer` over a ByteSource: the opcode bytes joblib's unpickler reads.

    A FRAME is read from the file whole, and opcodes come from that buffer until it is
    exhausted; a read that runs past its end is an error, as is a FRAME opened before
    the previous one is used up. `file` is the file itself: what joblib reads directly
    (array bytes, nested pickles) comes from there, after the frame.
    """

    __slots__ = ("_frame", "_frame_at", "_tracker", "file", "name")

    def __init__(self, file: ByteSource) -> None:
        self.file = file
        self.name = file.name
        self._frame: MemorySource | None = None
        self._frame_at = 0
        self._tracker = _OpcodeTracker()

    @property
    def size(self) -> int | None:
        return self.file.size

    def tell(self) -> int:
        # Inside a frame, positions are the frame's own, up to its end: what comes next
        # from the file (past an array joblib read meanwhile) is placed once it is read.
        if self._frame is not None:
            return self._frame_at + self._frame.tell()
        return self.file.tell()

    def _from_frame(self, n: int) -> bytes | None:
        frame = self._frame
        if frame is None:
            return None
        data = frame.read_some(n)
        if not data and n:
            self._frame = None
            return None
        if len(data) < n:
            raise ArtifactError(f"{self.name}: pickle exhausted before end of frame at byte {self.tell()}")
        return data

    def _served(self, data: bytes) -> bytes:
        tracker = self._tracker
        tracker.feed(data)
        if tracker.frame_size is not None:
            size, tracker.frame_size = tracker.frame_size, None
            self._load_frame(size)
        return data

    def _load_frame(self, size: int) -> None:
        if self._frame is not None and not self._frame.at_end():
            raise ArtifactError(f"{self.name}: a FRAME begins before the end of the current frame")
        file = self.file
        self._frame_at = file.tell()
        if isinstance(file, MemorySource):
            self._frame = file.window(file.tell(), min(size, file.size - file.tell()), self.name)
            file.skip(self._frame.size)
            return
        if size > _MAX_STREAM_FRAME:
            raise LimitExceeded(f"{self.name}: a {size}-byte frame, more than joblib's reader would buffer here")
        data = file.read_some(size)
        self._frame = MemorySource(data, self.name)

    def read(self, n: int) -> bytes:
        data = self._from_frame(n)
        return self._served(self.file.read(n) if data is None else data)

    def read_some(self, n: int) -> bytes:
        data = self._from_frame(n) if self._frame is not None else None
        return self._served(self.file.read_some(n) if data is None else data)

    def readline(self, limit: int) -> bytes:
        frame = self._frame
        if frame is not None and frame.at_end():
            self._frame = frame = None
        if frame is None:
            return self._served(self.file.readline(limit))
        try:
            return self._served(frame.readline(limit))
        except ArtifactError:
            raise ArtifactError(f"{self.name}: pickle exhausted before end of frame at byte {self.tell()}") from None

    def skip(self, n: int) -> None:
        if not self._tracker.skip_body(n):
            self.read(n)
            return
        frame = self._frame
        if frame is not None and frame.at_end() and n:
            self._frame = frame = None
        if frame is None:
            self.file.skip(n)
            return
        if frame.size - frame.tell() < n:
            raise ArtifactError(f"{self.name}: pickle exhausted before end of frame at byte {self.tell()}")
        frame.skip(n)

    def peek(self, n: int) -> bytes:
        if self._frame is not None and not self._frame.at_end():
            return self._frame.peek(n)
        return self.file.peek(n)

    def at_end(self) -> bool:
        return (self._frame is None or self._frame.at_end()) and self.file.at_end()


class JoblibMachine(Machine):
    """A Machine that keeps each object's attributes as BUILD sets them, BUILD after BUILD.

    joblib reads an array with the wrapper's attributes as they stand after the latest
    BUILD (`Unpickler.load_build` updates `__dict__`, then sets slot state one by one).
    """

    def __init__(self, limits: ScanLimits, on_embedded: EmbeddedSink | None, after_build: object) -> None:
        super().__init__(limits, on_embedded, after_build)  # type: ignore[arg-type]  # a BuildHook
        self.attributes: dict[int, tuple[object, dict[str, object]]] = {}

    def _build(self, target: object, state: object, pos: int) -> None:
        super()._build(target, state, pos)
        _, attrs = self.attributes.setdefault(id(target), (target, {}))
        dict_state, slot_state = (state[0], state[1]) if isinstance(state, tuple) and len(state) == 2 else (state, None)
        for part in (dict_state, slot_state):
            if isinstance(part, PDict):
                attrs.update((k, v) for k, v in part.items if isinstance(k, str))

    def attributes_of(self, target: object) -> dict[str, object]:
        entry = self.attributes.get(id(target))
        return entry[1] if entry is not None and entry[0] is target else {}


def wrapper_class(target: object) -> str | None:
    """The joblib wrapper class `target` is an instance of, or None."""
    if not isinstance(target, Result) or not isinstance(target.func, Global):
        return None
    name = target.func.dotted
    if name in INLINE_WRAPPERS or name in SIDECAR_WRAPPERS:
        return name
    args = target.args
    if name in _INSTANTIATORS and isinstance(args, tuple) and args and isinstance(args[0], Global):
        inner = args[0].dotted
        if inner in INLINE_WRAPPERS or inner in SIDECAR_WRAPPERS:
            return inner
    return None


@dataclass(frozen=True, slots=True)
class ArrayLayout:
    """What joblib reads from the file after a NumpyArrayWrapper's BUILD."""

    nbytes: int
    has_object: bool
    padded: bool


def _dtype_layout(dtype: object) -> tuple[int, bool]:
    """(itemsize, hasobject) of a pickled numpy.dtype, as numpy rebuilds it from REDUCE and BUILD."""
    if not isinstance(dtype, Result) or not isinstance(dtype.func, Global):
        raise ArtifactError("joblib array wrapper without a readable dtype")
    if dtype.func.name != "dtype":
        # StringDType and anything else that is not a plain numpy.dtype: joblib checks
        # `dtype.hasobject` and, when set, unpickles what follows; read it as a pickle.
        return 0, True
    args = dtype.args if isinstance(dtype.args, tuple) else ()
    spec = args[0] if args and isinstance(args[0], str) else None
    if spec is None:
        raise ArtifactError("joblib array wrapper whose dtype is not spelled as a string")
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    # numpy takes hasobject from the pickled flags; the spelling may say so too.
    from bastion.scan.formats.numpy import has_object  # noqa: PLC0415  # only for arrays: keeps start-up short

    objects = bool(flags & _NPY_ITEM_HASOBJECT) or has_object(spec)
    kind, digits = spec.lstrip("<>|=")[:1], spec.lstrip("<>|=")[1:].split("[")[0]
    if kind in ("S", "U", "V", "a"):
        # Flexible types take their size from the state when it gives one.
        elsize = state[5] if len(state) > 5 and isinstance(state[5], int) else -1
        if elsize >= 0:
            return elsize, objects
        if not digits.isdigit():
            raise ArtifactError(f"joblib array of dtype {spec!r} cannot be sized")
        return int(digits) * (4 if kind == "U" else 1), objects
    if kind not in _FIXED_ITEM_SIZES:
        if objects:
            return 8, True
        raise ArtifactError(f"joblib array of dtype {spec!r} cannot be sized")
    size = _FIXED_ITEM_SIZES[kind] or (int(digits) if digits.isdigit() else 0)
    if kind in ("b", "?") and digits.isdigit():
        size = int(digits)
    if size <= 0:
        raise ArtifactError(f"joblib array of dtype {spec!r} cannot be sized")
    return size, objects


def array_layout(attrs: dict[str, object], pos: int) -> ArrayLayout:
    """The bytes joblib's NumpyArrayWrapper.read takes from the file, from the wrapper's attributes."""
    shape = attrs.get("shape")
    if not isinstance(shape, (tuple, list)) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ArtifactError(f"joblib array wrapper at byte {pos} has no readable shape")
    itemsize, objects = _dtype_layout(attrs.get("dtype"))
    count = math.prod(int(n) for n in shape)
    # safe_get_numpy_array_alignment_bytes: a missing attribute and None both mean no padding.
    padded = attrs.get("numpy_array_alignment_bytes") is not None
    return ArrayLayout(count * itemsize, objects, padded)


def skip_inline_array(file: ByteSource, layout: ArrayLayout) -> None:
    """Consume a numeric array's bytes exactly as NumpyArrayWrapper.read_array does."""
    if layout.padded:
        padding = file.read(1)[0]
        file.skip(padding)
    file.skip(layout.nbytes)


def mark_rebuilt_classes(name: str, attrs: dict[str, object], pos: int) -> None:
    """Classes a wrapper makes numpy instantiate (`_reconstruct(subclass, ...)`)."""
    subclass = attrs.get("subclass")
    if name in _RAW_SIDECARS:
        init_args = attrs.get("init_args")
        subclass = init_args[0] if isinstance(init_args, tuple) and init_args else None
    if isinstance(subclass, Global):
        subclass.use(Use.RECONSTRUCT, pos)


# -- sidecars --------------------------------------------------------------------------------


def _pickle_folder(loc: Location) -> str | None:
    # joblib.load(filename) looks for sidecars next to `filename`; only a file on disk
    # (possibly compressed, which joblib opens itself) has such a folder.
    if loc.file.startswith("<") or any(m not in _TRANSPARENT_LAYERS for m in loc.members):
        return None
    return os.path.dirname(os.path.abspath(loc.file))


def follow_sidecar(ctx: ScanContext, loc: Location, wrapper: str, filename: object, depth: int) -> None:
    """Judge the file a sidecar wrapper names, as joblib would open it.

    NDArrayWrapper's file goes to `np.load(allow_pickle=True)`, so it is scanned by
    content (an object array or a bare pickle is emulated). ZNDArrayWrapper's `.z` file
    is raw array bytes; it only has to be there. A sidecar that is missing, unreadable,
    or outside the pickle's folder is never passed over.
    """
    sloc = loc.inside(f"<sidecar {filename}>")
    ctx.saw("joblib-sidecar")
    if not isinstance(filename, str) or not filename:
        ctx.incomplete(sloc, f"{wrapper} names no readable sidecar file; what joblib loads is unknown", "joblib")
        return
    folder = _pickle_folder(loc)
    if folder is None:
        ctx.incomplete(
            sloc,
            f"{wrapper} loads the sidecar {filename!r} from next to the pickle, which cannot be reached from here",
            "joblib",
        )
        return
    path = os.path.join(folder, filename)
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, root]) != root:
        ctx.add(
            "joblib.sidecar-escape",
            Severity.HIGH,
            sloc,
            f"{wrapper} makes joblib load {filename!r}, which lies outside the model's folder",
            "joblib",
            filename,
        )
        return
    try:
        with open(real, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if wrapper in _RAW_SIDECARS:
                return  # raw bytes for ndarray.__setstate__: present is all that matters
            # Each sidecar read counts against the file's budget: a pickle naming one large
            # sidecar a million times must not cost a million reads.
            ctx.spend(size)
            if size == 0:
                ctx.incomplete(sloc, f"the sidecar {filename!r} is empty; np.load would fail on it", "joblib")
                return
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                ctx.nested(MemorySource(mapped, path), sloc, os.path.basename(path), depth + 1)
    except OSError as err:
        ctx.incomplete(
            sloc, f"the sidecar {filename!r} that joblib would load cannot be read: {err.strerror or err}", "joblib"
        )
