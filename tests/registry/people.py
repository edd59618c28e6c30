"""A registry's cast: an administrator, a contributor, an approver and a reader, with real tokens."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.registry import Principal, Registry, Role


@dataclass(frozen=True)
class Team:
    admin: Principal
    contributor: Principal
    approver: Principal
    reader: Principal
    tokens: dict[str, str]  # principal name -> token text


def make_team(registry: Registry) -> Team:
    """Bootstrap `admin`, then add the others with `*` grants and a token each, all through the API."""
    tokens = {"admin": registry.bootstrap("admin")}
    admin = registry.authenticate(tokens["admin"])
    for name, role in (("carol", Role.CONTRIBUTOR), ("alex", Role.APPROVER), ("rita", Role.READER)):
        registry.add_principal(admin, name)
        registry.grant(admin, name, role)
        tokens[name] = registry.issue_token(admin, name)
    return Team(
        admin=admin,
        contributor=registry.authenticate(tokens["carol"]),
        approver=registry.authenticate(tokens["alex"]),
        reader=registry.authenticate(tokens["rita"]),
        tokens=tokens,
    )
