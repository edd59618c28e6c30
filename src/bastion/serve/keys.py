"""The gateway's API keys and accounts: scoped, expiring, revocable, stored hashed; and the model kill switch.

A key's text is `bsk_<id>_<secret>`; only SHA-256 of the secret is kept. Each key carries
its scopes (which models, which operations, how much detail an answer may show), its limits
and quotas in rows, the most rows one request may carry, an expiry, and the account it
belongs to (by default its own name). An account's budget, set once for all its keys, bounds
what they spend together on each model, so ten keys of one owner cannot spend ten budgets.
A throttle set on an alarm is stored with the key, so every replica applies it and a restart
keeps it. Every change is written to the gateway's audit chain in the same transaction.

Who may change keys is decided here, not by the CLI or the admin API: every method that changes
a key or the kill switch takes the authenticated registry `Principal` and checks its role itself,
so a library caller cannot skip the check. Creating a key, or revoking, suspending or resuming
one, needs the admin role on every model the key may call (a key for `*` needs admin on every
model); the kill switch needs admin on the model it stops. The audit entry names the principal.
An account's budget applies to every model its keys call, so setting it needs admin on every
model (`*`). The gateway's own reads (`get`, `all`, `snapshot`, `keys_of_account`,
`account_limits`) and its actions on an alarm (`suspend_on_alarm`, `throttle_on_alarm`, which
can only take access away) need no principal.

`issue_key` is how a person creates a key: it prices the key's budget against the extraction
cost measured for each model it may call (`extraction_prices`, `review_budget`) and, when the
policy says `serve.budget_over_extraction_cost: refuse`, creates nothing if the budget could
copy one of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, NamedTuple

from sqlalchemy import Connection, Engine, RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from bastion.audit import AuditEvent, AuditLog
from bastion.db import snapshot as snapshot_reads
from bastion.db import writer
from bastion.db.tables import serve_accounts, serve_disabled_models, serve_keys
from bastion.errors import AccessDenied, ConfigError, NotFound, RegistryError
from bastion.policy.schema import BudgetAction
from bastion.registry.evidence import parse_assessment
from bastion.registry.fields import check_grant_target, check_text
from bastion.registry.roles import ANY_MODEL, Action, Principal
from bastion.serve.limits import Quota, RateLimit, SubjectLimit
from bastion.serve.output import DETAILS

if TYPE_CHECKING:
    from bastion.registry import Registry

KEY_PREFIX = "bsk"
OPERATIONS = ("infer", "metadata", "token")
ANY = "*"
GATEWAY_ACTOR = "gateway"  # the audit actor of what the gateway does on its own (suspension on an alarm)
DEFAULT_RATE = RateLimit(per_second=10.0, burst=20)  # a person's app, not a crawler: rows per second
DEFAULT_QUOTA = Quota(daily=10_000, monthly=None)  # rows
# Rows one request may carry. 64-row requests leaked 12.8 rows/s through the alarm throttle and
# gave 90 % agreement in the one request that raised the alarm (issue 12); 16 serves an app
# scoring a page of records and lets no single answer copy a model.
DEFAULT_MAX_ROWS: Final = 16
MAX_ROWS: Final = 100_000  # the most any key may be granted (a model's serving.yaml caps batches there too)
MAX_NAME: Final = 200  # the database's name and account columns
EXTRACTION_METRIC: Final = "extraction_queries_95"  # the assessment metric a budget is priced against
BUDGET_HORIZON_DAYS: Final = 30.0  # a budget that copies a model within a month is over its cost


def key_subject(key_id: str) -> str:
    """The limiter's subject for a key: `key:<id>`."""
    return f"key:{key_id}"


def account_subject(account: str) -> str:
    """The limiter's subject for an account: `account:<name>`."""
    return f"account:{account}"


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """An account's budget on each model, shared by all its keys; `None`: no such limit."""

    rate: RateLimit | None = None
    quota: Quota | None = None


