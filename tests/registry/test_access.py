"""Acceptance 6: roles bound what each token may do; nothing is anonymous; refusals change nothing."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.errors import AccessDenied, RegistryError
from bastion.registry import Principal, Registry, Role
from bastion.registry.config import DEFAULT_POLICY
from registry.artifacts import numpy_folder
from registry.backends import BlobProbe, MakeRegistry
from registry.people import Team, make_team


def _snapshot(registry: Registry, team: Team, probe: BlobProbe) -> tuple[object, ...]:
    audit = [(e.seq, e.action, e.subject) for e in registry.audit.entries()]
    versions = [(v.ref, v.stage) for m in registry.models(team.admin) for v in registry.versions(team.admin, m.name)]
    return tuple(audit), tuple(versions), frozenset(probe.names())


READER_ACTIONS: dict[str, Callable[[Registry, Principal, Path], object]] = {
    "register": lambda r, p, folder: r.register(p, "fraud", folder),
    "promote": lambda r, p, _: r.promote(p, "fraud", 1, "staging"),
    "approve": lambda r, p, _: r.approve(p, "fraud", 1, "staging"),
    "grant": lambda r, p, _: r.grant(p, "rita", Role.ADMIN),
    "grant-on-own-model": lambda r, p, _: r.grant(p, "rita", Role.CONTRIBUTOR, "fraud"),
    "add-principal": lambda r, p, _: r.add_principal(p, "mallory"),
    "issue-token": lambda r, p, _: r.issue_token(p, "rita"),
    "revoke-token": lambda r, p, _: r.revoke_token(p, p.token_id),
    "verify-audit": lambda r, p, _: r.verify_audit(p),
    "export-audit": lambda r, p, _: r.export_audit(p, io.StringIO()),
}


@pytest.mark.parametrize("action", READER_ACTIONS, ids=str)
def test_a_reader_token_may_only_read(
    registry: Registry, team: Team, probe: BlobProbe, tmp_path: Path, action: str
) -> None:
    registry.register(team.contributor, "fraud", numpy_folder(tmp_path / "v1"))
    reader = registry.authenticate(team.tokens["rita"])
    before = _snapshot(registry, team, probe)

    with pytest.raises(AccessDenied, match=r"rita \(role reader\) may not"):
        READER_ACTIONS[action](registry, reader, numpy_folder(tmp_path / "v2", seed=1))

    assert _snapshot(registry, team, probe) == before
    assert registry.authenticate(team.tokens["rita"]).grants == (("*", Role.READER),)


def test_a_reader_may_read_and_check_the_gate(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "fraud", numpy_folder(tmp_path))

    assert [m.name for m in registry.models(team.reader)] == ["fraud"]
    assert registry.version(team.reader, "fraud").number == 1
    assert b'"verdict": "pass"' in registry.scan_report(team.reader, "fraud", 1)
    assert registry.check_gate(team.reader, "fraud", 1, "staging").allowed


def test_a_contributor_may_not_approve_at_all(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "fraud", numpy_folder(tmp_path))

    with pytest.raises(AccessDenied, match="needs approver"):
        registry.approve(team.contributor, "fraud", 1, "production")


def test_an_approver_may_not_approve_a_version_they_registered(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.approver, "fraud", numpy_folder(tmp_path))
    registry.promote(team.approver, "fraud", 1, "staging")

    with pytest.raises(AccessDenied, match="separation of duties"):
        registry.approve(team.approver, "fraud", 1, "production")

    last = list(registry.audit.entries())[-1]
    assert (last.action, last.actor, last.subject) == ("version.approve.refused", "alex", "fraud@1")
    assert last.details["stage"] == "production"
    decision = registry.promote(team.approver, "fraud", 1, "production")
    assert not decision.allowed
    assert any(
        "approvals: needs 1 more approval(s) by someone other than the registrant" in r for r in decision.reasons
    )
    assert registry.verify_audit(team.admin).ok


def test_another_approvers_approval_lets_the_registrant_promote(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.approver, "fraud", numpy_folder(tmp_path))
    registry.promote(team.approver, "fraud", 1, "staging")
    registry.add_principal(team.admin, "alex2")
    registry.grant(team.admin, "alex2", Role.APPROVER)
    other = registry.authenticate(registry.issue_token(team.admin, "alex2"))

    registry.approve(other, "fraud", 1, "production")

    assert registry.promote(team.approver, "fraud", 1, "production").allowed


def test_without_separation_of_duties_the_registrants_approval_counts(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    registry = make_registry(DEFAULT_POLICY.replace("separation_of_duties: true", "separation_of_duties: false"))
    assert registry.policy.gate.separation_of_duties is False
    team = make_team(registry)
    registry.register(team.approver, "fraud", numpy_folder(tmp_path))
    registry.promote(team.approver, "fraud", 1, "staging")

    approval = registry.approve(team.approver, "fraud", 1, "production")
    decision = registry.promote(team.approver, "fraud", 1, "production")

    assert approval.approver == "alex"
    assert decision.allowed, decision.reasons
    assert {c.name: c.detail for c in decision.checks}["approvals"] == "approved by alex"


def test_the_same_approver_counts_once(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "fraud", numpy_folder(tmp_path))
    registry.approve(team.approver, "fraud", 1, "production")

    with pytest.raises(RegistryError, match="already approved fraud@1 for production"):
        registry.approve(team.approver, "fraud", 1, "production")


def test_a_grant_on_one_model_does_not_reach_another(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.add_principal(team.admin, "nina")
    registry.grant(team.admin, "nina", Role.CONTRIBUTOR, "model-a")
    nina = registry.authenticate(registry.issue_token(team.admin, "nina"))

    assert registry.register(nina, "model-a", numpy_folder(tmp_path / "a")).number == 1
    with pytest.raises(AccessDenied, match=re.escape("nina (no role) may not version.register on model 'model-b'")):
        registry.register(nina, "model-b", numpy_folder(tmp_path / "b", seed=2))

    assert [m.name for m in registry.models(team.admin)] == ["model-a"]
    assert [m.name for m in registry.models(nina)] == ["model-a"]
    with pytest.raises(AccessDenied, match=re.escape("nina (no role) may not read on model 'model-b'")):
        registry.version(nina, "model-b")


def test_a_regrant_replaces_the_role(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.grant(team.admin, "carol", Role.READER)

    demoted = registry.authenticate(team.tokens["carol"])

    assert demoted.role_on("anything") is Role.READER
    with pytest.raises(AccessDenied, match=re.escape("carol (role reader) may not version.register on model 'fraud'")):
        registry.register(demoted, "fraud", numpy_folder(tmp_path))


def test_a_revoked_token_is_refused(registry: Registry, team: Team) -> None:
    registry.revoke_token(team.admin, team.reader.token_id)

    with pytest.raises(AccessDenied, match=f"token {team.reader.token_id} was revoked"):
        registry.authenticate(team.tokens["rita"])
    assert registry.authenticate(team.tokens["carol"]).name == "carol"


@pytest.mark.parametrize("lifetime", [timedelta(seconds=-1), timedelta(microseconds=1)], ids=["past", "tiny"])
def test_an_expired_token_is_refused(registry: Registry, team: Team, lifetime: timedelta) -> None:
    token = registry.issue_token(team.admin, "rita", expires_in=lifetime)

    with pytest.raises(AccessDenied, match="expired"):
        registry.authenticate(token)


def test_a_token_within_its_lifetime_is_accepted(registry: Registry, team: Team) -> None:
    token = registry.issue_token(team.admin, "rita", expires_in=timedelta(hours=1))

    assert registry.authenticate(token).name == "rita"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: "", "no API token given"),
        (lambda t: "not-a-token", "the token is malformed"),
        (lambda t: t.replace("bst_", "xyz_", 1), "the token is malformed"),
        (lambda t: "_".join(t.split("_")[:2]), "the token is malformed"),
        (lambda t: "bst__" + t.split("_", 2)[2], "the token is malformed"),
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "the API token is not valid"),
        (lambda t: "bst_" + "0" * 16 + "_" + t.split("_", 2)[2], "the API token is not valid"),
    ],
    ids=["empty", "garbage", "wrong-prefix", "no-secret", "no-id", "wrong-secret", "unknown-id"],
)
def test_a_malformed_or_forged_token_is_refused(
    registry: Registry, team: Team, mangle: Callable[[str], str], reason: str
) -> None:
    with pytest.raises(AccessDenied, match=reason):
        registry.authenticate(mangle(team.tokens["admin"]))


def test_nothing_is_anonymous(registry: Registry) -> None:
    with pytest.raises(AccessDenied, match="nothing here is anonymous"):
        registry.authenticate(None)


def test_bootstrap_happens_once(registry: Registry, team: Team) -> None:
    with pytest.raises(RegistryError, match="already has principals"):
        registry.bootstrap("mallory")


def test_only_an_admin_reads_or_verifies_the_audit_log(registry: Registry, team: Team) -> None:
    for who in (team.contributor, team.approver, team.reader):
        with pytest.raises(AccessDenied, match="needs admin"):
            registry.verify_audit(who)
        with pytest.raises(AccessDenied, match="needs admin"):
            registry.export_audit(who, io.StringIO())
    out = io.StringIO()
    assert registry.export_audit(team.admin, out) == len(out.getvalue().splitlines()) > 0


def test_a_zero_lifetime_token_is_never_valid(registry: Registry, team: Team) -> None:
    token = registry.issue_token(team.admin, "rita", expires_in=timedelta(0))

    try:
        registry.authenticate(token)
    except AccessDenied as err:
        assert "expired" in str(err)
    else:
        raise AssertionError("a token issued with a zero lifetime was accepted")
