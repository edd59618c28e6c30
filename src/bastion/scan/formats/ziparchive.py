"""Zip archives read the way PyTorch's reader (miniz) reads them, not the way zipfile does.

Loaders locate members through the central directory and find the data by the local
header's own name and extra-field lengths; they do not insist that the two names agree,
ignore the CRC, and ignore general-purpose flags. Python's `zipfile` refuses all of
these, and scanners built on it skipped files that PyTorch loads (CVE-2025-1944,
CVE-2025-10156). This reader accepts what the loaders accept, reports each irregularity,
and hands every member's bytes on to be scanned by content. Members no loader would
find from the central directory (hidden behind it) are scanned too.
"""

from __future__ import annotations

import bz2
import io
import itertools
import re
import struct
import zlib
from dataclasses import dataclass

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats import torchscript
from bastion.scan.formats.pickle import ELEMENT_SIZES
from bastion.scan.pickle.symbolic import Global, Persistent, emulate
from bastion.scan.source import ByteSource, MemorySource, StreamSource

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_MAX_COMMENT = 0xFFFF

STORED, DEFLATED, BZIP2 = 0, 8, 12


@dataclass(frozen=True, slots=True)
class ZipMember:
    """One central-directory entry and where its data really lies."""

    name: str
    local_name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int
    is_dir: bool


def sniff(head: bytes) -> bool:
    """True when `head` opens a zip: a local header (torch's `_is_zipfile`) or an empty archive."""
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 0x0001:
            fields = [usize, csize, offset]
            cursor = 0
            for i, value in enumerate(fields):
                if value == 0xFFFFFFFF and cursor + 8 <= len(body):
                    fields[i] = struct.unpack_from("<Q", body, cursor)[0]
                    cursor += 8
            return fields[0], fields[1], fields[2]
        pos += 4 + length
    return usize, csize, offset


def _complete(record: bytes, size: int, name: str) -> bytes:
    if len(record) != size:
        raise ArtifactError(f"{name}: the end-of-central-directory record is cut short (truncated zip)")
    return record


def _find_central_directory(src: MemorySource) -> tuple[int, int, int, int]:
    """(offset, size, entry count, prefix length) of the central directory."""
    tail_start = max(0, src.size - (_EOCD.size + _MAX_COMMENT))
    at = src.rfind(b"PK\x05\x06", tail_start)
    if at < 0:
        raise ArtifactError(f"{src.name}: no end-of-central-directory record (truncated zip?)")
    sig, _disk, _cd_disk, _n_here, count, cd_size, cd_offset, _clen = _EOCD.unpack(
        _complete(src.bytes_at(at, _EOCD.size), _EOCD.size, src.name)
    )
    del sig
    cd_end = at
    if at >= _EOCD64_LOCATOR.size:
        loc = src.bytes_at(at - _EOCD64_LOCATOR.size, _EOCD64_LOCATOR.size)
        if loc[:4] == b"PK\x06\x07":
            _sig, _disk64, eocd64_offset, _ndisks = _EOCD64_LOCATOR.unpack(loc)
            rec = src.bytes_at(eocd64_offset, _EOCD64.size)
            if len(rec) == _EOCD64.size and rec[:4] == b"PK\x06\x06":
                fields = _EOCD64.unpack(rec)
                count, cd_size, cd_offset = fields[7], fields[8], fields[9]
                cd_end = at - _EOCD64_LOCATOR.size - (12 + fields[1])
    # Data prepended to the archive shifts every offset; loaders that tolerate it do so
    # by trusting the directory's position at the end, and so does this reader.
    shift = cd_end - (cd_offset + cd_size)
    if shift < 0:
        raise ArtifactError(f"{src.name}: central directory lies past the end of the file")
    return cd_offset + shift, cd_size, count, shift


