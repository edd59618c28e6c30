"""Who may do what: principals, their roles per model, and the actions each role allows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from bastion.errors import AccessDenied, ConfigError

ANY_MODEL = "*"


class Role(IntEnum):
    """Roles are ordered: each holds every right of the ones below it."""

    READER = 1  # read models, versions, decisions; run gate checks
    CONTRIBUTOR = 2  # register versions, ask for promotions
    APPROVER = 3  # approve a version for a stage (never one they registered, by default)
    ADMIN = 4  # grant roles, issue and revoke tokens, read and verify the audit log

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ConfigError(
                f"unknown role {name!r}", hint=f"Use one of: {', '.join(r.name.lower() for r in cls)}."
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


class Action(StrEnum):
    """Every operation the registry checks, with the least role that may do it."""

    READ = "read"
    GATE_CHECK = "gate.check"
    REGISTER = "version.register"
    PROMOTE = "version.promote"
    APPROVE = "version.approve"
    GRANT = "access.grant"
    ISSUE_TOKEN = "token.issue"  # noqa: S105  # nosec B105  # an action name, not a secret
    REVOKE_TOKEN = "token.revoke"  # noqa: S105  # nosec B105  # an action name, not a secret
    READ_AUDIT = "audit.read"

    @property
    def least_role(self) -> Role:
        return _LEAST_ROLE[self]


_LEAST_ROLE = {
    Action.READ: Role.READER,
    Action.GATE_CHECK: Role.READER,
    Action.REGISTER: Role.CONTRIBUTOR,
    Action.PROMOTE: Role.CONTRIBUTOR,
    Action.APPROVE: Role.APPROVER,
    Action.GRANT: Role.ADMIN,
    Action.ISSUE_TOKEN: Role.ADMIN,
    Action.REVOKE_TOKEN: Role.ADMIN,
    Action.READ_AUDIT: Role.ADMIN,
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the roles it holds, per model name (or `*` for all)."""

    name: str
    grants: tuple[tuple[str, Role], ...]
    token_id: str = ""

    def role_on(self, model: str) -> Role | None:
        roles = [role for target, role in self.grants if target in {model, ANY_MODEL}]
        return max(roles) if roles else None

    def require_somewhere(self, action: Action) -> None:
        """Raise AccessDenied unless some role this principal holds, on any model, allows `action`."""
        if not any(role >= action.least_role for _, role in self.grants):
            raise AccessDenied(f"{self.name} may not {action.value} on any model: it needs {action.least_role.label}")

    def require(self, action: Action, model: str = ANY_MODEL) -> None:
        """Raise AccessDenied unless this principal's role on `model` allows `action`."""
        role = self.role_on(model)
        if role is None or role < action.least_role:
            held = "no role" if role is None else f"role {role.label}"
            where = "every model" if model == ANY_MODEL else f"model {model!r}"
            raise AccessDenied(
                f"{self.name} ({held}) may not {action.value} on {where}: it needs {action.least_role.label}",
            )
