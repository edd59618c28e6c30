"""ONNX: standard and contrib operators pass; custom operators and escaping external data do not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.findings import Severity
from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes, describe

pytest.importorskip("onnx")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.onnx_matmul, id="matmul"),
        pytest.param(builders.onnx_microsoft_contrib, id="com-microsoft-contrib-op"),
        pytest.param(
            lambda folder: builders.onnx_external_data(folder, "weights.bin", "model.onnx"),
            id="external-data-beside-model",
        ),
        pytest.param(builders.onnx_benign_external_data, id="folder-saved-with-external-data"),
    ],
)
def test_benign_onnx_model_passes(build: Callable[[Path], Path], tmp_path: Path) -> None:
    report = scan_path(build(tmp_path))
    assert_passes(report)
    assert any("onnx" in f.formats for f in report.files)


def test_custom_domain_operator_is_blocked(tmp_path: Path) -> None:
    report = scan_path(builders.onnx_custom_domain(tmp_path, "com.example.custom", "RunShell"))
    assert_fails_with(report, "onnx.custom-operator")
    [finding] = [f for f in report.findings if f.rule_id == "onnx.custom-operator"]
    assert finding.severity is Severity.HIGH
    assert "com.example.custom" in finding.evidence and "RunShell" in finding.evidence


def test_python_operator_from_onnxruntime_extensions_is_critical(tmp_path: Path) -> None:
    report = scan_path(builders.onnx_custom_domain(tmp_path, "ai.onnx.contrib", "PyOp"))
    assert_fails_with(report, "onnx.custom-operator")
    assert max(f.severity for f in report.findings) is Severity.CRITICAL, describe(report.findings)


def test_custom_operator_inside_a_subgraph_is_blocked(tmp_path: Path) -> None:
    assert_fails_with(scan_path(builders.onnx_custom_in_subgraph(tmp_path)), "onnx.custom-operator")


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "weights/../../../secret.bin"])
def test_external_data_outside_the_model_folder_is_blocked(location: str, tmp_path: Path) -> None:
    report = scan_path(builders.onnx_external_data(tmp_path, location, "model.onnx"))
    assert_fails_with(report, "onnx.external-data-traversal")
    assert any(f.evidence == location for f in report.findings), describe(report.findings)


def test_custom_operator_is_found_by_content_without_an_onnx_name(tmp_path: Path) -> None:
    path = builders.onnx_custom_domain(tmp_path).rename(tmp_path / "model.bin")
    assert_fails_with(scan_path(path), "onnx.custom-operator")


# -- every graph the runtime can run or read -----------------------------------------------------


def _model_with(tmp_path: Path, name: str, mutate: Callable[[object], None]) -> Path:
    import onnx  # noqa: PLC0415

    model = onnx.load(str(builders.onnx_matmul(tmp_path)))
    mutate(model)
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def test_custom_operator_in_a_training_algorithm_graph_is_blocked(tmp_path: Path) -> None:
    from onnx import helper  # noqa: PLC0415

    def add_training_info(model: object) -> None:
        algorithm = helper.make_graph([helper.make_node("Exec", ["X"], ["Y"], domain="org.evil")], "algo", [], [])
        model.training_info.add().algorithm.CopyFrom(algorithm)  # type: ignore[attr-defined]

    report = scan_path(_model_with(tmp_path, "training.onnx", add_training_info))
    assert_fails_with(report, "onnx.custom-operator")


def test_custom_operator_in_a_local_function_subgraph_is_blocked(tmp_path: Path) -> None:
    from onnx import TensorProto, helper  # noqa: PLC0415

    def add_function(model: object) -> None:
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])
        branch = helper.make_graph([helper.make_node("Exec", ["X"], ["Y"], domain="org.evil")], "b", [], [out])
        node = helper.make_node("If", ["c"], ["Y"], then_branch=branch, else_branch=branch)
        function = helper.make_function("local", "Wrap", ["c"], ["Y"], [node], [helper.make_opsetid("", 17)])
        model.functions.append(function)  # type: ignore[attr-defined]

    assert_fails_with(scan_path(_model_with(tmp_path, "function.onnx", add_function)), "onnx.custom-operator")


def test_sparse_initializer_read_from_outside_the_model_folder_is_blocked(tmp_path: Path) -> None:
    from onnx import TensorProto, external_data_helper, helper  # noqa: PLC0415

    def add_sparse(model: object) -> None:
        values = helper.make_tensor("S_values", TensorProto.FLOAT, [1], b"\x00\x00\x80\x3f", raw=True)
        external_data_helper.set_external_data(values, location="../../etc/passwd", offset=0, length=4)
        values.ClearField("raw_data")
        indices = helper.make_tensor("S_indices", TensorProto.INT64, [1], [0])
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))  # type: ignore[attr-defined]

    report = scan_path(_model_with(tmp_path, "sparse.onnx", add_sparse))
    assert_fails_with(report, "onnx.external-data-traversal")


def test_onnx_model_named_like_a_tensorflow_graph_is_read_as_onnx(tmp_path: Path) -> None:
    """onnx.load does not look at the name: a custom operator in `model.pb` still runs."""
    path = builders.onnx_custom_domain(tmp_path, "com.example.custom", "RunShell").rename(tmp_path / "model.pb")
    assert_fails_with(scan_path(path), "onnx.custom-operator")
    assert_passes(scan_path(builders.onnx_matmul(tmp_path).rename(tmp_path / "frozen.pb")))


def test_external_data_linked_within_the_model_folder_passes(tmp_path: Path) -> None:
    """A link is judged by where it leads: one that stays inside the folder is an ordinary file."""
    model_folder = builders.onnx_benign_external_data(tmp_path)
    shards = model_folder / "shards"
    shards.mkdir()
    (model_folder / "weights.bin").rename(shards / "weights.bin")
    (model_folder / "weights.bin").symlink_to(shards / "weights.bin")
    assert_passes(scan_path(model_folder))


def test_external_data_linked_out_of_the_model_folder_is_blocked(tmp_path: Path) -> None:
    model_folder = builders.onnx_benign_external_data(tmp_path)
    outside = tmp_path / "elsewhere.bin"
    (model_folder / "weights.bin").rename(outside)
    (model_folder / "weights.bin").symlink_to(outside)
    assert_fails_with(scan_path(model_folder / "model.onnx"), "onnx.external-data-traversal")
