"""The shared corpora: every malicious file is stopped, every benign file passes.

`../shared/corpus` holds Bastion's own known-good and known-bad files; `../shared/external-corpus`
holds the samples other scanners (picklescan, fickling, ModelScan, ModelAudit) test themselves
with. Every malicious file must FAIL with the rule that names its technique (by its format, or
as listed in `corpus.expect.SHARED_RULES`); "could not analyse" is accepted only for the files
listed in `corpus.expect.SHARED_NOT_ANALYSABLE`, each with its rule and the reason. Under CI a
missing corpus fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_path
from corpus.expect import SHARED_NOT_ANALYSABLE, SHARED_RULES, describe, shared_expectation

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
MANIFESTS = (SHARED / "corpus" / "manifest.json", SHARED / "external-corpus" / "manifest.json")


def _cases() -> list[Any]:
    cases = []
    for manifest in MANIFESTS:
        if not manifest.is_file():
            continue
        base = manifest.parent
        for entry in json.loads(manifest.read_text(encoding="utf-8")):
            rel = f"{base.name}/{entry['file']}"
            cases.append(pytest.param(base / entry["file"], entry["verdict"], entry.get("format", ""), rel, id=rel))
    return cases


CASES = _cases()


def test_shared_corpus_is_present() -> None:
    missing = [str(m) for m in MANIFESTS if not m.is_file()]
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"shared corpus manifest(s) missing under CI: {', '.join(missing)}")
    if missing:
        pytest.skip(f"shared corpus not found: {', '.join(missing)}")
    assert len(CASES) > 200


@pytest.mark.parametrize(("path", "expected", "fmt", "rel"), CASES)
def test_shared_corpus_file_gets_its_expected_verdict(path: Path, expected: str, fmt: str, rel: str) -> None:
    assert path.is_file(), f"{path} is listed in the manifest but missing"
    report = scan_path(path)
    verdict = report.verdict(Severity.HIGH)
    rules = {f.rule_id for f in report.findings}
    if expected == "benign":
        assert verdict is Verdict.PASS, f"false positive on a benign file: {describe(report.findings)}"
        return
    assert expected == "malicious"
    if rel in SHARED_NOT_ANALYSABLE:
        rule, _why = SHARED_NOT_ANALYSABLE[rel]
        assert verdict is Verdict.INCOMPLETE, f"expected not analysed ({rule}): {describe(report.findings)}"
        assert rule in rules, describe(report.findings)
        return
    needed = shared_expectation(rel, fmt)
    assert needed, f"{rel}: no expected rule for format {fmt!r}: add one to corpus/expect.py"
    assert verdict is Verdict.FAIL, f"expected FAIL with {sorted(needed)}: {describe(report.findings)}"
    assert needed <= rules, f"expected {sorted(needed)}: {describe(report.findings)}"


def test_every_listed_expectation_names_a_corpus_file() -> None:
    if not CASES:
        pytest.skip("shared corpus not found")
    ids = {case.id for case in CASES}
    assert set(SHARED_RULES) <= ids, sorted(set(SHARED_RULES) - ids)
    assert set(SHARED_NOT_ANALYSABLE) <= ids, sorted(set(SHARED_NOT_ANALYSABLE) - ids)
