"""Tar archives, read as a stream: no member is ever extracted to disk."""

from __future__ import annotations

import io
import tarfile

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats.ziparchive import escapes_root
from bastion.scan.source import ByteSource, RawSourceReader, StreamSource


def scan_tar(ctx: ScanContext, src: ByteSource, loc: Location, depth: int) -> None:
    """Scan every regular member of a tar stream; report links and escaping paths."""
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
                ctx.nested(StreamSource(handle, member.name, member.size), mloc, member.name, depth + 1)  # type: ignore[arg-type]  # ExFileObject is a binary stream
    except tarfile.TarError as err:
        raise ArtifactError(f"tar archive is damaged: {err}") from err
