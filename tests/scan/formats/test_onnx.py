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
        pytest.param(lambda folder: builders.onnx_external_data(folder, "weights.bin", "model.onnx"), id="external-data-beside-model"),
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
