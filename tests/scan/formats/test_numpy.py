"""NumPy `.npy` and `.npz`: numeric data is skipped, object arrays are pickles and are emulated."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes
from corpus.payloads import SystemCall


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.npy_numeric, id="npy-numeric"),
        pytest.param(builders.npy_object_benign, id="npy-object-array"),
        pytest.param(builders.npz_plain, id="npz"),
        pytest.param(builders.npz_compressed, id="npz-compressed"),
    ],
)
def test_benign_numpy_file_passes(build: Callable[[Path], Path], tmp_path: Path) -> None:
    assert_passes(scan_path(build(tmp_path)))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(builders.npy_object_malicious, id="npy-object-array"),
        pytest.param(builders.npz_malicious, id="npz-compressed-object-array"),
    ],
)
def test_object_array_with_a_payload_is_blocked(build: Callable[[Path], Path], tmp_path: Path) -> None:
    assert_fails_with(scan_path(build(tmp_path)), "pickle.dangerous-global")


def test_structured_array_with_an_object_field_is_emulated(tmp_path: Path) -> None:
    path = tmp_path / "records.npy"
    records = np.array([(1, SystemCall())], dtype=[("id", "i4"), ("hook", "O")])
    np.save(path, records, allow_pickle=True)
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_structured_numeric_array_passes(tmp_path: Path) -> None:
    path = tmp_path / "records.npy"
    np.save(path, np.zeros(4, dtype=[("id", "i4"), ("score", "f8"), ("tag", "S3")]))
    assert_passes(scan_path(path))


def test_object_array_renamed_to_a_numeric_name_is_still_emulated(tmp_path: Path) -> None:
    path = builders.npy_object_malicious(tmp_path).rename(tmp_path / "embeddings.bin")
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


@pytest.mark.parametrize("start", [b"\x80\x04", b"PK\x03\x04"], ids=["pickle-magic", "zip-magic"])
def test_array_data_that_starts_like_a_file_is_data(start: bytes, tmp_path: Path) -> None:
    # Regression (benchmark seed 7, small_0353.pkl): numpy pickles array bytes as an
    # argument of _frombuffer; bytes given to anything but a loader are not a nested file.
    array = np.frombuffer(start + bytes(62), dtype=np.uint8).copy()
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps({"weights": array}, protocol=5))
    report = scan_path(path)
    assert report.verdict(Severity.HIGH) is Verdict.PASS, [f.rule_id for f in report.findings]
