"""How many processes a folder scan uses: one for quick jobs, the idle cores for long ones.

Starting workers costs tens of milliseconds and every result crosses a pipe, so a pool only
pays once the files left would take a second or more at the pace measured in this process.
The decision is a pure function of the job and the measured pace; the switch from this
process to a pool mid-job must keep every file, once, in path order.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from bastion.findings import Severity, Verdict
from bastion.scan import api
from bastion.scan.api import pool_pays, scan_paths
from corpus.payloads import SystemCall


@pytest.mark.parametrize(
    ("total", "done", "elapsed"),
    [
        (500, 100, 0.02),  # too early to know the pace
        (500, 400, 0.16),  # 100 files left at 0.4 ms each: 40 ms
        (10, 7, 0.9),  # three files left: no pool is worth its start
        (1, 1, 5.0),
    ],
)
def test_quick_jobs_stay_in_this_process(total: int, done: int, elapsed: float) -> None:
    assert not pool_pays(total, done, elapsed)


@pytest.mark.parametrize(
    ("total", "done", "elapsed"),
    [
        (10_000, 100, 0.1),  # 9,900 files at 1 ms each
        (20, 2, 0.5),  # 18 big files at 250 ms each
    ],
)
def test_long_jobs_start_workers(total: int, done: int, elapsed: float) -> None:
    assert pool_pays(total, done, elapsed)


def _folder(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"f{i:03d}.pkl"
        payload = SystemCall() if i % 7 == 3 else {"i": i}
        path.write_bytes(pickle.dumps(payload, protocol=i % 6))
        paths.append(path)
    return paths


def test_switching_to_workers_mid_job_keeps_every_file_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _folder(tmp_path, 40)
    serial = scan_paths([tmp_path], workers=1)
    monkeypatch.setattr(api, "_PACE_AFTER_S", 0.0)
    monkeypatch.setattr(api, "_POOL_PAYS_AFTER_S", 0.0)
    monkeypatch.setattr(api, "_idle_cores", lambda: 2)
    seen: list[tuple[int, int]] = []
    switched = scan_paths([tmp_path], progress=lambda done, total, _path: seen.append((done, total)))
    assert [f.path for f in switched.files] == [str(p) for p in paths]
    assert [(f.path, f.findings) for f in switched.files] == [(f.path, f.findings) for f in serial.files]
    assert seen == [(i, 40) for i in range(1, 41)]


def test_explicit_worker_count_is_used_as_given(tmp_path: Path) -> None:
    _folder(tmp_path, 12)
    serial = scan_paths([tmp_path], workers=1)
    pooled = scan_paths([tmp_path], workers=2)
    assert [(f.path, f.findings) for f in pooled.files] == [(f.path, f.findings) for f in serial.files]


def _dies_on_the_fifth(path: str) -> api.FileReport:
    """A worker killed from outside (the OOM killer, kill -9) while it scans one file."""
    if path.endswith("05.pkl"):
        os._exit(9)
    return api.scan_file(path, api._WORKER_POLICY)


def test_a_worker_killed_mid_scan_leaves_its_files_not_analysed_never_passed_nor_hung(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _folder(tmp_path, 12)
    monkeypatch.setattr(api, "_scan_in_worker", _dies_on_the_fifth)
    report = scan_paths([tmp_path], workers=2)
    assert [f.path for f in report.files] == [str(p) for p in paths]  # every file, once, in order
    lost = [f.path for f in report.files if any(x.rule_id == "scan.incomplete" for x in f.findings)]
    assert any(p.endswith("05.pkl") for p in lost), lost
    assert all(f.verdict(Severity.HIGH) is not Verdict.PASS for f in report.files if f.path in lost)
    assert report.verdict() is not Verdict.PASS
