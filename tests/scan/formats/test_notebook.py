"""Jupyter notebooks: credentials in cells and outputs are reported, redacted."""

from __future__ import annotations

from pathlib import Path

from bastion.scan.api import scan_path
from corpus import builders
from corpus.expect import assert_fails_with, assert_passes, describe


def test_clean_notebook_passes(tmp_path: Path) -> None:
    report = scan_path(builders.notebook(tmp_path, builders.CLEAN_NOTEBOOK_SOURCE, "train.ipynb"))
    assert_passes(report)
    assert report.files[0].formats == ("notebook",)


def test_notebook_with_an_aws_key_is_blocked_and_the_key_is_not_repeated(tmp_path: Path) -> None:
    report = scan_path(builders.notebook(tmp_path, builders.LEAKY_NOTEBOOK_SOURCE, "train.ipynb"))
    assert_fails_with(report, "secrets.credential")
    [finding] = [f for f in report.findings if f.rule_id == "secrets.credential"]
    assert finding.location.member == "cell[1]", describe(report.findings)
    assert builders.AWS_KEY_ID not in finding.evidence + finding.message
    assert "AWS" in finding.evidence


def test_notebook_key_is_found_under_any_name(tmp_path: Path) -> None:
    path = builders.notebook(tmp_path, builders.LEAKY_NOTEBOOK_SOURCE, "notes.json")
    assert_fails_with(scan_path(path), "secrets.credential")
