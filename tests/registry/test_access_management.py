"""Issue 10, section 5: an administrator lists a principal's tokens, removes a grant, disables a principal.

Each is checked in the library (admin only) and audited; a disabled principal's tokens stop
authenticating at once, and work again once it is enabled. Both databases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import AccessDenied, NotFound, RegistryError
from bastion.registry import Registry
from registry.artifacts import numpy_folder
from registry.backends import on_both_databases
from registry.people import Team


def _actions(registry: Registry) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.subject) for e in registry.audit.entries()]


@on_both_databases
def test_an_admin_lists_a_principals_tokens_without_their_secrets(registry: Registry, team: Team) -> None:
    second = registry.issue_token(team.admin, "carol")
    registry.revoke_token(team.admin, team.contributor.token_id)

    found = registry.tokens_of(team.admin, "carol")

    # bst_<id>_<secret>: the secret is base64url and may itself hold "_", so split only twice.
    _prefix, second_id, second_secret = second.split("_", 2)
    assert {(t.token_id, t.revoked) for t in found} == {(team.contributor.token_id, True), (second_id, False)}
    assert all(t.principal == "carol" for t in found)
    assert not any(second_secret in repr(t) for t in found)
    with pytest.raises(AccessDenied, match=r"rita \(role reader\) may not token.issue"):
        registry.tokens_of(team.reader, "carol")
    with pytest.raises(NotFound, match="no principal named 'nobody'"):
        registry.tokens_of(team.admin, "nobody")


@on_both_databases
def test_a_removed_grant_takes_the_role_away_and_is_audited(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.remove_grant(team.admin, "carol")
    carol = registry.authenticate(team.tokens["carol"])

    assert carol.grants == ()
    with pytest.raises(AccessDenied, match=r"carol \(no role\) may not version.register"):
        registry.register(carol, "m", numpy_folder(tmp_path))
    assert _actions(registry)[-1] == ("admin", "access.revoke", "carol")
    with pytest.raises(NotFound, match="carol holds no role on '\\*'"):
        registry.remove_grant(team.admin, "carol")
    with pytest.raises(AccessDenied, match=r"alex \(role approver\) may not access.grant"):
        registry.remove_grant(team.approver, "rita")


@on_both_databases
def test_a_disabled_principals_tokens_stop_authenticating_until_it_is_enabled(registry: Registry, team: Team) -> None:
    registry.disable_principal(team.admin, "carol")

    with pytest.raises(AccessDenied, match="principal carol is disabled"):
        registry.authenticate(team.tokens["carol"])
    fresh = registry.issue_token(team.admin, "carol")
    with pytest.raises(AccessDenied, match="principal carol is disabled"):
        registry.authenticate(fresh)

    registry.enable_principal(team.admin, "carol")
    assert registry.authenticate(team.tokens["carol"]).name == "carol"
    assert [a for _, a, s in _actions(registry) if s == "carol"][-3:] == [
        "principal.disable", "token.issue", "principal.enable"
    ]


@on_both_databases
def test_only_another_admin_may_disable_and_never_itself(registry: Registry, team: Team) -> None:
    with pytest.raises(AccessDenied, match=r"rita \(role reader\) may not access.grant"):
        registry.disable_principal(team.reader, "carol")
    with pytest.raises(RegistryError, match="an administrator cannot disable itself"):
        registry.disable_principal(team.admin, "admin")
    with pytest.raises(NotFound, match="no principal named 'nobody'"):
        registry.disable_principal(team.admin, "nobody")