@dataclass(frozen=True)
class ApiKey:
    """A key as the gateway checks it on every request.

    `account` is who pays (its keys share the account's budget; by default the key's name).
    `max_rows` is the most rows one request may carry. `throttle`, set by an alarm and kept
    until an operator lifts it, replaces `rate` while set (it is never looser: see
    `KeyStore.throttle_on_alarm`); `effective_rate` is the one to apply.
    """

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
    account: str = ""  # "" in a constructor call: the key's name
    max_rows: int = DEFAULT_MAX_ROWS
    throttle: RateLimit | None = None
    throttle_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.account:
            object.__setattr__(self, "account", self.name)  # frozen: set once, here

    @property
    def effective_rate(self) -> RateLimit | None:
        """The rate limit in force: the alarm's throttle while one is set, else the key's own."""
        return self.rate if self.throttle is None else self.throttle

    def subject_limits(self, account: AccountLimits | None) -> tuple[SubjectLimit, SubjectLimit]:
        """What `Limiter.check_many` charges for this key's request: the key, then its account.

        Args:
            account: the account's budget (`KeyStore.account_limits`, or the snapshot's), or
                `None` for none; the account's use is counted either way.
        """
        return (
            SubjectLimit(key_subject(self.key_id), self.effective_rate, self.quota),
            SubjectLimit(
                account_subject(self.account),
                None if account is None else account.rate,
                None if account is None else account.quota,
            ),
        )

    def allows_model(self, model: str) -> bool:
        return ANY in self.models or model in self.models

    def expired(self, now: float) -> bool:
        """Whether the key has expired at `now`, a Unix time (compared as a number, per request)."""
        return self.expires_at is not None and self.expires_at.timestamp() <= now


@dataclass(frozen=True)
class KeySpec:
    """What a new key may do; `account` `None` makes the key its own account (named `name`),
    `max_rows` `None` gives it `DEFAULT_MAX_ROWS` (and follows that default if it changes)."""

    name: str
    models: tuple[str, ...] = (ANY,)
    operations: tuple[str, ...] = ("infer", "metadata")
    output: str = "label"
    precision: int | None = None
    rate: RateLimit | None = DEFAULT_RATE
    quota: Quota | None = DEFAULT_QUOTA
    expires_in: timedelta | None = timedelta(days=90)
    account: str | None = None
    max_rows: int | None = None

    @property
    def account_name(self) -> str:
        """The account the key will belong to."""
        return self.name if self.account is None else self.account

    def check(self) -> None:
        if not check_text("name", self.name, max_chars=MAX_NAME):
            raise ConfigError("a key needs a name (who holds it), at most 200 characters")
        if self.account is not None:
            _check_account(self.account)
        if self.max_rows is not None and not 1 <= self.max_rows <= MAX_ROWS:
            raise ConfigError(f"max rows per request is between 1 and {MAX_ROWS:,}, got {self.max_rows!r}")
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


def _check_account(account: str) -> None:
    if not check_text("account", account, max_chars=MAX_NAME):
        raise ConfigError("an account needs a name, at most 200 characters", hint="Leave it out to use the key's name.")


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


def _rate_of(per_second: float | None, burst: int | None) -> RateLimit | None:
    return RateLimit(per_second=float(per_second), burst=int(burst or 1)) if per_second else None


def _quota_of(daily: int | None, monthly: int | None) -> Quota | None:
    return Quota(daily=daily, monthly=monthly) if daily is not None or monthly is not None else None


def _row_to_key(r: RowMapping) -> ApiKey:
    """A key from a `serve_keys` row's mapping."""
    return ApiKey(
        key_id=r["key_id"],
        name=r["name"],
        secret_hash=bytes(r["secret_hash"]),
        models=frozenset(json.loads(r["models"])),
        operations=frozenset(json.loads(r["operations"])),
        output=r["output"],
        precision=r["precision"],
        rate=_rate_of(r["rate_per_second"], r["burst"]),
        quota=_quota_of(r["daily"], r["monthly"]),
        expires_at=_utc(r["expires_at"]),
        revoked=bool(r["revoked"]),
        suspended_reason=r["suspended_reason"],
        account=r["account"],
        max_rows=DEFAULT_MAX_ROWS if r["max_rows"] is None else int(r["max_rows"]),
        throttle=_rate_of(r["throttle_per_second"], r["throttle_burst"]),
        throttle_reason=r["throttle_reason"],
    )


