"""check_gate is a dry run: it decides and audits, but moves nothing and signs nothing."""

from __future__ import annotations

from pathlib import Path

from bastion.registry import Registry
from registry.artifacts import numpy_folder
from registry.backends import BlobProbe
from registry.people import Team


def test_check_gate_decides_without_promoting(registry: Registry, team: Team, probe: BlobProbe, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    blobs = probe.names()

    decision = registry.check_gate(team.reader, "m", 1, "staging")

    assert decision.allowed, decision.reasons
    assert not decision.recorded
    assert decision.attestation_blob is None
    assert (decision.from_stage, decision.to_stage, decision.decided_by) == ("dev", "staging", "rita")
    assert registry.version(team.reader, "m", 1).stage == "dev"
    assert probe.names() == blobs
    last = list(registry.audit.entries())[-1]
    assert (last.action, last.subject, last.actor) == ("gate.check", "m@1", "rita")
    assert last.details["allowed"] is True
    assert [c["name"] for c in last.details["checks"]] == ["stage", "stored-bytes", "scan"]


def test_check_gate_reports_what_would_block(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    registry.promote(team.contributor, "m", 1, "staging")

    decision = registry.check_gate(team.reader, "m", None, "production")

    assert decision.number == 1
    assert not decision.allowed
    assert [r.split(":")[0] for r in decision.reasons] == ["approvals"]
    assert registry.version(team.reader, "m", 1).stage == "staging"
    last = list(registry.audit.entries())[-1]
    assert (last.action, last.details["allowed"]) == ("gate.check", False)
