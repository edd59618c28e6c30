"""Who may use the registry: principals, their grants and their tokens.

Every change takes the acting `Principal`, checks its role here (never only in a CLI or a
route) and is audited in the same transaction. A disabled principal's tokens stop
authenticating at once; its grants and tokens stay on record for the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bastion.db.tables import grants, principals, tokens
from bastion.errors import AccessDenied, ConfigError, NotFound, RegistryError
from bastion.registry import fields
from bastion.registry import tokens as token_text
from bastion.registry.roles import ANY_MODEL, Action, Principal, Role

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from bastion.registry.service import Registry


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE = "service"


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret."""

    token_id: str
    principal: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


def _now(registry: Registry) -> datetime:
    """The registry's clock (injectable: tests move it instead of sleeping past an expiry)."""
    return datetime.fromtimestamp(registry._clock(), UTC)


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _require_principal(connection: Connection, name: str) -> None:
    if connection.execute(select(principals.c.name).where(principals.c.name == name)).first() is None:
        raise NotFound(f"no principal named {name!r}", hint="Add it with `bastion registry user add`.")


def bootstrap(registry: Registry, admin: str) -> str:
    """Create the first administrator and return its token; refused once anyone exists."""
    fields.check_principal_name(admin)
    new = token_text.issue()
    with registry._change() as connection:
        if connection.execute(select(func.count()).select_from(principals)).scalar_one():
            raise RegistryError("the registry already has principals", hint="Ask an administrator for a token instead.")
        now = _now(registry)
        connection.execute(insert(principals).values(name=admin, kind="user", created_at=now, created_by=admin))
        connection.execute(insert(grants).values(principal=admin, model=ANY_MODEL, role=Role.ADMIN.label))
        connection.execute(
            insert(tokens).values(
                token_id=new.token_id, principal=admin, secret_hash=new.secret_hash, created_at=now, revoked=False
            )
        )
        registry._record(connection, admin, "registry.bootstrap", admin, role="admin", token_id=new.token_id)
    return new.text


def authenticate(registry: Registry, text: str | None) -> Principal:
    """The principal a token stands for; AccessDenied if missing, unknown, revoked, expired or disabled."""
    if not text:
        raise AccessDenied("no API token given: nothing here is anonymous", hint="Pass --token or set BASTION_TOKEN.")
    token_id, secret = token_text.split(text)
    with registry.engine.connect() as connection:
        row = connection.execute(
            select(tokens, principals.c.disabled)
            .join(principals, principals.c.name == tokens.c.principal)
            .where(tokens.c.token_id == token_id)
        ).first()
        if row is None or not token_text.secret_matches(secret, bytes(row.secret_hash)):
            raise AccessDenied("the API token is not valid")
        if row.revoked:
            raise AccessDenied(f"token {token_id} was revoked", hint="Ask an administrator for a new token.")
        if row.expires_at is not None and utc(row.expires_at) <= _now(registry):
            raise AccessDenied(f"token {token_id} expired", hint="Ask an administrator for a new token.")
        if row.disabled:
            raise AccessDenied(f"principal {row.principal} is disabled", hint="Ask an administrator to enable it.")
        held = connection.execute(select(grants.c.model, grants.c.role).where(grants.c.principal == row.principal)).all()
    return Principal(row.principal, tuple((model, Role.parse(role)) for model, role in held), token_id)


def add_principal(registry: Registry, actor: Principal, name: str, kind: str = "user") -> None:
    actor.require(Action.GRANT)
    fields.check_principal_name(name)
    try:
        parsed = PrincipalKind(kind)
    except ValueError:
        raise ConfigError(f"kind: unknown principal kind {kind!r}", hint="Use user or service.") from None
    with registry._change() as connection:
        try:
            with connection.begin_nested():
                connection.execute(
                    insert(principals).values(name=name, kind=parsed.value, created_at=_now(registry), created_by=actor.name)
                )
        except IntegrityError as err:
            raise RegistryError(f"principal {name!r} already exists") from err
        registry._record(connection, actor.name, "principal.add", name, kind=parsed.value)


