"""Protobuf model formats, read with a small wire-format walker: ONNX and TensorFlow graphs.

ONNX: operators from custom domains need code that is not part of the model (and
onnxruntime-extensions' PyOp runs Python); tensors whose external-data location leaves
the model's folder make the loader read any file (CVE-2024-27318, CVE-2024-5187).
TensorFlow: PyFunc ops run Python; file ops read and write the machine's files.
Tensor payloads are skipped by length, never decoded.
"""

from __future__ import annotations

import os
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
        # Queue readers: ReaderRead* pulls file names from a queue and reads them whole.
        "WholeFileReader",
        "WholeFileReaderV2",
        "TextLineReader",
        "TextLineReaderV2",
        "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2",
        "TFRecordReader",
        "TFRecordReaderV2",
        "LMDBReader",
        "ReaderRead",
        "ReaderReadV2",
        "ReaderReadUpTo",
        "ReaderReadUpToV2",
        "ReaderRestoreState",
        "ReaderRestoreStateV2",
        "LMDBDataset",
        "ExperimentalLMDBDataset",
        "MatchingFilesDataset",
        "ExperimentalMatchingFilesDataset",
        "SnapshotDataset",
        "SnapshotDatasetV2",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "ExperimentalSaveDataset",
        "ExperimentalLoadDataset",
        "CSVDataset",
        "CSVDatasetV2",
        "ExperimentalCSVDataset",
        "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2",
        "DecodeProtoV2",
        "EncodeProto",
        "DebugIdentityV3",
        "GenerateVocabRemapping",
    }
)
# Ops that write or read a checkpoint at the path of their first input. Every saver has
# them, fed by a placeholder or a function argument (the caller's path); a path fixed in
# constants makes loading the graph touch a file the attacker chose.
TF_CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})
# Ops that run another graph carried in a tensor, or talk to other processes and hosts.
TF_EMBEDDED_GRAPH_OPS = frozenset({"DatasetFromGraph"})
TF_REMOTE_OPS = frozenset(
    {"RemoteCall", "_Send", "_Recv", "_HostSend", "_HostRecv", "CollectiveBcastSend", "CollectiveBcastRecv",
     "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
     "RegisterDataset", "RegisterDatasetV2", "DistributedSave", "BigQueryReader", "CreateSummaryDbWriter"}
)  # fmt: skip
# Ops known to compute on tensors and variables only. Any other op is reported (LOW): a
# deny-list misses the op nobody thought of; this list makes the unknown op visible.
TF_INERT_OPS = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "AddN",
        "AddV2",
        "All",
        "Any",
        "ApproximateEqual",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Assert",
        "Assign",
        "AssignAdd",
        "AssignAddVariableOp",
        "AssignSub",
        "AssignSubVariableOp",
        "AssignVariableOp",
        "Atan",
        "Atan2",
        "Atanh",
        "AvgPool",
        "AvgPool3D",
        "AvgPoolGrad",
        "BatchMatMul",
        "BatchMatMulV2",
        "BatchMatMulV3",
        "BatchNormWithGlobalNormalization",
        "BatchToSpaceND",
        "BiasAdd",
        "BiasAddGrad",
        "BiasAddV1",
        "Bitcast",
        "BitwiseAnd",
        "BitwiseOr",
        "BitwiseXor",
        "BroadcastArgs",
        "BroadcastGradientArgs",
        "BroadcastTo",
        "Bucketize",
        "Cast",
        "Ceil",
        "CheckNumerics",
        "CheckNumericsV2",
        "Cholesky",
        "ClipByValue",
        "Complex",
        "ComplexAbs",
        "Concat",
        "ConcatOffset",
        "ConcatV2",
        "Const",
        "ControlTrigger",
        "Conv2D",
        "Conv2DBackpropFilter",
        "Conv2DBackpropInput",
        "Conv3D",
        "Conv3DBackpropFilterV2",
        "Conv3DBackpropInputV2",
        "Conv",
        "Cos",
        "Cosh",
        "CropAndResize",
        "Cumprod",
        "Cumsum",
        "DepthToSpace",
        "DepthwiseConv2dNative",
        "DepthwiseConv2dNativeBackpropFilter",
        "DepthwiseConv2dNativeBackpropInput",
        "DestroyResourceOp",
        "DisableCopyOnRead",
        "Div",
        "DivNoNan",
        "DynamicPartition",
        "DynamicStitch",
        "Einsum",
        "Elu",
        "EluGrad",
        "EmptyTensorList",
        "Enter",
        "Equal",
        "Erf",
        "Erfc",
        "Exit",
        "Exp",
        "ExpandDims",
        "Expm1",
        "ExtractImagePatches",
        "Fill",
        "Floor",
        "FloorDiv",
        "FloorMod",
        "FusedBatchNorm",
        "FusedBatchNormGrad",
        "FusedBatchNormGradV3",
        "FusedBatchNormV3",
        "Gather",
        "GatherNd",
        "GatherV2",
        "Greater",
        "GreaterEqual",
        "HashTable",
        "HashTableV2",
        "Identity",
        "IdentityN",
        "If",
        "Imag",
        "InTopKV2",
        "IsFinite",
        "IsInf",
        "IsNan",
        "IsVariableInitialized",
        "L2Loss",
        "LRN",
        "LeakyRelu",
        "LeakyReluGrad",
        "Less",
        "LessEqual",
        "LinSpace",
        "Log",
        "Log1p",
        "LogSoftmax",
        "LogicalAnd",
        "LogicalNot",
        "LogicalOr",
        "LookupTableFindV2",
        "LookupTableImportV2",
        "LookupTableSizeV2",
        "LoopCond",
        "MatMul",
        "MatrixBandPart",
        "MatrixDiag",
        "MatrixDiagPartV3",
        "MatrixDiagV3",
        "MatrixInverse",
        "MatrixSetDiagV3",
        "Max",
        "MaxPool",
        "MaxPool3D",
        "MaxPoolGrad",
        "MaxPoolV2",
        "Maximum",
        "Mean",
        "Merge",
        "Min",
        "Minimum",
        "MirrorPad",
        "Mod",
        "Mul",
        "MulNoNan",
        "MutableHashTableV2",
        "MutableDenseHashTableV2",
        "Neg",
        "NextIteration",
        "NoOp",
        "NonMaxSuppressionV3",
        "NonMaxSuppressionV4",
        "NonMaxSuppressionV5",
        "NotEqual",
        "OneHot",
        "OnesLike",
        "Pack",
        "Pad",
        "PadV2",
        "PartitionedCall",
        "Placeholder",
        "PlaceholderWithDefault",
        "Pow",
        "Prod",
        "QueueDequeueV2",
        "RandomShuffle",
        "RandomStandardNormal",
        "RandomUniform",
        "RandomUniformInt",
        "Range",
        "Rank",
        "ReadVariableOp",
        "Real",
        "RealDiv",
        "Reciprocal",
        "ReciprocalGrad",
        "Relu",
        "Relu6",
        "Relu6Grad",
        "ReluGrad",
        "Reshape",
        "ResizeBicubic",
        "ResizeBilinear",
        "ResizeNearestNeighbor",
        "ResourceApplyAdam",
        "ResourceApplyGradientDescent",
        "ResourceGather",
        "ResourceScatterAdd",
        "ResourceScatterUpdate",
        "ResourceStridedSliceAssign",
        "Reverse",
        "ReverseSequence",
        "ReverseV2",
        "RightShift",
        "LeftShift",
        "Rint",
        "Round",
        "Rsqrt",
        "RsqrtGrad",
        "ScatterNd",
        "SegmentSum",
        "Select",
        "SelectV2",
        "Selu",
        "Shape",
        "ShapeN",
        "ShardedFilename",
        "Sigmoid",
        "SigmoidGrad",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Snapshot",
        "Softmax",
        "SoftmaxCrossEntropyWithLogits",
        "Softplus",
        "Softsign",
        "SpaceToBatchND",
        "SpaceToDepth",
        "SparseSoftmaxCrossEntropyWithLogits",
        "SparseToDense",
        "Split",
        "SplitV",
        "Sqrt",
        "SqrtGrad",
        "Square",
        "SquaredDifference",
        "Squeeze",
        "StatefulPartitionedCall",
        "StatelessIf",
        "StatelessRandomNormal",
        "StatelessRandomUniform",
        "StatelessRandomUniformV2",
        "StatelessRandomGetKeyCounter",
        "StatelessWhile",
        "StopGradient",
        "StridedSlice",
        "StridedSliceGrad",
        "StringJoin",
        "StringToHashBucketFast",
        "Sub",
        "Sum",
        "Switch",
        "Tan",
        "Tanh",
        "TanhGrad",
        "TensorListFromTensor",
        "TensorListGetItem",
        "TensorListReserve",
        "TensorListSetItem",
        "TensorListStack",
        "TensorScatterUpdate",
        "Tile",
        "TopKV2",
        "Transpose",
        "TruncateDiv",
        "TruncatedNormal",
        "Unique",
        "Unpack",
        "UnsortedSegmentSum",
        "VarHandleOp",
        "VarIsInitializedOp",
        "Variable",
        "VariableV2",
        "Where",
        "While",
        "Xdivy",
        "Xlog1py",
        "ZerosLike",
        "_Arg",
        "_Retval",
        "_If",
        "_While",
        "SaveV2",
        "RestoreV2",
        "MergeV2Checkpoints",
        "Save",
        "Restore",
        "SaveSlices",
        "RestoreSlice",
    ]
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
        swept = list(_swept_ops(src))
        if kind == "probe" or not swept:
            raise ArtifactError("does not parse as a TensorFlow SavedModel, MetaGraphDef or GraphDef")
        # Not analysed, and what the bytes name is reported too: a reader that parts from
        # the loader's must not turn a PyFunc into a mere "incomplete".
        ctx.saw("tensorflow")
        ctx.incomplete(loc, "does not parse as a TensorFlow SavedModel, MetaGraphDef or GraphDef", "tensorflow")
        _report_tf(ctx, loc, [swept])
        return True
    ctx.saw("tensorflow")
    _report_tf(ctx, loc, [r.findings for r in readings])
    _report_tf(ctx, loc, [list(_swept_ops(src))], {f.evidence for f in ctx.findings if f.format == "tensorflow"})
    return True


