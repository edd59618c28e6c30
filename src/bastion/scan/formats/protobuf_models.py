"""Protobuf model formats, read with a small wire-format walker: ONNX and TensorFlow graphs.

ONNX: operators from custom domains need code that is not part of the model (and
onnxruntime-extensions' PyOp runs Python); tensors whose external-data location leaves
the model's folder make the loader read any file (CVE-2024-27318, CVE-2024-5187).
TensorFlow: PyFunc ops run Python; file ops read and write the machine's files.
Tensor payloads are skipped by length, never decoded.
"""

from __future__ import annotations

from collections.abc import Iterator

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats.ziparchive import escapes_root
from bastion.scan.source import MemorySource

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MAX_DEPTH = 64
_MAX_FIELDS = 20_000_000

STANDARD_ONNX_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "com.microsoft.dml",
        "org.pytorch.aten",
        "pkg.onnxscript.torch_lib",
        "pkg.onnxscript.torch_lib.common",
        "pkg.torch.onnx",
    }
)
TF_CODE_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc", "PyCall"})
TF_FILE_OPS = frozenset(
    {
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "DeleteFile",
        "FileSystemSetConfiguration",
        "ImmutableConst",
        "PrintV2",
        "DebugIdentity",
        "DebugIdentityV2",
        "DebugNumericSummary",
        "WriteAudioSummary",
        "WriteGraphSummary",
        "WriteHistogramSummary",
        "WriteImageSummary",
        "WriteRawProtoSummary",
        "WriteScalarSummary",
        "WriteSummary",
        "CreateSummaryFileWriter",
        "SummaryWriter",
        "FixedLengthRecordDataset",
        "TextLineDataset",
        "TFRecordDataset",
        "LoadAndRemapMatrix",
        "RecordInput",
        "ExperimentalSqlDataset",
        "SqlDataset",
        "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord",
        "Save",
        "SaveSlices",
        "Restore",
        "RestoreSlice",
    }
)


class _Budget:
    def __init__(self) -> None:
        self.left = _MAX_FIELDS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise LimitExceeded("protobuf has too many fields")