def _row_to_account(r: RowMapping) -> AccountLimits:
    return AccountLimits(rate=_rate_of(r["rate_per_second"], r["burst"]), quota=_quota_of(r["daily"], r["monthly"]))


class StoreSnapshot(NamedTuple):
    """One consistent read of what a gateway caches between refreshes (a tuple: `*snapshot` unpacks it)."""

    keys: dict[str, ApiKey]  # every key by id
    disabled: dict[str, str]  # disabled model -> reason
    accounts: dict[str, AccountLimits]  # every account with a budget row, by name


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
            "account": spec.account_name,
            "max_rows": spec.max_rows,
        }
        with self._writes.begin() as connection:
            connection.execute(insert(serve_keys).values(**values))
            self._record(
                connection, actor.name, "key.create", key_id, name=spec.name, models=sorted(spec.models),
                operations=sorted(spec.operations), output=spec.output, precision=spec.precision,
                expires_at=expires.isoformat() if expires else None, account=spec.account_name,
                max_rows=spec.max_rows or DEFAULT_MAX_ROWS, rate=_rate_record(spec.rate), quota=_quota_record(spec.quota),
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
        """Lift a suspension and an alarm's throttle; `actor` needs admin on every model the key may call."""
        self._set(actor, key_id, "key.resume", reason, suspended_reason=None, **_NO_THROTTLE)

    def unthrottle(self, actor: Principal, key_id: str, reason: str = "") -> None:
        """Lift an alarm's throttle (the key's own rate applies again); `actor` needs admin on
        every model the key may call."""
        self._set(actor, key_id, "key.unthrottle", reason, **_NO_THROTTLE)

    def throttle_on_alarm(self, key_id: str, reason: str, rate: RateLimit) -> RateLimit:
        """The gateway slows a key its detectors raised an alarm on, audited as `gateway`.

        No principal: the gateway acts on its own evidence, and this can only restrict. The
        throttle stored is never looser than the key's own rate, nor than a throttle already
        set: each of its rate and burst is the least of theirs and `rate`'s. It stays until
        `unthrottle` or `resume`, on every replica and across restarts.

        Returns:
            The throttle now in force.

        Raises:
            NotFound: no such key.
        """
        with self._writes.begin() as connection:
            row = connection.execute(
                select(serve_keys.c.rate_per_second, serve_keys.c.burst, serve_keys.c.throttle_per_second,
                       serve_keys.c.throttle_burst)
                .where(serve_keys.c.key_id == key_id)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            current = _rate_of(row.throttle_per_second, row.throttle_burst)
            tightest = _tightest(rate, _rate_of(row.rate_per_second, row.burst), current)
            if tightest == current:
                return tightest  # a later alarm never loosens, and an unchanged throttle is no new event
            connection.execute(
                update(serve_keys).where(serve_keys.c.key_id == key_id).values(
                    throttle_per_second=tightest.per_second, throttle_burst=tightest.burst,
                    throttle_reason=reason or "throttled",
                )
            )
            self._record(connection, GATEWAY_ACTOR, "key.throttle", key_id, reason=reason, rate=_rate_record(tightest))
        return tightest

    def keys_of_account(self, account: str) -> list[str]:
        """The ids of every key of `account` (revoked ones too), oldest first: the gateway's read."""
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(serve_keys.c.key_id).where(serve_keys.c.account == account).order_by(serve_keys.c.created_at)
                ).scalars()
            )

    def set_account_limits(self, actor: Principal, account: str, limits: AccountLimits) -> None:
        """Set `account`'s whole budget (a limit left `None` is removed), on every model.

        The budget binds every key of the account on every model it calls, now and later, so
        `actor` needs admin on every model (`*`): a model's admin must not loosen, nor choke,
        what an account spends on models it does not administer.

        Raises:
            AccessDenied: `actor` is not admin of every model.
            ConfigError: the account name is empty or too long.
        """
        _require_admin_of(actor, (ANY,), Action.ISSUE_TOKEN)
        _check_account(account)
        now = datetime.now(UTC)
        values = {
            "rate_per_second": limits.rate.per_second if limits.rate else None,
            "burst": limits.rate.burst if limits.rate else None,
            "daily": limits.quota.daily if limits.quota else None,
            "monthly": limits.quota.monthly if limits.quota else None,
            "updated_at": now,
            "updated_by": actor.name,
        }
        with self._writes.begin() as connection:
            done = connection.execute(update(serve_accounts).where(serve_accounts.c.account == account).values(**values))
            if not done.rowcount:
                # Two admins setting a new account at once: the second insert fails and rolls back.
                connection.execute(
                    insert(serve_accounts).values(account=account, created_at=now, created_by=actor.name, **values)
                )
            self._record(
                connection, actor.name, "account.limits", account, rate=_rate_record(limits.rate),
                quota=_quota_record(limits.quota),
            )

    def account_limits(self, account: str) -> AccountLimits | None:
        """`account`'s budget, or `None` when none was ever set: the gateway's read."""
        with self.engine.connect() as connection:
            row = connection.execute(select(serve_accounts).where(serve_accounts.c.account == account)).first()
        return None if row is None else _row_to_account(row._mapping)

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

    def snapshot(self) -> StoreSnapshot:
        """Every key by id, every disabled model and every account's budget, in one consistent read.

        One transaction (REPEATABLE READ on PostgreSQL, a snapshot on SQLite), so a key and its
        account's budget, or a suspension and a kill switch set together, are seen together.
        """
        with snapshot_reads(self.engine).connect() as connection, connection.begin():
            keys = connection.execute(select(serve_keys).order_by(serve_keys.c.created_at)).all()
            disabled = connection.execute(select(serve_disabled_models.c.model, serve_disabled_models.c.reason)).all()
            accounts = connection.execute(select(serve_accounts)).all()
        return StoreSnapshot(
            keys={r.key_id: _row_to_key(r._mapping) for r in keys},
            disabled={r.model: r.reason for r in disabled},
            accounts={r.account: _row_to_account(r._mapping) for r in accounts},
        )


