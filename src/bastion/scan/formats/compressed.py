"""Whole-file compression (gzip, bzip2, xz, zlib, lz4): joblib's compressed dumps, tar.gz.

Decompression streams through a bounded reader: the expansion budget and the ratio
limit stop a bomb long before it fills memory or disk. Nothing is written anywhere.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import BinaryIO

from bastion.errors import ArtifactError, LimitExceeded, UnsupportedFormat
from bastion.findings import Location
from bastion.scan.context import ScanContext
from bastion.scan.source import ByteSource, RawSourceReader, StreamSource

_CHUNK = 1 << 16
_DRAIN = 1 << 20


class _Guarded(io.RawIOBase):
    """Counts decompressed bytes against the scan's budget and the ratio limit."""

    def __init__(self, inner: BinaryIO, src: ByteSource, ctx: ScanContext, name: str) -> None:
        super().__init__()
        self._inner = inner
        self._src = src
        self._ctx = ctx
        self._name = name
        self._out = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io's stub names it `b`
        try:
            data = self._inner.read(len(buffer))
        except (
            OSError,
            EOFError,
            zlib.error,
            lzma.LZMAError,
            ValueError,
            RuntimeError,
        ) as err:  # lz4 raises RuntimeError
            raise ArtifactError(f"{self._name}: corrupt compressed data ({err})") from err
        n = len(data)
        buffer[:n] = data
        self._out += n
        self._ctx.spend(n)
        limits = self._ctx.limits
        consumed = max(1, self._src.tell())
        if self._out > limits.ratio_grace_bytes and self._out > limits.max_compression_ratio * consumed:
            raise LimitExceeded(
                f"{self._name}: compression ratio over {limits.max_compression_ratio}:1 (decompression bomb?)"
            )
        return n


class _ZlibStream(io.RawIOBase):
    def __init__(self, raw: io.RawIOBase) -> None:
        super().__init__()
        self._raw = raw
        self._dec = zlib.decompressobj()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io's stub names it `b`
        while not self._pending:
            if self._dec.eof:
                return 0
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if not self._dec.eof:
                    raise ArtifactError("zlib stream is truncated")
                return 0
            self._pending = self._dec.decompress(self._dec.unconsumed_tail + chunk, 1 << 20)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _decompressor(kind: str, raw: io.RawIOBase) -> BinaryIO:
    buffered = io.BufferedReader(raw, _CHUNK)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]  # GzipFile is a binary stream
    if kind == "bzip2":
        return bz2.BZ2File(buffered, "rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(buffered, "rb")  # type: ignore[return-value]
    if kind == "lzma":
        return lzma.LZMAFile(buffered, "rb", format=lzma.FORMAT_ALONE)  # type: ignore[return-value]
    if kind == "zlib":
        return _ZlibStream(buffered)  # type: ignore[arg-type,return-value]  # a RawIOBase stream
    if kind == "lz4":
        try:
            import lz4.frame  # noqa: PLC0415  # optional, imported only for lz4 data
        except ImportError as err:
            raise UnsupportedFormat("lz4-compressed data needs the optional `lz4` package") from err
        return lz4.frame.LZ4FrameFile(buffered, "rb")  # type: ignore[no-any-return]
    raise UnsupportedFormat(f"unknown compression {kind}")


def scan_compressed(ctx: ScanContext, src: ByteSource, loc: Location, kind: str, name: str, depth: int) -> None:
    """Decompress a whole-file stream and scan what it holds."""
    ctx.saw(kind)
    inner = _decompressor(kind, RawSourceReader(src))
    guarded = io.BufferedReader(_Guarded(inner, src, ctx, name), 1 << 16)
    stripped = name.rsplit(".", 1)[0] if "." in name else name
    inner_src = StreamSource(guarded, f"{name} ({kind})")
    ctx.nested(inner_src, loc.inside(f"<{kind}>"), stripped, depth + 1)
    # Decompress what the inner scan did not need: a bomb is caught by the ratio and
    # budget limits however little of it the format needed, and corrupt data is noticed.
    while guarded.read(_DRAIN):
        pass
