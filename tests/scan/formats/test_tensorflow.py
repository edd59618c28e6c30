"""TensorFlow graphs (SavedModel and frozen GraphDef): ops that run Python or touch files."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Location, Severity
from bastion.scan.api import scan_path
from bastion.scan.context import ScanContext
from bastion.scan.formats import protobuf_models
from bastion.scan.limits import DEFAULT_LIMITS
from bastion.scan.source import source_from_bytes
from corpus import builders
from corpus.expect import assert_fails_with, assert_incomplete_with, assert_passes, describe


def test_saved_model_with_ordinary_and_checkpointing_ops_passes(tmp_path: Path) -> None:
    path = builders.tf_saved_model_benign(tmp_path)
    report = scan_path(path.parent)
    assert_passes(report)
    assert report.files[0].formats == ("tensorflow",)


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        pytest.param(builders.tf_saved_model_pyfunc, "tf.python-op", id="saved-model-pyfunc"),
        pytest.param(
            builders.tf_saved_model_pyfunc_in_function,
            "tf.python-op",
            id="saved-model-eager-pyfunc-in-function-library",
        ),
        pytest.param(builders.tf_saved_model_read_file, "tf.file-op", id="saved-model-read-file"),
        pytest.param(builders.tf_frozen_graph_pyfunc, "tf.python-op", id="frozen-graph-pyfunc"),
    ],
)
def test_graph_with_a_dangerous_op_is_blocked(build: Callable[[Path], Path], rule: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), rule)


def test_pyfunc_saved_model_is_found_by_content_without_a_pb_name(tmp_path: Path) -> None:
    path = builders.tf_saved_model_pyfunc(tmp_path).rename(tmp_path / "graph.bin")
    assert_fails_with(scan_path(path), "tf.python-op")


# -- reading the bytes as protobuf's parser does ---------------------------------------------
# The wire type is per occurrence: a known field sent with another wire type is an unknown field
# to protobuf, and so are groups; TensorFlow picks the message type from the file name. A scanner
# that switches interpretation on such a field never reaches the init op that runs.

_BENIGN = [builders.tf_node(*n) for n in builders.BENIGN_TF_NODES]
_META_INFO = builders.pb_bytes(1, builders.pb_bytes(4, "serve"))


def _saved_model(folder: Path, meta_graph: bytes, *, before: bytes = b"", after: bytes = b"") -> Path:
    target = folder / "saved_model"
    target.mkdir(exist_ok=True)
    path = target / "saved_model.pb"
    path.write_bytes(builders.pb_int(1, 1) + before + builders.pb_bytes(2, meta_graph) + after)
    return path


def _meta_graph(nodes: list[bytes], functions: list[tuple[str, list[bytes]]] | None = None) -> bytes:
    return _META_INFO + builders.pb_bytes(2, builders.tf_graph(nodes, functions or []))


def _wire(number: int, wire: int) -> bytes:
    return bytes([number << 3 | wire])


# An unknown field of each wire type protobuf skips: LEN on the varint field, varint on the message field, I32, I64, a group.
_UNKNOWN_FIELDS = {
    "schema-version-as-len": builders.pb_bytes(1, b"\x0a\x02hi"),
    "meta-graphs-as-varint": builders.pb_int(2, 7),
    "extra-i32": _wire(9, 5) + b"\x00\x00\x80\x3f",
    "extra-i64": _wire(10, 1) + bytes(8),
    "group": _wire(11, 3) + builders.pb_int(1, 5) + builders.pb_bytes(2, "x") + _wire(11, 4),
}


@pytest.mark.parametrize("extra", sorted(_UNKNOWN_FIELDS))
@pytest.mark.parametrize("where", ["before", "after"])
def test_unknown_field_of_another_wire_type_does_not_hide_the_init_op(extra: str, where: str, tmp_path: Path) -> None:
    hook = builders.tf_node("saved_model_init_op_hook", "WriteFile", "path", "contents")
    meta = _meta_graph([*_BENIGN, hook])
    path = _saved_model(tmp_path, meta, **{where: _UNKNOWN_FIELDS[extra]})
    report = scan_path(path)
    assert_fails_with(report, "tf.file-op")
    assert [f.severity for f in report.findings if f.rule_id == "tf.file-op"] == [Severity.HIGH], describe(
        report.findings
    )


@pytest.mark.parametrize("extra", sorted(_UNKNOWN_FIELDS))
def test_benign_saved_model_with_unknown_fields_passes(extra: str, tmp_path: Path) -> None:
    report = scan_path(_saved_model(tmp_path, _meta_graph(_BENIGN), after=_UNKNOWN_FIELDS[extra]))
    assert_passes(report)
    assert report.files[0].formats == ("tensorflow",)


def test_pyfunc_reached_only_through_the_function_library_of_an_init_op(tmp_path: Path) -> None:
    init = builders.tf_node("saved_model_init_op", "StatefulPartitionedCall")
    functions = [("__inference_init_7", [builders.tf_node("hook", "PyFunc", "x")])]
    report = scan_path(
        _saved_model(tmp_path, _meta_graph([*_BENIGN, init], functions), before=_UNKNOWN_FIELDS["group"])
    )
    assert_fails_with(report, "tf.python-op")
    assert {f.severity for f in report.findings if f.rule_id == "tf.python-op"} == {Severity.CRITICAL}


def test_op_named_only_in_a_function_attribute_is_judged(tmp_path: Path) -> None:
    """`PartitionedCall(f=WriteFile)`: a name missing from the library runs as that primitive op."""
    name_attr_list = builders.pb_bytes(1, "WriteFile")
    attr_value = builders.pb_bytes(10, name_attr_list)
    attr_entry = builders.pb_bytes(1, "f") + builders.pb_bytes(2, attr_value)
    call = builders.tf_node("call", "PartitionedCall", "x") + builders.pb_bytes(5, attr_entry)
    report = scan_path(_saved_model(tmp_path, _meta_graph([*_BENIGN, call])))
    assert_fails_with(report, "tf.file-op")


@pytest.mark.parametrize("order", [("NoOp", "PyFunc"), ("PyFunc", "NoOp")])
def test_every_op_a_node_spells_is_judged(order: tuple[str, str], tmp_path: Path) -> None:
    """protobuf keeps the last `op`; a decoy before or after it must not decide the verdict."""
    node = builders.pb_bytes(1, "hook") + b"".join(builders.pb_bytes(2, op) for op in order)
    assert_fails_with(scan_path(_saved_model(tmp_path, _meta_graph([*_BENIGN, node]))), "tf.python-op")


def test_meta_graph_file_is_read_as_a_meta_graph(tmp_path: Path) -> None:
    """`tf.train.import_meta_graph("model.meta")` parses a MetaGraphDef, not a SavedModel."""
    path = tmp_path / "model.ckpt.meta"
    path.write_bytes(_meta_graph([*_BENIGN, builders.tf_node("hook", "PyFunc", "x")]))
    assert_fails_with(scan_path(path), "tf.python-op")


def test_saved_model_that_protobuf_would_refuse_is_not_analysed(tmp_path: Path) -> None:
    path = _saved_model(tmp_path, _meta_graph(_BENIGN), after=_wire(12, 7) + b"\x00")  # wire type 7 does not exist
    assert_incomplete_with(scan_path(path), "scan.incomplete")


# -- differential: the wire walker against protobuf's own parser (upb) ----------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _wire_soup(rnd: random.Random, depth: int = 0, schema_len: frozenset[int] = frozenset()) -> bytes:
    """Fields of every wire type (valid or not), groups, nesting, and the odd truncation.

    `schema_len` are the field numbers the schema declares as messages at this level: those
    must parse as their message for protobuf too, so the soup leaves them out.
    """
    out = b""
    for _ in range(rnd.randint(0, 4)):
        number = rnd.choice([0, 1, 2, 3, 15, 16, (1 << 29) - 1, 1 << 29, rnd.randint(1, 100)])
        wire = rnd.randint(0, 7)
        if wire == 2 and number in schema_len:
            number += 100
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(rnd.choice([0, 1, 300, (1 << 64) - 1]))
        elif wire in (1, 5):
            out += bytes(rnd.choice([8, 4, 3]))
        elif wire == 2:
            payload = _wire_soup(rnd, depth + 1) if depth < 3 else b"x"
            out += _varint(len(payload) + rnd.choice([0, 0, 0, 1])) + payload
        elif wire == 3:
            out += _wire_soup(rnd, depth + 1) if depth < 3 else b""
            if rnd.random() < 0.8:
                out += _varint((number if rnd.random() < 0.9 else number + 1) << 3 | 4)
    if rnd.random() < 0.1:
        out += bytes([rnd.randint(0, 255)])
    return out


@settings(max_examples=400, deadline=None)
@given(rnd=st.randoms(use_true_random=False))
def test_wire_walker_accepts_whatever_protobuf_accepts(rnd: random.Random) -> None:
    """A message protobuf parses must parse for Bastion too, or a file could hide behind "malformed"."""
    empty_pb2 = pytest.importorskip("google.protobuf.empty_pb2")
    from google.protobuf.message import DecodeError  # noqa: PLC0415

    data = _wire_soup(rnd)
    try:
        empty_pb2.Empty.FromString(data)
    except DecodeError:
        return
    src = source_from_bytes(data, "soup")
    assert list(protobuf_models.fields(src, 0, len(data), protobuf_models._Budget())) is not None


@settings(max_examples=200, deadline=None)
@given(rnd=st.randoms(use_true_random=False), where=st.sampled_from(["start", "end"]))
def test_saved_model_with_unknown_fields_is_judged_whenever_protobuf_reads_it(rnd: random.Random, where: str) -> None:
    empty_pb2 = pytest.importorskip("google.protobuf.empty_pb2")
    from google.protobuf.message import DecodeError  # noqa: PLC0415

    soup = _wire_soup(rnd, schema_len=frozenset({2}))  # SavedModel.meta_graphs is the one message field
    body = builders.pb_bytes(2, _meta_graph([*_BENIGN, builders.tf_node("hook", "PyFunc", "x")]))
    data = soup + body if where == "start" else body + soup
    try:
        empty_pb2.Empty.FromString(data)
    except DecodeError:
        return
    ctx = ScanContext(DEFAULT_LIMITS, lambda *_args: None)
    assert protobuf_models.scan_protobuf_model(ctx, source_from_bytes(data, "saved_model.pb"), Location("x"), "tf")
    assert "tf.python-op" in {f.rule_id for f in ctx.findings}


# -- the text format: saved_model.pbtxt is loaded when saved_model.pb is absent --------------------

_PBTXT = """saved_model_schema_version: 1
meta_graphs {
  meta_info_def { tags: "serve" }
  graph_def {
    node { name: "x" op: "Placeholder" }
    node { name: "init" op: "StatefulPartitionedCall" attr { key: "f" value { func { name: %s } } } }
    node { name: "hook"  # a comment between the key and its value
           op: %s input: "x" }
  }
}
"""


@pytest.mark.parametrize(
    ("op", "func", "rule"),
    [
        pytest.param('"PyFunc"', '"__inference_init_1"', "tf.python-op", id="plain"),
        pytest.param("'Py' \"Func\"", '"__inference_init_1"', "tf.python-op", id="adjacent-literals"),
        pytest.param('"Py\\x46unc"', '"__inference_init_1"', "tf.python-op", id="hex-escape"),
        pytest.param('"Py\\106unc"', '"__inference_init_1"', "tf.python-op", id="octal-escape"),
        pytest.param('"Identity"', '"WriteFile"', "tf.file-op", id="function-attribute"),
        pytest.param('"ReaderReadV2"', '"__inference_init_1"', "tf.file-op", id="queue-reader"),
        pytest.param('"RemoteCall"', '"__inference_init_1"', "tf.remote-op", id="remote-call"),
    ],
)
def test_text_format_saved_model_is_judged(op: str, func: str, rule: str, tmp_path: Path) -> None:
    (tmp_path / "saved_model").mkdir()
    path = tmp_path / "saved_model" / "saved_model.pbtxt"
    path.write_text(_PBTXT % (func, op))
    assert_fails_with(scan_path(path), rule)


def test_benign_text_format_saved_model_passes(tmp_path: Path) -> None:
    path = tmp_path / "saved_model.pbtxt"
    path.write_text(_PBTXT % ('"__inference_init_1"', '"Identity"'))
    report = scan_path(path)
    assert_passes(report)
    assert "tensorflow" in report.files[0].formats


# -- the op judgement: judged ops, constants that fix a checkpoint path, graphs in tensors ---------


def _string_const(name: str, value: bytes) -> bytes:
    tensor = builders.pb_int(1, 7) + builders.pb_bytes(8, value)  # TensorProto{dtype=DT_STRING, string_val}
    attr = builders.pb_bytes(1, "value") + builders.pb_bytes(2, builders.pb_bytes(8, tensor))
    return builders.tf_node(name, "Const") + builders.pb_bytes(5, attr)


def test_op_outside_the_inert_list_is_reported_once_without_blocking(tmp_path: Path) -> None:
    nodes = [*_BENIGN, builders.tf_node("a", "SomeNewOp", "x"), builders.tf_node("b", "SomeNewOp", "x")]
    report = scan_path(_saved_model(tmp_path, _meta_graph(nodes)))
    assert_passes(report)
    assert [f.evidence for f in report.findings if f.rule_id == "tf.unreviewed-op"] == ["SomeNewOp"]


def test_benign_saver_fed_by_a_placeholder_is_clean(tmp_path: Path) -> None:
    report = scan_path(_saved_model(tmp_path, _meta_graph(_BENIGN)))
    assert_passes(report)
    assert not report.findings, describe(report.findings)


@pytest.mark.parametrize("op", ["SaveV2", "RestoreV2", "MergeV2Checkpoints"])
def test_checkpoint_op_with_a_path_built_from_constants_is_blocked(op: str, tmp_path: Path) -> None:
    nodes = [
        *_BENIGN,
        _string_const("dir", b"/tmp"),
        _string_const("leaf", b"x"),
        builders.tf_node("joined", "StringJoin", "dir", "leaf:0"),
        builders.tf_node("evil", op, "joined"),
    ]
    assert_fails_with(scan_path(_saved_model(tmp_path, _meta_graph(nodes))), "tf.file-op")


def test_graph_serialised_in_any_string_tensor_is_judged(tmp_path: Path) -> None:
    inner = builders.tf_graph([builders.tf_node("p", "Const"), builders.tf_node("run", "PyFunc", "p")])
    outer = builders.tf_graph([_string_const("carrier", inner)])
    twice = [*_BENIGN, _string_const("outer", outer)]
    assert_fails_with(scan_path(_saved_model(tmp_path, _meta_graph(twice))), "tf.python-op")


def test_remote_op_is_blocked(tmp_path: Path) -> None:
    nodes = [*_BENIGN, builders.tf_node("call", "RemoteCall", "x")]
    assert_fails_with(scan_path(_saved_model(tmp_path, _meta_graph(nodes))), "tf.remote-op")
