"""Keras: HDF5 `.h5` configs and Keras 3 `.keras` zips; Lambda layers and code-naming configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes

pytest.importorskip("h5py")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.keras_h5_benign, id="h5-dense"),
        pytest.param(builders.keras3_benign, id="keras3-dense"),
    ],
)
def test_benign_keras_model_passes(build: Callable[[Path], Path], tmp_path: Path) -> None:
    report = scan_path(build(tmp_path))
    assert_passes(report)
    assert "keras" in report.files[0].formats


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        pytest.param(builders.keras_h5_lambda, "keras.lambda-layer", id="h5-lambda"),
        pytest.param(builders.keras_h5_lambda_escaped, "keras.lambda-layer", id="h5-lambda-spelt-in-json-escapes"),
        pytest.param(builders.keras3_lambda, "keras.lambda-layer", id="keras3-lambda"),
        pytest.param(builders.keras3_builtins_eval, "keras.unsafe-module", id="keras3-builtins-eval-function"),
    ],
)
def test_keras_model_that_carries_code_is_blocked(build: Callable[[Path], Path], rule: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), rule)


def test_keras3_lambda_is_located_in_config_json(tmp_path: Path) -> None:
    report = scan_path(builders.keras3_lambda(tmp_path))
    locations = {f.location.member for f in report.findings if f.rule_id == "keras.lambda-layer"}
    assert locations == {"config.json"}


@pytest.mark.parametrize("name", ["weights.bin", "model.zip"])
def test_keras_lambda_is_found_by_content_whatever_the_name(name: str, tmp_path: Path) -> None:
    h5 = builders.keras_h5_lambda(tmp_path).rename(tmp_path / f"h5-{name}")
    archive = builders.keras3_lambda(tmp_path).rename(tmp_path / f"keras-{name}")
    assert_fails_with(scan_path(h5), "keras.lambda-layer")
    assert_fails_with(scan_path(archive), "keras.lambda-layer")
