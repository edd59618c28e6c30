"""The gateway's API keys: scoped, expiring, revocable, stored hashed; and the model kill switch.

A key's text is `bsk_<id>_<secret>`; only SHA-256 of the secret is kept. Each key carries
its scopes (which models, which operations, how much detail an answer may show), its limits
and quotas, and an expiry. Every change is written to the gateway's audit chain in the same
transaction.

Who may change keys is decided here, not by the CLI or the admin API: every method that changes
a key or the kill switch takes the authenticated registry `Principal` and checks its role itself,
so a library caller cannot skip the check. Creating a key, or revoking, suspending or resuming
one, needs the admin role on every model the key may call (a key for `*` needs admin on every
model); the kill switch needs admin on the model it stops. The audit entry names the principal.
The gateway's own reads (`get`, `all`, `snapshot`) and its automatic suspension on an alarm
(`suspend_on_alarm`, which can only take access away) need no principal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from bastion.audit import AuditEvent, AuditLog
from bastion.db import writer
from bastion.db.tables import serve_disabled_models, serve_keys
from bastion.errors import AccessDenied, ConfigError, NotFound, RegistryError
from bastion.registry.fields import check_grant_target, check_text
from bastion.registry.roles import ANY_MODEL, Action, Principal
from bastion.serve.limits import Quota, RateLimit
from bastion.serve.output import DETAILS

KEY_PREFIX = "bsk"
OPERATIONS = ("infer", "metadata", "token")
ANY = "*"
GATEWAY_ACTOR = "gateway"  # the audit actor of what the gateway does on its own (suspension on an alarm)
DEFAULT_RATE = RateLimit(per_second=10.0, burst=20)  # a person's app, not a crawler
DEFAULT_QUOTA = Quota(daily=10_000, monthly=None)


@dataclass(frozen=True)
class ApiKey:
    """A key as the gateway checks it on every request."""

    key_id: str
    name: str
    secret_hash: bytes
    models: frozenset[str]
    operations: frozenset[str]
    output: str
    precision: int | None
    rate: RateLimit | None
    quota: Quota | None
    expires_at: datetime | None
    revoked: bool
    suspended_reason: str | None

    def allows_model(self, model: str) -> bool:
        return ANY in self.models or model in self.models

    def expired(self, now: float) -> bool:
        """Whether the key has expired at `now`, a Unix time (compared as a number, per request)."""
        return self.expires_at is not None and self.expires_at.timestamp() <= now


@dataclass(frozen=True)
class KeySpec:
    """What a new key may do."""

    name: str
    models: tuple[str, ...] = (ANY,)
    operations: tuple[str, ...] = ("infer", "metadata")
    output: str = "label"
    precision: int | None = None
    rate: RateLimit | None = DEFAULT_RATE
    quota: Quota | None = DEFAULT_QUOTA
    expires_in: timedelta | None = timedelta(days=90)

    def check(self) -> None:
        if not check_text("name", self.name, max_chars=200):
            raise ConfigError("a key needs a name (who holds it), at most 200 characters")
        for model in self.models:
            check_grant_target(model)
        if self.output not in DETAILS:
            raise ConfigError(f"unknown output detail {self.output!r}", hint=f"Use one of: {', '.join(DETAILS)}.")
        unknown = sorted(set(self.operations) - set(OPERATIONS))
        if unknown or not self.operations:
            raise ConfigError(f"unknown operation(s) {unknown}", hint=f"Use some of: {', '.join(OPERATIONS)}.")
        if not self.models:
            raise ConfigError("a key needs at least one model, or '*'")
        if self.precision is not None and not 0 <= self.precision <= 6:
            raise ConfigError("precision is between 0 and 6 decimals")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(text: str) -> tuple[str, str] | None:
    """(key id, secret) of a key's text, or None when it is not shaped like a key."""
    parts = text.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), key.secret_hash)


