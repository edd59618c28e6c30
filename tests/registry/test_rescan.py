"""Acceptance: every promotion re-reads and re-scans the stored bytes, whatever passed before."""

from __future__ import annotations

from pathlib import Path

from bastion.registry import Registry
from bastion.sign.keys import generate_key, load_private_key, save_keypair
from bastion.sign.ossf import sign_model
from registry.artifacts import malicious_pickle, torch_folder
from registry.backends import BlobProbe, MakeRegistry, on_all_backends
from registry.people import Team, make_team


@on_all_backends
def test_promotion_refuses_a_blob_swapped_for_a_malicious_pickle_after_staging(
    registry: Registry, team: Team, probe: BlobProbe, tmp_path: Path
) -> None:
    version = registry.register(team.contributor, "clean", torch_folder(tmp_path))
    assert registry.promote(team.contributor, "clean", 1, "staging").allowed
    registry.approve(team.approver, "clean", 1, "production")
    weights = next(f for f in version.files if f.path == "pytorch_model.bin")

    probe.overwrite(weights.digest, malicious_pickle())
    decision = registry.promote(team.contributor, "clean", 1, "production")

    assert not decision.allowed
    assert registry.version(team.reader, "clean", 1).stage == "staging"
    failed = {c.name: c.detail for c in decision.checks if not c.passed}
    assert set(failed) == {"stage", "stored-bytes", "scan"}, decision.reasons
    assert failed["stage"] == "the bytes stored for clean@1 are not those promoted to staging"
    assert "pytorch_model.bin: the stored bytes changed since registration" in failed["stored-bytes"]
    assert "pickle.dangerous-global" in failed["scan"]
    assert "pytorch_model.bin" in failed["scan"]
    assert any(r.startswith("stored-bytes:") for r in decision.reasons)
    assert any(r.startswith("scan:") for r in decision.reasons)

    last = list(registry.audit.entries())[-1]
    assert (last.action, last.subject, last.actor) == ("version.promote.refused", "clean@1", "carol")
    assert last.details["allowed"] is False
    recorded = {c["name"]: c for c in last.details["checks"]}
    assert recorded["stored-bytes"]["passed"] is False
    assert recorded["scan"]["passed"] is False
    assert "pickle.dangerous-global" in recorded["scan"]["detail"]
    assert recorded["approvals"]["passed"] is True
    assert registry.verify_audit(team.admin).ok


def test_promotion_refuses_a_version_whose_blob_is_gone(registry: Registry, team: Team, tmp_path: Path) -> None:
    version = registry.register(team.contributor, "gone", torch_folder(tmp_path))
    config = next(f for f in version.files if f.path == "config.json")
    Path(registry.blobs.path_of(config.digest)).unlink()

    decision = registry.promote(team.contributor, "gone", 1, "staging")

    assert not decision.allowed
    assert any("config.json: its blob" in r and "missing from the store" in r for r in decision.reasons), (
        decision.reasons
    )


def test_promotion_refuses_and_audits_a_version_whose_signature_blob_is_gone(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    keys = tmp_path / "registry-0" / "keys"
    keys.mkdir(parents=True)
    save_keypair(generate_key("ed25519"), keys / "release.key")
    registry = make_registry("version: 1\ngate:\n  require:\n    staging:\n      signature_keys: [keys/release.pub]\n")
    team = make_team(registry)
    folder = torch_folder(tmp_path / "src")
    sign_model(folder, load_private_key(keys / "release.key"))
    version = registry.register(team.contributor, "signed", folder)
    assert version.signature_blob is not None
    Path(registry.blobs.path_of(version.signature_blob)).unlink()

    decision = registry.promote(team.contributor, "signed", 1, "staging")

    assert not decision.allowed
    assert any(r.startswith("signature:") for r in decision.reasons)
    assert list(registry.audit.entries())[-1].action == "version.promote.refused"