_NO_THROTTLE: Final = {"throttle_per_second": None, "throttle_burst": None, "throttle_reason": None}


def _tightest(rate: RateLimit, *others: RateLimit | None) -> RateLimit:
    """A rate at least as strict as each given one: the least rate and the least burst."""
    limits = [rate, *(other for other in others if other is not None)]
    return RateLimit(per_second=min(r.per_second for r in limits), burst=min(r.burst for r in limits))


def _rate_record(rate: RateLimit | None) -> dict[str, float] | None:
    return None if rate is None else {"per_second": rate.per_second, "burst": rate.burst}


def _quota_record(quota: Quota | None) -> dict[str, int | None] | None:
    return None if quota is None else {"daily": quota.daily, "monthly": quota.monthly}


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
            "account": k.account,
            "max_rows": k.max_rows,
            "rate": _rate_record(k.rate),
            "quota": _quota_record(k.quota),
            "throttle": None if k.throttle is None else {**(_rate_record(k.throttle) or {}), "reason": k.throttle_reason},
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
            "revoked": k.revoked,
            "suspended": k.suspended_reason,
        }
        for k in keys
    ]


# --- budgets against the price of a model ------------------------------------------------------
#
# No detector stops a thief who needs only the model's extraction cost in answers and spends
# them like a customer (issue 12). What the owner can do is know the cost and grant budgets
# on purpose: a key or account whose budget reaches a model's cost within a month is one that
# can copy it, and is warned about, or refused by policy.

_ANSWERS = {"label": "label-only", "score": "score", "probabilities": "probability"}


