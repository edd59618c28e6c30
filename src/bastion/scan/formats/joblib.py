"""joblib: arrays written raw into the middle of the pickle stream.

`joblib.dump` pickles a `NumpyArrayWrapper` and then writes the array's bytes straight
into the stream; the loader reads them right after the wrapper's BUILD. Object arrays
are written as a complete nested pickle instead, which loads with full pickle power, so
it is emulated like the outer one. Reading the inline bytes exactly as joblib does keeps
the opcode stream aligned: a scanner that does not would lose its place, or be made to.
"""

from __future__ import annotations

import math

from bastion.errors import ArtifactError
from bastion.scan.pickle.symbolic import Global, Machine, PDict, Result
from bastion.scan.source import ByteSource

WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper"})
_KIND_SIZES = {"b": 1, "i": 0, "u": 0, "f": 0, "c": 0, "m": 0, "M": 0, "S": 1, "U": 4, "V": 1, "O": 8, "?": 1}
_NPY_ITEM_HASOBJECT = 0x01


class NestedPickle(Exception):  # a signal, not an error
    """Raised by the hook when the next bytes are a complete pickle of an object array."""


def _state_dict(state: object) -> dict[str, object]:
    if isinstance(state, PDict):
        return {k: v for k, v in state.items if isinstance(k, str)}
    return {}


def _dtype_layout(dtype: object) -> tuple[int, bool]:
    """(itemsize, has_object) of a pickled numpy.dtype, from its REDUCE args and BUILD state."""
    if not isinstance(dtype, Result) or not isinstance(dtype.func, Global) or dtype.func.name != "dtype":
        raise ArtifactError("joblib array wrapper without a readable dtype")
    args = dtype.args if isinstance(dtype.args, tuple) else ()
    spec = args[0] if args and isinstance(args[0], str) else ""
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    elsize = state[5] if len(state) > 5 and isinstance(state[5], int) else -1
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    has_object = spec.startswith("O") or bool(flags & _NPY_ITEM_HASOBJECT)
    if elsize > 0:
        return elsize, has_object
    kind, digits = spec[:1], spec[1:].split("[")[0]
    if kind not in _KIND_SIZES or (digits and not digits.isdigit()):
        raise ArtifactError(f"joblib array of dtype {spec!r} cannot be sized")
    count = int(digits) if digits else 0
    unit = _KIND_SIZES[kind]
    size = count * unit if kind in "SUV" else count
    if kind == "O":
        size = 8
    if size <= 0:
        raise ArtifactError(f"joblib array of dtype {spec!r} cannot be sized")
    return size, has_object


def read_inline_array(machine: Machine, target: object, src: ByteSource, pos: int) -> None:
    """BUILD hook: consume the bytes joblib wrote after a NumpyArrayWrapper."""
    if not isinstance(target, Result) or not isinstance(target.func, Global):
        return
    if f"{target.func.module}.{target.func.name}" not in WRAPPERS:
        return
    state = _state_dict(target.state)
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ArtifactError(f"joblib array wrapper at byte {pos} has no readable shape")
    itemsize, has_object = _dtype_layout(state.get("dtype"))
    if has_object:
        raise NestedPickle()
    if "numpy_array_alignment_bytes" in state:
        padding = src.read(1)[0]
        src.skip(padding)
    src.skip(math.prod(shape) * itemsize)
