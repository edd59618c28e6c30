"""Protobuf model formats, read with a small wire-format walker: ONNX and TensorFlow graphs.

ONNX: operators from custom domains need code that is not part of the model (and
onnxruntime-extensions' PyOp runs Python); tensors whose external-data location leaves
the model's folder make the loader read any file (CVE-2024-27318, CVE-2024-5187).
TensorFlow: PyFunc ops run Python; file ops read and write the machine's files.
Tensor payloads are skipped by length, never decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from bastion.errors import ArtifactError, LimitExceeded
from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext
from bastion.scan.formats.ziparchive import escapes_root
from bastion.scan.source import MemorySource

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
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
    """Yield (field number, wire type, value or payload start, payload end) in [start, end).

    This accepts what protobuf's own parsers accept: a field's wire type is read per
    occurrence, so a known field number sent with another wire type is an unknown field
    (callers skip it: they descend only where the schema's wire type is met); groups
    (wire types 3/4) are skipped as unknown fields; anything else malformed is an error,
    as it is for the loader.
    """
    pos = start
    while pos < end:
        budget.spend()
        number, wire, pos = _tag(buf, pos, end)
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ArtifactError(f"field {number} runs {pos + length - end} bytes past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > end:
                raise ArtifactError(f"field {number} runs past its message")
            pos += size
            yield number, wire, pos - size, pos
        elif wire == SGROUP:
            pos = _skip_group(buf, pos, end, number, budget)
        else:
            raise ArtifactError(f"wire type {wire} at byte {pos}")
    if pos != end:
        raise ArtifactError("message runs past its end")


def _tag(buf: MemorySource, pos: int, end: int) -> tuple[int, int, int]:
    # No check of the field number: upb (protobuf's Python parser, which TensorFlow's and
    # ONNX's Python loaders use) keeps even field 0 as an unknown field. Refusing what a
    # loader accepts would let a file hide behind "does not parse".
    key, pos = _varint(buf, pos, end)
    return key >> 3, key & 7, pos


def _skip_group(buf: MemorySource, pos: int, end: int, number: int, budget: _Budget) -> int:
    """Skip a (deprecated) group up to its matching end tag, as protobuf skips unknown groups."""
    depth = [number]
    while depth:
        budget.spend()
        if len(depth) > _MAX_DEPTH:
            raise LimitExceeded("protobuf groups nested too deeply")
        inner, wire, pos = _tag(buf, pos, end)
        if wire == VARINT:
            _value, pos = _varint(buf, pos, end)
        elif wire == LEN:
            length, pos = _varint(buf, pos, end)
            pos += length
        elif wire in (I64, I32):
            pos += 8 if wire == I64 else 4
        elif wire == SGROUP:
            depth.append(inner)
        elif wire == EGROUP and inner == depth[-1]:
            depth.pop()
        else:
            raise ArtifactError(f"unmatched group end or wire type {wire} at byte {pos}")
        if pos > end:
            raise ArtifactError("group runs past its message")
    return pos


def _text(buf: MemorySource, start: int, end: int) -> str:
    return buf.bytes_at(start, min(end - start, 4096)).decode("utf-8", "replace")


def sniff(head: bytes, lower_name: str) -> str | None:
    """'onnx', 'tf' or 'probe' (a protobuf of unknown kind) or None.

    A name only makes a protobuf that does not parse "not analysed"; content decides
    what is judged: any head that opens with a field 1 or 2 tag is probed.
    """
    if lower_name.endswith(".onnx"):
        return "onnx"
    if lower_name.endswith((".pb", ".meta")):
        return "tf"
    if head[:1] in (b"\x08", b"\x0a", b"\x10", b"\x12") and len(head) > 2:
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
    onnx_shaped = any(n == 7 and w == LEN for n, w, _a, _b in top) and 8 in numbers  # graph, opset_import
    if kind == "onnx" or onnx_shaped:
        # onnx.load reads any name: an ONNX model called model.pb is still an ONNX model.
        ctx.saw("onnx")
        _scan_onnx(ctx, src, loc, top, budget)
        if kind != "tf":
            return True
    readings = _tf_readings(src, top, budget)
    if onnx_shaped and not any(r.plausible for r in readings):
        return True
    if kind == "probe" and not any(r.plausible for r in readings):
        return False
    if not readings:
        raise ArtifactError("does not parse as a TensorFlow SavedModel, MetaGraphDef or GraphDef")
    ctx.saw("tensorflow")
    seen: set[tuple[str, int, str]] = set()
    for reading in readings:
        for rule, severity, offset, message, evidence in reading.findings:
            if (rule, offset, evidence) not in seen:
                seen.add((rule, offset, evidence))
                ctx.add(rule, severity, loc.at(offset), message, "tensorflow", evidence)
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
        elif number == 20:  # ModelProto.training_info: initialization (1) and algorithm (2) graphs
            for tn, tw, ta, tb in fields(src, a, b, budget):
                if tn in (1, 2) and tw == LEN:
                    _onnx_graph(ctx, src, loc, ta, tb, budget, 1)
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
        elif number == 5:  # initializer
            _onnx_tensor(ctx, src, loc, fa, fb, budget)
        elif number == 15:  # sparse_initializer
            _onnx_sparse_tensor(ctx, src, loc, fa, fb, budget)


def _onnx_node(ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget, depth: int) -> None:
    op_type = domain = ""
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 4:
            op_type = _text(src, fa, fb)
        elif number == 7:
            domain = _text(src, fa, fb)
        elif number == 5:  # AttributeProto: t=5, g=6, tensors=10, graphs=11, sparse_tensor(s)=22/23
            for an, aw, aa, ab in fields(src, fa, fb, budget):
                if aw != LEN:
                    continue
                if an in (6, 11):
                    _onnx_graph(ctx, src, loc, aa, ab, budget, depth + 1)
                elif an in (5, 10):
                    _onnx_tensor(ctx, src, loc, aa, ab, budget)
                elif an in (22, 23):
                    _onnx_sparse_tensor(ctx, src, loc, aa, ab, budget)
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


def _onnx_sparse_tensor(ctx: ScanContext, src: MemorySource, loc: Location, a: int, b: int, budget: _Budget) -> None:
    for number, wire, fa, fb in fields(src, a, b, budget):
        if number in (1, 2) and wire == LEN:  # SparseTensorProto.values, .indices
            _onnx_tensor(ctx, src, loc, fa, fb, budget)


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
# TensorFlow picks the message type from the file's name (saved_model.pb: SavedModel;
# *.meta: MetaGraphDef; a frozen graph: GraphDef, whatever its name), never from its
# content; so every reading that parses is judged. A reading that does not parse is one
# the loader would refuse; if no reading parses, the file is not analysed.

_OP_NAME = re.compile(r"[A-Za-z_>][A-Za-z0-9_>./-]{0,200}")


@dataclass(slots=True)
class _TfReading:
    """One interpretation of the bytes (SavedModel, MetaGraphDef or GraphDef) and what it holds."""

    kind: str
    findings: list[tuple[str, Severity, int, str, str]] = field(default_factory=list)
    ops: int = 0

    @property
    def plausible(self) -> bool:
        return self.ops > 0


def _tf_readings(src: MemorySource, top: list[tuple[int, int, int, int]], budget: _Budget) -> list[_TfReading]:
    readings = []
    for kind in ("SavedModel", "MetaGraphDef", "GraphDef"):
        reading = _TfReading(kind)
        try:
            if kind == "SavedModel":
                for number, wire, a, b in top:  # SavedModel.meta_graphs = 2
                    if number == 2 and wire == LEN:
                        _tf_meta_graph(reading, src, a, b, budget)
            elif kind == "MetaGraphDef":
                _tf_meta_graph(reading, src, 0, src.size, budget)
            else:
                _tf_graph(reading, src, 0, src.size, budget)
        except ArtifactError as err:
            if isinstance(err, LimitExceeded):
                raise
            continue  # the loader would refuse this reading
        readings.append(reading)
    return readings


def _tf_meta_graph(reading: _TfReading, src: MemorySource, a: int, b: int, budget: _Budget) -> None:
    for number, wire, fa, fb in fields(src, a, b, budget):
        if number == 2 and wire == LEN:  # MetaGraphDef.graph_def
            _tf_graph(reading, src, fa, fb, budget)


def _tf_graph(reading: _TfReading, src: MemorySource, a: int, b: int, budget: _Budget) -> None:
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 1:  # GraphDef.node
            _tf_node(reading, src, fa, fb, budget)
        elif number == 2:  # GraphDef.library: FunctionDefLibrary.function (1) -> FunctionDef.node_def (3)
            for ln, lw, la, lb in fields(src, fa, fb, budget):
                if ln == 1 and lw == LEN:
                    for dn, dw, da, db in fields(src, la, lb, budget):
                        if dn == 3 and dw == LEN:
                            _tf_node(reading, src, da, db, budget)


def _tf_node(reading: _TfReading, src: MemorySource, a: int, b: int, budget: _Budget) -> None:
    name = ""
    ops: list[tuple[str, int]] = []
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 1:
            name = _text(src, fa, fb)
        elif number == 2:  # every occurrence: the parser keeps the last, a decoy may come first
            ops.append((_text(src, fa, fb), a))
        elif number == 5:  # attr: map<string, AttrValue>; function-valued attrs name what runs
            for en, ew, ea, eb in fields(src, fa, fb, budget):
                if en == 2 and ew == LEN:
                    ops.extend(_attr_functions(src, ea, eb, budget, 0))
    for op, at in ops:
        if _OP_NAME.fullmatch(op):
            reading.ops += 1
        _judge_op(reading, name, op, at)


def _attr_functions(src: MemorySource, a: int, b: int, budget: _Budget, depth: int) -> list[tuple[str, int]]:
    """Functions an AttrValue names (`func`, `list.func`): an op name there runs as that op.

    TensorFlow instantiates a name missing from the function library as the primitive op
    of that name, so `PartitionedCall(f=WriteFile)` runs WriteFile.
    """
    if depth > _MAX_DEPTH:
        raise LimitExceeded("TensorFlow attributes nested too deeply")
    found: list[tuple[str, int]] = []
    lists: list[tuple[int, int]] = []
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 10:  # AttrValue.func: NameAttrList
            lists.append((fa, fb))
        elif number == 1:  # AttrValue.list: ListValue.func (9)
            lists.extend((la, lb) for ln, lw, la, lb in fields(src, fa, fb, budget) if ln == 9 and lw == LEN)
    for la, lb in lists:  # NameAttrList{name=1, attr=2: map<string, AttrValue>}
        for number, wire, fa, fb in fields(src, la, lb, budget):
            if number == 1 and wire == LEN:
                found.append((_text(src, fa, fb), fa))
            elif number == 2 and wire == LEN:
                for en, ew, ea, eb in fields(src, fa, fb, budget):
                    if en == 2 and ew == LEN:
                        found.extend(_attr_functions(src, ea, eb, budget, depth + 1))
    return found


def _judge_op(reading: _TfReading, name: str, op: str, at: int) -> None:
    if op in TF_CODE_OPS:
        message = f"node {name!r} is a {op} op, which runs Python code"
        reading.findings.append(("tf.python-op", Severity.CRITICAL, at, message, op))
    elif op in TF_FILE_OPS:
        message = f"node {name!r} is a {op} op, which reads or writes files"
        reading.findings.append(("tf.file-op", Severity.HIGH, at, message, op))