def _report_tf(
    ctx: ScanContext,
    loc: Location,
    readings: list[list[tuple[str, Severity, int, str, str]]],
    named: set[str] | None = None,
) -> None:
    """Report each reading's findings once; with `named`, only ops no finding names yet (the sweep)."""
    seen: set[tuple[str, int, str]] = set()
    unreviewed: set[str] = set()
    for findings in readings:
        for rule, severity, offset, message, evidence in findings:
            if named is not None:
                if evidence in named:
                    continue
                named.add(evidence)
            if rule == "tf.unreviewed-op":
                if evidence in unreviewed:
                    continue  # one finding per op, not per node
                unreviewed.add(evidence)
            if (rule, offset, evidence) not in seen:
                seen.add((rule, offset, evidence))
                ctx.add(rule, severity, loc.at(offset), message, "tensorflow", evidence)


def _op_field(name: str) -> bytes:
    data = name.encode()
    return re.escape(bytes([len(data)])) + re.escape(data)


# NodeDef.op (field 2) or NameAttrList.name (field 1) spelling a code or file op, wherever it
# sits: a prefix that desynchronises the reading (a varint whose last byte is the next
# field's tag, a wire type that swallows it) can hide a node from every schema reading while
# a loader with another view of the bytes, or another file type, still meets it.
_SWEPT = {**dict.fromkeys(TF_FILE_OPS - {"Save", "Restore", "SaveSlices", "RestoreSlice"}, "tf.file-op"),
          **dict.fromkeys(TF_CODE_OPS, "tf.python-op")}  # fmt: skip
