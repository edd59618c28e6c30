"""NumPy `.npy`: a header, then raw data, or a pickle when the dtype holds Python objects.

`np.load(allow_pickle=True)` unpickles object arrays, so their data is emulated like any
other pickle. Numeric data is skipped, never read.
"""

from __future__ import annotations

import ast
import struct

from bastion.errors import ArtifactError
from bastion.findings import Location
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
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
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