def grant(registry: Registry, actor: Principal, name: str, role: Role, model: str = ANY_MODEL) -> None:
    """Give `name` `role` on `model` (or every model), replacing any role it held there."""
    fields.check_grant_target(model)
    actor.require(Action.GRANT, model)
    with registry._change() as connection:
        _require_principal(connection, name)
        where = (grants.c.principal == name) & (grants.c.model == model)
        if connection.execute(select(grants.c.role).where(where)).first() is None:
            connection.execute(insert(grants).values(principal=name, model=model, role=role.label))
        else:
            connection.execute(update(grants).where(where).values(role=role.label))
        registry._record(connection, actor.name, "access.grant", name, model=model, role=role.label)


def remove_grant(registry: Registry, actor: Principal, name: str, model: str = ANY_MODEL) -> None:
    """Take away the role `name` holds on `model` (or its `*` grant); NotFound if it holds none there."""
    fields.check_grant_target(model)
    actor.require(Action.GRANT, model)
    with registry._change() as connection:
        _require_principal(connection, name)
        removed = connection.execute(delete(grants).where(grants.c.principal == name, grants.c.model == model))
        if not removed.rowcount:
            raise NotFound(f"{name} holds no role on {model!r}")
        registry._record(connection, actor.name, "access.revoke", name, model=model)


def set_disabled(registry: Registry, actor: Principal, name: str, disabled: bool) -> None:
    """Disable a principal (its tokens stop authenticating at once) or enable it again."""
    actor.require(Action.GRANT)
    fields.check_principal_name(name)
    if disabled and name == actor.name:
        raise RegistryError("an administrator cannot disable itself", hint="Ask another administrator.")
    with registry._change() as connection:
        done = connection.execute(update(principals).where(principals.c.name == name).values(disabled=disabled))
        if not done.rowcount:
            raise NotFound(f"no principal named {name!r}")
        registry._record(connection, actor.name, "principal.disable" if disabled else "principal.enable", name)


def issue_token(registry: Registry, actor: Principal, name: str, expires_in: timedelta | None = None) -> str:
    """A new token for `name`; its text is returned once and only its hash is kept."""
    actor.require(Action.ISSUE_TOKEN)
    new = token_text.issue()
    expires = _now(registry) + expires_in if expires_in is not None else None
    with registry._change() as connection:
        _require_principal(connection, name)
        connection.execute(
            insert(tokens).values(
                token_id=new.token_id, principal=name, secret_hash=new.secret_hash, created_at=_now(registry),
                expires_at=expires, revoked=False,
            )
        )
        registry._record(
            connection, actor.name, "token.issue", name, token_id=new.token_id,
            expires_at=expires.isoformat() if expires else None,
        )
    return new.text


def revoke_token(registry: Registry, actor: Principal, token_id: str) -> None:
    actor.require(Action.REVOKE_TOKEN)
    fields.check_token_id(token_id)
    with registry._change() as connection:
        done = connection.execute(update(tokens).where(tokens.c.token_id == token_id).values(revoked=True))
        if not done.rowcount:
            raise NotFound(f"no token {token_id!r}")
        registry._record(connection, actor.name, "token.revoke", token_id)


def list_tokens(registry: Registry, actor: Principal, name: str) -> tuple[TokenInfo, ...]:
    """Every token issued to `name`, revoked and expired ones included (admin only)."""
    actor.require(Action.ISSUE_TOKEN)
    fields.check_principal_name(name)
    with registry.engine.connect() as connection:
        _require_principal(connection, name)
        rows = connection.execute(
            select(tokens.c.token_id, tokens.c.created_at, tokens.c.expires_at, tokens.c.revoked)
            .where(tokens.c.principal == name)
            .order_by(tokens.c.created_at, tokens.c.token_id)
        ).all()
    return tuple(
        TokenInfo(r.token_id, name, utc(r.created_at), utc(r.expires_at) if r.expires_at else None, bool(r.revoked))
        for r in rows
    )
