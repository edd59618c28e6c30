"""Pickle streams assembled opcode by opcode, for the argument-specification tests.

Each helper returns the bytes that push one value; `stream()` wraps a body in PROTO 4 ... STOP.
GLOBAL (not STACK_GLOBAL) spells every name, so a reader can see it in a hex dump. Never
unpickle these outside the subprocess proofs that are written for it.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

MARK, STOP, TUPLE, REDUCE, BUILD = b"(", b".", b"t", b"R", b"b"
NEWOBJ, NEWOBJ_EX, EMPTY_DICT, SETITEMS, LIST, NONE = b"\x81", b"\x92", b"}", b"u", b"l", b"N"


def stream(body: bytes) -> bytes:
    return b"\x80\x04" + body + STOP


def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def raw_bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def i(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def lst(*items: bytes) -> bytes:
    return MARK + b"".join(items) + LIST


def dct(pairs: dict[str, bytes]) -> bytes:
    if not pairs:
        return EMPTY_DICT
    return EMPTY_DICT + MARK + b"".join(s(k) + v for k, v in pairs.items()) + SETITEMS


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + REDUCE


def newobj(cls: bytes, *args: bytes) -> bytes:
    return cls + tup(*args) + NEWOBJ


def newobj_ex(cls: bytes, args: tuple[bytes, ...], kwargs: dict[str, bytes]) -> bytes:
    return cls + tup(*args) + dct(kwargs) + NEWOBJ_EX


def build(obj: bytes, state: bytes) -> bytes:
    return obj + state + BUILD


def odict() -> bytes:
    return call(g("collections", "OrderedDict"))


def touch_marker(marker: Path) -> bytes:
    """list(map(Path.touch, [PosixPath(marker)])): a harmless, observable payload."""
    path = call(g("pathlib", "PosixPath"), s(str(marker)))
    return call(g("builtins", "list"), call(g("builtins", "map"), g("pathlib", "Path.touch"), lst(path)))


def load_in_subprocess(data: bytes, folder: Path, loader: str = "pickle") -> subprocess.CompletedProcess[str]:
    """Load `data` with the stock loader in a child process (tests only: it runs the payload)."""
    path = folder / "payload.bin"
    path.write_bytes(data)
    if loader == "pickle":
        code = "import pickle,sys; pickle.loads(open(sys.argv[1],'rb').read())"
    else:
        code = "import torch,sys; torch.load(sys.argv[1], weights_only=False)"
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
