"""safetensors: a JSON header of tensor names, dtypes, shapes and offsets, then raw data.

The format cannot run code; what can go wrong is a header that lies. Each tensor's
offsets must lie inside the data, match its dtype and shape, not overlap another's,
and together cover the data exactly: bytes that no tensor claims are hidden payload.
"""

from __future__ import annotations

import json
import math
import struct

from bastion.errors import ArtifactError
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.source import ByteSource

DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "C64": 64,
}


def sniff(head: bytes) -> bool:
    """True when the first bytes are a plausible safetensors header length and '{'."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    length: int = struct.unpack("<Q", head[:8])[0]
    return length >= 2


def scan_safetensors(ctx: ScanContext, src: ByteSource, loc: Location) -> None:
    """Validate the header against the data; report every inconsistency."""
    ctx.saw("safetensors")
    fmt = "safetensors"
    length = struct.unpack("<Q", src.read(8))[0]
    size = src.size
    if length > ctx.limits.max_header_bytes or (size is not None and length > size - 8):
        ctx.add(
            "safetensors.bad-header",
            Severity.HIGH,
            loc.at(0),
            f"header length {length} exceeds the file or the {ctx.limits.max_header_bytes}-byte limit",
            fmt,
        )
        ctx.incomplete(loc, "safetensors header cannot be read", fmt)
        return
    raw = src.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ArtifactError(f"safetensors header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise ArtifactError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        ctx.add("safetensors.bad-header", Severity.MEDIUM, loc.at(8), "__metadata__ must map strings to strings", fmt)
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        problem = _tensor_problem(info)
        if problem:
            ctx.add("safetensors.bad-header", Severity.HIGH, loc.at(8), f"tensor {name!r}: {problem}", fmt, name)
            continue
        begin, end = info["data_offsets"]
        spans.append((begin, end, name))
    data_size = None if size is None else size - 8 - length
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            ctx.add(
                "safetensors.overlap",
                Severity.HIGH,
                loc.at(8),
                f"tensor {name!r} overlaps the tensor before it",
                fmt,
                name,
            )
        elif begin > cursor:
            ctx.add(
                "safetensors.gap",
                Severity.HIGH,
                loc.at(8 + length + cursor),
                f"{begin - cursor} bytes before tensor {name!r} belong to no tensor",
                fmt,
                name,
            )
        cursor = max(cursor, end)
    if data_size is not None:
        if cursor > data_size:
            ctx.add(
                "safetensors.out-of-bounds",
                Severity.HIGH,
                loc.at(8),
                f"tensors claim {cursor} bytes of data but the file holds {data_size}",
                fmt,
            )
            ctx.incomplete(loc, "safetensors file is truncated", fmt)
        elif cursor < data_size:
            ctx.add(
                "safetensors.trailing-data",
                Severity.HIGH,
                loc.at(8 + length + cursor),
                f"{data_size - cursor} bytes after the last tensor belong to no tensor (hidden data)",
                fmt,
            )


def _tensor_problem(info: object) -> str:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        return "entry must have exactly dtype, shape and data_offsets"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        return "shape must be a list of non-negative integers"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        return "data_offsets must be [begin, end] with 0 <= begin <= end"
    nbits = math.prod(shape) * DTYPE_BITS[dtype]
    if (offsets[1] - offsets[0]) * 8 != nbits + (-nbits % 8):
        return f"{offsets[1] - offsets[0]} bytes do not hold shape {shape} of {dtype}"
    return ""
