"""Tar archives, read as a stream: no member is ever extracted to disk.

A tar is recognised the way Python's `tarfile` recognises one (which is what
`torch.load` tries first on any file that does not start like a zip): a 512-byte header
whose checksum matches. The `ustar` magic is optional; V7 headers have none.
"""

# ruff: noqa: PLC0415  # tarfile is imported on first use: dispatch imports sniff() at start-up

from __future__ import annotations

import io
import struct

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.pickle.opcodes import STREAM_START_BYTES
from bastion.scan.source import ByteSource, MemorySource, RawSourceReader, StreamSource

_BLOCK = 512
_SIGNED = struct.Struct("148b8x356b")


def _octal_field(raw: bytes) -> int | None:
    # tarfile.nti: base-256 when the high bit is set, else octal text up to the first NUL.
    if raw[0] in (0o200, 0o377):
        value = int.from_bytes(raw[1:], "big")
        return value - 256 ** (len(raw) - 1) if raw[0] == 0o377 else value
    text = raw.split(b"\0", 1)[0]
    try:
        return int(text.decode("ascii").strip() or "0", 8)
    except (UnicodeDecodeError, ValueError):
        return None


def sniff(head: bytes) -> bool:
    """True when `head` opens with a tar header that `tarfile` accepts (V7, ustar, GNU, pax).

    Args:
        head: at least the first 512 bytes of the data.
    """
    if len(head) < _BLOCK:
        return False
    block = head[:_BLOCK]
    if block.count(0) == _BLOCK:
        return False
    checksum = _octal_field(block[148:156])
    if checksum is None:
        return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])  # the checksum field counts as spaces
    return checksum == unsigned or checksum == 256 + sum(_SIGNED.unpack(block))


def scan_tar(ctx: ScanContext, src: ByteSource, loc: Location, depth: int) -> None:
    """Scan every regular member of a tar stream; report links and escaping paths."""
    import tarfile

    from bastion.scan.formats.pickle import TORCH_TAR_RECORDS, scan_pickle, scan_torch_tar_records
    from bastion.scan.formats.ziparchive import escapes_root

    # pickle.load reads from the first byte whatever torch.load makes of the tar: a header
    # that also parses as a pickle is emulated as one (tentatively: names rarely do).
    if isinstance(src, MemorySource) and src.tell() == 0 and src.peek(1)[:1] and src.peek(1)[0] in STREAM_START_BYTES:
        scan_pickle(ctx, src.window(0, src.size, src.name), loc, depth, tentative=True)
    ctx.saw("tar")
    stream = io.BufferedReader(RawSourceReader(src), 1 << 16)
    count = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                count += 1
                if count > ctx.limits.max_members:
                    raise LimitExceeded(f"more than {ctx.limits.max_members} members")
                if member.size > ctx.limits.max_expanded_bytes:
                    raise LimitExceeded(f"member {member.name!r} declares {member.size} bytes, over the scan's budget")
                if src.size is not None and member.offset_data + member.size > src.size:
                    raise ArtifactError(
                        f"member {member.name!r} declares more data than the archive holds (truncated?)"
                    )
                mloc = loc.inside(member.name)
                if escapes_root(member.name):
                    ctx.add(
                        "archive.path-traversal",
                        Severity.HIGH,
                        mloc,
                        f"member path {member.name!r} escapes the extraction folder",
                        "tar",
                        member.name,
                    )
                if member.issym() or member.islnk():
                    target = member.linkname
                    severity = Severity.HIGH if escapes_root(target) else Severity.LOW
                    ctx.add("archive.link", severity, mloc, f"member is a link to {target!r}", "tar", target)
                    continue
                if not member.isfile():
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                msrc = StreamSource(handle, member.name, member.size)  # type: ignore[arg-type]  # ExFileObject is a binary stream
                if member.name in TORCH_TAR_RECORDS:
                    # torch.load tries a file as a tar first and reads these two records
                    # as pickles interleaved with raw data; any other member by content.
                    try:
                        scan_torch_tar_records(ctx, msrc, mloc, depth + 1, member.name)
                    except ArtifactError as err:
                        ctx.incomplete(mloc, f"could not be fully analysed: {err.message}", "tar")
                    continue
                ctx.nested(msrc, mloc, member.name, depth + 1)
    except tarfile.TarError as err:
        raise ArtifactError(f"tar archive is damaged: {err}") from err
