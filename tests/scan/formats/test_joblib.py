"""scikit-learn estimators saved with joblib and pickle, and joblib's compressed dumps."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes

pytest.importorskip("sklearn")

MODEL_NAMES = list(builders.SKLEARN_MODEL_NAMES)


@pytest.fixture(scope="session")
def sklearn_models() -> dict[str, object]:
    models = builders.sklearn_models()
    assert set(models) == set(builders.SKLEARN_MODEL_NAMES)
    return models


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_estimator_saved_with_joblib_passes(name: str, sklearn_models: dict[str, object], tmp_path: Path) -> None:
    assert_passes(scan_path(builders.joblib_dump(tmp_path, sklearn_models[name], f"{name}.joblib")))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_estimator_saved_with_pickle_passes(name: str, sklearn_models: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(pickle.dumps(sklearn_models[name], protocol=pickle.HIGHEST_PROTOCOL))
    assert_passes(scan_path(path))


@pytest.mark.parametrize("compress", builders.JOBLIB_COMPRESSIONS)
def test_compressed_joblib_dump_of_a_forest_passes(compress: str, sklearn_models: dict[str, object], tmp_path: Path) -> None:
    path = builders.joblib_dump(tmp_path, sklearn_models["random-forest"], f"forest-{compress}.joblib", compress)
    report = scan_path(path)
    assert_passes(report)
    assert "pickle" in report.files[0].formats


def test_plain_joblib_dump_with_a_payload_is_blocked(tmp_path: Path) -> None:
    assert_fails_with(scan_path(builders.joblib_malicious(tmp_path)), "pickle.dangerous-global")


@pytest.mark.parametrize("compress", builders.JOBLIB_COMPRESSIONS)
def test_compressed_joblib_dump_with_a_payload_is_blocked(compress: str, tmp_path: Path) -> None:
    assert_fails_with(scan_path(builders.joblib_malicious(tmp_path, compress)), "pickle.dangerous-global")


def test_payload_hidden_after_joblib_inline_array_is_blocked(tmp_path: Path) -> None:
    # joblib writes array bytes inside the pickle stream; the payload comes after them.
    import numpy as np  # noqa: PLC0415

    from corpus.payloads import SystemCall  # noqa: PLC0415

    path = builders.joblib_dump(tmp_path, [np.arange(1000, dtype=np.float64), SystemCall()], "after-array.joblib")
    assert_fails_with(scan_path(path), "pickle.dangerous-global")