@dataclass(frozen=True, slots=True)
class ExtractionPrice:
    """What copying one served model costs: the rows an attacker needs for 95 % agreement.

    Read from the assessment attached to the model's newest version in the serving stage
    (metric `extraction_queries_95`). `queries` is `None` when nothing was measured (`ref` is
    `None` too when no version is in the stage); `more_than` when no attack reached 95 %
    within `queries` rows, so the true cost is higher.
    """

    model: str
    ref: str | None = None
    queries: float | None = None
    output: str = "label"  # the answers the attacks were given
    more_than: bool = False

    @property
    def label(self) -> str:
        """`fraud@3`, or the model's name when no version was found."""
        return self.ref or self.model


@dataclass(frozen=True, slots=True)
class RowBudget:
    """The most rows a budget lets through in a day and in a month (30 days); `None`: no bound.

    A rate limit counts `per_second * 86 400` rows a day; a monthly quota bounds a day too
    (it may all be spent at once).
    """

    per_day: float | None
    per_month: float | None

    @classmethod
    def of(cls, rate: RateLimit | None, quota: Quota | None) -> RowBudget:
        """The budget of a rate limit and a quota, either or both `None`."""
        daily = [float(v) for v in (quota.daily, quota.monthly) if v is not None] if quota else []
        if rate is not None:
            daily.append(rate.per_second * 86_400)
        per_day = min(daily) if daily else None
        monthly = [float(quota.monthly)] if quota is not None and quota.monthly is not None else []
        if per_day is not None:
            monthly.append(per_day * BUDGET_HORIZON_DAYS)
        return cls(per_day, min(monthly) if monthly else None)

    def tighter(self, other: RowBudget) -> RowBudget:
        """What is left when both budgets apply (a key's within its account's)."""
        return RowBudget(_least(self.per_day, other.per_day), _least(self.per_month, other.per_month))

    def days_to_spend(self, rows: float) -> float:
        """Days this budget takes to let `rows` rows through: 0 without bounds."""
        if self.per_day is None:
            return 0.0
        if self.per_month is not None and rows > self.per_month:
            return BUDGET_HORIZON_DAYS * rows / self.per_month
        return rows / self.per_day

    def describe(self) -> str:
        """`10,000 rows/day`, `20,000 rows/month`, or `no rate limit or quota`."""
        if self.per_day is None:
            return "no rate limit or quota"
        if self.per_month is not None and self.per_month < self.per_day * BUDGET_HORIZON_DAYS:
            return f"{self.per_month:,.0f} rows/month"
        return f"{self.per_day:,.0f} rows/day"


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True, slots=True)
class Exposure:
    """A budget that can copy a model within the horizon."""

    holder: str  # "this key" or "account acme"
    price: ExtractionPrice
    budget: RowBudget
    days: float
    output: str | None = None  # the key's answers, when richer than those the cost was measured on

    def message(self) -> str:
        """One line: `at 10,000 rows/day this key can copy fraud@3 (95% agreement after 150 label-only queries) in 0.015 days`."""
        price = self.price
        queries = f"{'more than ' if price.more_than else ''}{price.queries or 0:,.0f}"
        answers = _ANSWERS.get(price.output, price.output)
        when = "at once" if self.budget.per_day is None else f"in {_days(self.days)} days"
        at = f"with {self.budget.describe()}" if self.budget.per_day is None else f"at {self.budget.describe()}"
        text = f"{at} {self.holder} can copy {price.label} (95% agreement after {queries} {answers} queries) {when}"
        if self.output is not None:
            text += f"; its {self.output} answers show more than the {price.output}s measured, so it may need fewer"
        return text


def _days(days: float) -> str:
    if days >= 10:
        return f"{days:,.0f}"
    if days >= 1:
        return f"{days:.1f}"
    return f"{days:.2g}"


@dataclass(frozen=True, slots=True)
class BudgetReview:
    """A budget priced against the models it reaches, and what the policy makes of it."""

    holder: str
    exposures: tuple[Exposure, ...]  # the models it can copy within the horizon
    unmeasured: tuple[ExtractionPrice, ...]  # the models whose cost is not known
    action: BudgetAction = BudgetAction.WARN

    @property
    def refused(self) -> bool:
        """The policy refuses this budget: it can copy a model, under `refuse`."""
        return bool(self.exposures) and self.action is BudgetAction.REFUSE

    def notes(self) -> tuple[str, ...]:
        """The exposures' messages, then one line for every model whose cost is not measured."""
        lines = [exposure.message() for exposure in self.exposures]
        if self.unmeasured:
            named = ", ".join(
                price.label if price.ref else f"{price.model} (no version in the stage)" for price in self.unmeasured
            )
            lines.append(f"extraction cost not measured for {named}")
        return tuple(lines)


