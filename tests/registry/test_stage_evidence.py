"""A stage is proven by its signed, audited promotion, not by the `stage` column (issue 10, section 3).

An insider with write access to the database sets `versions.stage` with one UPDATE. The gate
then must not build on that stage, and a checkout for serving must say that nothing proves it;
a version promoted through the gate keeps its proof. Both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, insert, update

from bastion.db.tables import approvals, version_files, versions
from bastion.registry import Registry
from bastion.registry.gate import serving_refusals
from bastion.registry.records import Lineage
from registry.artifacts import numpy_folder
from registry.backends import MakeRegistry, on_both_databases
from registry.people import Team, make_team

LENIENT = "version: 1\ngate:\n  separation_of_duties: false\n"


def _set_stage_by_sql(registry: Registry, model: str, number: int, stage: str) -> None:
    with registry.engine.begin() as connection:
        connection.execute(
            update(versions).where(versions.c.model == model, versions.c.number == number).values(stage=stage)
        )


def _refusals(registry: Registry, team: Team, model: str, stage: str) -> tuple[str, ...]:
    key = registry.signing_key.public_key()
    with registry.check_out_promoted(team.admin, model, stage, trusted_keys=(), registry_key=key) as checked:
        return serving_refusals(
            checked.version, checked.evidence, checked.promotion, stage=stage,
            requirements=registry.policy.gate.requirements_for(stage), scan=registry.policy.scan,
        )


@on_both_databases
def test_a_stage_set_by_sql_is_not_a_step_towards_the_next(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path), lineage=Lineage(licence="proprietary"))
    _set_stage_by_sql(registry, "m", 1, "staging")

    decision = registry.promote(team.admin, "m", 1, "production")

    assert not decision.allowed
    assert "stage: m@1 is in staging without a valid promotion: no signed promotion of m@1 to staging exists" in (
        decision.reasons
    )
    assert registry.version(team.reader, "m", 1).stage == "staging"


@on_both_databases
def test_a_checkout_for_serving_names_the_missing_proof(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = make_registry(LENIENT)
    team = make_team(registry)
    registry.register(team.contributor, "m", numpy_folder(tmp_path / "1", seed=1))
    registry.register(team.contributor, "m", numpy_folder(tmp_path / "2", seed=2))
    assert registry.promote(team.admin, "m", 1, "staging").allowed
    _set_stage_by_sql(registry, "m", 2, "staging")

    refused = _refusals(registry, team, "m", "staging")  # the newest in staging is the one set by SQL

    assert refused[0] == "promotion: no signed promotion of m@2 to staging exists"
    _set_stage_by_sql(registry, "m", 2, "dev")
    proven = _refusals(registry, team, "m", "staging")
    assert not any(r.startswith("promotion:") for r in proven), proven


@on_both_databases
def test_blobs_swapped_with_their_recorded_digests_are_not_the_promoted_version(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    registry = make_registry(LENIENT)
    team = make_team(registry)
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    assert registry.promote(team.admin, "m", 1, "staging").allowed
    other = registry.blobs.put_bytes(b'{"layers": [4, 3], "backdoor": true}')
    with registry.engine.begin() as connection:  # the insider rewrites the record to match new bytes
        connection.execute(
            update(version_files)
            .where(version_files.c.model == "m", version_files.c.path == "config.json")
            .values(digest=other)
        )

    refused = _refusals(registry, team, "m", "staging")

    assert refused[0].startswith("promotion: the stored bytes are not those the attestation sha256:")
    assert "stage: the bytes stored for m@1 are not those promoted to staging" in (
        registry.promote(team.admin, "m", 1, "production").reasons
    )


@on_both_databases
def test_an_approval_inserted_by_sql_does_not_count(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    assert registry.promote(team.contributor, "m", 1, "staging").allowed
    with registry.engine.begin() as connection:
        connection.execute(
            insert(approvals).values(model="m", number=1, stage="production", approver="alex", approved_at=datetime.now(UTC))
        )

    forged = registry.check_gate(team.reader, "m", 1, "production")
    assert "approvals: needs 1 more approval(s) by someone other than the registrant" in forged.reasons

    with registry.engine.begin() as connection:
        connection.execute(delete(approvals))
    registry.approve(team.approver, "m", 1, "production")
    assert registry.check_gate(team.reader, "m", 1, "production").allowed