def read_members(src: MemorySource, max_members: int) -> tuple[list[ZipMember], int]:
    """The members listed in the central directory, and where that directory starts."""
    cd_offset, _cd_size, count, shift = _find_central_directory(src)
    if count > max_members:
        raise LimitExceeded(f"{src.name}: {count} members, more than the limit of {max_members}")
    members: list[ZipMember] = []
    pos = cd_offset
    for _ in range(count):
        raw = src.bytes_at(pos, _CENTRAL.size)
        if len(raw) != _CENTRAL.size or raw[:4] != b"PK\x01\x02":
            raise ArtifactError(f"{src.name}: central directory entry {len(members)} is damaged")
        (_, _made, _need, flags, method, _t, _d, crc, csize, usize, nlen, xlen, clen, _disk, _ia, _ea, off) = (
            _CENTRAL.unpack(raw)
        )
        name_raw = src.bytes_at(pos + _CENTRAL.size, nlen)
        extra = src.bytes_at(pos + _CENTRAL.size + nlen, xlen)
        usize, csize, off = _zip64_extra(extra, usize, csize, off)
        name = name_raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        header = off + shift
        local = src.bytes_at(header, _LOCAL.size)
        if len(local) != _LOCAL.size or local[:4] != b"PK\x03\x04":
            raise ArtifactError(f"{src.name}: member {name!r} has no local header at byte {header}")
        lfields = _LOCAL.unpack(local)
        lnlen, lxlen = lfields[9], lfields[10]
        local_name = src.bytes_at(header + _LOCAL.size, lnlen).decode(
            "utf-8" if lfields[2] & 0x800 else "cp437", "replace"
        )
        data_offset = header + _LOCAL.size + lnlen + lxlen
        if data_offset + csize > src.size:
            raise ArtifactError(f"{src.name}: member {name!r} runs past the end of the archive (truncated?)")
        members.append(
            ZipMember(name, local_name, method, flags, crc, csize, usize, header, data_offset, name.endswith("/"))
        )
        pos += _CENTRAL.size + nlen + xlen + clen
    return members, cd_offset


