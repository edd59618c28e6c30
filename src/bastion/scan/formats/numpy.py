"""NumPy `.npy`: a header, then raw data, or a pickle when the dtype holds Python objects.

`np.load(allow_pickle=True)` unpickles the data of every array whose dtype has
`hasobject` set, so that data is emulated like any other pickle. numpy spells such a
dtype many ways ('O', '|O', 'O8', 'object', 'object_', 'T' for StringDType, 'i4,O',
'(2,)O', structured and subarray descriptions with an object field), so the header is
read the other way round: only a description made entirely of numeric and text types
is data; anything else is handed to the pickle emulator, as numpy would hand it to
pickle.load. Numeric data is skipped, never read.
"""

from __future__ import annotations

import ast
import io
import math
import re
import struct

from bastion.errors import ArtifactError
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.source import ByteSource, MemorySource

MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 20


# numpy's names and type characters for dtypes that hold no Python object (np.sctypeDict,
# numpy 2, filtered on hasobject). 'O', 'object', 'object_' and 'T' are absent on purpose.
_PLAIN_NAMES = frozenset({
    "a", "bool", "bool_", "byte", "bytes", "bytes_", "cdouble", "clongdouble", "complex", "complex64",
    "complex128", "complex256", "csingle", "datetime64", "double", "float", "float16", "float32", "float64",
    "float128", "half", "int", "int8", "int16", "int32", "int64", "int_", "intc", "intp", "long",
    "longdouble", "longlong", "short", "single", "str", "str_", "timedelta64", "ubyte", "uint", "uint8",
    "uint16", "uint32", "uint64", "uintc", "uintp", "ulong", "ulonglong", "unicode", "ushort", "void",
})  # fmt: skip
_PLAIN_CODES = "?bBhHiIlLqQpPnNuefdgFDGSaUVmMc"
_PLAIN_ITEM = re.compile(
    rf"(?:\(\s*\d+\s*(?:,\s*\d+\s*)*,?\s*\)|\d+)?\s*[<>|=]?\s*(?:(?:[{_PLAIN_CODES}]\d*)|(?P<name>[a-z_]+\d*))(?:\[\w+\])?"
)
_TOP_LEVEL_COMMA = re.compile(r",(?![^()]*\))")  # 'i4,(2,3)f8' is two fields
_MAX_DESCR_DEPTH = 32


def _plain_string(text: str) -> bool:
    """True when numpy would read this dtype string without any object field."""
    parts = _TOP_LEVEL_COMMA.split(text) if "," in text else [text]
    for part in parts:
        item = part.strip() if len(parts) > 1 else part
        if not item and len(parts) > 1:
            continue  # 'i4,' is a one-field record
        match = _PLAIN_ITEM.fullmatch(item)
        if match is None or (match.group("name") is not None and match.group("name") not in _PLAIN_NAMES):
            return False
    return True


def has_object(descr: object, depth: int = 0) -> bool:
    """Whether numpy.lib.format.descr_to_dtype(descr) would have `hasobject` set.

    Mirrors descr_to_dtype: a string is a dtype spelling, a tuple a subarray of its first
    item, anything else an iterable of (name, descr[, shape]) fields. What cannot be
    shown to be plain data counts as objects: numpy either unpickles it or refuses it.
    """
    if depth > _MAX_DESCR_DEPTH:
        return True
    if isinstance(descr, str):
        return not _plain_string(descr)
    if isinstance(descr, tuple):
        return not descr or has_object(descr[0], depth + 1)
    if isinstance(descr, (list, dict)):
        for field in descr:
            if not isinstance(field, (tuple, list, str)) or len(field) not in (2, 3):
                return True
            if has_object(field[1], depth + 1):
                return True
        return False
    return True


def _without_long_suffixes(text: str) -> str:
    # numpy's _filter_header: headers written by Python 2 spell shapes as (3L,).
    import tokenize  # noqa: PLC0415  # only for Python 2 headers

    tokens: list[tokenize.TokenInfo] = []
    last_number = False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if last_number and token.type == tokenize.NAME and token.string == "L":
            continue
        tokens.append(token)
        last_number = token.type == tokenize.NUMBER
    return tokenize.untokenize(tokens)


_ITEM_SIZES = {"b": 1, "i": 1, "u": 1, "f": 1, "c": 1, "m": 1, "M": 1, "S": 1, "U": 4, "V": 1, "?": 1}


def _data_bytes(header: dict[str, object]) -> int | None:
    """Bytes of array data a simple dtype and shape call for, or None when not simple."""
    descr, shape = header["descr"], header["shape"]
    if not isinstance(descr, str) or not isinstance(shape, tuple):
        return None
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ArtifactError(f".npy shape {shape!r} is not a tuple of sizes")
    kind, digits = descr.lstrip("<>|=")[:1], descr.lstrip("<>|=")[1:]
    if kind in ("U", "S", "V") and not digits.isdigit():
        return None
    if kind not in _ITEM_SIZES or not digits.isdigit():
        return None
    return math.prod(shape) * int(digits) * _ITEM_SIZES[kind]


def _literal_header(text: str, major: int) -> object:
    # literal_eval evaluates literals only; the header is a dict of str, bool, tuples.
    # (tokenize.TokenError, from the Python 2 filter, is an Exception: caught last.)
    errors = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)
    try:
        return ast.literal_eval(text)
    except SyntaxError:
        if major > 2:
            raise ArtifactError(f".npy header is not a literal dict: {text[:80]!r}") from None
    except errors as err:
        raise ArtifactError(f".npy header is not a literal dict: {text[:80]!r}") from err
    try:
        return ast.literal_eval(_without_long_suffixes(text))
    except Exception as err:  # tokenize.TokenError too: an unreadable header, never a crash
        raise ArtifactError(f".npy header is not a literal dict: {text[:80]!r}") from err


def sniff(head: bytes) -> bool:
    """True when `head` opens a .npy stream (np.load's own test: the magic string)."""
    return head.startswith(MAGIC)


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
    raw = src.read(length)
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError as err:
        raise ArtifactError(".npy version 3 header is not UTF-8") from err
    header = _literal_header(text, major)
    if not isinstance(header, dict) or not {"descr", "shape", "fortran_order"} <= header.keys():
        raise ArtifactError(".npy header lacks descr, shape or fortran_order")
    return header


def scan_npy(ctx: ScanContext, src: ByteSource, loc: Location, depth: int) -> None:
    """Scan a .npy stream: object arrays as pickles, numeric arrays by size only."""
    from bastion.scan.formats.pickle import scan_pickle  # noqa: PLC0415  # pickle -> joblib -> numpy

    ctx.saw("npy")
    header = read_header(src)
    if has_object(header["descr"]):
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
        if isinstance(src, MemorySource):
            from bastion.scan.formats.ziparchive import scan_appended_zip  # noqa: PLC0415  # rare

            scan_appended_zip(ctx, src.window(0, src.size, src.name), loc, depth)
