"""Hostile shapes end in "could not analyse", quickly: bombs, deep nesting, truncation.

Acceptance: scanning a zip bomb, a 10,000-deep nesting and a truncated file each ends in a
clear "could not analyse" result within seconds (on a quiet machine). No test bounds elapsed
time: a generous alarm only turns a scan that never ends into a failure; what the limits bound
is checked by their findings.
"""

from __future__ import annotations

import pickle
import signal
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.findings import Severity, Verdict
from bastion.policy.schema import ScanPolicy
from bastion.scan.api import scan_bytes, scan_path
from bastion.scan.limits import MiB, ScanLimits
from bastion.scan.report import ScanReport
from corpus import builders, pickles, zips
from corpus.expect import assert_fails_with, assert_incomplete_with, assert_passes, describe

HANG_GUARD_SECONDS = 600  # a hang guard, not a speed bound: each scan takes well under a second when quiet

# A pickle whose BINBYTES8 opcode declares 1 GiB of bytes: a loader would allocate all of it.
BYTES_BOMB_PREFIX = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 30)


class _Hung(BaseException):
    """Raised by the alarm: not an Exception, so the scanner's last-resort handler cannot swallow it."""


def _guarded(scan: Callable[[], ScanReport]) -> ScanReport:
    def expire(_signum: int, _frame: object) -> None:
        raise _Hung(f"the scan was still running after {HANG_GUARD_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_GUARD_SECONDS)
    try:
        return scan()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _timed_scan(path: Path, policy: ScanPolicy | None = None) -> ScanReport:
    return _guarded(lambda: scan_path(path, policy))


# -- decompression bombs ------------------------------------------------------------------------


def test_zip_expanding_past_the_expanded_bytes_limit_is_not_analysed(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    path.write_bytes(zips.raw_zip([zips.deflated_zeros("model.pkl", 200)]))
    policy = ScanPolicy(limits=ScanLimits(max_expanded_bytes=50 * MiB))
    assert_incomplete_with(_timed_scan(path, policy), "scan.limit-exceeded")


def test_zip_built_by_zipfile_past_the_expanded_bytes_limit_is_not_analysed(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("weights.pkl", "w") as member,
    ):
        chunk = bytes(MiB)
        for _ in range(64):
            member.write(chunk)
    policy = ScanPolicy(limits=ScanLimits(max_expanded_bytes=16 * MiB))
    assert_incomplete_with(_timed_scan(path, policy), "scan.limit-exceeded")


def test_zip_member_expanding_past_its_declared_size_is_not_analysed(tmp_path: Path) -> None:
    path = tmp_path / "liar.zip"
    path.write_bytes(zips.raw_zip([zips.deflated_zeros("model.pkl", 200, declared_size=1000)]))
    assert_incomplete_with(_timed_scan(path), "scan.limit-exceeded")


def test_zip_member_over_the_compression_ratio_is_not_analysed(tmp_path: Path) -> None:
    # The member is a pickle that a loader would read to the end; the ratio limit stops it first.
    member = zips.RawMember(
        "model.pkl",
        builders.gzip_of_zeros(256, prefix=BYTES_BOMB_PREFIX)[10:-8],  # the raw deflate stream inside the gzip
        len(BYTES_BOMB_PREFIX) + (256 << 20),
        0,
        zips.DEFLATED,
    )
    path = tmp_path / "ratio.zip"
    path.write_bytes(zips.raw_zip([member]))
    assert_incomplete_with(_timed_scan(path), "scan.limit-exceeded")


def test_zip_whose_members_share_their_data_is_not_analysed(tmp_path: Path) -> None:
    path = tmp_path / "overlap.zip"
    path.write_bytes(zips.overlapping_zip(zips.deflated_zeros("layer", 1), aliases=100))
    assert_incomplete_with(_timed_scan(path), "scan.limit-exceeded")


def test_gzip_of_a_gigabyte_of_zeros_is_not_passed(tmp_path: Path) -> None:
    path = tmp_path / "zeros.gz"
    path.write_bytes(builders.gzip_of_zeros(1024))
    assert_incomplete_with(_timed_scan(path), "scan.limit-exceeded")


def test_gzip_of_a_gigabyte_pickle_is_stopped_by_the_ratio_limit(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl.gz"
    path.write_bytes(builders.gzip_of_zeros(1024, prefix=BYTES_BOMB_PREFIX, suffix=b"."))
    assert_incomplete_with(_timed_scan(path), "scan.limit-exceeded")


def test_expanded_bytes_budget_covers_the_whole_file_not_each_member(tmp_path: Path) -> None:
    members = [zips.deflated_zeros(f"part{i}.pkl", 10) for i in range(8)]  # 8 x 10 MiB, each under the limit
    path = tmp_path / "parts.zip"
    path.write_bytes(zips.raw_zip(members))
    policy = ScanPolicy(limits=ScanLimits(max_expanded_bytes=32 * MiB, max_compression_ratio=100_000))
    assert_incomplete_with(_timed_scan(path, policy), "scan.limit-exceeded")


# -- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [pytest.param(pickles.GLOBAL_REDUCE_OS_SYSTEM, id="malicious"), pytest.param(pickle.dumps([1, 2]), id="benign")],
)
def test_ten_thousand_gzip_layers_end_in_not_analysed(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "deep.pkl.gz"
    path.write_bytes(builders.gzip_layers(payload, 10_000))
    report = _timed_scan(path)
    assert_incomplete_with(report, "scan.limit-exceeded")


def test_thousand_nested_zips_end_in_not_analysed(tmp_path: Path) -> None:
    data = pickles.GLOBAL_REDUCE_OS_SYSTEM
    for level in range(1_000):
        data = zips.raw_zip([zips.stored(f"level{level}.zip", data)])
    path = tmp_path / "deep.zip"
    path.write_bytes(data)
    assert_incomplete_with(_timed_scan(path), "scan.limit-exceeded")


def test_nesting_within_the_limit_is_analysed(tmp_path: Path) -> None:
    data = pickles.GLOBAL_REDUCE_OS_SYSTEM
    for level in range(3):
        data = zips.raw_zip([zips.stored(f"level{level}.zip" if level else "model.pkl", data)])
    path = tmp_path / "shallow.zip"
    path.write_bytes(data)
    assert_fails_with(_timed_scan(path), "pickle.dangerous-global")


def test_policy_depth_limit_is_applied(tmp_path: Path) -> None:
    data = pickle.dumps({"w": 1})
    for level in range(4):
        data = zips.raw_zip([zips.stored(f"level{level}", data)])
    path = tmp_path / "nested.zip"
    path.write_bytes(data)
    assert_passes(_timed_scan(path))
    assert_incomplete_with(_timed_scan(path, ScanPolicy(limits=ScanLimits(max_depth=2))), "scan.limit-exceeded")


def test_pickle_of_ten_thousand_nested_lists_is_analysed(tmp_path: Path) -> None:
    # EMPTY_LIST x 10,000 then APPEND x 9,999: legal and loadable; must not exhaust recursion.
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x02" + b"]" * 10_000 + b"a" * 9_999 + b".")
    report = _timed_scan(path)
    assert_passes(report)


def test_member_count_limit_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    path.write_bytes(zips.raw_zip([zips.stored(f"m{i}.txt", b"x") for i in range(50)]))
    assert_passes(_timed_scan(path))
    assert_incomplete_with(_timed_scan(path, ScanPolicy(limits=ScanLimits(max_members=10))), "scan.limit-exceeded")


def test_pickle_opcode_limit_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "long.pkl"
    path.write_bytes(pickle.dumps(list(range(5_000)), protocol=2))
    assert_passes(_timed_scan(path))
    report = _timed_scan(path, ScanPolicy(limits=ScanLimits(max_pickle_opcodes=100)))
    assert_incomplete_with(report, "scan.limit-exceeded")


# -- truncation -------------------------------------------------------------------------------


def _cut(build: Callable[[Path], Path], cut: int | None = None) -> Callable[[Path], tuple[bytes, str]]:
    """Build a file, then drop its last `cut` bytes (half the file when None)."""

    def make(folder: Path) -> tuple[bytes, str]:
        path = build(folder)
        data = path.read_bytes()
        keep = len(data) // 2 if cut is None else len(data) - cut
        return data[:keep], path.name

    return make


def _bytes(data: bytes, name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


BENIGN_PICKLE = pickle.dumps({"weights": [0.5] * 40, "name": "tiny"}, protocol=4)
BENIGN_PICKLE0 = pickle.dumps({"weights": [0.5] * 40, "name": "tiny"}, protocol=0)

TRUNCATED = [
    pytest.param(_cut(_bytes(BENIGN_PICKLE, "model.pkl"), 1), id="pickle-last-byte"),
    pytest.param(_cut(_bytes(BENIGN_PICKLE, "model.pkl")), id="pickle-half"),
    pytest.param(_cut(_bytes(BENIGN_PICKLE0, "model.pkl"), 1), id="pickle-protocol-0-last-byte"),
    pytest.param(_cut(builders.torch_state_dict, 1), id="torch-zip-last-byte"),
    pytest.param(_cut(builders.torch_state_dict, 100), id="torch-zip-last-100-bytes"),
    pytest.param(_cut(builders.torch_state_dict), id="torch-zip-half"),
    pytest.param(
        _cut(builders.torch_legacy, 10),
        id="torch-legacy-last-10-bytes",
    ),
    pytest.param(_cut(builders.torch_legacy), id="torch-legacy-half"),
    pytest.param(_cut(builders.safetensors_file, 1), id="safetensors-last-byte"),
    pytest.param(_cut(builders.safetensors_file), id="safetensors-half"),
    pytest.param(
        _cut(builders.npy_numeric, 1),
        id="npy-last-byte",
    ),
    pytest.param(_cut(builders.npy_object_benign, 1), id="npy-object-last-byte"),
    pytest.param(
        _cut(lambda f: builders.joblib_dump(f, {"w": [1.0] * 50}, "m.joblib", "gzip"), 1), id="joblib-gzip-last-byte"
    ),
    pytest.param(_cut(builders.onnx_matmul, 1), id="onnx-last-byte"),
    pytest.param(_cut(builders.tf_saved_model_benign, 1), id="saved-model-last-byte"),
    pytest.param(
        _cut(lambda f: builders.gguf_file(f, builders.BENIGN_CHAT_TEMPLATE, "m.gguf"), 1),
        id="gguf-last-byte",
    ),
    pytest.param(_cut(builders.keras3_benign), id="keras3-half"),
    pytest.param(
        _cut(builders.keras_h5_benign, 100),
        id="h5-last-100-bytes",
    ),
]


@pytest.mark.parametrize("make", TRUNCATED)
def test_truncated_benign_file_is_not_analysed_rather_than_passed(
    make: Callable[[Path], tuple[bytes, str]], tmp_path: Path
) -> None:
    data, name = make(tmp_path)
    report = _guarded(lambda: scan_bytes(data, name))
    verdict = report.verdict(Severity.HIGH)
    assert verdict is not Verdict.PASS, describe(report.findings)
    assert any(f.is_incomplete for f in report.findings), describe(report.findings)


def test_truncated_pickle_that_already_named_os_system_is_blocked() -> None:
    data = pickles.GLOBAL_REDUCE_OS_SYSTEM[:-1]  # no STOP
    report = scan_bytes(data, "model.pkl")
    assert_fails_with(report, "pickle.dangerous-global")
    assert any(f.is_incomplete for f in report.findings), describe(report.findings)


def test_truncated_malicious_torch_zip_is_not_passed(tmp_path: Path) -> None:
    data = builders.torch_malicious(tmp_path).read_bytes()
    report = scan_bytes(data[: len(data) // 2], "model.pt")
    assert report.verdict(Severity.HIGH) is not Verdict.PASS, describe(report.findings)
