"""A scan report as SARIF 2.1.0, for code-scanning dashboards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from bastion import __version__
from bastion.findings import Finding, Severity
from bastion.scan.report import FileReport, ScanReport
from bastion.scan.rules import CATALOGUE

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {
    Severity.INFO: "note",
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}
_SCORE = {
    Severity.INFO: "0.0",
    Severity.LOW: "3.0",
    Severity.MEDIUM: "5.0",
    Severity.HIGH: "8.0",
    Severity.CRITICAL: "9.5",
}


def _uri(path: str) -> str:
    p = Path(path)
    return p.as_posix() if not p.is_absolute() else p.as_uri()


def _result(
    f: Finding, rule_index: dict[str, int], artifact_index: dict[str, int], block_at: Severity
) -> dict[str, object]:
    artifact: dict[str, object] = {"uri": _uri(f.location.file)}
    if f.location.file in artifact_index:
        artifact["index"] = artifact_index[f.location.file]
    physical: dict[str, object] = {"artifactLocation": artifact}
    if f.location.offset is not None and not f.location.members:
        physical["region"] = {"byteOffset": f.location.offset}
    location: dict[str, object] = {"physicalLocation": physical}
    if f.location.members:
        location["logicalLocations"] = [{"fullyQualifiedName": f.location.member, "kind": "member"}]
    result: dict[str, object] = {
        "ruleId": f.rule_id,
        "ruleIndex": rule_index[f.rule_id],
        "level": _LEVEL[f.severity],
        "message": {"text": f.message},
        "locations": [location],
        "properties": {
            "severity": f.severity.name.lower(),
            "format": f.format,
            "evidence": f.evidence,
            "member": f.location.member,
            "offset": f.location.offset,
            "blocking": f.is_incomplete or f.severity >= block_at,
        },
    }
    if f.is_incomplete:
        result["kind"] = "review"
    return result


def _rule(rule_id: str, worst: Severity) -> dict[str, object]:
    """A reportingDescriptor from the catalogue; its score is the worst result's, as dashboards rank by it."""
    entry = CATALOGUE.get(rule_id)
    if entry is None:  # a rule the catalogue lacks is a bug (tests/scan/test_rules.py), never a crash here
        return {
            "id": rule_id,
            "shortDescription": {"text": rule_id},
            "defaultConfiguration": {"level": _LEVEL[worst]},
            "properties": {"security-severity": _SCORE[worst]},
        }
    return {
        "id": rule_id,
        "shortDescription": {"text": entry.summary},
        "fullDescription": {"text": entry.help},
        "help": {"text": entry.help, "markdown": f"**{entry.summary}**\n\n{entry.help}"},
        "defaultConfiguration": {"level": _LEVEL[entry.severity]},
        "properties": {
            "security-severity": _SCORE[max(worst, entry.severity)],
            "tags": ["security", entry.family, "not-analysed" if entry.incomplete else "risk"],
        },
    }


def _artifact(file: FileReport, block_at: Severity) -> dict[str, object]:
    """Every file scanned is listed, clean or not: a dashboard counts what was analysed from here."""
    return {
        "location": {"uri": _uri(file.path)},
        "length": file.size,
        "roles": ["analysisTarget"],
        "properties": {"formats": list(file.formats), "verdict": file.verdict(block_at).value},
    }


def render_sarif(report: ScanReport, block_at: Severity, out: TextIO) -> None:
    findings = report.findings
    rule_ids = sorted({f.rule_id for f in findings})
    rule_index = {rule: i for i, rule in enumerate(rule_ids)}
    artifact_index = {file.path: i for i, file in enumerate(report.files)}
    worst = {rule: max(f.severity for f in findings if f.rule_id == rule) for rule in rule_ids}
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion",
                        "version": __version__,
                        "informationUri": "https://github.com/bastion-ml/bastion",
                        "rules": [_rule(rule, worst[rule]) for rule in rule_ids],
                    }
                },
                "artifacts": [_artifact(file, block_at) for file in report.files],
                "results": [_result(f, rule_index, artifact_index, block_at) for f in findings],
                "invocations": [{"executionSuccessful": not any(f.is_incomplete for f in findings)}],
            }
        ],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
