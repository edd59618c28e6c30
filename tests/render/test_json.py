"""`bastion scan --format json`: the `bastion.scan/1` document, and no secret in full."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .artifacts import (
    FAKE_AWS_KEY,
    PRIVATE_KEY_BODY,
    clean_pickle,
    malicious_pickle,
    nested_zip,
    notebook_with_secrets,
    run_scan,
    truncated_pickle,
)

FINDING_KEYS = {"rule_id", "severity", "file", "member", "offset", "format", "evidence", "message", "incomplete"}
SEVERITIES = {"info", "low", "medium", "high", "critical"}


def _json(*args: str | Path, expect_exit: int) -> dict[str, Any]:
    done = run_scan("--format", "json", *args)
    assert done.returncode == expect_exit, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_json_report_has_schema_verdicts_and_located_findings(tmp_path: Path) -> None:
    paths = [clean_pickle(tmp_path), malicious_pickle(tmp_path), nested_zip(tmp_path), truncated_pickle(tmp_path)]
    doc = _json(*paths, expect_exit=1)
    assert doc["schema"] == "bastion.scan/1"
    assert doc["tool"]["name"] == "bastion"
    assert doc["verdict"] == "fail"
    assert doc["block_at"] == "high"
    files = {Path(f["path"]).name: f for f in doc["files"]}
    assert set(files) == {p.name for p in paths}
    assert {name: f["verdict"] for name, f in files.items()} == {
        "clean.pkl": "pass",
        "evil.pkl": "fail",
        "outer.zip": "fail",
        "truncated.pkl": "incomplete",
    }
    assert files["clean.pkl"]["findings"] == []
    for file in doc["files"]:
        for finding in file["findings"]:
            assert set(finding) == FINDING_KEYS
            assert finding["severity"] in SEVERITIES
            assert finding["file"] == file["path"]
    (evil,) = (f for f in files["evil.pkl"]["findings"] if f["rule_id"] == "pickle.dangerous-global")
    assert evil["severity"] == "critical"
    assert evil["member"] is None
    assert isinstance(evil["offset"], int)
    assert evil["evidence"] == "posix.system"
    nested = [f for f in files["outer.zip"]["findings"] if f["rule_id"] == "pickle.dangerous-global"]
    assert [f["member"] for f in nested] == ["inner.zip!evil.pkl"]
    truncated = files["truncated.pkl"]["findings"]
    assert truncated and all(f["incomplete"] for f in truncated)


def test_clean_scan_exits_zero_with_a_pass_verdict(tmp_path: Path) -> None:
    doc = _json(clean_pickle(tmp_path), expect_exit=0)
    assert doc["verdict"] == "pass"
    assert [f["verdict"] for f in doc["files"]] == ["pass"]


def test_notebook_secrets_are_reported_redacted(tmp_path: Path) -> None:
    path = notebook_with_secrets(tmp_path)
    doc = _json(path, expect_exit=1)
    (file,) = doc["files"]
    assert "notebook" in file["formats"]
    secrets = [f for f in file["findings"] if f["rule_id"] == "secrets.credential"]
    assert {f["member"] for f in secrets} == {"cell[0]", "cell[1]"}
    assert any("AWS access key id" in f["evidence"] for f in secrets)
    assert any("private key" in f["evidence"] for f in secrets)


@pytest.mark.parametrize("fmt", ["json", "sarif", "text"])
def test_no_output_format_repeats_a_secret_in_full(tmp_path: Path, fmt: str) -> None:
    path = notebook_with_secrets(tmp_path)
    done = run_scan("--format", fmt, path)
    assert done.returncode == 1, done.stderr
    assert "secrets.credential" in done.stdout
    assert FAKE_AWS_KEY not in done.stdout
    assert PRIVATE_KEY_BODY not in done.stdout
    assert PRIVATE_KEY_BODY[:20] not in done.stdout
    assert FAKE_AWS_KEY not in done.stderr
