"""`bastion keys create|list|account|unthrottle` as an operator runs them, on a PostgreSQL registry.

`create` prices the key's budget against each model's measured extraction cost and warns on
stderr, or, under the policy's `refuse`, exits 1 having created nothing; `account` sets an
account's budget the same way; `unthrottle` lifts an alarm's throttle; `list` shows account,
rows per request and throttle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.serve.keys import AccountLimits
from bastion.serve.limits import Quota, RateLimit
from corpus.hang_guard import HANG_GUARD
from serve.accounts_env import KeysEnv, assessment, keys_env


def _bastion(env: KeysEnv, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "BASTION_REGISTRY": str(env.home), "BASTION_TOKEN": token or env.admin_token}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args], env=variables, capture_output=True, text=True,
        timeout=HANG_GUARD, check=False,
    )


def test_create_warns_that_the_key_can_copy_a_model_and_creates_it(tmp_path: Path) -> None:
    with keys_env(tmp_path) as env:
        env.publish("fraud", assessment(150.0))
        env.publish("plain", None)
        env.publish("bare", None)

        done = _bastion(env, "keys", "create", "web", "--account", "acme", "--max-rows", "8", "--format", "json")

        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        assert (created["account"], created["max_rows"], created["throttle"]) == ("acme", 8, None)
        assert created["key"].startswith(f"bsk_{created['key_id']}_")
        assert done.stderr.splitlines() == [
            "warning: at 10,000 rows/day this key can copy fraud@1 (95% agreement after 150 label-only queries) "
            "in 0.015 days",
            "note: extraction cost not measured for bare@1, plain@1",
        ]
        assert [k.account for k in env.store.all()] == ["acme"]


def test_create_under_refuse_exits_1_and_creates_nothing(tmp_path: Path) -> None:
    with keys_env(tmp_path, budget_action="refuse") as env:
        env.publish("fraud", assessment(150.0))

        done = _bastion(env, "keys", "create", "web", "--model", "fraud", "--daily", "1000")

        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.startswith(
            "refused: at 1,000 rows/day this key can copy fraud@1 (95% agreement after 150 label-only queries) in 0.15 days\n"
            "hint: the policy says serve.budget_over_extraction_cost: refuse"
        )
        assert env.store.all() == []

        small = _bastion(env, "keys", "create", "web", "--model", "fraud", "--daily", "4", "--rate", "1", "--burst", "4")
        assert small.returncode == 0, small.stderr
        assert small.stderr == ""


def test_list_shows_account_rows_per_request_and_throttle(tmp_path: Path) -> None:
    with keys_env(tmp_path) as env:
        _bastion(env, "keys", "create", "web", "--account", "acme", "--max-rows", "4")
        _bastion(env, "keys", "create", "batch")
        web, batch = env.store.all()
        env.store.throttle_on_alarm(web.key_id, "alarm", RateLimit(0.2, 1))

        done = _bastion(env, "keys", "list")

        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith(f"{web.key_id}  web ")
        assert "account=acme" in lines[0] and "max_rows=4" in lines[0] and lines[0].endswith("THROTTLED(0.2/s burst 1)")
        assert lines[1].startswith(f"{batch.key_id}  batch ")
        assert "account=batch" in lines[1] and "max_rows=16" in lines[1] and lines[1].endswith("active")


def test_unthrottle_lifts_an_alarms_throttle(tmp_path: Path) -> None:
    with keys_env(tmp_path) as env:
        _bastion(env, "keys", "create", "web")
        [key] = env.store.all()
        env.store.throttle_on_alarm(key.key_id, "alarm", RateLimit(0.2, 1))
        reader = env.token_of("rita", "reader")

        denied = _bastion(env, "keys", "unthrottle", key.key_id, token=reader)
        assert denied.returncode == 2 and "rita may not token.revoke on any model" in denied.stderr
        assert env.store.get(key.key_id).throttle is not None

        done = _bastion(env, "keys", "unthrottle", key.key_id, "--reason", "a nightly re-score")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"unthrottle: {key.key_id} (gateways apply it within a second)"
        assert env.store.get(key.key_id).throttle is None


def test_account_sets_a_budget_and_warns_like_create(tmp_path: Path) -> None:
    with keys_env(tmp_path) as env:
        env.publish("fraud", assessment(150.0))

        done = _bastion(env, "keys", "account", "acme", "--daily", "500", "--rate", "2", "--burst", "40")

        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "account acme: 2 rows/s, burst 40, 500 rows/day (gateways apply it within a second)"
        assert done.stderr.splitlines() == [
            "warning: at 500 rows/day account acme can copy fraud@1 (95% agreement after 150 label-only queries) in 0.3 days",
        ]
        assert env.store.account_limits("acme") == AccountLimits(rate=RateLimit(2.0, 40), quota=Quota(daily=500))


def test_account_under_refuse_exits_1_and_keeps_the_budget(tmp_path: Path) -> None:
    with keys_env(tmp_path, budget_action="refuse") as env:
        env.publish("fraud", assessment(150.0))
        env.store.set_account_limits(env.admin, "acme", AccountLimits(quota=Quota(monthly=100)))

        done = _bastion(env, "keys", "account", "acme", "--daily", "500")

        assert done.returncode == 1 and done.stderr.startswith("refused: at 500 rows/day account acme can copy fraud@1")
        assert env.store.account_limits("acme") == AccountLimits(quota=Quota(monthly=100))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give at least one of --daily, --monthly, --rate"),
        (("--rate", "5"), "--rate and --burst go together"),
        (("--daily", "5", "--burst", "5"), "--rate and --burst go together"),
    ],
)
def test_account_without_a_budget_is_a_usage_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    with keys_env(tmp_path) as env:
        done = _bastion(env, "keys", "account", "acme", *args)
        assert done.returncode == 2 and message in done.stderr
        assert env.store.account_limits("acme") is None


def test_account_needs_admin_of_every_model(tmp_path: Path) -> None:
    with keys_env(tmp_path) as env:
        done = _bastion(env, "keys", "account", "acme", "--daily", "5", token=env.token_of("olga", "admin", "fraud"))
        assert done.returncode == 2 and "olga (no role) may not token.issue on every model" in done.stderr
        assert env.store.account_limits("acme") is None


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (("keys",), ("count rows", "account")),
        (("keys", "create"), ("extraction_queries_95", "budget_over_extraction_cost: refuse", "--max-rows",
                              "[default: 16", "--account", "Rows per UTC day")),
        (("keys", "account"), ("a limit not given is removed", "admin", "budget_over_extraction_cost")),
        (("keys", "unthrottle"), ("Lift an alarm's throttle",)),
        (("keys", "resume"), ("any alarm's throttle",)),
    ],
)
def test_help_explains_rows_accounts_and_the_price_check(command: tuple[str, ...], phrases: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *command, "--help"], capture_output=True, text=True,
        timeout=HANG_GUARD, check=False,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for phrase in phrases:
        assert phrase in text, phrase
