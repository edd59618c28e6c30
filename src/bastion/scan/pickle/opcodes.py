"""Pickle opcodes, read linearly exactly as CPython's C unpickler reads them.

CPython treats FRAME only as a prefetch hint (`load_frame` reads the frame then rewinds),
so an argument may straddle a frame boundary and the C unpickler still runs what follows.
This parser does the same and reports every frame irregularity as a quirk, because a
well-behaved pickler never writes one and scanners that honour frames were bypassed so.
"""

from __future__ import annotations

import codecs
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple, cast

from bastion.errors import ArtifactError, LimitExceeded
from bastion.scan.limits import ScanLimits
from bastion.scan.source import Buffer, ByteSource, MemorySource

MAX_LINE = 1 << 28  # CPython sets no limit; this only bounds memory
HIGHEST_PROTOCOL = 5


class LargeData(NamedTuple):
    """A string or byte string too long to keep; only its kind and size are remembered."""

    kind: str
    size: int


Op = tuple[int, object, int]
"""One opcode as (code, decoded argument, offset in the source): a plain tuple, the fastest to build."""


# Opcode bytes, named as in CPython's pickle.py.
MARK, STOP, POP, POP_MARK, DUP = b"(", b".", b"0", b"1", b"2"
FLOAT, INT, BININT, BININT1, LONG, BININT2 = b"F", b"I", b"J", b"K", b"L", b"M"
NONE, PERSID, BINPERSID, REDUCE = b"N", b"P", b"Q", b"R"
STRING, BINSTRING, SHORT_BINSTRING, UNICODE, BINUNICODE = b"S", b"T", b"U", b"V", b"X"
APPEND, BUILD, GLOBAL, DICT, EMPTY_DICT, APPENDS = b"a", b"b", b"c", b"d", b"}", b"e"
GET, BINGET, INST, LONG_BINGET, LIST, EMPTY_LIST, OBJ = b"g", b"h", b"i", b"j", b"l", b"]", b"o"
PUT, BINPUT, LONG_BINPUT, SETITEM, TUPLE, EMPTY_TUPLE, SETITEMS = b"p", b"q", b"r", b"s", b"t", b")", b"u"
BINFLOAT = b"G"
PROTO, NEWOBJ, EXT1, EXT2, EXT4 = b"\x80", b"\x81", b"\x82", b"\x83", b"\x84"
TUPLE1, TUPLE2, TUPLE3, NEWTRUE, NEWFALSE, LONG1, LONG4 = b"\x85", b"\x86", b"\x87", b"\x88", b"\x89", b"\x8a", b"\x8b"
BINBYTES, SHORT_BINBYTES = b"B", b"C"
SHORT_BINUNICODE, BINUNICODE8, BINBYTES8, EMPTY_SET = b"\x8c", b"\x8d", b"\x8e", b"\x8f"
ADDITEMS, FROZENSET, NEWOBJ_EX, STACK_GLOBAL, MEMOIZE, FRAME = b"\x90", b"\x91", b"\x92", b"\x93", b"\x94", b"\x95"
BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER = b"\x96", b"\x97", b"\x98"

NAMES: dict[int, str] = {
    code[0]: name
    for name, code in list(globals().items())
    if isinstance(code, bytes) and len(code) == 1 and name.isupper()
}

# The unpickler runs a stream whatever opcode opens it (PROTO is optional), so any of
# these bytes may start a pickle.
STREAM_START_BYTES = frozenset(NAMES)

_NO_ARG = frozenset(
    c[0]
    for c in (
        MARK,
        STOP,
        POP,
        POP_MARK,
        DUP,
        NONE,
        BINPERSID,
        REDUCE,
        APPEND,
        BUILD,
        DICT,
        EMPTY_DICT,
        APPENDS,
        LIST,
        EMPTY_LIST,
        OBJ,
        SETITEM,
        TUPLE,
        EMPTY_TUPLE,
        SETITEMS,
        NEWOBJ,
        TUPLE1,
        TUPLE2,
        TUPLE3,
        NEWTRUE,
        NEWFALSE,
        EMPTY_SET,
        ADDITEMS,
        FROZENSET,
        NEWOBJ_EX,
        STACK_GLOBAL,
        MEMOIZE,
        NEXT_BUFFER,
        READONLY_BUFFER,
    )
)

