"""Plain pickles: what the pickle module writes, and what attackers assemble by hand."""

from __future__ import annotations

import collections
import datetime
import pickle
from pathlib import Path

import numpy as np
import pytest

from bastion.findings import Severity, Verdict
from bastion.policy.schema import ScanPolicy
from bastion.scan.api import scan_bytes, scan_path
from corpus import pickles
from corpus.expect import assert_fails_with, assert_passes, describe, rules
from corpus.payloads import EvalCall, SystemCall

BLOCKED = [c for c in pickles.CASES if not c.passes]
BELOW_THRESHOLD = [c for c in pickles.CASES if c.passes]
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def _benign_objects() -> dict[str, object]:
    return {
        "nested-containers": {"layers": [1, 2, 3], "names": ("a", "b"), "flags": {True, False}, "none": None},
        "ordered-dict": collections.OrderedDict([("weight", [0.5, 0.25]), ("bias", [0.0])]),
        "datetime": {"saved": datetime.datetime(2024, 1, 2, 3, 4, 5), "delta": datetime.timedelta(days=1)},
        "numpy-arrays": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "scale": np.float64(0.5)},
        "bytes-and-text": {"blob": b"\x00\x01" * 10, "text": "é" * 5, "big": 2**100},
    }


@pytest.mark.parametrize("case", BLOCKED, ids=lambda c: c.name)
def test_hand_assembled_malicious_pickle_is_blocked(case: pickles.PickleCase, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(case.data)
    assert_fails_with(scan_path(path), *case.rules)


@pytest.mark.parametrize("case", BELOW_THRESHOLD, ids=lambda c: c.name)
def test_suspicious_pickle_below_the_threshold_passes_but_is_reported(case: pickles.PickleCase, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(case.data)
    report = scan_path(path)
    assert_passes(report)
    assert rules(report) & case.rules, describe(report.findings)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickled_os_system_is_blocked_in_every_protocol(protocol: int, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(SystemCall(), protocol=protocol))
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert any("system" in f.evidence for f in report.findings if f.rule_id == "pickle.dangerous-global")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickled_eval_is_blocked_in_every_protocol(protocol: int, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"config": EvalCall()}, protocol=protocol))
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(_benign_objects()))
def test_benign_pickle_passes_in_every_protocol(name: str, protocol: int, tmp_path: Path) -> None:
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(_benign_objects()[name], protocol=protocol))
    report = scan_path(path)
    assert_passes(report)
    assert "pickle" in report.files[0].formats


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("name", ["weights.safetensors", "notes.txt", "README.md", "model.onnx", "data"])
def test_malicious_pickle_is_found_by_content_whatever_its_name(name: str, protocol: int, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(SystemCall(), protocol=protocol))
    assert_fails_with(scan_path(path), "pickle.dangerous-global")


def test_second_pickle_in_a_file_is_scanned_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickles.TWO_STREAMS_SECOND_MALICIOUS)
    report = scan_path(path)
    assert_fails_with(report, "pickle.dangerous-global")
    assert "pickle.multiple-streams" in rules(report)
    first_length = len(pickle.dumps([1, 2, 3], protocol=2))
    dangerous = [f for f in report.findings if f.rule_id == "pickle.dangerous-global"]
    assert all(f.location.offset is not None and f.location.offset >= first_length for f in dangerous), describe(report.findings)


def test_dangerous_import_is_located_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickles.GLOBAL_REDUCE_OS_SYSTEM)
    [finding] = [f for f in scan_path(path).findings if f.rule_id == "pickle.dangerous-global"]
    assert finding.severity is Severity.CRITICAL
    assert finding.location.file == str(path)
    assert finding.location.offset is not None and 0 <= finding.location.offset < len(pickles.GLOBAL_REDUCE_OS_SYSTEM)
    assert finding.evidence.endswith("system")
    assert "true" not in finding.evidence  # a name, never the payload


def test_unknown_class_blocks_when_the_policy_blocks_at_medium() -> None:
    report = scan_bytes(pickles.NEWOBJ_UNKNOWN_CLASS, "model.pkl")
    assert report.verdict(Severity.HIGH) is Verdict.PASS
    assert report.verdict(Severity.MEDIUM) is Verdict.FAIL
    strict = scan_bytes(pickles.NEWOBJ_UNKNOWN_CLASS, "model.pkl", ScanPolicy(block_at=Severity.MEDIUM))
    assert strict.verdict(Severity.MEDIUM) is Verdict.FAIL


def test_allow_listed_callable_no_longer_blocks() -> None:
    assert scan_bytes(pickles.REDUCE_UNKNOWN_FUNCTION, "model.pkl").verdict(Severity.HIGH) is Verdict.FAIL
    allowed = scan_bytes(pickles.REDUCE_UNKNOWN_FUNCTION, "model.pkl", ScanPolicy(allow_globals=("mymod.helper",)))
    assert_passes(allowed)


def test_allow_list_cannot_unblock_a_dangerous_global() -> None:
    policy = ScanPolicy(allow_globals=("os.system", "posix.system"))
    report = scan_bytes(pickle.dumps(SystemCall(), protocol=4), "model.pkl", policy)
    assert_fails_with(report, "pickle.dangerous-global")
