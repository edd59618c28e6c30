"""NumPy `.npy`: a header, then raw data, or a pickle when the dtype holds Python objects.

`np.load(allow_pickle=True)` unpickles object arrays, so their data is emulated like any
other pickle. Numeric data is skipped, never read.
"""

from __future__ import annotations

import ast
import math
import struct

from bastion.errors import ArtifactError
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats.pickle import scan_pickle
from bastion.scan.source import ByteSource

MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 20


def _has_object(descr: object) -> bool:
    if isinstance(descr, str):
        return "O" in descr.lstrip("<>|=")[:1]
    if isinstance(descr, list):
        return any(isinstance(field, tuple) and len(field) >= 2 and _has_object(field[1]) for field in descr)
    return True  # an unknown description cannot be vouched for


_ITEM_SIZES = {"b": 1, "i": 1, "u": 1, "f": 1, "c": 1, "m": 1, "M": 1, "S": 1, "U": 4, "V": 1, "?": 1}


def _data_bytes(header: dict[str, object]) -> int | None:
    """Bytes of array data a simple dtype and shape call for, or None when not simple."""
    descr, shape = header["descr"], header["shape"]
    if not isinstance(descr, str) or not isinstance(shape, tuple):
        return None
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ArtifactError(f".npy shape {shape!r} is not a tuple of sizes")
    kind, digits = descr.lstrip("<>|=")[:1], descr.lstrip("<>|=")[1:]
    if kind not in _ITEM_SIZES or not digits.isdigit():
        return None
    return math.prod(shape) * int(digits) * _ITEM_SIZES[kind]


def read_header(src: ByteSource) -> dict[str, object]:
    """Parse the header dict of a .npy stream positioned at its magic."""
    if src.read(6) != MAGIC:
        raise ArtifactError("not a .npy file")
    major = src.read(2)[0]
    if major == 1:
        length = struct.unpack("<H", src.read(2))[0]
    elif major in (2, 3):
        length = struct.unpack("<I", src.read(4))[0]
    else:
        raise ArtifactError(f".npy format version {major} is unknown")
    if length > _MAX_HEADER:
        raise ArtifactError(f".npy header of {length} bytes is implausibly long")
    text = src.read(length).decode("latin-1")
    try:
        # literal_eval evaluates literals only; the header is a dict of str, bool, tuples.
        header = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise ArtifactError(f".npy header is not a literal dict: {text[:80]!r}") from err
    if not isinstance(header, dict) or not {"descr", "shape", "fortran_order"} <= header.keys():
        raise ArtifactError(".npy header lacks descr, shape or fortran_order")
    return header


def scan_npy(ctx: ScanContext, src: ByteSource, loc: Location, depth: int) -> None:
    """Scan a .npy stream: object arrays as pickles, numeric arrays by size only."""
    ctx.saw("npy")
    header = read_header(src)
    if _has_object(header["descr"]):
        scan_pickle(ctx, src, loc.at(src.tell()), depth, "npy-object")
        return
    expected = _data_bytes(header)
    if expected is None:
        return
    # np.load reads exactly shape x itemsize bytes: fewer is a truncated file.
    src.skip(expected)
    if not src.at_end():
        ctx.add(
            "npy.trailing-data",
            Severity.LOW,
            loc.at(src.tell()),
            "bytes follow the array that np.load never reads",
            "npy",
        )
