"""Keras models: the JSON config inside `.keras` zips and HDF5 `.h5` files.

A Lambda layer carries marshalled Python bytecode that runs when the model is built;
Keras 3 configs can also name any module and function to deserialise (`"module":
"builtins", "class_name": "function", "config": "eval"`). The config is found in the
HDF5 bytes and decoded as JSON (escapes included) without an HDF5 library: a scanner
should not hand hostile files to a C parser with a history of memory-safety bugs.
"""

from __future__ import annotations

import json
import re

from bastion.errors import ArtifactError
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.pickle.rules import is_dangerous
from bastion.scan.source import MemorySource

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_JSON_START = re.compile(rb"\{\s{0,16}\"")
_KERAS_MODULES = ("keras", "tensorflow", "tf_keras", "keras_nlp", "keras_hub", "keras_cv")
_CODE_LAYERS = frozenset({"Lambda", "__lambda__"})
_MAX_WALK = 200_000


def scan_config_text(ctx: ScanContext, text: str, loc: Location, name: str) -> bool:
    """Check a JSON document that may be a Keras config; False if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not _is_keras_config(doc):
        return False
    ctx.saw("keras")
    check_config(ctx, doc, loc)
    return True


def _is_keras_config(doc: object) -> bool:
    return isinstance(doc, dict) and "class_name" in doc and "config" in doc


def scan_hdf5(ctx: ScanContext, src: MemorySource, loc: Location) -> None:
    """Find and check every Keras JSON config stored in an HDF5 file's attributes."""
    ctx.saw("hdf5")
    buf, start, end = src.buf, src.start, src.end
    decoder = json.JSONDecoder()
    found = 0
    limit = ctx.limits.max_header_bytes
    pattern = _JSON_START
    pos = start
    while True:
        match = pattern.search(buf, pos, end)
        if match is None:
            break
        at = match.start()
        stop = buf.find(b"\x00", at, min(end, at + limit))
        stop = min(end, at + limit) if stop < 0 else stop
        try:
            text = bytes(buf[at:stop]).decode("utf-8")
            doc, used = decoder.raw_decode(text)
        except (ValueError, RecursionError):
            pos = at + 1
            continue
        if _is_keras_config(doc) or (
            isinstance(doc, dict) and "training_config" not in doc and "optimizer_config" in doc
        ):
            found += 1
            ctx.saw("keras")
            check_config(ctx, doc, loc.at(at - start))
        pos = at + max(1, len(text[:used].encode("utf-8")))
    if not found and src.find(b"model_config") >= 0:
        raise ArtifactError("HDF5 file names a model_config that could not be decoded")
    _check_hdf5_end(src)


def _check_hdf5_end(src: MemorySource) -> None:
    """The superblock records where the file ends; a shorter file is truncated."""
    at = next((o for o in (0, 512, 1024, 2048) if src.bytes_at(o, 8) == _HDF5_SIGNATURE), None)
    if at is None:
        return
    version = src.bytes_at(at + 8, 1)
    if not version:
        raise ArtifactError("HDF5 superblock is truncated")
    if version[0] in (0, 1):
        size_at, addresses = at + 13, at + 24 + (4 if version[0] == 1 else 0)
        field = 2  # base, free-space info, end of file
    elif version[0] in (2, 3):
        size_at, addresses = at + 9, at + 12
        field = 2  # base, superblock extension, end of file
    else:
        return
    width = src.bytes_at(size_at, 1)
    if not width or width[0] not in (2, 4, 8):
        raise ArtifactError("HDF5 superblock has an invalid offset size")
    n = width[0]
    raw = src.bytes_at(addresses, n * (field + 1))
    if len(raw) != n * (field + 1):
        raise ArtifactError("HDF5 superblock is truncated")
    base = int.from_bytes(raw[:n], "little")
    end = int.from_bytes(raw[field * n : (field + 1) * n], "little")
    if end != (1 << (8 * n)) - 1 and base + end > src.size:
        raise ArtifactError(f"HDF5 file ends at byte {src.size} but its superblock says {base + end} (truncated)")


def check_config(ctx: ScanContext, doc: object, loc: Location) -> None:
    """Walk a Keras config and report layers and objects that carry or name code."""
    stack: list[object] = [doc]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > _MAX_WALK:
            raise ArtifactError("Keras config is too large to walk")
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        _check_object(ctx, node, loc)


def _check_object(ctx: ScanContext, node: dict[str, object], loc: Location) -> None:
    cls = node.get("class_name")
    module = node.get("module")
    if not isinstance(cls, str):
        cls = ""
    config = node.get("config")
    layer_name = config.get("name", "") if isinstance(config, dict) else ""
    if cls in _CODE_LAYERS:
        ctx.add(
            "keras.lambda-layer",
            Severity.CRITICAL,
            loc,
            f"Lambda layer {layer_name!r} carries Python code that runs when the model is loaded",
            "keras",
            str(layer_name),
        )
        return
    if not isinstance(module, str):
        return
    target = config if isinstance(config, str) else str(cls)
    if is_dangerous(module, target) or is_dangerous(module, str(cls)):
        ctx.add(
            "keras.unsafe-module",
            Severity.CRITICAL,
            loc,
            f"config deserialises {module}.{target}, which can run code or reach the system",
            "keras",
            f"{module}.{target}",
        )
    elif not module.startswith(_KERAS_MODULES):
        severity = Severity.HIGH if cls == "function" or node.get("registered_name") == "function" else Severity.MEDIUM
        ctx.add(
            "keras.custom-object",
            severity,
            loc,
            f"config needs custom code {module}.{target} to load; it runs whatever that module defines",
            "keras",
            f"{module}.{target}",
        )