def _varint(buf: MemorySource, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ArtifactError(f"bad varint at byte {pos}")
        byte = buf.buf[buf.start + pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: MemorySource, start: int, end: int, budget: _Budget) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, value or payload start, payload end) in [start, end)."""
    pos = start
    while pos < end:
        budget.spend()
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ArtifactError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ArtifactError(f"field {number} runs {pos + length - end} bytes past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == I64:
            pos += 8
            yield number, wire, pos - 8, pos
        elif wire == I32:
            pos += 4
            yield number, wire, pos - 4, pos
        else:
            raise ArtifactError(f"wire type {wire} at byte {pos}")
    if pos != end:
        raise ArtifactError("message runs past its end")


def _text(buf: MemorySource, start: int, end: int) -> str:
    return buf.bytes_at(start, min(end - start, 4096)).decode("utf-8", "replace")


def sniff(head: bytes, lower_name: str) -> str | None:
    """'onnx', 'tf' or 'probe' (a protobuf of unknown kind) or None."""
    if lower_name.endswith(".onnx"):
        return "onnx"
    if lower_name.endswith(".pb"):
        return "tf"
    if head[:1] in (b"\x08",) and len(head) > 2:
        return "probe"
    return None


def scan_protobuf_model(ctx: ScanContext, src: MemorySource, loc: Location, kind: str) -> bool:
    """Scan an ONNX model or TensorFlow graph; with kind 'probe', False if it is neither."""
    budget = _Budget()
    try:
        top = [(n, w, a, b) for n, w, a, b in fields(src, 0, src.size, budget)]
    except ArtifactError:
        if kind == "probe":
            return False
        raise
    numbers = {n for n, _w, _a, _b in top}
    if kind == "probe":
        if 7 in numbers and 8 in numbers:
            kind = "onnx"
        elif numbers <= {1, 2} and 2 in numbers:
            kind = "tf"
        else:
            return False
    if kind == "onnx":
        ctx.saw("onnx")
        _scan_onnx(ctx, src, loc, top, budget)
    else:
        ctx.saw("tensorflow")
        _scan_tf(ctx, src, loc, top, budget)
    return True


# -- ONNX ---------------------------------------------------------------------------
def _scan_onnx(
    ctx: ScanContext, src: MemorySource, loc: Location, top: list[tuple[int, int, int, int]], budget: _Budget
) -> None:
    for number, wire, a, b in top:
        if wire != LEN:
            continue
        if number == 7:  # ModelProto.graph
            _onnx_graph(ctx, src, loc, a, b, budget, 0)
        elif number == 25:  # ModelProto.functions (FunctionProto.node = 7)
            for fn, fw, fa, fb in fields(src, a, b, budget):
                if fn == 7 and fw == LEN:
                    _onnx_node(ctx, src, loc, fa, fb, budget, 1)


def _onnx_graph(
    ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget, depth: int
) -> None:
    if depth > _MAX_DEPTH:
        raise LimitExceeded("ONNX subgraphs nested too deeply")
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 1:
            _onnx_node(ctx, src, loc, fa, fb, budget, depth)
        elif number in (5, 15):  # initializer, sparse_initializer
            _onnx_tensor(ctx, src, loc, fa, fb, budget)


def _onnx_node(ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget, depth: int) -> None:
    op_type = domain = ""
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 4:
            op_type = _text(src, fa, fb)
        elif number == 7:
            domain = _text(src, fa, fb)
        elif number == 5:  # AttributeProto: t=5, g=6, tensors=10, graphs=11
            for an, aw, aa, ab in fields(src, fa, fb, budget):
                if aw != LEN:
                    continue
                if an in (6, 11):
                    _onnx_graph(ctx, src, loc, aa, ab, budget, depth + 1)
                elif an in (5, 10):
                    _onnx_tensor(ctx, src, loc, aa, ab, budget)
    if domain not in STANDARD_ONNX_DOMAINS:
        python = (domain == "ai.onnx.contrib" and op_type.startswith("Py")) or "python" in domain.lower()
        ctx.add(
            "onnx.custom-operator",
            Severity.CRITICAL if python else Severity.HIGH,
            loc.at(a),
            f"operator {op_type!r} from custom domain {domain!r} needs code outside the model"
            + (" and runs Python" if python else ""),
            "onnx",
            f"{domain}::{op_type}",
        )


def _onnx_tensor(ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget) -> None:
    for number, wire, fa, fb in fields(src, a, b, budget):
        if number != 13 or wire != LEN:  # TensorProto.external_data
            continue
        key = value = ""
        for kn, kw, ka, kb in fields(src, fa, fb, budget):
            if kw == LEN and kn == 1:
                key = _text(src, ka, kb)
            elif kw == LEN and kn == 2:
                value = _text(src, ka, kb)
        if key == "location" and escapes_root(value):
            ctx.add(
                "onnx.external-data-traversal",
                Severity.CRITICAL,
                loc.at(fa),
                f"tensor data is read from {value!r}, outside the model's folder",
                "onnx",
                value,
            )


# -- TensorFlow -----------------------------------------------------------------------
def _scan_tf(
    ctx: ScanContext, src: MemorySource, loc: Location, top: list[tuple[int, int, int, int]], budget: _Budget
) -> None:
    if any(n == 2 for n, _w, _a, _b in top) and not any(n == 1 and w == LEN for n, w, _a, _b in top):
        for number, wire, a, b in top:  # SavedModel.meta_graphs -> MetaGraphDef.graph_def
            if number == 2 and wire == LEN:
                for mn, mw, ma, mb in fields(src, a, b, budget):
                    if mn == 2 and mw == LEN:
                        _tf_graph(ctx, src, loc, ma, mb, budget)
    else:
        _tf_graph(ctx, src, loc, 0, src.size, budget)  # a frozen GraphDef


def _tf_graph(ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget) -> None:
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 1:
            _tf_node(ctx, src, loc, fa, fb, budget)
        elif number == 2:  # FunctionDefLibrary.function -> FunctionDef.node_def (3)
            for ln, lw, la, lb in fields(src, fa, fb, budget):
                if ln == 1 and lw == LEN:
                    for dn, dw, da, db in fields(src, la, lb, budget):
                        if dn == 3 and dw == LEN:
                            _tf_node(ctx, src, loc, da, db, budget)


def _tf_node(ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget) -> None:
    name = op = ""
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire == LEN and number == 1:
            name = _text(src, fa, fb)
        elif wire == LEN and number == 2:
            op = _text(src, fa, fb)
    if op in TF_CODE_OPS:
        ctx.add(
            "tf.python-op",
            Severity.CRITICAL,
            loc.at(a),
            f"node {name!r} is a {op} op, which runs Python code",
            "tensorflow",
            op,
        )
    elif op in TF_FILE_OPS:
        ctx.add(
            "tf.file-op",
            Severity.HIGH,
            loc.at(a),
            f"node {name!r} is a {op} op, which reads or writes files",
            "tensorflow",
            op,
        )
