"""Zip archives written byte by byte, and surgery on archives the real libraries wrote.

`zipfile` refuses to write (and to read) what attackers write: names that differ between the
local header and the central directory, wrong CRCs, members that share their data. These
helpers write those layouts with `struct`, the way PyTorch's and other loaders' readers meet them.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
STORED, DEFLATED = 0, 8
_DOS_DATE = 0x21  # 1980-01-01


@dataclass(frozen=True)
class RawMember:
    """A member as it lies in the archive: `data` is what is stored (compressed or not)."""

    name: str
    data: bytes
    size: int
    crc: int
    method: int = STORED
    local_name: str | None = None


def stored(name: str, data: bytes) -> RawMember:
    return RawMember(name, data, len(data), zlib.crc32(data), STORED)


def deflated(name: str, data: bytes) -> RawMember:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return RawMember(name, packer.compress(data) + packer.flush(), len(data), zlib.crc32(data), DEFLATED)


def zero_blocks(mib: int) -> bytes:
    """Raw deflate blocks (no final block) for `mib` MiB of zeros, built without deflating it all.

    After a full flush the compressor starts afresh, so every MiB of zeros compresses to the
    same block: one block repeated is a valid stream (about 1:1000), built in milliseconds.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (packer.compress(bytes(1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)) * mib


def crc_of_zeros(mib: int, crc: int = 0) -> int:
    zeros = bytes(1 << 20)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return crc


def deflated_zeros(name: str, mib: int, declared_size: int | None = None) -> RawMember:
    """A deflated member of `mib` MiB of zeros; `declared_size` may lie about its size."""
    size = mib << 20 if declared_size is None else declared_size
    return RawMember(name, zero_blocks(mib) + b"\x03\x00", size, crc_of_zeros(mib), DEFLATED)


def _local_header(member: RawMember) -> bytes:
    local_name = (member.local_name if member.local_name is not None else member.name).encode()
    return _LOCAL.pack(
        b"PK\x03\x04", 20, 0, member.method, 0, _DOS_DATE, member.crc, len(member.data), member.size, len(local_name), 0
    ) + local_name


def _central_entry(member: RawMember, offset: int) -> bytes:
    name = member.name.encode()
    return _CENTRAL.pack(
        b"PK\x01\x02", 20, 20, 0, member.method, 0, _DOS_DATE, member.crc, len(member.data), member.size,
        len(name), 0, 0, 0, 0, 0, offset,
    ) + name


def _eocd(count: int, cd_size: int, cd_offset: int) -> bytes:
    return _EOCD.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def raw_zip(members: list[RawMember]) -> bytes:
    """A zip of these members exactly as given (names, CRCs and sizes are not checked)."""
    out = bytearray()
    offsets = []
    for member in members:
        offsets.append(len(out))
        out += _local_header(member) + member.data
    cd_offset = len(out)
    for member, offset in zip(members, offsets, strict=True):
        out += _central_entry(member, offset)
    out += _eocd(len(members), len(out) - cd_offset, cd_offset)
    return bytes(out)


def overlapping_zip(member: RawMember, aliases: int) -> bytes:
    """One member's data listed `aliases` times in the central directory (a Fifield-style bomb)."""
    out = bytearray(_local_header(member) + member.data)
    cd_offset = len(out)
    for i in range(aliases):
        out += _central_entry(RawMember(f"{member.name}.{i:04d}", member.data, member.size, member.crc, member.method), 0)
    out += _eocd(aliases, len(out) - cd_offset, cd_offset)
    return bytes(out)


def _central_entries(data: bytes) -> list[tuple[int, str, int]]:
    """(position of the entry, name, local header offset) for each central-directory entry."""
    eocd = data.rfind(b"PK\x05\x06")
    assert eocd >= 0, "not a zip"
    _sig, _d, _cd, _n, count, _size, cd_offset, _clen = _EOCD.unpack_from(data, eocd)
    assert cd_offset != 0xFFFFFFFF, "zip64 archives are not handled by these helpers"
    entries = []
    pos = cd_offset
    for _ in range(count):
        fields = _CENTRAL.unpack_from(data, pos)
        nlen, xlen, clen, offset = fields[10], fields[11], fields[12], fields[16]
        name = data[pos + _CENTRAL.size : pos + _CENTRAL.size + nlen].decode()
        entries.append((pos, name, offset))
        pos += _CENTRAL.size + nlen + xlen + clen
    return entries


def _entry(data: bytes, suffix: str) -> tuple[int, str, int]:
    matches = [e for e in _central_entries(data) if e[1].endswith(suffix)]
    assert len(matches) == 1, f"expected one member ending in {suffix!r}, found {[m[1] for m in matches]}"
    return matches[0]


def with_bad_crc(data: bytes, suffix: str) -> bytes:
    """The archive with the CRC of the member ending in `suffix` wrong in both headers."""
    out = bytearray(data)
    pos, _name, offset = _entry(data, suffix)
    (crc,) = struct.unpack_from("<I", out, pos + 16)
    struct.pack_into("<I", out, pos + 16, crc ^ 0xFFFFFFFF)
    (local_crc,) = struct.unpack_from("<I", out, offset + 14)
    if local_crc:  # 0 when the writer put the CRC in a data descriptor, as PyTorch does
        struct.pack_into("<I", out, offset + 14, local_crc ^ 0xFFFFFFFF)
    return bytes(out)


def with_local_name(data: bytes, suffix: str, new_suffix: str) -> bytes:
    """The archive with the local header of the member ending in `suffix` ending in `new_suffix`.

    The central directory keeps the old name; the lengths must match so no offset moves.
    """
    out = bytearray(data)
    _pos, name, offset = _entry(data, suffix)
    (nlen,) = struct.unpack_from("<H", out, offset + 26)
    encoded = (name[: -len(suffix)] + new_suffix).encode()
    assert len(encoded) == nlen == len(name.encode()), "the new name must keep the length"
    out[offset + 30 : offset + 30 + nlen] = encoded
    return bytes(out)


def with_stored_member_first(data: bytes, name: str, payload: bytes) -> bytes:
    """The archive rewritten with an extra stored member in front of all the others."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        target.writestr(zipfile.ZipInfo(name), payload)
        for info in source.infolist():
            target.writestr(zipfile.ZipInfo(info.filename), source.read(info))
    return out.getvalue()


def with_member_replaced(data: bytes, suffix: str, payload: bytes) -> bytes:
    """The archive rewritten (stored, same order) with the member ending in `suffix` replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            body = payload if info.filename.endswith(suffix) else source.read(info)
            target.writestr(zipfile.ZipInfo(info.filename), body)
    return out.getvalue()