_SWEEP = re.compile(
    rb"[\x0a\x12](" + b"|".join(_op_field(op) for op in sorted(_SWEPT, key=len, reverse=True)) + rb")",
    re.DOTALL,
)


def _swept_ops(src: MemorySource) -> Iterator[tuple[str, Severity, int, str, str]]:
    for match in _SWEEP.finditer(src.buf, src.start, src.end):
        op = bytes(match.group(1)[1:]).decode()
        rule = _SWEPT[op]
        severity = Severity.CRITICAL if rule == "tf.python-op" else Severity.HIGH
        yield rule, severity, match.start() - src.start, f"the graph's bytes name a {op} op", op


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
        if key != "location":
            continue
        if escapes_root(value):
            ctx.add(
                "onnx.external-data-traversal",
                Severity.CRITICAL,
                loc.at(fa),
                f"tensor data is read from {value!r}, outside the model's folder",
                "onnx",
                value,
            )
        elif _links_outside_folder(loc, value):
            ctx.add(
                "onnx.external-data-traversal",
                Severity.CRITICAL,
                loc.at(fa),
                f"tensor data is read from {value!r}, a link in the model's folder that leads outside it",
                "onnx",
                value,
            )


def _links_outside_folder(loc: Location, value: str) -> bool:
    """The external-data file, resolved through links as the loader opens it, leaves the model's folder.

    CVE-2026-34447: the name is plain ("weights.bin") but the file is a symlink to any file on
    the machine. Only a model read straight from disk has a folder to resolve against; nothing
    is opened here, the links are only read.
    """
    if loc.members or not value:
        return False
    folder = os.path.dirname(os.path.abspath(loc.file))
    if not os.path.isdir(folder):
        return False
    target = os.path.join(folder, value)
    if not os.path.lexists(target):
        return False
    root = os.path.realpath(folder)
    resolved = os.path.realpath(target)
    return os.path.commonpath([root, resolved]) != root


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