class _Inflater(io.RawIOBase):
    """Decompresses one member on demand, never past its declared size plus one chunk."""

    def __init__(self, src: MemorySource, member: ZipMember, ctx: ScanContext) -> None:
        super().__init__()
        self._src = src
        self._pos = member.data_offset
        self._end = member.data_offset + member.compressed_size
        self._ctx = ctx
        self._member = member
        self._out = 0
        self._pending = b""
        self._inflate = member.method == DEFLATED
        self._zlib = zlib.decompressobj(-15)
        self._bz2 = bz2.BZ2Decompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io's stub names it `b`
        want = len(buffer)
        while not self._pending:
            if self._pos >= self._end:
                return 0
            chunk = self._src.bytes_at(self._pos, min(1 << 16, self._end - self._pos))
            if not chunk:
                raise ArtifactError(f"{self._member.name}: compressed data runs past the end of the archive")
            self._pos += len(chunk)
            if self._inflate:
                try:
                    self._pending = self._zlib.decompress(chunk, 1 << 20)
                except zlib.error as err:
                    raise ArtifactError(f"{self._member.name}: corrupt deflate data ({err})") from err
                # Output is capped per call; hand the unread input back to the next call.
                self._pos -= len(self._zlib.unconsumed_tail)
                if self._zlib.eof:
                    self._pos = self._end
            else:
                try:
                    self._pending = self._bz2.decompress(chunk, 1 << 20) if not self._bz2.eof else b""
                except OSError as err:
                    raise ArtifactError(f"{self._member.name}: corrupt bzip2 data ({err})") from err
            self._account(len(self._pending))
        n = min(want, len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _account(self, n: int) -> None:
        self._out += n
        self._ctx.spend(n)
        limits = self._ctx.limits
        if self._out > self._member.size + (1 << 16):
            raise LimitExceeded(f"{self._member.name}: expands past its declared size of {self._member.size} bytes")
        if self._out > limits.ratio_grace_bytes and self._out > limits.max_compression_ratio * max(
            1, self._pos - self._member.data_offset
        ):
            raise LimitExceeded(
                f"{self._member.name}: compression ratio over {limits.max_compression_ratio}:1 (zip bomb?)"
            )


def open_member(src: MemorySource, member: ZipMember, ctx: ScanContext, name: str) -> ByteSource:
    """A source over a member's uncompressed bytes: a window when stored, a stream otherwise."""
    if member.method == STORED:
        return src.window(member.data_offset, member.compressed_size, name)
    if member.method in (DEFLATED, BZIP2):
        return StreamSource(io.BufferedReader(_Inflater(src, member, ctx), 1 << 16), name, member.size)
    raise ArtifactError(f"{name}: compression method {member.method} is not supported")


_TORCH_METADATA = frozenset({"version", ".format_version", ".storage_alignment", "byteorder", ".data/version"})
_TORCH_PICKLES = ("data.pkl", "constants.pkl")


def torch_folder(members: list[ZipMember]) -> str | None:
    """The folder PyTorch's reader takes every record from, or None if it would refuse the zip.

    PyTorchStreamReader names the archive after the first central-directory entry, up to
    its first slash, whatever that is (`archive`, `.data`, `model.pt`), and looks every
    record up under that prefix, case-insensitively (miniz's sorted lookup).
    """
    if not members or "/" not in members[0].name:
        return None
    folder = members[0].name.split("/", 1)[0]
    wanted = {f"{folder}/{name}".lower() for name in _TORCH_PICKLES}
    return folder if any(m.name.lower() in wanted for m in members) else None


def _is_torch_raw(member: ZipMember, folder: str) -> bool:
    # Records torch.load reads as raw bytes and never unpickles: the tensor storages
    # (`<folder>/data/<key>`) and a few bytes of version text it parses as numbers.
    name = member.name
    if not name.startswith(folder + "/"):
        return False
    rest = name[len(folder) + 1 :]
    if rest.startswith("data/") and "/" not in rest[5:] and rest[5:]:
        return True
    return rest in _TORCH_METADATA and member.size <= 64


def scan_zip(ctx: ScanContext, src: MemorySource, loc: Location, depth: int) -> None:
    """Scan every member of a zip archive by content, and report structural irregularities."""
    ctx.saw("zip")
    members, cd_offset = read_members(src, ctx.limits.max_members)
    folder = torch_folder(members)
    raw = {id(m) for m in members if folder is not None and _is_torch_raw(m, folder)}
    declared = sum(m.size for m in members if id(m) not in raw)
    if declared > ctx.limits.max_expanded_bytes:
        raise LimitExceeded(f"members declare {declared} bytes uncompressed, over the limit (zip bomb?)")
    limits = ctx.limits
    for member in members:
        if member.size > limits.ratio_grace_bytes and member.size > limits.max_compression_ratio * max(
            1, member.compressed_size
        ):
            raise LimitExceeded(
                f"member {member.name!r} declares a compression ratio over {limits.max_compression_ratio}:1 (zip bomb?)"
            )
    _check_layout(ctx, src, members, loc, cd_offset)
    for member in members:
        mloc = loc.inside(member.name)
        _check_member(ctx, member, mloc)
        if member.is_dir or id(member) in raw:
            continue
        try:
            msrc = open_member(src, member, ctx, member.name)
            if (
                member.method == STORED
                and isinstance(msrc, MemorySource)
                and member.size <= (64 << 20)
                and zlib.crc32(msrc.bytes_at(0, msrc.size)) != member.crc
            ):
                ctx.add(
                    "archive.bad-crc",
                    Severity.MEDIUM,
                    mloc,
                    "stored CRC does not match the data; PyTorch loads it anyway, zipfile-based tools refuse it",
                    "zip",
                )
            ctx.nested(msrc, mloc, member.name, depth + 1)
        except LimitExceeded as err:
            ctx.incomplete(mloc, err.message, "zip", "scan.limit-exceeded")
        except ArtifactError as err:
            ctx.incomplete(mloc, f"member could not be read: {err.message}", "zip")
    if folder is not None:
        _check_torch_storages(ctx, src, members, folder, loc)
        torchscript.scan_code(ctx, src, members, folder, loc)


def _check_torch_storages(
    ctx: ScanContext, src: MemorySource, members: list[ZipMember], folder: str, loc: Location
) -> None:
    """Check every storage data.pkl names against the record torch.load would map for it.

    torch.load (weights_only or not) resolves each persistent id ('storage', type, key,
    location, numel) by mapping `<folder>/data/<key>` and viewing numel elements of the
    type's size over it, without comparing that with the record's size: a storage larger
    than its record reads and writes past it (CVE-2026-24747). Ids the loader would refuse
    or read ambiguously (no record, two records, a key that is a path, an unknown type)
    are reported too: a file that crashes or corrupts its loader is not safe to load.
    """
    by_name: dict[str, list[ZipMember]] = {}
    for member in members:
        by_name.setdefault(member.name.lower(), []).append(member)
    # miniz looks records up case-insensitively; two entries under one name are read by
    # whichever the lookup happens to find, so which bytes are the tensor is undefined.
    pkl = by_name.get(f"{folder}/data.pkl".lower())
    if not pkl:
        return
    mloc = loc.inside(pkl[0].name)
    refs = ctx.first_pickle_refs.get(mloc)
    if refs is None:  # data.pkl was not read as a pickle from its start (another format won)
        try:
            refs = list(emulate(open_member(src, pkl[0], ctx, pkl[0].name), ctx.limits).persistent)
        except (ArtifactError, LimitExceeded):
            return  # the pickle scan of data.pkl has reported why it could not be read
    seen: set[str] = set()
    for ref in refs:
        if not isinstance(ref, Persistent):
            continue
        problem = _storage_problem(ref.pid, by_name, folder)
        if problem is None or problem in seen:
            continue
        seen.add(problem)
        ctx.add(
            "pytorch.storage-mismatch",
            Severity.HIGH,
            mloc,
            f"{problem}: torch.load would read outside the archive's data or fail",
            "pytorch",
            _describe_pid(ref.pid),
        )
        if len(seen) >= _MAX_STORAGE_FINDINGS:
            break


_MAX_STORAGE_FINDINGS = 8
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _storage_problem(pid: object, by_name: dict[str, list[ZipMember]], folder: str) -> str | None:
    if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
        return "a persistent id that is not ('storage', type, key, location, numel)"
    _tag, kind, key, _location, numel = pid
    name = kind.name if isinstance(kind, Global) and kind.module == "torch" else None
    element = ELEMENT_SIZES.get(name or "", 0)
    if element == 0:
        return "a storage of an unknown element type"
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key in (".", ".."):
        return "a storage key that is not a plain record name"
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        return f"storage {key!r} has no valid element count"
    records = by_name.get(f"{folder}/data/{key}".lower(), [])
    if not records:
        return f"storage {key!r} has no data/{key} record"
    if len(records) > 1:
        return f"storage {key!r} has {len(records)} data/{key} records"
    if numel * element > records[0].size:
        return f"storage {key!r} declares {numel * element} bytes, its record holds {records[0].size}"
    return None


def _describe_pid(pid: object) -> str:
    if isinstance(pid, tuple) and len(pid) == 5:
        kind = pid[1].dotted if isinstance(pid[1], Global) else type(pid[1]).__name__
        numel = pid[4] if isinstance(pid[4], int) else type(pid[4]).__name__
        key = pid[2] if isinstance(pid[2], str) else type(pid[2]).__name__
        return f"storage {kind} key={key[:64]!r} numel={numel}"
    return "persistent id"


def scan_appended_zip(ctx: ScanContext, src: MemorySource, loc: Location, depth: int) -> None:
    """Scan a zip that trails other data, as `zipfile` finds one: by its end record.

    A pickle or an array with a zip appended is a pickle to pickle.load and a zip to
    zipfile-based loaders (Keras, model hubs' unpackers), which locate the directory
    from the end and tolerate what precedes it. Bytes that only happen to contain an
    end record are not a zip to anyone: their parse error is not reported.
    """
    tail_start = max(0, src.size - (_EOCD.size + _MAX_COMMENT))
    if src.rfind(b"PK\x05\x06", tail_start) < 0:
        return
    try:
        read_members(src, ctx.limits.max_members)
    except LimitExceeded as err:
        ctx.incomplete(loc, f"appended zip: {err.message}", "zip", "scan.limit-exceeded")
        return
    except ArtifactError:
        return
    scan_zip(ctx, src, loc.inside("<appended zip>"), depth + 1)


def _check_member(ctx: ScanContext, member: ZipMember, loc: Location) -> None:
    if member.local_name != member.name:
        ctx.add(
            "archive.name-mismatch",
            Severity.MEDIUM,
            loc,
            f"local header names {member.local_name!r}, the directory {member.name!r}: tools disagree on what this member is",
            "zip",
        )
    if member.flags & 0x41:
        ctx.add(
            "archive.encryption-flag",
            Severity.MEDIUM,
            loc,
            "member is flagged as encrypted; loaders that ignore the flag read it as plain data, as this scan does",
            "zip",
        )
    if escapes_root(member.name):
        ctx.add(
            "archive.path-traversal",
            Severity.HIGH,
            loc,
            f"member path {member.name!r} escapes the extraction folder",
            "zip",
            member.name,
        )


def escapes_root(name: str) -> bool:
    """True for member paths that would land outside the folder they are extracted into."""
    norm = name.replace("\\", "/")
    return norm.startswith("/") or bool(re.match(r"^[A-Za-z]:", norm)) or ".." in norm.split("/")


def _check_layout(ctx: ScanContext, src: MemorySource, members: list[ZipMember], loc: Location, cd_offset: int) -> None:
    spans = sorted((m.header_offset, m.data_offset + m.compressed_size, m.name) for m in members)
    for (_a0, a1, an), (b0, _b1, bn) in itertools.pairwise(spans):
        if b0 < a1:
            raise LimitExceeded(f"members {an!r} and {bn!r} overlap (a zip-bomb construction)")
    # Local headers that the central directory does not list: streaming unzippers find them.
    listed = {m.header_offset for m in members}
    end = spans[-1][1] if spans else 0
    gaps = [(0, spans[0][0])] if spans else []
    gaps += [(a1, b0) for (_a0, a1, _an), (b0, _b1, _bn) in itertools.pairwise(spans) if b0 > a1]
    gaps.append((end, cd_offset))
    for start, stop in gaps:
        hit = src.find(b"PK\x03\x04", start)
        if 0 <= hit < stop and hit not in listed:
            ctx.add(
                "archive.hidden-member",
                Severity.HIGH,
                loc.at(hit),
                "a member's local header lies outside the central directory: some unzippers extract it, most scanners never see it",
                "zip",
            )
            break
