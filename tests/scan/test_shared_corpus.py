"""The shared corpora: every malicious file is stopped, every benign file passes.

`../shared/corpus` holds Bastion's own known-good and known-bad files; `../shared/external-corpus`
holds the samples other scanners (picklescan, fickling, ModelScan, ModelAudit) test themselves
with. A malformed sample counts as malicious: "could not analyse" is an acceptable answer for
it, "clean" is not. Under CI a missing corpus fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_path

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
MANIFESTS = (SHARED / "corpus" / "manifest.json", SHARED / "external-corpus" / "manifest.json")


def _cases() -> list[object]:
    cases = []
    for manifest in MANIFESTS:
        if not manifest.is_file():
            continue
        base = manifest.parent
        for entry in json.loads(manifest.read_text(encoding="utf-8")):
            rel = f"{base.name}/{entry['file']}"
            cases.append(pytest.param(base / entry["file"], entry["verdict"], entry.get("technique", ""), id=rel))
    return cases


CASES = _cases()


def test_shared_corpus_is_present() -> None:
    missing = [str(m) for m in MANIFESTS if not m.is_file()]
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"shared corpus manifest(s) missing under CI: {', '.join(missing)}")
    if missing:
        pytest.skip(f"shared corpus not found: {', '.join(missing)}")
    assert len(CASES) > 200


@pytest.mark.parametrize(("path", "expected", "technique"), CASES)
def test_shared_corpus_file_gets_its_expected_verdict(path: Path, expected: str, technique: str) -> None:
    assert path.is_file(), f"{path} is listed in the manifest but missing"
    report = scan_path(path)
    verdict = report.verdict(Severity.HIGH)
    rules = sorted({f.rule_id for f in report.findings})
    if expected == "benign":
        assert verdict is Verdict.PASS, f"false positive on a benign file ({technique}): {rules}"
    else:
        assert expected == "malicious"
        assert verdict is not Verdict.PASS, f"missed: {technique}"