def _row_to_key(r: RowMapping) -> ApiKey:
    """A key from a `serve_keys` row's mapping."""
    rate = RateLimit(per_second=float(r["rate_per_second"]), burst=int(r["burst"] or 1)) if r["rate_per_second"] else None
    has_quota = r["daily"] is not None or r["monthly"] is not None
    return ApiKey(
        key_id=r["key_id"],
        name=r["name"],
        secret_hash=bytes(r["secret_hash"]),
        models=frozenset(json.loads(r["models"])),
        operations=frozenset(json.loads(r["operations"])),
        output=r["output"],
        precision=r["precision"],
        rate=rate,
        quota=Quota(daily=r["daily"], monthly=r["monthly"]) if has_quota else None,
        expires_at=_utc(r["expires_at"]),
        revoked=bool(r["revoked"]),
        suspended_reason=r["suspended_reason"],
    )


class KeyStore:
    """Keys and disabled models in the database, with every change audited."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self._writes = writer(engine)
        self.audit = audit

    def _record(self, connection: Connection, actor: str, action: str, subject: str, **details: object) -> None:
        self.audit.append(AuditEvent(actor, action, subject, details), connection=connection)

    def create(self, actor: Principal, spec: KeySpec) -> tuple[ApiKey, str]:
        """A new key; its text is returned once and never stored.

        Args:
            actor: the authenticated registry principal asking; it needs admin on every model the
                key may call (admin on every model for a key scoped to `*`).
            spec: what the key may do.

        Raises:
            AccessDenied: `actor` is not admin of every model in `spec.models`.
            ConfigError: `spec` is malformed.
        """
        spec.check()
        _require_admin_of(actor, spec.models, Action.ISSUE_TOKEN)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires = now + spec.expires_in if spec.expires_in is not None else None
        values = {
            "key_id": key_id,
            "secret_hash": hash_secret(secret),
            "name": spec.name,
            "created_at": now,
            "created_by": actor.name,
            "expires_at": expires,
            "revoked": False,
            "suspended_reason": None,
            "models": json.dumps(sorted(spec.models)),
            "operations": json.dumps(sorted(spec.operations)),
            "output": spec.output,
            "precision": spec.precision,
            "rate_per_second": spec.rate.per_second if spec.rate else None,
            "burst": spec.rate.burst if spec.rate else None,
            "daily": spec.quota.daily if spec.quota else None,
            "monthly": spec.quota.monthly if spec.quota else None,
        }
        with self._writes.begin() as connection:
            connection.execute(insert(serve_keys).values(**values))
            self._record(
                connection, actor.name, "key.create", key_id, name=spec.name, models=sorted(spec.models),
                operations=sorted(spec.operations), output=spec.output, precision=spec.precision,
                expires_at=expires.isoformat() if expires else None,
            )
        return self.get(key_id), f"{KEY_PREFIX}_{key_id}_{secret}"

    def get(self, key_id: str) -> ApiKey:
        with self.engine.connect() as connection:
            row = connection.execute(select(serve_keys).where(serve_keys.c.key_id == key_id)).first()
        if row is None:
            raise NotFound(f"no key {key_id!r}")
        return _row_to_key(row._mapping)

    def all(self) -> list[ApiKey]:
        """Every key: the gateway's own read, to check requests (callers on behalf of a person use `listed`)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(serve_keys).order_by(serve_keys.c.created_at))
            return [_row_to_key(r._mapping) for r in rows]

    def listed(self, actor: Principal) -> list[ApiKey]:
        """The keys `actor` administers: those whose every model it holds admin on.

        Raises:
            AccessDenied: `actor` is admin of no model.
        """
        actor.require_somewhere(Action.ISSUE_TOKEN)
        return [key for key in self.all() if _administers(actor, key.models, Action.ISSUE_TOKEN)]

    def _set(self, actor: Principal, key_id: str, action: str, reason: str, **values: object) -> None:
        # A principal that may revoke nothing anywhere learns nothing, not even whether the key exists.
        actor.require_somewhere(Action.REVOKE_TOKEN)
        with self._writes.begin() as connection:
            row = connection.execute(select(serve_keys.c.models).where(serve_keys.c.key_id == key_id)).first()
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            _require_admin_of(actor, json.loads(row.models), Action.REVOKE_TOKEN)
            connection.execute(update(serve_keys).where(serve_keys.c.key_id == key_id).values(**values))
            self._record(connection, actor.name, action, key_id, reason=reason)

    def revoke(self, actor: Principal, key_id: str, reason: str = "") -> None:
        """Revoke a key for good; `actor` needs admin on every model the key may call."""
        self._set(actor, key_id, "key.revoke", reason, revoked=True)

    def suspend(self, actor: Principal, key_id: str, reason: str) -> None:
        """Suspend a key until it is resumed; `actor` needs admin on every model the key may call."""
        self._set(actor, key_id, "key.suspend", reason, suspended_reason=reason or "suspended")

    def resume(self, actor: Principal, key_id: str, reason: str = "") -> None:
        """Lift a suspension; `actor` needs admin on every model the key may call."""
        self._set(actor, key_id, "key.resume", reason, suspended_reason=None)

    def suspend_on_alarm(self, key_id: str, reason: str) -> None:
        """The gateway suspends a key its detectors raised an alarm on, audited as `gateway`.

        No principal: the gateway acts on its own evidence, and this can only take access away.
        """
        with self._writes.begin() as connection:
            done = connection.execute(
                update(serve_keys).where(serve_keys.c.key_id == key_id).values(suspended_reason=reason or "suspended")
            )
            if not done.rowcount:
                raise NotFound(f"no key {key_id!r}")
            self._record(connection, GATEWAY_ACTOR, "key.suspend", key_id, reason=reason)

    def disable_model(self, actor: Principal, model: str, reason: str) -> None:
        """Stop serving `model` on every gateway; `actor` needs admin on `model`."""
        actor.require(Action.REVOKE_TOKEN, model)
        with self._writes.begin() as connection:
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(serve_disabled_models).values(
                            model=model, disabled_at=datetime.now(UTC), disabled_by=actor.name, reason=reason
                        )
                    )
            except IntegrityError:
                raise RegistryError(f"model {model!r} is already disabled") from None
            self._record(connection, actor.name, "model.disable", model, reason=reason)

    def enable_model(self, actor: Principal, model: str, reason: str = "") -> None:
        """Serve `model` again; `actor` needs admin on `model`."""
        actor.require(Action.REVOKE_TOKEN, model)
        with self._writes.begin() as connection:
            done = connection.execute(delete(serve_disabled_models).where(serve_disabled_models.c.model == model))
            if not done.rowcount:
                raise NotFound(f"model {model!r} is not disabled")
            self._record(connection, actor.name, "model.enable", model, reason=reason)

    def disabled_models(self) -> dict[str, str]:
        with self.engine.connect() as connection:
            return {r.model: r.reason for r in connection.execute(select(serve_disabled_models))}

    def snapshot(self) -> tuple[dict[str, ApiKey], dict[str, str]]:
        """Every key by id and every disabled model: what a gateway caches between refreshes."""
        return {k.key_id: k for k in self.all()}, self.disabled_models()


