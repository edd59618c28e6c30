"""Byte sources the parsers read from: a mapped file or a slice of one, or a stream.

Parsers never see paths. A `MemorySource` is a window on a mapped file or on bytes
(zip members stored inside it are windows too, so nothing is copied); a `StreamSource`
reads a decompressing stream forward. Both count what they hand out and turn short
reads into `ArtifactError`, so a truncated file is reported as such, never as clean.
"""

from __future__ import annotations

import io
import mmap
from typing import BinaryIO, Protocol, cast

from bastion.errors import ArtifactError

_SKIP_CHUNK = 1 << 20

Buffer = bytes | bytearray | mmap.mmap


class ByteSource(Protocol):
    """What every parser reads from."""

    name: str

    @property
    def size(self) -> int | None: ...
    def tell(self) -> int: ...
    def read(self, n: int) -> bytes: ...
    def read_some(self, n: int) -> bytes: ...
    def readline(self, limit: int) -> bytes: ...
    def skip(self, n: int) -> None: ...
    def peek(self, n: int) -> bytes: ...
    def at_end(self) -> bool: ...


class MemorySource:
    """A window [start, end) on a buffer, read forward; windows of windows share the buffer."""

    __slots__ = ("_pos", "buf", "end", "name", "start")

    def __init__(self, buf: Buffer, name: str, start: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.start = start
        self.end = len(buf) if end is None else end
        self.name = name
        self._pos = start

    @property
    def size(self) -> int:
        return self.end - self.start

    def tell(self) -> int:
        return self._pos - self.start

    def seek(self, offset: int) -> None:
        """Go to an offset from the start of the window."""
        self._pos = self.start + min(max(offset, 0), self.size)

    def read(self, n: int) -> bytes:
        pos = self._pos
        if n < 0 or pos + n > self.end:
            raise ArtifactError(
                f"{self.name}: truncated: {n} bytes needed at byte {pos - self.start}, {self.end - pos} left"
            )
        self._pos = pos + n
        return bytes(self.buf[pos : pos + n])

    def read_some(self, n: int) -> bytes:
        pos = self._pos
        n = max(0, min(n, self.end - pos))
        self._pos = pos + n
        return bytes(self.buf[pos : pos + n])

    def readline(self, limit: int) -> bytes:
        pos = self._pos
        stop = min(self.end, pos + limit)
        nl = self.buf.find(b"\n", pos, stop)
        if nl < 0:
            raise ArtifactError(f"{self.name}: unterminated line at byte {pos - self.start}")
        self._pos = nl + 1
        return bytes(self.buf[pos : nl + 1])

    def skip(self, n: int) -> None:
        if n < 0 or self._pos + n > self.end:
            raise ArtifactError(
                f"{self.name}: truncated: {n} bytes declared at byte {self.tell()}, {self.end - self._pos} left"
            )
        self._pos += n

    def peek(self, n: int) -> bytes:
        return bytes(self.buf[self._pos : min(self.end, self._pos + n)])

    def at_end(self) -> bool:
        return self._pos >= self.end

    def window(self, offset: int, length: int, name: str) -> MemorySource:
        """A sub-window [offset, offset+length) of this window, relative to its start."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ArtifactError(f"{name}: lies outside its container ({offset}+{length} > {self.size})")
        return MemorySource(self.buf, name, self.start + offset, self.start + offset + length)

    def bytes_at(self, offset: int, length: int) -> bytes:
        """Bytes at an offset from the window's start, clipped to the window."""
        a = self.start + max(0, offset)
        b = min(self.end, a + max(0, length))
        return bytes(self.buf[a:b]) if b > a else b""

    def find(self, needle: bytes, offset: int = 0) -> int:
        """Offset of needle from the window's start, or -1."""
        hit = self.buf.find(needle, self.start + offset, self.end)
        return -1 if hit < 0 else hit - self.start

    def rfind(self, needle: bytes, offset: int = 0) -> int:
        hit = self.buf.rfind(needle, self.start + offset, self.end)
        return -1 if hit < 0 else hit - self.start


class _Peekable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def readline(self, limit: int = -1, /) -> bytes: ...
    def peek(self, n: int = 0, /) -> bytes: ...


class StreamSource:
    """A forward-only stream (a decompressor), with buffered peeks and discarded skips."""

    __slots__ = ("_pos", "_size", "_stream", "name")

    def __init__(self, stream: BinaryIO | io.BufferedIOBase, name: str, size: int | None = None) -> None:
        # Peeks need a buffered stream; wrap raw ones (any readable binary stream works).
        self._stream: _Peekable = (
            cast(_Peekable, stream)
            if hasattr(stream, "peek")
            else io.BufferedReader(cast(io.RawIOBase, stream), 1 << 16)
        )
        self.name = name
        self._pos = 0
        self._size = size

    @property
    def size(self) -> int | None:
        return self._size

    def tell(self) -> int:
        return self._pos

    def read(self, n: int) -> bytes:
        data = self._stream.read(n) if n > 0 else b""
        self._pos += len(data)
        if len(data) != n:
            raise ArtifactError(f"{self.name}: truncated at byte {self._pos}")
        return data

    def read_some(self, n: int) -> bytes:
        data = self._stream.read(n) if n > 0 else b""
        self._pos += len(data)
        return data

    def readline(self, limit: int) -> bytes:
        line = self._stream.readline(limit)
        self._pos += len(line)
        if not line.endswith(b"\n"):
            raise ArtifactError(f"{self.name}: unterminated line at byte {self._pos - len(line)}")
        return line

    def skip(self, n: int) -> None:
        if n < 0:
            raise ArtifactError(f"{self.name}: negative length at byte {self._pos}")
        left = n
        while left:
            chunk = self._stream.read(min(left, _SKIP_CHUNK))
            if not chunk:
                raise ArtifactError(f"{self.name}: truncated: {left} of {n} declared bytes missing at byte {self._pos}")
            left -= len(chunk)
            self._pos += len(chunk)

    def peek(self, n: int) -> bytes:
        return bytes(self._stream.peek(n)[:n])

    def at_end(self) -> bool:
        return not self.peek(1)


class RawSourceReader(io.RawIOBase):
    """A ByteSource seen as a raw binary stream, for the stdlib's decompressors and tarfile."""

    def __init__(self, src: ByteSource) -> None:
        super().__init__()
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io's stub names it `b`
        data = self._src.read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def source_from_bytes(data: bytes, name: str) -> MemorySource:
    """A source over bytes already in memory."""
    return MemorySource(data, name)
