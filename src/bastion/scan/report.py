"""The typed result of a scan: findings per file, and the verdict a policy draws from them."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.findings import Finding, Severity, Verdict


@dataclass(frozen=True, slots=True)
class FileReport:
    """What one file's scan found."""

    path: str
    size: int
    formats: tuple[str, ...]
    findings: tuple[Finding, ...]

    def verdict(self, block_at: Severity) -> Verdict:
        """FAIL on a finding at or above `block_at`, else INCOMPLETE if not all was analysed."""
        return verdict_of(self.findings, block_at)


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The scan of one or more paths."""

    targets: tuple[str, ...]
    files: tuple[FileReport, ...]
    seconds: float = 0.0

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for file in self.files for f in file.findings)

    def verdict(self, block_at: Severity = Severity.HIGH) -> Verdict:
        """The verdict over all files: FAIL beats INCOMPLETE beats PASS."""
        return verdict_of(self.findings, block_at)


def verdict_of(findings: tuple[Finding, ...], block_at: Severity) -> Verdict:
    """FAIL if any risk finding reaches `block_at`; INCOMPLETE if anything went unanalysed."""
    if any(not f.is_incomplete and f.severity >= block_at for f in findings):
        return Verdict.FAIL
    if any(f.is_incomplete for f in findings):
        return Verdict.INCOMPLETE
    return Verdict.PASS


def exit_code(verdict: Verdict) -> int:
    """0 pass, 1 policy failed, 2 not fully analysed."""
    return {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCOMPLETE: 2}[verdict]