def review_budget(
    holder: str,
    budget: RowBudget,
    prices: Iterable[ExtractionPrice],
    *,
    horizon_days: float = BUDGET_HORIZON_DAYS,
    output: str | None = None,
    action: BudgetAction = BudgetAction.WARN,
) -> BudgetReview:
    """Which of the priced models `budget` can copy within `horizon_days`: a pure function.

    Args:
        holder: how messages name the budget's holder ("this key", "account acme").
        budget: the rows the holder may be answered.
        prices: the models it may call, with their measured costs.
        horizon_days: the window; a budget that spends a model's cost within it is over the cost.
        output: the key's answer detail, to say when it is richer than what was measured.
        action: the policy's `serve.budget_over_extraction_cost`.

    Example:
        >>> review = review_budget("this key", RowBudget.of(None, Quota(daily=10_000)),
        ...                        [ExtractionPrice("fraud", "fraud@3", 150.0)])
        >>> review.notes()[0]
        'at 10,000 rows/day this key can copy fraud@3 (95% agreement after 150 label-only queries) in 0.015 days'
    """
    exposures, unmeasured = [], []
    for price in prices:
        if price.queries is None:
            unmeasured.append(price)
            continue
        days = budget.days_to_spend(price.queries)
        if days <= horizon_days:
            richer = output if output is not None and DETAILS.index(output) > DETAILS.index(price.output) else None
            exposures.append(Exposure(holder, price, budget, days, richer))
    return BudgetReview(holder, tuple(exposures), tuple(unmeasured), action)


def serving_stage(registry: Registry) -> str:
    """The stage the gateway serves by default: `production`, or the policy's last stage without one."""
    return "production" if "production" in registry.stages else registry.stages[-1]


def extraction_prices(
    registry: Registry, actor: Principal, models: Iterable[str], *, stage: str | None = None
) -> tuple[ExtractionPrice, ...]:
    """The extraction cost of each model, from its newest version in `stage`'s assessment.

    Args:
        registry: where the models are.
        actor: who asks; it needs read on each model (`*`: the models it may read).
        models: model names, or `*` for every model with a version in `stage`.
        stage: the serving stage (default: `serving_stage`).

    Returns:
        One price per model, sorted by name; `queries` `None` where no version is in the stage
        or its assessment holds no `extraction_queries_95`.

    Raises:
        AccessDenied: `actor` may not read a named model.
        IntegrityFailure: an assessment's stored bytes are not those registered (audited).
    """
    stage = stage or serving_stage(registry)
    names = set(models)
    if ANY in names:
        names.discard(ANY)
        names |= {summary.name for summary in registry.models(actor) if stage in dict(summary.stages)}
    prices = []
    for model in sorted(names):
        try:
            version = registry.newest_in(actor, model, stage)
        except NotFound:
            prices.append(ExtractionPrice(model))
            continue
        if version.assessment_blob is None:
            prices.append(ExtractionPrice(model, version.ref))
            continue
        data = registry.read_recorded_blob(actor, version.assessment_blob, f"the assessment of {version.ref}")
        prices.append(_price_of(model, version.ref, data, {f.digest for f in version.files}))
    return tuple(prices)


