"""The gate section of the policy file: signatures, sources, licences, assessments, stage order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.registry import Registry
from bastion.registry.records import GateDecision, Lineage
from bastion.sign.keys import generate_key, load_private_key, save_keypair
from bastion.sign.ossf import sign_model
from bastion.sign.raw import key_id
from registry.artifacts import malicious_pickle, numpy_folder, torch_state_dict
from registry.backends import MakeRegistry
from registry.people import Team, make_team


def _policy(staging: str) -> str:
    body = "\n".join(f"      {line}" for line in staging.strip().splitlines())
    return f"""\
version: 1
scan:
  block_at: high
gate:
  stages: [dev, staging, production]
  require:
    staging:
{body}
"""


def _failed(decision: GateDecision) -> dict[str, str]:
    return {c.name: c.detail for c in decision.checks if not c.passed}


# --- signatures ------------------------------------------------------------------------------


@pytest.fixture
def signed_gate(make_registry: MakeRegistry, tmp_path: Path) -> tuple[Registry, Team, Path]:
    """A registry whose staging gate needs a signature by keys/release.pub (relative to the policy)."""
    keys = tmp_path / "registry-0" / "keys"
    keys.mkdir(parents=True)
    save_keypair(generate_key("ecdsa-p256"), keys / "release.key")
    registry = make_registry(_policy("signature_keys: [keys/release.pub]"))
    assert registry.policy.gate.requirements_for("staging").signature_keys == (keys / "release.pub",)
    return registry, make_team(registry), keys / "release.key"


def test_an_unsigned_version_is_refused(signed_gate: tuple[Registry, Team, Path], tmp_path: Path) -> None:
    registry, team, _ = signed_gate
    registry.register(team.contributor, "m", numpy_folder(tmp_path / "src"))

    decision = registry.promote(team.contributor, "m", 1, "staging")

    assert not decision.allowed
    assert _failed(decision) == {
        "signature": "no signature was registered with this version; sign it and register again"
    }


def test_a_folder_signed_by_an_allowed_key_passes(signed_gate: tuple[Registry, Team, Path], tmp_path: Path) -> None:
    registry, team, release = signed_gate
    folder = numpy_folder(tmp_path / "src")
    sign_model(folder, load_private_key(release))

    version = registry.register(team.contributor, "m", folder)
    decision = registry.promote(team.contributor, "m", 1, "staging")

    assert version.signature_blob is not None
    assert "model.sig" not in {f.path for f in version.files}
    assert decision.allowed, decision.reasons
    assert key_id(load_private_key(release).public_key()) in {c.name: c.detail for c in decision.checks}["signature"]


def test_a_single_file_signed_by_an_allowed_key_passes(
    signed_gate: tuple[Registry, Team, Path], tmp_path: Path
) -> None:
    registry, team, release = signed_gate
    path = torch_state_dict(tmp_path / "src")
    sign_model(path, load_private_key(release))

    registry.register(team.contributor, "m", path)

    decision = registry.promote(team.contributor, "m", 1, "staging")
    assert decision.allowed, decision.reasons


def test_a_version_signed_by_another_key_is_refused_naming_the_allowed_key(
    signed_gate: tuple[Registry, Team, Path], tmp_path: Path
) -> None:
    registry, team, release = signed_gate
    folder = numpy_folder(tmp_path / "src")
    sign_model(folder, generate_key("ed25519"))
    registry.register(team.contributor, "m", folder)

    decision = registry.promote(team.contributor, "m", 1, "staging")

    assert not decision.allowed
    detail = _failed(decision)["signature"]
    assert detail.startswith("no allowed key verifies the signature")
    assert f"key {key_id(load_private_key(release).public_key())} (release.pub)" in detail


def test_a_signed_model_whose_stored_bytes_changed_is_refused(
    signed_gate: tuple[Registry, Team, Path], tmp_path: Path
) -> None:
    registry, team, release = signed_gate
    folder = numpy_folder(tmp_path / "src")
    sign_model(folder, load_private_key(release))
    version = registry.register(team.contributor, "m", folder)
    config = next(f for f in version.files if f.path == "config.json")
    Path(registry.blobs.path_of(config.digest)).write_text('{"layers": [4, 4]}', encoding="utf-8")

    decision = registry.promote(team.contributor, "m", 1, "staging")

    assert {"stored-bytes", "signature"} <= set(_failed(decision))


# --- lineage allow-lists ---------------------------------------------------------------------

LINEAGE_POLICY = """
sources: ["hf://acme/*", "s3://models-bucket/**"]
licences: [Apache-2.0, MIT]
"""


@pytest.mark.parametrize(
    ("lineage", "failed"),
    [
        (Lineage(source="hf://acme/sentiment", licence="apache-2.0"), {}),
        (Lineage(source="s3://models-bucket/x/y", licence="MIT"), {}),
        (Lineage(source="hf://mallory/sentiment", licence="MIT"), {"source": "'hf://mallory/sentiment'"}),
        (Lineage(licence="MIT"), {"source": "no source was recorded"}),
        (Lineage(source="hf://acme/x", licence="GPL-3.0"), {"licence": "licence 'gpl-3.0' is not allowed"}),
        (Lineage(source="hf://acme/x"), {"licence": "no licence was recorded"}),
    ],
    ids=["allowed", "allowed-glob", "source-outside", "no-source", "licence-outside", "no-licence"],
)
def test_lineage_outside_the_allow_lists_is_refused_naming_the_value(
    make_registry: MakeRegistry, tmp_path: Path, lineage: Lineage, failed: dict[str, str]
) -> None:
    registry = make_registry(_policy(LINEAGE_POLICY))
    team = make_team(registry)
    registry.register(team.contributor, "m", numpy_folder(tmp_path), lineage=lineage)

    decision = registry.promote(team.contributor, "m", 1, "staging")

    assert decision.allowed is not failed
    got = _failed(decision)
    assert set(got) == set(failed), decision.reasons
    for name, named in failed.items():
        assert named in got[name]


# --- assessments -----------------------------------------------------------------------------

ASSESSMENT_POLICY = """
assessment_min: {accuracy: 0.9}
assessment_max: {bias_gap: 0.05}
"""


@pytest.mark.parametrize(
    ("report", "problems"),
    [
        ({"accuracy": 0.95, "bias_gap": 0.01, "note": "fine"}, []),
        ({"accuracy": 0.9, "bias_gap": 0.05}, []),
        ({"accuracy": 0.5, "bias_gap": 0.01}, ["accuracy is 0.5 (needs at least 0.9)"]),
        ({"accuracy": 0.95, "bias_gap": 0.2}, ["bias_gap is 0.2 (needs at most 0.05)"]),
        ({"accuracy": 0.95}, ["bias_gap is None (needs at most 0.05)"]),
        ({"accuracy": True, "bias_gap": 0.0}, ["accuracy is None (needs at least 0.9)"]),
        (None, ["no assessment report was attached to this version"]),
    ],
    ids=["passes", "at-thresholds", "below-min", "above-max", "metric-missing", "bool-is-not-a-number", "none"],
)
def test_assessment_thresholds_are_enforced(
    make_registry: MakeRegistry, tmp_path: Path, report: dict[str, object] | None, problems: list[str]
) -> None:
    registry = make_registry(_policy(ASSESSMENT_POLICY))
    team = make_team(registry)
    assessment = None
    if report is not None:
        assessment = tmp_path / "assessment.json"
        assessment.write_text(json.dumps(report), encoding="utf-8")
    version = registry.register(team.contributor, "m", numpy_folder(tmp_path / "src"), assessment=assessment)
    assert (version.assessment_blob is None) is (report is None)

    decision = registry.promote(team.contributor, "m", 1, "staging")

    assert decision.allowed is not problems
    detail = _failed(decision).get("assessment", "")
    for problem in problems:
        assert problem in detail


# --- scan thresholds per stage ---------------------------------------------------------------


def test_a_malicious_model_registers_into_dev_but_never_leaves_it(
    registry: Registry, team: Team, tmp_path: Path
) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(malicious_pickle())

    version = registry.register(team.contributor, "evil", folder)
    decision = registry.promote(team.contributor, "evil", 1, "staging")

    assert version.stage == "dev"
    registered = next(e for e in registry.audit.entries() if e.action == "version.register")
    assert registered.details["scan"] == "fail"
    assert b'"pickle.dangerous-global"' in registry.scan_report(team.reader, "evil", 1)
    assert not decision.allowed
    assert list(_failed(decision)) == ["scan"]
    assert "model.pkl: pickle.dangerous-global (critical)" in _failed(decision)["scan"]


# --- stages ----------------------------------------------------------------------------------


def test_skipping_a_stage_is_refused(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    registry.approve(team.approver, "m", 1, "production")

    decision = registry.promote(team.contributor, "m", 1, "production")

    assert not decision.allowed
    assert _failed(decision) == {"stage": "m@1 is in dev: promote it to staging first"}
    assert registry.version(team.reader, "m", 1).stage == "dev"


def test_promoting_to_the_current_or_an_earlier_stage_is_refused(
    registry: Registry, team: Team, tmp_path: Path
) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    assert registry.promote(team.contributor, "m", 1, "staging").allowed

    again = registry.promote(team.contributor, "m", 1, "staging")
    back = registry.promote(team.contributor, "m", 1, "dev")

    assert _failed(again) == {"stage": "m@1 is already in staging"}
    assert _failed(back) == {"stage": "m@1 is already in staging"}
    assert registry.version(team.reader, "m", 1).stage == "staging"


def test_an_unknown_stage_is_a_config_error(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    entries = len(list(registry.audit.entries()))

    with pytest.raises(ConfigError, match="unknown stage 'prod'"):
        registry.promote(team.contributor, "m", 1, "prod")
    with pytest.raises(ConfigError, match="unknown stage 'prod'"):
        registry.check_gate(team.reader, "m", 1, "prod")
    with pytest.raises(ConfigError, match="unknown stage 'prod'"):
        registry.approve(team.approver, "m", 1, "prod")

    assert len(list(registry.audit.entries())) == entries


def test_custom_stages_are_followed(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = make_registry("version: 1\ngate:\n  stages: [sandbox, canary, live]\n")
    team = make_team(registry)

    version = registry.register(team.contributor, "m", numpy_folder(tmp_path))

    assert version.stage == "sandbox"
    assert registry.promote(team.contributor, "m", 1, "canary").allowed
    assert registry.promote(team.contributor, "m", 1, "live").allowed


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        (_policy("signature_key: [keys/release.pub]"), "gate.require.staging.signature_key"),
        (_policy("approvals: -1"), "gate.require.staging.approvals"),
        (_policy("assessment_min: {accuracy: high}"), "gate.require.staging.assessment_min.accuracy"),
        (_policy("scan_block_at: severe"), "gate.require.staging.scan_block_at"),
        ("version: 1\ngate:\n  stages: [dev]\n", "gate.stages"),
        ("version: 1\ngate:\n  require:\n    qa: {approvals: 1}\n", "unknown stage(s) qa"),
        ("version: 1\ngate:\n  separation_of_dutie: false\n", "gate.separation_of_dutie"),
        ("version: 2\n", "version"),
    ],
    ids=[
        "typo-key",
        "negative-approvals",
        "non-numeric-threshold",
        "bad-severity",
        "one-stage",
        "unknown-stage",
        "typo-sod",
        "version",
    ],
)
def test_a_bad_policy_field_is_a_config_error_naming_it(make_registry: MakeRegistry, policy: str, named: str) -> None:
    with pytest.raises(ConfigError, match=r"policy\.yaml") as caught:
        make_registry(policy)
    assert named in str(caught.value)


def test_a_version_in_a_stage_the_policy_dropped_is_refused_not_crashed(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    registry = make_registry()
    team = make_team(registry)
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    assert registry.promote(team.contributor, "m", 1, "staging").allowed
    registry.close()
    registry.config.policy.write_text("version: 1\ngate:\n  stages: [dev, qa, production]\n", encoding="utf-8")
    edited = Registry(registry.config)
    try:
        try:
            decision = edited.check_gate(team.reader, "m", 1, "production")
        except ConfigError:
            return
        assert not decision.allowed
        assert any("staging" in reason for reason in decision.reasons)
    finally:
        edited.close()