def _administers(actor: Principal, models: Iterable[str], action: Action) -> bool:
    try:
        _require_admin_of(actor, models, action)
    except AccessDenied:
        return False
    return True


def _require_admin_of(actor: Principal, models: Iterable[str], action: Action) -> None:
    """AccessDenied unless `actor` may do `action` on every model (a `*` entry: on every model at all)."""
    if not isinstance(actor, Principal):  # a name string would skip the check: refuse it loudly
        raise TypeError(f"the actor must be an authenticated Principal, not {type(actor).__name__}")
    for model in sorted(set(models)):
        actor.require(action, ANY_MODEL if model == ANY else model)


def key_summary(keys: Sequence[ApiKey]) -> list[dict[str, object]]:
    """Keys as plain data for listings (never the hash)."""
    return [
        {
            "key_id": k.key_id,
            "name": k.name,
            "models": sorted(k.models),
            "operations": sorted(k.operations),
            "output": k.output,
            "precision": k.precision,
            "rate": None if k.rate is None else {"per_second": k.rate.per_second, "burst": k.rate.burst},
            "quota": None if k.quota is None else {"daily": k.quota.daily, "monthly": k.quota.monthly},
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
            "revoked": k.revoked,
            "suspended": k.suspended_reason,
        }
        for k in keys
    ]
