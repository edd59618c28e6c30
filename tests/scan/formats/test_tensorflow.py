"""TensorFlow graphs (SavedModel and frozen GraphDef): ops that run Python or touch files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes


def test_saved_model_with_ordinary_and_checkpointing_ops_passes(tmp_path: Path) -> None:
    path = builders.tf_saved_model_benign(tmp_path)
    report = scan_path(path.parent)
    assert_passes(report)
    assert report.files[0].formats == ("tensorflow",)


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        pytest.param(builders.tf_saved_model_pyfunc, "tf.python-op", id="saved-model-pyfunc"),
        pytest.param(builders.tf_saved_model_pyfunc_in_function, "tf.python-op", id="saved-model-eager-pyfunc-in-function-library"),
        pytest.param(builders.tf_saved_model_read_file, "tf.file-op", id="saved-model-read-file"),
        pytest.param(builders.tf_frozen_graph_pyfunc, "tf.python-op", id="frozen-graph-pyfunc"),
    ],
)
def test_graph_with_a_dangerous_op_is_blocked(build: Callable[[Path], Path], rule: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), rule)


def test_pyfunc_saved_model_is_found_by_content_without_a_pb_name(tmp_path: Path) -> None:
    path = builders.tf_saved_model_pyfunc(tmp_path).rename(tmp_path / "graph.bin")
    assert_fails_with(scan_path(path), "tf.python-op")