def _price_of(model: str, ref: str, data: bytes, model_digests: set[str]) -> ExtractionPrice:
    try:
        queries = parse_assessment(data, model_digests).get(EXTRACTION_METRIC)
        raw = json.loads(data)
    except ValueError:  # not JSON, or not an object: nothing measured that can be read
        return ExtractionPrice(model, ref)
    if queries is None or not math.isfinite(queries) or queries <= 0:
        return ExtractionPrice(model, ref)
    details = raw.get("extraction")
    details = details if isinstance(details, dict) else {}
    settings = details.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    output = details.get("output", settings.get("output", "label"))
    max_queries = details.get("max_queries", settings.get("max_queries"))
    output = output if output in DETAILS else "label"
    # The assessment writes "not reached within max_queries" as 2 * max_queries; the cost is more
    # than max_queries, and max_queries is the figure a defender can rely on.
    if isinstance(max_queries, int | float) and not isinstance(max_queries, bool) and 0 < max_queries < queries:
        return ExtractionPrice(model, ref, float(max_queries), output, more_than=True)
    return ExtractionPrice(model, ref, queries, output)


def _horizon(expires_in: timedelta | None) -> float:
    return min(BUDGET_HORIZON_DAYS, expires_in.total_seconds() / 86_400) if expires_in else BUDGET_HORIZON_DAYS


def review_key(
    registry: Registry, actor: Principal, store: KeyStore, spec: KeySpec, *, stage: str | None = None
) -> BudgetReview:
    """A new key's budget (within its account's, if set) against the models it may call.

    Raises:
        AccessDenied: `actor` may not create the key.
        ConfigError: `spec` is malformed.
    """
    spec.check()
    _require_admin_of(actor, spec.models, Action.ISSUE_TOKEN)
    budget = RowBudget.of(spec.rate, spec.quota)
    account = store.account_limits(spec.account_name)
    if account is not None:
        budget = budget.tighter(RowBudget.of(account.rate, account.quota))
    return review_budget(
        "this key", budget, extraction_prices(registry, actor, spec.models, stage=stage),
        horizon_days=_horizon(spec.expires_in), output=spec.output,
        action=registry.policy.serve.budget_over_extraction_cost,
    )


@dataclass(frozen=True)
class IssuedKey:
    """The outcome of `issue_key`: the review, and the key unless the policy refused it."""

    review: BudgetReview
    key: ApiKey | None = None
    text: str | None = field(default=None, repr=False)  # the key's text, shown once


def issue_key(
    registry: Registry, actor: Principal, store: KeyStore, spec: KeySpec, *, stage: str | None = None
) -> IssuedKey:
    """Create a key, unless the policy refuses a budget that can copy a model it may call.

    The key's budget (bounded by its account's) is priced against each model's extraction
    cost (`review_key`); under `serve.budget_over_extraction_cost: refuse` a budget that spends
    a cost within a month (or the key's lifetime, if shorter) creates nothing.

    Raises:
        AccessDenied: `actor` may not create the key.
        ConfigError: `spec` is malformed.
    """
    review = review_key(registry, actor, store, spec, stage=stage)
    if review.refused:
        return IssuedKey(review)
    key, text = store.create(actor, spec)
    return IssuedKey(review, key, text)


def review_account(
    registry: Registry, actor: Principal, store: KeyStore, account: str, limits: AccountLimits,
    *, stage: str | None = None,
) -> BudgetReview:
    """An account budget against the models its keys may call (every model, if one may call `*`
    or it has no key yet: the budget binds keys made later too)."""
    models: set[str] = set()
    for key_id in store.keys_of_account(account):
        key = store.get(key_id)
        if not key.revoked:
            models |= key.models
    return review_budget(
        f"account {account}", RowBudget.of(limits.rate, limits.quota),
        extraction_prices(registry, actor, models or {ANY}, stage=stage),
        action=registry.policy.serve.budget_over_extraction_cost,
    )


def set_account_budget(
    registry: Registry, actor: Principal, store: KeyStore, account: str, limits: AccountLimits,
    *, stage: str | None = None,
) -> BudgetReview:
    """Set an account's budget unless the policy refuses one that can copy a model; see `issue_key`.

    Raises:
        AccessDenied: `actor` is not admin of every model.
        ConfigError: the account name is empty or too long.
    """
    _require_admin_of(actor, (ANY,), Action.ISSUE_TOKEN)
    _check_account(account)
    review = review_account(registry, actor, store, account, limits, stage=stage)
    if not review.refused:
        store.set_account_limits(actor, account, limits)
    return review
