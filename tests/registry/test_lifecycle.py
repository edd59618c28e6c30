"""From bootstrap to production: registration records, stages, signed attestations, approvals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ConfigError, NotFound, RegistryError
from bastion.registry import Registry
from bastion.registry.attest import PREDICATE_TYPE, open_statement
from bastion.registry.records import Lineage
from bastion.sign.keys import load_public_key
from registry.artifacts import file_digests, numpy_folder, torch_state_dict
from registry.backends import on_all_backends
from registry.people import Team

LINEAGE = Lineage(
    source="hf://acme/sentiment",
    licence="Apache-2.0",
    training_data_digest="sha256:" + "ab" * 32,
)


@on_all_backends
def test_model_goes_from_registration_to_production_through_every_gate(
    registry: Registry, team: Team, tmp_path: Path
) -> None:
    folder = numpy_folder(tmp_path / "src")
    expected = file_digests(folder)

    version = registry.register(team.contributor, "sentiment", folder, lineage=LINEAGE)

    assert (version.model, version.number, version.stage, version.layout) == ("sentiment", 1, "dev", "folder")
    assert version.registered_by == "carol"
    assert {f.path: (f.digest, f.size) for f in version.files} == expected
    assert version.lineage == LINEAGE
    assert registry.version(team.reader, "sentiment", 1) == version

    staging = registry.promote(team.contributor, "sentiment", 1, "staging")

    assert staging.allowed, staging.reasons
    assert staging.recorded
    assert (staging.from_stage, staging.to_stage) == ("dev", "staging")
    assert registry.version(team.reader, "sentiment", 1).stage == "staging"
    assert staging.attestation_blob is not None
    envelope = registry.attestation(team.reader, staging.attestation_blob)
    statement = open_statement(envelope, load_public_key(registry.config.public_key))
    assert statement["predicateType"] == PREDICATE_TYPE
    subjects = {s["name"].removeprefix("sentiment@1/"): "sha256:" + s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects == {path: digest for path, (digest, _size) in expected.items()}
    predicate = statement["predicate"]
    assert (predicate["fromStage"], predicate["toStage"], predicate["rootDigest"]) == (
        "dev",
        "staging",
        version.root_digest,
    )
    assert predicate["source"] == LINEAGE.source
    assert predicate["policyDigest"] == registry.policy_digest

    refused = registry.promote(team.contributor, "sentiment", 1, "production")

    assert not refused.allowed
    assert not refused.recorded
    assert refused.attestation_blob is None
    assert any(reason.startswith("approvals:") for reason in refused.reasons), refused.reasons
    assert registry.version(team.reader, "sentiment", 1).stage == "staging"

    approval = registry.approve(team.approver, "sentiment", 1, "production")
    assert (approval.approver, approval.stage) == ("alex", "production")
    production = registry.promote(team.contributor, "sentiment", 1, "production")

    assert production.allowed, production.reasons
    assert registry.version(team.reader, "sentiment", 1).stage == "production"
    summary = {m.name: m for m in registry.models(team.reader)}["sentiment"]
    assert summary.latest == 1
    assert dict(summary.stages) == {"production": 1}


def test_attestation_does_not_open_with_another_key(registry: Registry, team: Team, tmp_path: Path) -> None:
    from bastion.errors import VerificationError  # noqa: PLC0415
    from bastion.sign.keys import generate_key  # noqa: PLC0415

    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    decision = registry.promote(team.contributor, "m", 1, "staging")
    assert decision.attestation_blob is not None
    envelope = registry.attestation(team.reader, decision.attestation_blob)

    with pytest.raises(VerificationError, match="not signed by key"):
        open_statement(envelope, generate_key("ed25519").public_key())


@on_all_backends
def test_derived_model_records_its_parent(registry: Registry, team: Team, tmp_path: Path) -> None:
    base = registry.register(team.contributor, "base", numpy_folder(tmp_path / "a"), lineage=LINEAGE)
    single = torch_state_dict(tmp_path / "b")

    derived = registry.register(
        team.contributor, "tuned", single, lineage=Lineage(source="git+https://example.org/tune", parent=base.ref)
    )

    assert derived.number == 1
    assert derived.layout == "file"
    assert derived.lineage.parent == "base@1"
    assert [(f.path, f.size) for f in derived.files] == [("model.pt", single.stat().st_size)]
    assert derived.root_digest != base.root_digest


def test_parent_must_exist_in_the_registry(registry: Registry, team: Team, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="base@7 is not in this registry"):
        registry.register(team.contributor, "tuned", numpy_folder(tmp_path), lineage=Lineage(parent="base@7"))
    assert registry.models(team.admin) == []


def test_single_file_model_is_promoted_on_its_own_bytes(registry: Registry, team: Team, tmp_path: Path) -> None:
    path = torch_state_dict(tmp_path)
    version = registry.register(team.contributor, "torchy", path)

    decision = registry.promote(team.contributor, "torchy", version.number, "staging")

    assert decision.allowed, decision.reasons
    assert {c.name: c.passed for c in decision.checks} == {"stage": True, "stored-bytes": True, "scan": True}


def test_version_zero_is_not_in_the_registry(registry: Registry, team: Team, tmp_path: Path) -> None:
    # Regression: `_version_in` once tested `if number`, so 0 meant "the newest version".
    registry.register(team.contributor, "m", numpy_folder(tmp_path))

    with pytest.raises(ConfigError, match="number: version number 0 is outside"):
        registry.version(team.reader, "m", 0)


def test_an_approval_of_a_missing_version_is_refused(registry: Registry, team: Team, tmp_path: Path) -> None:
    # Regression: approving number 0 stored an approval of m@0 while the audit log said m@1.
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    entries = len(list(registry.audit.entries()))

    for number in (0, 2):
        with pytest.raises(NotFound, match=f"m@{number} is not in this registry"):
            registry.approve(team.approver, "m", number, "production")

    assert len(list(registry.audit.entries())) == entries