@dataclass(slots=True)
class _TfNode:
    name: str
    at: int
    ops: list[str]
    functions: list[tuple[str, int]]
    inputs: list[str]
    strings: list[tuple[int, int]]


def _tf_graph(reading: _TfReading, src: MemorySource, a: int, b: int, budget: _Budget, depth: int = 0) -> None:
    """Judge a GraphDef's nodes and its library's functions, each function as its own scope."""
    if depth > _MAX_DEPTH:
        raise LimitExceeded("TensorFlow graphs nested too deeply")
    scopes: list[list[_TfNode]] = [[]]
    library: set[str] = set()
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 1:  # GraphDef.node
            scopes[0].append(_tf_node(src, fa, fb, budget))
        elif number == 2:  # GraphDef.library: FunctionDefLibrary.function (1) -> FunctionDef.node_def (3)
            for ln, lw, la, lb in fields(src, fa, fb, budget):
                if ln == 1 and lw == LEN:
                    scope: list[_TfNode] = []
                    for dn, dw, da, db in fields(src, la, lb, budget):
                        if dn == 3 and dw == LEN:
                            scope.append(_tf_node(src, da, db, budget))
                        elif dn == 1 and dw == LEN:  # signature: OpDef.name (1)
                            library.update(_text(src, na, nb) for nn, nw, na, nb in fields(src, da, db, budget)
                                           if nn == 1 and nw == LEN)  # fmt: skip
                    scopes.append(scope)
    for scope in scopes:
        _judge_scope(reading, src, scope, library, budget, depth)


def _tf_node(src: MemorySource, a: int, b: int, budget: _Budget) -> _TfNode:
    node = _TfNode("", a, [], [], [], [])
    for number, wire, fa, fb in fields(src, a, b, budget):
        if wire != LEN:
            continue
        if number == 1:
            node.name = _text(src, fa, fb)
        elif number == 2:  # every occurrence: the parser keeps the last, a decoy may come first
            node.ops.append(_text(src, fa, fb))
        elif number == 3:
            node.inputs.append(_text(src, fa, fb))
        elif number == 5:  # attr: map<string, AttrValue>; function-valued attrs name what runs
            for en, ew, ea, eb in fields(src, fa, fb, budget):
                if en == 2 and ew == LEN:
                    node.functions.extend(_attr_functions(src, ea, eb, budget, 0))
                    node.strings.extend(_attr_strings(src, ea, eb, budget))
    return node


