"""Pickle streams for the differential test: generated opcode by opcode, or real ones mutated.

`Generator` writes mostly-valid streams: it tracks how many values each MARK level holds
and which memo slots are set, so that most opcodes find the operands they need, and it
mixes in what readers disagree on (protocol-0 numbers in every spelling C and Python
accept, NULs in text arguments, STRING quoting, frames that lie, APPEND and SETITEM on
unusual targets, EXT codes, POP across a MARK). Globals come from a pool that includes
dangerous-looking names: in the test they are recorders, nothing is imported.

`Mutator` takes real pickles (pickle.dumps of plain objects and of objects with globals in
every protocol, a torch.save'd data.pkl, joblib dumps, hand-made payloads) and flips,
inserts, deletes, duplicates, splices and truncates.

Both are deterministic given a seed: the same seed gives the same streams on any machine.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import functools
import io
import os
import pickle
import random
import struct
import zipfile
from collections.abc import Iterator

import joblib
import numpy as np
import torch

from .recorders import EXTENSIONS

NAMES: tuple[tuple[str, str], ...] = (
    ("os", "system"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("__builtin__", "getattr"),
    ("builtins", "getattr"),
    ("subprocess", "Popen"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "FloatStorage"),
    ("torch.tensor", "Tensor"),
    ("torch.storage", "_load_from_bytes"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("copyreg", "_reconstructor"),
    ("copyreg", "__newobj__"),
    ("builtins", "object"),
    ("builtins", "list"),
    ("builtins", "set"),
    ("builtins", "map"),
    ("functools", "partial"),
    ("sys", "path"),
    ("codecs", "encode"),
    ("pickle", "loads"),
    ("operator", "attrgetter"),
    ("__main__", "Model"),
    ("torch.nn.modules.linear", "Linear"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("a.b", "c.d"),
    ("mod", "name"),
)
_EXT_CODES = (*EXTENSIONS, 5, 0x1234)  # mostly registered codes, some not

# Protocol-0 spellings: what C's strtol/PyLong_FromString and Python's int()/float() make of them.
_INT_LINES = (
    b"0", b"1", b"7", b"-3", b"255", b"65536", b"00", b"01", b"+1", b" 1", b"-0", b"0x64", b"0X1f", b"-0x10",
    b"0o17", b"0b101", b"017", b"0777", b"1_000", b" 12 ", b"12 ", b"\t5", b"5\x00junk", b"\x00", b"1\x00",
    b"99999999999999999999", b"-9223372036854775808", b"9223372036854775808", b"0x", b"08", b"1.5", b"",
    b"1__0", b"_1", b"0_7", b"0x_1f", b"+", b"abc", b"0b", b"1e3", b"\xff",
)  # fmt: skip
_LONG_LINES = (
    b"0L", b"12L", b"-5L", b"0x10L", b"12", b"1_0L", b"0o7", b"5\x00zzL", b"5\x00zz", b"L", b"12LL", b" 3L",
    b"017L", b"0b11L", b"123456789012345678901234567890L",
)  # fmt: skip
_FLOAT_LINES = (
    b"1.5", b"-0.0", b"inf", b"-inf", b"nan", b"Infinity", b"1e10", b" 2.5", b"1_0.5", b"1e500", b"1.5\x00x",
    b"1e", b"abc", b".5", b"5.", b"0x1p3", b"+nan", b"",
)  # fmt: skip
_STRING_LINES = (
    b"'abc'", b'"x"', b"'a\\x41'", b"'\\q'", b"'ab'\r", b"'abc", b"''", b"'\xe9'", b"'\\'", b"'a\"", b"x", b"'",
)  # fmt: skip
_MEMO_TEXT = (b"%d", b" %d", b"+%d", b"%d ", b"0%d", b"%d\x00x", b"%d_0", b"-%d")


class Generator:
    """Stack-aware random pickle streams."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- model ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self.out = bytearray()
        self.levels = [0]  # values at each MARK level, innermost last
        self.memo: list[int] = []

    def _push(self, data: bytes, n: int = 1) -> None:
        self.out += data
        self.levels[-1] += n

    def _take(self, n: int) -> None:
        self.levels[-1] = max(0, self.levels[-1] - n)

    # -- values --------------------------------------------------------------------------
    def _short_str(self) -> bytes:
        r = self.rng
        return r.choice((b"", b"a", b"abc", b"system", b"os", b"__setstate__", b"\xc3\xa9", b"x" * 40))

    def value(self) -> None:  # one flat table of pushers
        r = self.rng
        k = r.randrange(30)
        if k == 0:
            self._push(b"I" + r.choice(_INT_LINES) + b"\n")
        elif k == 1:
            self._push(b"L" + r.choice(_LONG_LINES) + b"\n")
        elif k == 2:
            self._push(b"F" + r.choice(_FLOAT_LINES) + b"\n")
        elif k == 3:
            self._push(b"S" + r.choice(_STRING_LINES) + b"\n")
        elif k == 4:
            self._push(b"K" + bytes([r.randrange(256)]))
        elif k == 5:
            self._push(b"J" + struct.pack("<i", r.randrange(-(2**31), 2**31)))
        elif k == 6:
            self._push(b"M" + struct.pack("<H", r.randrange(65536)))
        elif k == 7:
            raw = r.randbytes(r.randrange(9))
            self._push(b"\x8a" + bytes([len(raw)]) + raw)
        elif k == 8:
            self._push(b"G" + struct.pack(">d", r.random() * 100))
        elif k == 9:
            s = self._short_str()
            self._push(b"\x8c" + bytes([len(s)]) + s)
        elif k == 10:
            s = self._short_str()
            self._push(b"X" + struct.pack("<I", len(s)) + s)
        elif k == 11:
            s = self._short_str()
            self._push(b"U" + bytes([len(s)]) + s)
        elif k == 12:
            s = self._short_str()
            self._push(b"T" + struct.pack("<i", len(s)) + s)
        elif k == 13:
            s = r.randbytes(r.randrange(6))
            self._push(b"C" + bytes([len(s)]) + s)
        elif k == 14:
            s = r.randbytes(r.randrange(6))
            self._push(b"B" + struct.pack("<I", len(s)) + s)
        elif k == 15:
            s = r.randbytes(r.randrange(6))
            self._push(b"\x96" + struct.pack("<Q", len(s)) + s)
        elif k == 16:
            self._push(b"V" + r.choice((b"abc", b"\\u0041", b"\\x", b"\xe9")) + b"\n")
        elif k == 17:
            self._push(r.choice((b"N", b"\x88", b"\x89", b")", b"]", b"}", b"\x8f")))
        elif k in (18, 19, 20):
            self.global_()
        elif k == 21 and self.memo:
            self.get()
        elif k == 22:
            self._push(b"P" + r.choice((b"0", b"storage", b"", b"\xe9")) + b"\n")
        elif k == 23:
            self._push(bytes([r.choice((0x82, 0x83, 0x84))]))
            code = r.choice(_EXT_CODES)
            size = {0x82: 1, 0x83: 2, 0x84: 4}[self.out[-1]]
            self.out += (code % (1 << (8 * size))).to_bytes(size, "little")
        elif k == 24:
            s = self._short_str()
            self._push(b"\x8d" + struct.pack("<Q", len(s)) + s)
        elif k == 25:
            s = r.randbytes(r.randrange(4))
            self._push(b"\x8e" + struct.pack("<Q", len(s)) + s)
        elif k == 26 and r.random() < 0.2:
            self._push(b"\x97")  # NEXT_BUFFER: no buffers are given, so readers stop here
        else:
            self._push(r.choice((b"K\x01", b"N", b")", b"}", b"]")))

    def global_(self) -> None:
        r = self.rng
        module, name = r.choice(NAMES)
        how = r.randrange(4)
        if how == 0:
            self._push(b"\x8c" + bytes([len(module)]) + module.encode())
            self._push(b"\x8c" + bytes([len(name)]) + name.encode())
            self._take(2)
            self._push(b"\x93")
        elif how == 1:
            self._push(b"X" + struct.pack("<I", len(module)) + module.encode())
            self._push(b"X" + struct.pack("<I", len(name)) + name.encode())
            self._take(2)
            self._push(b"\x93")
        else:
            self._push(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def get(self) -> None:
        r = self.rng
        index = r.choice(self.memo) if r.random() < 0.95 else r.randrange(300)
        how = r.randrange(4)
        if how == 0 and index < 256:
            self._push(b"h" + bytes([index]))
        elif how == 1:
            self._push(b"j" + struct.pack("<I", index))
        else:
            self._push(b"g" + (r.choice(_MEMO_TEXT) % index if how == 2 else b"%d" % index) + b"\n")

    def put(self) -> None:
        r = self.rng
        how = r.randrange(5)
        if how == 0:
            index = len(self.memo)
            self.out += b"\x94"
        else:
            index = r.randrange(260) if r.random() < 0.7 else len(self.memo)
            if how == 1 and index < 256:
                self.out += b"q" + bytes([index])
            elif how == 2:
                self.out += b"r" + struct.pack("<I", index)
            else:
                self.out += b"p" + (r.choice(_MEMO_TEXT) % index if how == 3 else b"%d" % index) + b"\n"
        self.memo.append(index)

    # -- composite constructs ------------------------------------------------------------
    def args_tuple(self) -> None:
        r = self.rng
        n = r.randrange(5)
        if n == 4:
            self.out += b"("
            self.levels.append(0)
            for _ in range(r.randrange(4)):
                self.value()
            self.levels.pop()
            self._push(b"t")
            return
        for _ in range(n):
            self.value()
        self._take(n)
        self._push((b")", b"\x85", b"\x86", b"\x87")[n])

    def call(self) -> None:
        r = self.rng
        if r.random() < 0.85:
            self.global_()
        elif self.memo:
            self.get()
        else:
            self.value()
        kind = r.randrange(5)
        self.args_tuple()
        if kind == 4:
            self._push(b"}")
            self._take(3)
            self._push(b"\x92")  # NEWOBJ_EX
        else:
            self._take(2)
            self._push(b"\x81" if kind == 3 else b"R")

    def inst(self) -> None:
        r = self.rng
        module, name = r.choice(NAMES)
        self.out += b"("
        self.levels.append(0)
        for _ in range(r.randrange(3)):
            self.value()
        self.levels.pop()
        self._push(b"i" + module.encode() + b"\n" + name.encode() + b"\n")

    def obj(self) -> None:
        r = self.rng
        self.out += b"("
        self.levels.append(0)
        self.global_()
        for _ in range(r.randrange(3)):
            self.value()
        self.levels.pop()
        self._push(b"o")

    def state(self) -> None:
        r = self.rng
        k = r.randrange(4)
        if k == 0:
            self._push(b"N")
        elif k == 1:
            self._push(b"}(\x8c\x01a")
            self.levels.append(1)
            self.value()
            self.levels.pop()
            self.out += b"u"
        elif k == 2:
            self._push(b"}")
            self._push(b"}(\x8c\x0c__setstate__")
            self.levels.append(1)
            self.value()
            self.levels.pop()
            self.out += b"u"
            self._take(2)
            self._push(b"\x86")
        else:
            self.value()

    # -- the stream ------------------------------------------------------------------------
    def step(self) -> None:  # one weighted table of operations
        r = self.rng
        top = self.levels[-1]
        k = r.randrange(34)
        if k < 8:
            self.value()
        elif k < 12:
            self.call()
        elif k == 12:
            self.inst()
        elif k == 13:
            self.obj()
        elif k == 14 and top >= 1:
            self.state()
            self._take(1)
            self.out += b"b"
        elif k == 15 and top >= 1:
            self.put()
        elif k == 16 and self.memo:
            self.get()
        elif k == 17:
            self.out += b"("
            self.levels.append(0)
        elif k == 18 and len(self.levels) > 1:
            closer = r.choice((b"t", b"l", b"d", b"\x91", b"1", b"t", b"l"))
            n = self.levels.pop()
            if closer == b"d" and n % 2:
                self._push(b"N", 1)
                n += 1
            self.out += closer
            if closer != b"1":
                self.levels[-1] += 1
        elif k == 19 and top >= 1:
            self.value()
            self._take(1)
            self.out += b"a"
        elif k == 20 and top >= 1:
            self.value()
            self.value()
            self._take(2)
            self.out += b"s"
        elif k == 21 and top >= 1:
            # MARK items then APPENDS / SETITEMS / ADDITEMS on whatever is below the MARK
            self.out += b"("
            n = r.randrange(4)
            for _ in range(n):
                self.levels.append(0)
                self.value()
                self.levels.pop()
            self.out += r.choice((b"e", b"u", b"\x90"))
        elif k == 22 and top >= 1:
            self.out += r.choice((b"0", b"2", b"\x85"))
            if self.out[-1:] == b"0":
                self._take(1)
            elif self.out[-1:] == b"2":
                self.levels[-1] += 1
        elif k == 23 and top >= 2:
            self.out += r.choice((b"\x86", b"R", b"\x81", b"b", b"a"))
            self._take(1)
        elif k == 24 and top >= 3:
            self.out += r.choice((b"\x87", b"s", b"\x92"))
            self._take(2)
        elif k == 25:
            # list SETITEM: what a dict-only reader refuses and CPython accepts
            self._push(b"]")
            self.value()
            self._take(1)
            self.out += b"a"
            self.out += r.choice((b"K\x00", b"I0\n", b"J\xff\xff\xff\xff", b"K\x05", b"\x88"))
            self.value()
            self.out += b"s"
        elif k == 26 and top >= 1:
            self.out += b"Q"
        elif k == 27 and top == 0 and len(self.levels) > 1:
            self.out += b"0"  # POP with nothing above the MARK pops the MARK
            self.levels.pop()
        elif k == 28 and top >= 1:
            self.out += b"\x98"
        elif k == 29:
            self.out += b"\x80" + bytes([r.choice((0, 1, 2, 3, 4, 5, 5, 6))])
        else:
            self.value()

    def stream(self) -> bytes:
        r = self.rng
        self._reset()
        protocol = r.choice((0, 0, 1, 2, 3, 4, 4, 5))
        if protocol >= 2 and r.random() < 0.9:
            self.out += b"\x80" + bytes([protocol])
        head = len(self.out)
        for _ in range(r.randrange(1, 25)):
            self.step()
        if self.levels[-1] == 0:
            self.value()
        if r.random() < 0.95:
            self.out += b"."
        if protocol >= 4 and r.random() < 0.5:
            body = bytes(self.out[head:])
            size = len(body) if r.random() < 0.7 else r.randrange(len(body) + 3)
            self.out[head:] = b"\x95" + struct.pack("<Q", size) + body
        if r.random() < 0.05:
            self.out += r.choice((b"\x00", b"N.", b"cos\nsystem\n)R."))
        return bytes(self.out)


# --- mutated real pickles ----------------------------------------------------------------


class _Payload:
    """Pickles as os.system("true"): pickling it runs nothing, and the test never loads it."""

    def __init__(self, func: object) -> None:
        self.func = func

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (self.func, ("true",))


def _plain_objects(rng: random.Random) -> list[object]:
    def leaf() -> object:
        return rng.choice(
            (
                rng.randrange(-(10**12), 10**12),
                rng.random(),
                "text",
                b"bytes",
                None,
                True,
                1 << 70,
                "\u00e9\U0001f600",
                bytearray(b"ab"),
                complex(1, 2),
            )
        )

    def tree(depth: int) -> object:
        if depth == 0 or rng.random() < 0.3:
            return leaf()
        k = rng.randrange(5)
        items = [tree(depth - 1) for _ in range(rng.randrange(4))]
        if k == 0:
            return items
        if k == 1:
            return tuple(items)
        if k == 2:
            return {str(i): v for i, v in enumerate(items)}
        if k == 3:
            return {x for x in (leaf(), leaf()) if not isinstance(x, bytearray)}
        shared = items[:1]
        return [shared, shared]

    return [tree(4) for _ in range(12)]


def _with_globals() -> list[object]:
    return [
        collections.OrderedDict(a=1, b=[2]),
        collections.defaultdict(list, {"k": [1]}),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        decimal.Decimal("1.5"),
        fractions.Fraction(1, 3),
        functools.partial(max, 1),
        range(3),
        slice(1, 2),
        frozenset({1, 2}),
        _Payload(os.system),
        _Payload(eval),
        collections.Counter("abc"),
    ]


def _torch_data_pkl() -> list[bytes]:
    out = []
    for obj in ({"w": torch.zeros(2), "b": torch.ones(1, dtype=torch.int64)}, [torch.arange(3)], torch.nn.Linear(2, 2)):
        buf = io.BytesIO()
        torch.save(obj, buf)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
            out.append(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    return out


def _joblib_dumps() -> list[bytes]:
    out = []
    for obj in ({"a": [1, 2], "b": "x"}, np.arange(4, dtype=np.int16), [np.array(["a", None], dtype=object)]):
        buf = io.BytesIO()
        joblib.dump(obj, buf)
        out.append(buf.getvalue())
    return out


_SNIPPETS = (
    b"(", b"0", b"1", b"2", b".", b"N", b"t", b"l", b"d", b"s", b"u", b"a", b"e", b"b", b"R", b"\x81", b"\x94",
    b"\x85", b"\x93", b"\x90", b"I0x64\n", b"I017\n", b"I01\n", b"L0x10L\n", b"F1.5\x00\n", b"g0\n", b"p0\n",
    b"h\x00", b"q\x00", b"cos\nsystem\n", b"\x8c\x02os\x8c\x06system\x93", b"S'x'\n", b"V\\u0041\n",
    b"\x82\x01", b"\x95\x05\x00\x00\x00\x00\x00\x00\x00", b"P0\n", b"Q", b"\x80\x02", b"\x80\x05", b"]K\x00Ns",
)  # fmt: skip


class Mutator:
    """Real pickles, mutated."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        corpus_rng = random.Random(1234)
        seeds: list[bytes] = []
        objects = _plain_objects(corpus_rng) + _with_globals()
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            for obj in objects:
                seeds.append(pickle.dumps(obj, protocol))
        seeds += _torch_data_pkl()
        seeds += _joblib_dumps()
        self.seeds = seeds

    def stream(self) -> bytes:
        r = self.rng
        data = bytearray(r.choice(self.seeds))
        for _ in range(r.choice((1, 1, 1, 2, 3))):
            self._mutate(data)
        return bytes(data[:16384])

    def _mutate(self, data: bytearray) -> None:
        r = self.rng
        n = len(data)
        k = r.randrange(8)
        pos = r.randrange(n + 1) if n else 0
        if k == 0 and n:
            data[min(pos, n - 1)] = r.randrange(256)
        elif k == 1 and n:
            data[min(pos, n - 1)] ^= 1 << r.randrange(8)
        elif k == 2:
            data[pos:pos] = r.choice(_SNIPPETS)
        elif k == 3 and n:
            end = min(n, pos + r.randrange(1, 8))
            del data[pos:end]
        elif k == 4 and n:
            end = min(n, pos + r.randrange(1, 16))
            data[end:end] = data[pos:end]
        elif k == 5 and n:
            del data[r.randrange(n) :]
        elif k == 6:
            other = r.choice(self.seeds)
            cut = r.randrange(len(other) + 1)
            data[pos:] = other[cut:]
        else:
            data[pos:pos] = bytes([r.choice(list(range(0x28, 0x7F)) + list(range(0x80, 0x99)))])


def streams(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """`count` streams: three generated for every two mutated, deterministic in `seed`."""
    generator = Generator(seed)
    mutator = Mutator(seed + 1)
    for i in range(count):
        if i % 5 < 3:
            yield "generated", generator.stream()
        else:
            yield "mutated", mutator.stream()
