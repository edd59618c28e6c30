"""A scan report as JSON (`"schema": "bastion.scan/1"`)."""

from __future__ import annotations

import json
from typing import TextIO

from bastion import __version__
from bastion.findings import Finding, Severity
from bastion.scan.report import ScanReport

SCHEMA = "bastion.scan/1"


def finding_dict(f: Finding) -> dict[str, object]:
    return {
        "rule_id": f.rule_id,
        "severity": f.severity.name.lower(),
        "file": f.location.file,
        "member": f.location.member,
        "offset": f.location.offset,
        "format": f.format,
        "evidence": f.evidence,
        "message": f.message,
        "incomplete": f.is_incomplete,
    }


def render_json(report: ScanReport, block_at: Severity, out: TextIO) -> None:
    doc = {
        "schema": SCHEMA,
        "tool": {"name": "bastion", "version": __version__},
        "verdict": report.verdict(block_at).value,
        "block_at": block_at.name.lower(),
        "seconds": round(report.seconds, 4),
        "files": [
            {
                "path": file.path,
                "size": file.size,
                "formats": list(file.formats),
                "verdict": file.verdict(block_at).value,
                "findings": [finding_dict(f) for f in file.findings],
            }
            for file in report.files
        ],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