_U1 = struct.Struct("<B")
_U2 = struct.Struct("<H")
_I4 = struct.Struct("<i")
U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
F8 = struct.Struct(">d")

QuirkSink = Callable[[int, str], None]

FRAME_CODES = frozenset({0x95, 0x80})  # FRAME, PROTO: always seen by Frames.check
# INT, PUT, GET: a decimal line. Up to 20 digits and the newline are looked at in place; a
# value of 19 digits can pass LONG_MAX, where the C reader's strtol path differs: keep to 18.
DECIMAL_LINE = frozenset({0x49, 0x70, 0x67})


def decode_utf8(raw: bytes, pos: int) -> str:
    try:
        # CPython decodes BINUNICODE with "surrogatepass": a lone surrogate is data, not an error.
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"invalid UTF-8 in string at byte {pos}") from err


def _line(src: ByteSource) -> bytes:
    try:
        return src.readline(MAX_LINE)[:-1]
    except ArtifactError:
        # The pure-Python unpickler (joblib's) takes an unterminated last line as a line
        # and drops its last byte as if it were the newline: a file ending "cos\nsystem"
        # makes it import os (find_class("os", "syste")) before it fails at the end.
        rest = src.peek(MAX_LINE)
        if len(rest) >= MAX_LINE:
            raise
        src.skip(len(rest))
        return rest[:-1]


def _decode_quoted(raw: bytes, pos: int) -> str:
    # Both unpicklers want the quotes as the line's first and last bytes: no strip, so a
    # "\r\n" line ending is refused as they refuse it.
    if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
        raise ArtifactError(f"STRING argument is not quoted at byte {pos}")
    try:
        with warnings.catch_warnings():
            # An unknown escape (\q) is a DeprecationWarning in CPython, not an error.
            warnings.simplefilter("ignore", DeprecationWarning)
            value, _ = codecs.escape_decode(raw[1:-1])
    except ValueError as err:
        raise ArtifactError(f"bad escape in STRING at byte {pos}") from err
    # Latin-1 decodes every byte: loaders pass encoding="latin1" or "bytes" for such strings.
    return bytes(value).decode("latin-1")


