"""The registry's audit log holds every change and shows when a row was edited behind its back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from bastion.audit import ProblemKind
from bastion.registry import Registry
from registry.artifacts import numpy_folder
from registry.backends import on_both_databases
from registry.people import Team


@on_both_databases
def test_audit_verifies_after_a_lifecycle_and_not_after_an_edit(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    registry.promote(team.contributor, "m", 1, "staging")
    registry.approve(team.approver, "m", 1, "production")
    registry.promote(team.contributor, "m", 1, "production")

    report = registry.verify_audit(team.admin)
    actions = [e.action for e in registry.audit.entries()]

    assert report.ok, report.problems
    assert report.entries == len(actions)
    assert report.unsigned_tail == 0
    assert actions[0] == "registry.bootstrap"
    assert actions[-5:] == ["model.create", "version.register", "version.promote", "version.approve", "version.promote"]

    approve_seq = actions.index("version.approve") + 1
    with registry.engine.begin() as connection:
        edited = connection.execute(
            text(
                "UPDATE audit_entries SET body = replace(body, '\"alex\"', '\"mallory\"') WHERE chain = 'registry' AND seq = :seq"
            ),
            {"seq": approve_seq},
        )
        assert edited.rowcount == 1

    tampered = registry.verify_audit(team.admin)

    assert not tampered.ok
    assert (ProblemKind.EDITED, approve_seq) in {(p.kind, p.seq) for p in tampered.problems}
