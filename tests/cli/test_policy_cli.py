"""`bastion policy check`: a valid policy is summarised, a bad field named, a missing key file flagged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "policy", "check", str(path)], capture_output=True, text=True, check=False
    )


def test_valid_policy_is_summarised(tmp_path: Path) -> None:
    (tmp_path / "release.pub").write_text("not read by check")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ngate:\n  stages: [dev, prod]\n  require:\n"
        "    prod: {approvals: 2, licences: [MIT], signature_keys: [release.pub]}\n"
    )
    done = _check(policy)
    assert done.returncode == 0, done.stderr
    assert "dev -> prod" in done.stdout and "2 approval(s)" in done.stdout and "'mit'" in done.stdout


def test_requirement_for_unknown_stage_is_named(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gate:\n  stages: [dev, prod]\n  require:\n    staging: {approvals: 1}\n")
    done = _check(policy)
    assert done.returncode == 2 and "unknown stage(s) staging" in done.stderr


def test_typo_in_field_is_named(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gate:\n  require:\n    production: {aprovals: 1}\n")
    done = _check(policy)
    assert done.returncode == 2 and "gate.require.production.aprovals" in done.stderr


def test_missing_key_file_fails(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gate:\n  require:\n    production: {signature_keys: [gone.pub]}\n")
    done = _check(policy)
    assert done.returncode == 1 and "MISSING KEY FILES" in done.stdout and "gone.pub" in done.stdout