def _attr_strings(src: MemorySource, a: int, b: int, budget: _Budget) -> list[tuple[int, int]]:
    """The string_val entries of an AttrValue.tensor (8): TensorProto.string_val (8)."""
    found: list[tuple[int, int]] = []
    for number, wire, fa, fb in fields(src, a, b, budget):
        if number == 8 and wire == LEN:
            found.extend((ta, tb) for tn, tw, ta, tb in fields(src, fa, fb, budget) if tn == 8 and tw == LEN)
    return found


def _judge_scope(
    reading: _TfReading, src: MemorySource, scope: list[_TfNode], library: set[str], budget: _Budget, depth: int
) -> None:
    by_name = {node.name: node for node in scope}
    for node in scope:
        for op in node.ops:
            if _OP_NAME.fullmatch(op):
                reading.ops += 1
            _judge_op(reading, node.name, op, node.at)
            if op not in library and op not in TF_INERT_OPS and op not in _JUDGED_OPS:
                message = f"node {node.name!r} is a {op} op, which Bastion does not know to be inert"
                reading.findings.append(("tf.unreviewed-op", Severity.LOW, node.at, message, op))
            if op in TF_CHECKPOINT_OPS and node.inputs and _is_constant(by_name, node.inputs[0]):
                message = f"node {node.name!r} is a {op} op whose checkpoint path is fixed in the graph's constants"
                reading.findings.append(("tf.file-op", Severity.HIGH, node.at, message, op))
        for op, at in node.functions:
            _judge_op(reading, node.name, op, at)
        for sa, sb in node.strings:  # a GraphDef serialised into a string tensor (DatasetFromGraph)
            _judge_nested_graph(reading, src, sa, sb, budget, depth)


_JUDGED_OPS = TF_CODE_OPS | TF_FILE_OPS | TF_EMBEDDED_GRAPH_OPS | TF_REMOTE_OPS


def _judge_nested_graph(reading: _TfReading, src: MemorySource, a: int, b: int, budget: _Budget, depth: int) -> None:
    inner = _TfReading("GraphDef")
    try:
        _tf_graph(inner, src, a, b, budget, depth + 1)
    except ArtifactError as err:
        if isinstance(err, LimitExceeded):
            raise
        return  # not a graph: data
    if inner.plausible:
        reading.findings.extend(inner.findings)


def _is_constant(by_name: dict[str, _TfNode], name: str) -> bool:
    """The input is computed from constants only: no placeholder, argument or variable upstream."""
    stack, seen = [name], set()
    while stack:
        ref = stack.pop().lstrip("^").split(":", 1)[0]
        if ref in seen:
            continue
        seen.add(ref)
        node = by_name.get(ref)
        if node is None or len(seen) > 1000:
            return False  # a function argument: the caller's path
        if not node.ops or node.ops[-1] != "Const":
            if not node.inputs or node.ops[-1] in ("Placeholder", "PlaceholderWithDefault", "_Arg"):
                return False
            stack.extend(node.inputs)
    return True


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
    if op in TF_EMBEDDED_GRAPH_OPS:
        message = f"node {name!r} is a {op} op, which runs a graph carried in a tensor (judged with this one)"
        reading.findings.append(("tf.embedded-graph", Severity.MEDIUM, at, message, op))
    elif op in TF_REMOTE_OPS:
        message = f"node {name!r} is a {op} op, which talks to other processes or hosts"
        reading.findings.append(("tf.remote-op", Severity.HIGH, at, message, op))
    elif op in TF_CODE_OPS:
        message = f"node {name!r} is a {op} op, which runs Python code"
        reading.findings.append(("tf.python-op", Severity.CRITICAL, at, message, op))
    elif op in TF_FILE_OPS:
        message = f"node {name!r} is a {op} op, which reads or writes files"
        reading.findings.append(("tf.file-op", Severity.HIGH, at, message, op))