# Protocol-0 numbers are read twice over in CPython: the C unpickler (pickle.load) hands
# the line, newline and all, to C string functions that stop at the first NUL, and the
# pure-Python one (joblib's) to int()/float(). The C reader accepts everything the Python
# one does, and more: "I017" is octal 15 to strtol, "I5\0junk" is 5, "F1.5\0x" is 1.5.
# Refusing what either accepts would end the emulation where the loader reads on.
_STRTOL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_C_DOUBLE = re.compile(rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", re.IGNORECASE)


def _before_nul(line: bytes) -> bytes:
    nul = line.find(b"\0")
    return line if nul < 0 else line[:nul]


def _strtol(line: bytes) -> int | None:
    """glibc strtol(line, &end, 0) as load_int uses it: the value, or None when C falls back."""
    match = _STRTOL.match(line)
    if match is None:
        # No digits: strtol returns 0 and leaves `end` at the start of the line.
        return 0 if line[:1] == b"\0" else None
    digits = match.group(2)
    if len(digits) > 24:  # beyond any long: ERANGE (and int() refuses > 4300 decimal digits)
        return None
    base = 16 if digits[:2] in (b"0x", b"0X") else 8 if digits[:1] == b"0" else 10
    value = int(digits, base)
    if match.group(1) == b"-":
        value = -value
    if not _LONG_MIN <= value <= _LONG_MAX:
        return None  # ERANGE: the C reader tries again with PyLong_FromString
    end = match.end()
    return value if end == len(line) or line[end : end + 1] in (b"\n", b"\0") else None


def _pylong(text: bytes, base: int, what: str, pos: int) -> int:
    # int() on bytes is PyLong_FromString on a NUL-ended copy: signs, "_", "0x", spaces.
    try:
        return int(text, base)
    except ValueError as err:
        raise ArtifactError(f"bad {what} {text[:40]!r} at byte {pos}") from err


def _int_line(raw: bytes, pos: int) -> int:
    """INT's argument as load_int reads it (raw is the line without its newline)."""
    if not raw:
        raise ArtifactError(f"empty INT argument at byte {pos}")
    line = raw + b"\n"
    value = _strtol(line)
    if value is None:
        return _pylong(_before_nul(line), 0, "integer", pos)
    if len(line) == 3 and value in (0, 1):
        return bool(value)  # "I00"/"I01" are False/True; to C, so are "I+1", "I 0", "I1\0"
    return value


def _long_line(raw: bytes, pos: int) -> int:
    """LONG's argument as load_long reads it: one trailing "L" dropped, then base 0."""
    if not raw:
        raise ArtifactError(f"empty LONG argument at byte {pos}")
    text = raw[:-1] if raw.endswith(b"L") else raw + b"\n"
    return _pylong(_before_nul(text), 0, "integer", pos)


def _float_line(raw: bytes, pos: int) -> float:
    """FLOAT's argument: what either reader accepts (C: a NUL-ended prefix; Python: float())."""
    if raw:
        text = _before_nul(raw + b"\n")
        match = _C_DOUBLE.match(text)
        if match is not None and text[match.end() :] in (b"\n", b""):
            return float(match.group())
    try:
        return float(raw)
    except ValueError as err:
        raise ArtifactError(f"bad float at byte {pos}") from err


def _memo_index(raw: bytes, pos: int) -> int:
    """GET and PUT arguments: base 10, NUL-ended to the C reader."""
    if not raw:
        raise ArtifactError(f"empty memo index at byte {pos}")
    return _pylong(_before_nul(raw + b"\n"), 10, "memo index", pos)


def _sized(src: ByteSource, n: int, kind: str, limits: ScanLimits, pos: int) -> bytes | LargeData:
    if n < 0:
        raise ArtifactError(f"negative length {n} at byte {pos}")
    if n > limits.max_inline_bytes:
        src.skip(n)
        return LargeData(kind, n)
    return src.read(n)


def _read_arg(code: int, src: ByteSource, limits: ScanLimits, pos: int) -> object:  # noqa: C901, PLR0912  # one flat dispatch is fastest
    # Ordered by how often real checkpoints use each opcode.
    read = src.read
    if code in (0x71, 0x68):  # BINPUT, BINGET
        return read(1)[0]
    if code == 0x8C:  # SHORT_BINUNICODE
        return decode_utf8(read(read(1)[0]), pos)
    if code == 0x4B:  # BININT1
        return read(1)[0]
    if code in (0x72, 0x6A):  # LONG_BINPUT, LONG_BINGET
        return U4.unpack(read(4))[0]
    if code == 0x4A:  # BININT
        return _I4.unpack(read(4))[0]
    if code == 0x4D:  # BININT2
        return _U2.unpack(read(2))[0]
    if code == 0x47:  # BINFLOAT
        return F8.unpack(read(8))[0]
    if code == 0x58:  # BINUNICODE
        data = _sized(src, U4.unpack(read(4))[0], "str", limits, pos)
        return data if isinstance(data, LargeData) else decode_utf8(data, pos)
    if code == 0x8D:  # BINUNICODE8
        data = _sized(src, _U8.unpack(read(8))[0], "str", limits, pos)
        return data if isinstance(data, LargeData) else decode_utf8(data, pos)
    if code == 0x43:  # SHORT_BINBYTES
        return read(read(1)[0])
    if code == 0x42:  # BINBYTES
        return _sized(src, U4.unpack(read(4))[0], "bytes", limits, pos)
    if code == 0x8E:  # BINBYTES8
        return _sized(src, _U8.unpack(read(8))[0], "bytes", limits, pos)
    if code == 0x96:  # BYTEARRAY8
        return _sized(src, _U8.unpack(read(8))[0], "bytearray", limits, pos)
    if code == 0x8A:  # LONG1
        return int.from_bytes(read(read(1)[0]), "little", signed=True)
    if code == 0x8B:  # LONG4
        raw = _sized(src, _I4.unpack(read(4))[0], "long", limits, pos)
        return raw if isinstance(raw, LargeData) else int.from_bytes(raw, "little", signed=True)
    if code in (0x63, 0x69):  # GLOBAL, INST: "module\nname\n"
        module, name = _line(src), _line(src)
        try:
            return module.decode("utf-8"), name.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ArtifactError(f"global name is not UTF-8 at byte {pos}") from err
    if code == 0x80:  # PROTO
        return read(1)[0]
    if code == 0x95:  # FRAME
        return _U8.unpack(read(8))[0]
    if code == 0x55:  # SHORT_BINSTRING
        return read(read(1)[0]).decode("latin-1")
    if code == 0x54:  # BINSTRING
        data = _sized(src, _I4.unpack(read(4))[0], "str", limits, pos)
        return data if isinstance(data, LargeData) else data.decode("latin-1")
    if code == 0x56:  # UNICODE
        try:
            return _line(src).decode("raw-unicode-escape")
        except UnicodeDecodeError as err:
            raise ArtifactError(f"bad UNICODE argument at byte {pos}") from err
    if code == 0x53:  # STRING
        return _decode_quoted(_line(src), pos)
    if code == 0x49:  # INT
        return _int_line(_line(src), pos)
    if code == 0x4C:  # LONG
        return _long_line(_line(src), pos)
    if code == 0x46:  # FLOAT
        return _float_line(_line(src), pos)
    if code in (0x67, 0x70):  # GET, PUT
        return _memo_index(_line(src), pos)
    if code == 0x50:  # PERSID
        return _line(src).decode("ascii", "replace")
    if code == 0x82:  # EXT1
        return read(1)[0]
    if code == 0x83:  # EXT2
        return _U2.unpack(read(2))[0]
    if code == 0x84:  # EXT4
        return _I4.unpack(read(4))[0]
    raise ArtifactError(f"unknown opcode 0x{code:02x} at byte {pos}")


def parse_opcodes(src: ByteSource, limits: ScanLimits, on_quirk: QuirkSink | None = None) -> Iterator[Op]:
    """Yield the opcodes of one pickle, up to and including STOP.

    Args:
        src: the bytes, positioned at the first opcode.
        limits: the opcode budget and the inline-string limit.
        on_quirk: called with (offset, description) for irregular but loadable constructs.

    Raises:
        ArtifactError: the stream is truncated or malformed (what CPython would refuse).
        LimitExceeded: the opcode budget ran out.
    """
    if isinstance(src, MemorySource):
        yield from _parse_memory(src, limits, on_quirk)
        return
    frame = Frames(on_quirk)
    budget = limits.max_pickle_opcodes
    no_arg = _NO_ARG
    read = src.read
    while True:
        pos = src.tell()
        code = read(1)[0]
        arg = None if code in no_arg else _read_arg(code, src, limits, pos)
        frame.check(code, arg, pos, src.tell())
        budget -= 1
        if budget < 0:
            raise LimitExceeded(f"more than {limits.max_pickle_opcodes} opcodes")
        yield code, arg, pos
        if code == 0x2E:  # STOP
            return


def _parse_memory(src: MemorySource, limits: ScanLimits, on_quirk: QuirkSink | None) -> Iterator[Op]:
    # The same loop over a buffer: the opcode byte and the commonest arguments are read in place.
    frame = Frames(on_quirk)
    budget = limits.max_pickle_opcodes
    base, end = src.start, src.end
    while True:
        here = src._pos  # the fast path reads the window directly
        if here >= end:
            raise ArtifactError(f"{src.name}: truncated at byte {here - base}: the pickle has no STOP")
        code = src.buf[here]
        pos = here - base
        arg = read_memory_arg(code, src, here, limits)
        if code in FRAME_CODES or (frame.active and (pos >= frame.end or src._pos - base > frame.end)):
            # Inside a frame, check() has something to say only at or past the frame's end.
            frame.check(code, arg, pos, src._pos - base)
        budget -= 1
        if budget < 0:
            raise LimitExceeded(f"more than {limits.max_pickle_opcodes} opcodes")
        yield code, arg, pos
        if code == 0x2E:  # STOP
            return


def read_memory_arg(
    code: int, src: MemorySource, here: int, limits: ScanLimits
) -> object:  # one flat dispatch is fastest
    """The argument of opcode `code`, read at buffer index `here` (where `src` stands).

    Leaves `src` after the argument; a bad argument fails with `src` at its opcode or in it.
    The commonest arguments are read in place, the rest by `_read_arg`, as a stream is read.
    """
    if code in _NO_ARG:
        src._pos = here + 1
        return None
    buf, end = src.buf, src.end
    if code in (0x71, 0x68, 0x4B) and here + 2 <= end:  # BINPUT, BINGET, BININT1
        src._pos = here + 2
        return buf[here + 1]
    if code == 0x47 and here + 9 <= end:  # BINFLOAT
        src._pos = here + 9
        return F8.unpack_from(buf, here + 1)[0]
    if code in (0x4A, 0x72, 0x6A) and here + 5 <= end:  # BININT, LONG_BINPUT, LONG_BINGET
        src._pos = here + 5
        return (_I4 if code == 0x4A else U4).unpack_from(buf, here + 1)[0]
    if code == 0x4D and here + 3 <= end:  # BININT2
        src._pos = here + 3
        return _U2.unpack_from(buf, here + 1)[0]
    pos = here - src.start
    if code == 0x8C and here + 2 <= end and (after := here + 2 + buf[here + 1]) <= end:  # SHORT_BINUNICODE
        value = decode_utf8(bytes(buf[here + 2 : after]), pos)  # a bad string fails at its opcode
        src._pos = after
        return value
    if (
        code == 0x58
        and here + 5 <= end
        and (size := U4.unpack_from(buf, here + 1)[0]) <= limits.max_inline_bytes
        and (here + 5 + size <= end)
    ):  # BINUNICODE of an inline size (larger ones become LargeData in _read_arg)
        value = decode_utf8(bytes(buf[here + 5 : here + 5 + size]), pos)
        src._pos = here + 5 + size
        return value
    if code in DECIMAL_LINE and (plain := plain_decimal_at(buf, here, end)) is not None:
        number, src._pos = plain
        return number
    src._pos = here + 1
    return _read_arg(code, src, limits, pos)


def plain_decimal_at(buf: Buffer, here: int, end: int) -> tuple[int, int] | None:
    """(value, index after the newline) of a plain decimal line after the opcode at `here`.

    INT, PUT, GET as protocol 0 writes them: both readers agree with int() on at most 18
    digits without a leading zero. Anything else (signs, octal "017", "I01", NULs, a value past
    LONG_MAX, where the C reader's strtol path differs) is None: `_read_arg` reads it.
    """
    nl = buf.find(b"\n", here + 1, min(end, here + 20))
    if nl < 0:
        return None
    digits = bytes(buf[here + 1 : nl])
    if not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
        return None
    return int(digits), nl + 1


class Frames:
    """Tracks FRAME boundaries and reports what a conforming pickler never writes."""

    __slots__ = ("active", "end", "on_quirk")

    def __init__(self, on_quirk: QuirkSink | None) -> None:
        self.on_quirk = on_quirk
        self.end = 0
        self.active = False

    def check(self, code: int, arg: object, pos: int, after: int) -> None:
        if self.active:
            if pos >= self.end:
                self.active = False
            elif after > self.end:
                self._quirk(
                    pos, f"{NAMES.get(code, hex(code))} at byte {pos} runs past the end of its frame at {self.end}"
                )
                self.active = False
        if code == 0x95:  # FRAME
            if self.active:
                self._quirk(pos, f"FRAME at byte {pos} opens inside the frame ending at {self.end}")
            self.end = after + cast(int, arg)  # the FRAME reader returns an int
            self.active = True
        elif code == 0x80 and isinstance(arg, int) and arg > HIGHEST_PROTOCOL:
            raise ArtifactError(f"unsupported pickle protocol {arg} at byte {pos}")

    def _quirk(self, pos: int, detail: str) -> None:
        if self.on_quirk is not None:
            self.on_quirk(pos, detail)
