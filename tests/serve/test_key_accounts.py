"""Keys belong to accounts, carry rows per request and a throttle that outlives the process.

Run on a real PostgreSQL registry (a fresh database each): a key is its own account unless
told otherwise, gets 16 rows per request by default, keeps an alarm's throttle in the database
(so every replica and a restarted gateway apply it) until an administrator lifts it, and an
account's budget is set only by an administrator of every model. Every change is audited.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.audit import AuditLog
from bastion.errors import AccessDenied, ConfigError, NotFound
from bastion.serve.keys import (
    DEFAULT_MAX_ROWS,
    GATEWAY_ACTOR,
    AccountLimits,
    KeySpec,
    KeyStore,
    StoreSnapshot,
    key_summary,
)
from bastion.serve.limits import Quota, RateLimit, SubjectLimit
from bastion.serve.run import AUDIT_CHAIN
from serve.accounts_env import KeysEnv, keys_env

ALARM = RateLimit(per_second=0.2, burst=1)  # the gateway's THROTTLED


@pytest.fixture
def env(tmp_path: Path) -> Iterator[KeysEnv]:
    with keys_env(tmp_path) as made:
        yield made


def test_a_key_is_its_own_account_with_16_rows_per_request_by_default(env: KeysEnv) -> None:
    key, _text = env.store.create(env.admin, KeySpec("mobile-app"))
    assert (key.account, key.max_rows, key.throttle) == ("mobile-app", DEFAULT_MAX_ROWS, None)
    assert DEFAULT_MAX_ROWS == 16
    stored = env.store.get(key.key_id)
    assert (stored.account, stored.max_rows) == ("mobile-app", 16)


def test_account_and_max_rows_are_stored_and_audited(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("batch-scorer", account="acme", max_rows=64))
    assert (env.store.get(key.key_id).account, env.store.get(key.key_id).max_rows) == ("acme", 64)
    [(actor, action, subject, details)] = env.audited()
    assert (actor, action, subject) == ("root", "key.create", key.key_id)
    assert (details["account"], details["max_rows"]) == ("acme", 64)
    assert details["rate"] == {"per_second": 10.0, "burst": 20} and details["quota"] == {"daily": 10_000, "monthly": None}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (KeySpec("app", max_rows=0), "max rows per request is between 1 and 100,000"),
        (KeySpec("app", max_rows=100_001), "max rows per request is between 1 and 100,000"),
        (KeySpec("app", account=""), "an account needs a name"),
        (KeySpec("app", account="a" * 201), "at most 200 are accepted"),
    ],
)
def test_a_malformed_account_or_row_limit_creates_nothing(env: KeysEnv, spec: KeySpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        env.store.create(env.admin, spec)
    assert env.store.all() == [] and env.audited() == []


def test_an_alarms_throttle_is_kept_in_the_database_and_audited_as_the_gateway(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("app"))

    in_force = env.store.throttle_on_alarm(key.key_id, "alarm extraction.out-of-distribution", ALARM)

    assert in_force == ALARM
    # A store opened afresh (another replica, or this gateway after a restart) sees it.
    restarted = KeyStore(env.registry.engine, AuditLog(env.registry.engine, AUDIT_CHAIN))
    seen = restarted.get(key.key_id)
    assert (seen.throttle, seen.throttle_reason) == (ALARM, "alarm extraction.out-of-distribution")
    assert seen.effective_rate == ALARM and seen.rate == RateLimit(10.0, 20)
    assert restarted.snapshot().keys[key.key_id].throttle == ALARM
    assert env.audited()[-1] == (
        GATEWAY_ACTOR, "key.throttle", key.key_id,
        {"reason": "alarm extraction.out-of-distribution", "rate": {"per_second": 0.2, "burst": 1}},
    )


def test_a_throttle_only_ever_tightens(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("app", rate=RateLimit(per_second=0.1, burst=5)))

    first = env.store.throttle_on_alarm(key.key_id, "first alarm", ALARM)  # looser rate than the key's own
    again = env.store.throttle_on_alarm(key.key_id, "second alarm", RateLimit(per_second=100.0, burst=50))
    tighter = env.store.throttle_on_alarm(key.key_id, "third alarm", RateLimit(per_second=0.01, burst=3))

    assert first == RateLimit(per_second=0.1, burst=1)  # the key's rate, the alarm's burst
    assert again == first  # an alarm cannot loosen what is in force
    assert tighter == RateLimit(per_second=0.01, burst=1)
    assert env.store.get(key.key_id).throttle == tighter
    throttles = [(details["reason"], details["rate"]) for _, action, _, details in env.audited() if action == "key.throttle"]
    assert throttles == [  # the unchanged second one is no new event
        ("first alarm", {"per_second": 0.1, "burst": 1}),
        ("third alarm", {"per_second": 0.01, "burst": 1}),
    ]


def test_throttling_an_unknown_key_is_not_found(env: KeysEnv) -> None:
    with pytest.raises(NotFound, match="no key '0123456789abcdef'"):
        env.store.throttle_on_alarm("0123456789abcdef", "alarm", ALARM)
    assert env.audited() == []


def test_only_an_admin_of_the_keys_models_lifts_a_throttle(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("fraud-app", models=("fraud",)))
    env.store.throttle_on_alarm(key.key_id, "alarm", ALARM)
    reader = env.principal("rita", "reader")
    other_admin = env.principal("sam", "admin", "sentiment")

    with pytest.raises(AccessDenied, match=r"rita may not token.revoke on any model"):
        env.store.unthrottle(reader, key.key_id, "please")
    with pytest.raises(AccessDenied, match=r"sam \(no role\) may not token.revoke on model 'fraud'"):
        env.store.unthrottle(other_admin, key.key_id, "please")
    assert env.store.get(key.key_id).throttle == ALARM

    env.store.unthrottle(env.admin, key.key_id, "false alarm: a nightly re-score")

    after = env.store.get(key.key_id)
    assert (after.throttle, after.throttle_reason, after.effective_rate) == (None, None, RateLimit(10.0, 20))
    assert env.audited()[-1] == ("root", "key.unthrottle", key.key_id, {"reason": "false alarm: a nightly re-score"})


def test_resume_lifts_a_suspension_and_a_throttle(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("app"))
    env.store.throttle_on_alarm(key.key_id, "alarm", ALARM)
    env.store.suspend_on_alarm(key.key_id, "alarm")

    env.store.resume(env.admin, key.key_id, "checked")

    after = env.store.get(key.key_id)
    assert (after.suspended_reason, after.throttle) == (None, None)


def test_keys_of_an_account_are_listed_oldest_first(env: KeysEnv) -> None:
    first, _ = env.store.create(env.admin, KeySpec("web", account="acme"))
    env.store.create(env.admin, KeySpec("other", account="globex"))
    second, _ = env.store.create(env.admin, KeySpec("batch", account="acme"))
    env.store.revoke(env.admin, second.key_id, "rotated")
    lonely, _ = env.store.create(env.admin, KeySpec("acme-2"))

    assert env.store.keys_of_account("acme") == [first.key_id, second.key_id]
    assert env.store.keys_of_account("acme-2") == [lonely.key_id]
    assert env.store.keys_of_account("nobody") == []


def test_an_accounts_budget_needs_admin_of_every_model(env: KeysEnv) -> None:
    fraud_admin = env.principal("olga", "admin", "fraud")
    budget = AccountLimits(rate=RateLimit(5.0, 40), quota=Quota(daily=2_000, monthly=20_000))

    with pytest.raises(AccessDenied, match=r"olga \(no role\) may not token.issue on every model"):
        env.store.set_account_limits(fraud_admin, "acme", budget)
    assert env.store.account_limits("acme") is None

    env.store.set_account_limits(env.admin, "acme", budget)
    assert env.store.account_limits("acme") == budget
    # The whole budget is replaced: what is left out is removed.
    env.store.set_account_limits(env.admin, "acme", AccountLimits(quota=Quota(daily=500)))
    assert env.store.account_limits("acme") == AccountLimits(rate=None, quota=Quota(daily=500))
    assert [(a, act, s) for a, act, s, _ in env.audited()] == [("root", "account.limits", "acme")] * 2
    assert env.audited()[0][3] == {
        "rate": {"per_second": 5.0, "burst": 40}, "quota": {"daily": 2_000, "monthly": 20_000},
    }


def test_an_account_needs_a_name(env: KeysEnv) -> None:
    with pytest.raises(ConfigError, match="an account needs a name"):
        env.store.set_account_limits(env.admin, "", AccountLimits(quota=Quota(daily=1)))


def test_the_snapshot_holds_keys_kill_switches_and_account_budgets(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("web", account="acme"))
    env.store.throttle_on_alarm(key.key_id, "alarm", ALARM)
    env.store.set_account_limits(env.admin, "acme", AccountLimits(quota=Quota(daily=100)))
    env.store.disable_model(env.admin, "fraud", "incident 7")

    snapshot = env.store.snapshot()

    assert isinstance(snapshot, StoreSnapshot)
    keys, disabled, accounts = snapshot  # unpacks as the gateway's `_apply(ticket, *snapshot)` takes it
    assert list(keys) == [key.key_id] and keys[key.key_id].throttle == ALARM
    assert disabled == {"fraud": "incident 7"}
    assert accounts == {"acme": AccountLimits(quota=Quota(daily=100))}


def test_a_keys_subject_limits_are_its_own_then_its_accounts(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("web", account="acme", quota=Quota(daily=50)))
    budget = AccountLimits(rate=RateLimit(2.0, 30), quota=Quota(monthly=9_000))
    assert key.subject_limits(budget) == (
        SubjectLimit(f"key:{key.key_id}", RateLimit(10.0, 20), Quota(daily=50)),
        SubjectLimit("account:acme", RateLimit(2.0, 30), Quota(monthly=9_000)),
    )
    env.store.throttle_on_alarm(key.key_id, "alarm", ALARM)
    throttled = env.store.get(key.key_id).subject_limits(None)
    assert throttled == (SubjectLimit(f"key:{key.key_id}", ALARM, Quota(daily=50)), SubjectLimit("account:acme"))


def test_listings_show_account_rows_and_throttle(env: KeysEnv) -> None:
    key, _ = env.store.create(env.admin, KeySpec("web", account="acme", max_rows=4))
    env.store.throttle_on_alarm(key.key_id, "alarm extraction.near-duplicate", ALARM)
    [row] = key_summary(env.store.listed(env.admin))
    assert (row["account"], row["max_rows"]) == ("acme", 4)
    assert row["throttle"] == {"per_second": 0.2, "burst": 1, "reason": "alarm extraction.near-duplicate"}
