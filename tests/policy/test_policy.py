"""The policy file: what it changes in a scan, and how it refuses a bad one."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.findings import Severity, Verdict
from bastion.policy.load import load_policy
from bastion.scan.api import scan_path

# A call of a function Bastion does not know: HIGH by default.
UNKNOWN_CALL = b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x05mypkg\x8c\x06helper\x93)R."


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_call_fails_under_the_default_policy(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(UNKNOWN_CALL)
    policy = load_policy(None)
    assert scan_path(model, policy.scan).verdict(policy.scan.block_at) is Verdict.FAIL


def test_allow_listed_global_passes(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(UNKNOWN_CALL)
    policy = load_policy(_write(tmp_path, "p.yaml", "version: 1\nscan:\n  allow_globals: [mypkg.helper]\n"))
    report = scan_path(model, policy.scan)
    assert report.verdict(policy.scan.block_at) is Verdict.PASS
    assert not report.findings


def test_allow_list_never_clears_a_dangerous_global(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(pickle.dumps(_Evil(), protocol=4))
    policy = load_policy(_write(tmp_path, "p.yaml", "version: 1\nscan:\n  allow_globals: [posix.system, os.system]\n"))
    assert scan_path(model, policy.scan).verdict(policy.scan.block_at) is Verdict.FAIL


def test_block_at_from_the_file_and_the_flag_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "version: 1\nscan:\n  block_at: critical\n")
    assert load_policy(path).scan.block_at is Severity.CRITICAL
    assert load_policy(path, block_at="low").scan.block_at is Severity.LOW


def test_environment_variable_names_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_POLICY", str(_write(tmp_path, "p.yaml", "scan: {block_at: medium}\n")))
    assert load_policy(None).scan.block_at is Severity.MEDIUM


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("version: 1\nscan:\n  blok_at: high\n", "blok_at"),
        ("version: 1\nscan:\n  block_at: severe\n", "block_at"),
        ("version: 2\n", "version"),
        ("version: 1\nscan:\n  allow_globals: ['not a name']\n", "allow_globals"),
        ("version: 1\nscan:\n  limits: {max_depth: 0}\n", "max_depth"),
        ("version: 1\nscna: {}\n", "scna"),
    ],
)
def test_bad_policy_is_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_policy(_write(tmp_path, "p.yaml", text))


def test_policy_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(_write(tmp_path, "p.yaml", "scan: [unclosed\n"))


def test_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy"):
        load_policy(tmp_path / "absent.yaml")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("true",)
