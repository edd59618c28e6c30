"""Assertions shared by the scan tests, with messages that show what the scanner found."""

from __future__ import annotations

from bastion.findings import Finding, Severity, Verdict
from bastion.scan.report import FileReport, ScanReport

Report = ScanReport | FileReport


def rules(report: Report) -> set[str]:
    return {f.rule_id for f in report.findings}


def describe(findings: tuple[Finding, ...]) -> str:
    return "; ".join(f"{f.rule_id} {f.severity.name} at {f.location}: {f.message}" for f in findings) or "no findings"


def assert_passes(report: Report, block_at: Severity = Severity.HIGH) -> None:
    """The verdict is PASS: nothing reaches `block_at` and everything was analysed."""
    verdict = report.verdict(block_at)
    assert verdict is Verdict.PASS, f"expected PASS, got {verdict.value}: {describe(report.findings)}"
    assert not [f for f in report.findings if f.severity >= block_at], describe(report.findings)


def assert_fails_with(report: Report, *expected: str) -> None:
    """The verdict is FAIL and at least one of the `expected` rules was reported."""
    verdict = report.verdict(Severity.HIGH)
    assert verdict is Verdict.FAIL, f"expected FAIL, got {verdict.value}: {describe(report.findings)}"
    assert rules(report) & set(expected), f"expected one of {sorted(expected)}: {describe(report.findings)}"


def assert_incomplete_with(report: Report, rule_id: str) -> None:
    """The verdict is INCOMPLETE (not analysed, never clean) and `rule_id` says why."""
    verdict = report.verdict(Severity.HIGH)
    assert verdict is Verdict.INCOMPLETE, f"expected INCOMPLETE, got {verdict.value}: {describe(report.findings)}"
    assert rule_id in rules(report), f"expected {rule_id}: {describe(report.findings)}"
    assert all(f.is_incomplete for f in report.findings if f.rule_id == rule_id)
