"""GGUF (llama.cpp): typed metadata, including a Jinja chat template, then tensor data.

Runtimes such as llama-cpp-python render the chat template with Jinja; a template that
climbs from a value to `__globals__`, `__builtins__` or `os` escapes the sandbox
(CVE-2024-34359). Every template-named key (and any other string that reads as a Jinja
template) is parsed with Jinja2's own parser and judged on its tree
(`formats/jinja_template.py`). The metadata is parsed with every length checked; tensors
are skipped.
"""

from __future__ import annotations

import math
import re
import struct

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location
from bastion.scan.context import ScanContext
from bastion.scan.formats.jinja_template import check_template, looks_like_template
from bastion.scan.secrets import scan_text_for_secrets
from bastion.scan.source import ByteSource

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_KV = 1 << 20
_MAX_ARRAY = 1 << 28
_MAX_NESTING = 16

_TEMPLATE_KEY = re.compile(r"(?:^|\.)chat_templates?(?:\.|$)|(?:^|\.)template(?:\.|$)|_template(?:\.|$)")


def is_template_key(key: str) -> bool:
    """Keys a runtime renders as Jinja: `tokenizer.chat_template` and its named variants
    (`tokenizer.chat_template.tool_use`, `tokenizer.chat_templates.*`)."""
    return _TEMPLATE_KEY.search(key) is not None


class _Reader:
    def __init__(self, src: ByteSource, limit: int) -> None:
        self.src = src
        self.limit = limit

    def scalar(self, fmt: str) -> int | float:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.src.read(size))[0]  # type: ignore[no-any-return]

    def string(self, keep: bool) -> str:
        n = int(self.scalar("<Q"))
        if n > self.limit:
            raise LimitExceeded(f"GGUF string of {n} bytes is over the header limit")
        if not keep:
            self.src.skip(n)
            return ""
        return self.src.read(n).decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool, depth: int = 0) -> object:
        if depth > _MAX_NESTING:
            raise LimitExceeded(f"GGUF arrays nested more than {_MAX_NESTING} deep")
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string(keep)
        if vtype == _ARRAY:
            inner = int(self.scalar("<I"))
            count = int(self.scalar("<Q"))
            if count > _MAX_ARRAY:
                raise LimitExceeded(f"GGUF array of {count} items")
            if inner in _SCALARS:
                self.src.skip(count * struct.calcsize(_SCALARS[inner]))
                return None
            for _ in range(count):
                self.value(inner, False, depth + 1)
            return None
        raise ArtifactError(f"unknown GGUF value type {vtype}")


def scan_gguf(ctx: ScanContext, src: ByteSource, loc: Location) -> None:
    """Parse the metadata; check chat templates for sandbox escapes and text for secrets."""
    ctx.saw("gguf")
    reader = _Reader(src, ctx.limits.max_header_bytes)
    src.read(4)
    version = int(reader.scalar("<I"))
    if version not in (1, 2, 3):
        raise ArtifactError(f"GGUF version {version} is unknown")
    count_fmt = "<I" if version == 1 else "<Q"
    _tensors = int(reader.scalar(count_fmt))
    kv_count = int(reader.scalar(count_fmt))
    if kv_count > _MAX_KV:
        raise LimitExceeded(f"{kv_count} GGUF metadata entries")
    alignment = 32
    for _ in range(kv_count):
        key = reader.string(True)
        vtype = int(reader.scalar("<I"))
        keep = vtype == _STRING
        value = reader.value(vtype, keep)
        if key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
        if isinstance(value, str) and value:
            here = loc.inside(key)
            if is_template_key(key) or looks_like_template(value):
                # Every key may be duplicated: each copy is judged, not the first one met.
                check_template(ctx, value, here, "gguf", required=is_template_key(key))
            scan_text_for_secrets(ctx, value, here, "gguf")
    _check_tensor_extents(reader, _tensors, count_fmt, alignment)


# ggml tensor types: (elements per block, bytes per block); others are checked by offset only.
_GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 30: (1, 2),
}  # fmt: skip
_MAX_TENSORS = 1 << 20
_MAX_DIMS = 8


def _check_tensor_extents(reader: _Reader, count: int, count_fmt: str, alignment: int) -> None:
    """Read the tensor table; every tensor must lie inside the data that follows."""
    if count > _MAX_TENSORS:
        raise LimitExceeded(f"{count} GGUF tensors")
    extent = 0
    for _ in range(count):
        reader.string(False)
        dims = int(reader.scalar("<I"))
        if dims > _MAX_DIMS:
            raise ArtifactError(f"GGUF tensor with {dims} dimensions")
        shape = [int(reader.scalar(count_fmt)) for _ in range(dims)]
        ggml_type = int(reader.scalar("<I"))
        offset = int(reader.scalar("<Q"))
        block = _GGML_BLOCKS.get(ggml_type)
        size = 0 if block is None else -(-math.prod(shape) // block[0]) * block[1]
        extent = max(extent, offset + size)
    src = reader.src
    data_start = -(-src.tell() // alignment) * alignment
    if count and src.size is not None and data_start + extent > src.size:  # no tensors: nothing to pad to
        raise ArtifactError(f"GGUF tensors need {data_start + extent} bytes; the file holds {src.size} (truncated)")
