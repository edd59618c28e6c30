"""A scan report as text a person reads top-down: verdict per file, then each finding."""

from __future__ import annotations

from typing import TextIO

from bastion.findings import Severity, Verdict
from bastion.scan.report import ScanReport

_MARK = {Verdict.PASS: "PASS", Verdict.FAIL: "FAIL", Verdict.INCOMPLETE: "NOT ANALYSED"}


def render_text(report: ScanReport, block_at: Severity, out: TextIO, *, show_clean: bool = False) -> None:
    """Write the report; clean files are summarised unless `show_clean`."""
    clean = 0
    for file in report.files:
        verdict = file.verdict(block_at)
        if verdict is Verdict.PASS and not file.findings and not show_clean:
            clean += 1
            continue
        formats = ", ".join(file.formats) or "empty"
        out.write(f"{_MARK[verdict]:<12} {file.path}  [{formats}]\n")
        for f in sorted(file.findings, key=lambda f: -f.severity):
            where = f.location.member or ""
            where += f"@{f.location.offset}" if f.location.offset is not None else ""
            out.write(f"  {f.severity.name:<8} {f.rule_id:<28} {where}\n")
            out.write(f"           {f.message}\n")
    verdict = report.verdict(block_at)
    counts = {v: sum(1 for f in report.files if f.verdict(block_at) is v) for v in Verdict}
    out.write(
        f"\n{len(report.files)} files scanned in {report.seconds:.2f}s: "
        f"{counts[Verdict.FAIL]} failed, {counts[Verdict.INCOMPLETE]} not fully analysed, "
        f"{counts[Verdict.PASS]} passed{f' ({clean} with no findings not shown)' if clean else ''}. "
        f"Verdict: {verdict.value.upper()} (blocking at {block_at.name.lower()}).\n"
    )
