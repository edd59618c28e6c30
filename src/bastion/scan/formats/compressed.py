"""Whole-file compression (gzip, bzip2, xz, zlib, lz4): joblib's compressed dumps, tar.gz.

Decompression streams through a bounded reader: the expansion budget and the ratio
limit stop a bomb long before it fills memory or disk. Nothing is written anywhere.
"""

# ruff: noqa: PLC0415  # decompressors are imported on first use: dispatch imports sniff() at start-up

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from bastion.errors import ArtifactError, LimitExceeded, UnsupportedFormat
from bastion.findings import Location
from bastion.scan.context import ScanContext
from bastion.scan.source import ByteSource, RawSourceReader, StreamSource

_CHUNK = 1 << 16
_DRAIN = 1 << 20
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
# joblib opens a file as .lzma when it starts with these two bytes, whatever the rest of
# the dictionary size says (compressor._LZMA_PREFIX); liblzma writes sizes such as 3 MiB.
_JOBLIB_LZMA_PREFIX = b"\x5d\x00"
_LZMA_UNKNOWN_SIZE = b"\xff" * 8
_ZLIB_WINDOWS = frozenset({0x08, 0x18, 0x38, 0x48, 0x78})  # CM=8; 0x28/0x58/0x68 also open pickles


def _lzma_alone(head: bytes) -> bool:
    """An .lzma ("alone") header as liblzma's FORMAT_ALONE decoder accepts it.

    That decoder takes any dictionary size, so none is required here. joblib decides by
    its two-byte prefix alone; other streams are taken when the properties byte is valid
    (lc + lp <= 4, pb <= 4), the size field says "unknown" (what every streaming writer
    puts there) and the range coder's first byte is zero, as liblzma requires. A known
    size is not enough: text and tar headers padded with NULs would pass for one.
    """
    if head.startswith(_JOBLIB_LZMA_PREFIX) and len(head) >= 13:
        return True
    if len(head) < 14 or head[13] != 0 or head[5:13] != _LZMA_UNKNOWN_SIZE:
        return False
    props = head[0]
    return props < 225 and props % 9 + (props // 9) % 5 <= 4


ZFILE_HEADER = 21  # b"ZF", then hex(length) padded to len(hex(2**64)) (joblib's write_zfile)


def zfile_length(head: bytes) -> int | None:
    """The declared length of a joblib `ZF` container's contents, as read_zfile parses it."""
    if len(head) < ZFILE_HEADER:
        return None
    try:
        return int(head[2:ZFILE_HEADER], 16)
    except ValueError:
        return None


def _zlib_header(head: bytes) -> bool:
    # CM=8 with a window zlib accepts, a header check that divides by 31, and no preset
    # dictionary (FDICT): no writer sets it and zlib refuses it, while text such as
    # "x = 1" has a valid check byte only with that bit set.
    return len(head) >= 2 and head[0] in _ZLIB_WINDOWS and ((head[0] << 8) | head[1]) % 31 == 0 and not head[1] & 0x20


def sniff(head: bytes) -> str | None:
    """The whole-file compression `head` starts with, as the loaders detect it, or None.

    Args:
        head: the first bytes of the data (at least 14 for .lzma).

    Returns:
        "gzip", "bzip2", "xz", "lz4", "zlib", "lzma" or "zfile" (joblib's pre-0.10
        container: `ZF`, a hexadecimal length, then zlib data).
    """
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(b"ZF") and zfile_length(head) is not None:
        return "zfile"
    if _zlib_header(head):
        return "zlib"
    if _lzma_alone(head):
        return "lzma"
    return None


class _Guarded(io.RawIOBase):
    """Counts decompressed bytes against the scan's budget and the ratio limit."""

    def __init__(
        self, inner: BinaryIO, src: ByteSource, ctx: ScanContext, name: str, corrupt: tuple[type[Exception], ...]
    ) -> None:
        super().__init__()
        self._corrupt = corrupt
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
        except self._corrupt as err:
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


def _corrupt_data_errors(kind: str) -> tuple[type[Exception], ...]:
    # lz4 raises RuntimeError; lzma its own LZMAError (imported only when lzma data is met).
    errors: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, ValueError, RuntimeError)
    if kind in ("xz", "lzma"):
        import lzma

        errors += (lzma.LZMAError,)
    return errors


def _decompressor(kind: str, raw: io.RawIOBase) -> BinaryIO:
    buffered = io.BufferedReader(raw, _CHUNK)
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]  # GzipFile is a binary stream
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(buffered, "rb")  # type: ignore[return-value]
    if kind in ("xz", "lzma"):
        import lzma

        # FORMAT_ALONE is liblzma's non-picky .lzma decoder, as joblib uses: any dictionary size.
        fmt = lzma.FORMAT_ALONE if kind == "lzma" else lzma.FORMAT_AUTO
        return lzma.LZMAFile(buffered, "rb", format=fmt)  # type: ignore[return-value]
    if kind in ("zlib", "zfile"):
        return _ZlibStream(buffered)  # type: ignore[arg-type,return-value]  # a RawIOBase stream
    if kind == "lz4":
        try:
            import lz4.frame  # optional, imported only for lz4 data
        except ImportError as err:
            raise UnsupportedFormat("lz4-compressed data needs the optional `lz4` package") from err
        return lz4.frame.LZ4FrameFile(buffered, "rb")  # type: ignore[no-any-return]
    raise UnsupportedFormat(f"unknown compression {kind}")


def _zfile_header(src: ByteSource) -> None:
    # joblib's read_zfile: `ZF`, the hexadecimal length padded to 19 characters, and one
    # more space that joblib <= 0.8.4 wrote (zlib data never starts with a space).
    if zfile_length(src.read(ZFILE_HEADER)) is None:
        raise ArtifactError("joblib ZF container with an unreadable length")
    if src.peek(1) == b" ":
        src.skip(1)


def scan_compressed(ctx: ScanContext, src: ByteSource, loc: Location, kind: str, name: str, depth: int) -> None:
    """Decompress a whole-file stream and scan what it holds.

    joblib's `ZF` container holds a pickle that joblib's compat unpickler always loads,
    whatever it looks like, so its contents are emulated as that pickle.
    """
    ctx.saw(kind)
    if kind == "zfile":
        _zfile_header(src)
    inner = _decompressor(kind, RawSourceReader(src))
    guarded = io.BufferedReader(_Guarded(inner, src, ctx, name, _corrupt_data_errors(kind)), 1 << 16)
    stripped = name.rsplit(".", 1)[0] if "." in name else name
    inner_src = StreamSource(guarded, f"{name} ({kind})")
    if kind == "zfile":
        from bastion.scan.formats.joblib import Reader
        from bastion.scan.formats.pickle import scan_pickle

        scan_pickle(ctx, inner_src, loc.inside("<zfile>"), depth + 1, "joblib", reader=Reader.COMPAT)
    else:
        ctx.nested(inner_src, loc.inside(f"<{kind}>"), stripped, depth + 1)
    # Decompress what the inner scan did not need: a bomb is caught by the ratio and
    # budget limits however little of it the format needed, and corrupt data is noticed.
    while guarded.read(_DRAIN):
        pass
