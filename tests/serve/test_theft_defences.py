"""The gateway against model theft, over real HTTP: rows are charged, accounts have budgets (set
by the owner or from the model's measured extraction cost), label-only keys send few rows per
request, and a request whose rows raise an alarm gets no answer.

A real gateway on 127.0.0.1 with the inline observer (alarms act on the very next request) and
the signed ONNX logistic regression of `corpus.serving`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from bastion.serve.gateway import AlarmPolicy
from bastion.serve.keys import DEFAULT_MAX_ROWS, AccountLimits
from bastion.serve.limits import Quota, RateLimit
from bastion.serve.run import GatewaySettings
from corpus.gateway_env import (
    ONNX,
    RegistryEnv,
    RunningGateway,
    assert_refused,
    bearer,
    built_models,
    infer_body,
    make_registry,
    rows,
    start_gateway,
)
from corpus.hang_guard import HANG_GUARD
from corpus.redis_env import RedisSpace

FAST = RateLimit(per_second=100_000.0, burst=100_000)
COSTED = "costed"  # the model registered with an assessment that gives its extraction cost
EXTRACTION_COST = 40  # rows for 95 % agreement, as its assessment says


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@dataclass
class World:
    env: RegistryEnv
    gateway: RunningGateway

    def infer(self, key: str, data: list[list[float]], model: str = ONNX) -> httpx.Response:
        with httpx.Client(base_url=self.gateway.url, timeout=HANG_GUARD) as client:
            return client.post(f"/v2/models/{model}/infer", json=infer_body(data), headers=bearer(key))

    def key(self, name: str, **spec: object) -> tuple[str, str]:
        spec.setdefault("rate", FAST)
        spec.setdefault("quota", None)
        key, text = self.gateway.key(name, **spec)
        return key.key_id, text


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> RegistryEnv:
    built = built_models(shared_dir(tmp_path_factory))
    home = tmp_path_factory.mktemp("theft")
    env = make_registry(home / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))
    report = home / "assessment.json"
    report.write_text(json.dumps({"schema": "bastion.assessment/1", "extraction_queries_95": EXTRACTION_COST}))
    env.publish(COSTED, built.folder("onnx"), assessment=report)
    return env


def serve(env: RegistryEnv) -> RunningGateway:
    settings = GatewaySettings(models=(ONNX, COSTED), alarm_policy=AlarmPolicy(action="suspend"))
    gateway = start_gateway(env.registry, env.admin, settings)
    assert gateway.assembled.refused == {}
    return gateway


@pytest.fixture(scope="module")
def world(env: RegistryEnv) -> Iterator[World]:
    """One gateway for the tests of limits (typical rows only: no alarm)."""
    gateway = serve(env)
    try:
        yield World(env, gateway)
    finally:
        gateway.stop()


@pytest.fixture
def fresh(env: RegistryEnv) -> Iterator[World]:
    """A gateway of the test's own: its streams have raised no alarm yet."""
    gateway = serve(env)
    try:
        yield World(env, gateway)
    finally:
        gateway.stop()


def marginal_rows(count: int, seed: int) -> list[list[float]]:
    """Rows whose every feature is drawn on its own from the training data's marginal: what an
    attacker who knows only the published per-feature distribution sends."""
    from corpus.serving import dataset  # noqa: PLC0415

    x = dataset().x_train
    rng = np.random.default_rng(seed)
    picked = np.stack([x[rng.integers(0, len(x), count), j] for j in range(x.shape[1])], axis=1)
    return [[round(float(v), 4) for v in row] for row in picked]


def test_a_default_key_is_refused_a_64_row_request_and_answered_16(world: World) -> None:
    _, text = world.key("batcher")
    assert DEFAULT_MAX_ROWS < 64
    refused = world.infer(text, rows(64))
    assert_refused(refused, 400, "too-many-rows")
    assert str(DEFAULT_MAX_ROWS) in refused.json()["error"]
    answered = world.infer(text, rows(DEFAULT_MAX_ROWS))
    assert answered.status_code == 200, answered.text
    assert len(answered.json()["outputs"][0]["data"]) == DEFAULT_MAX_ROWS


def test_quotas_are_charged_in_rows_not_requests(world: World) -> None:
    _, text = world.key("rows", quota=Quota(daily=40))
    assert world.infer(text, rows(16)).status_code == 200
    assert world.infer(text, rows(16)).status_code == 200
    assert_refused(world.infer(text, rows(16)), 429, "daily-quota")  # 48 rows > 40: refused, nothing charged
    assert world.infer(text, rows(8)).status_code == 200  # exactly 40
    assert_refused(world.infer(text, rows(1)), 429, "daily-quota")


def test_the_rate_limit_is_charged_in_rows(world: World) -> None:
    _, text = world.key("rate", rate=RateLimit(per_second=0.001, burst=20))
    assert world.infer(text, rows(16)).status_code == 200
    assert_refused(world.infer(text, rows(8)), 429, "rate")  # 24 rows > a burst of 20
    assert world.infer(text, rows(4)).status_code == 200


def test_keys_of_one_account_share_its_budget(world: World) -> None:
    store = world.gateway.assembled.gateway.store
    store.set_account_limits(world.gateway.caller, "acme", AccountLimits(quota=Quota(monthly=24)))
    _, first = world.key("acme-1", account="acme")
    _, second = world.key("acme-2", account="acme")
    assert world.infer(first, rows(16)).status_code == 200
    refused = world.infer(second, rows(16))  # the key has no quota; the account has 8 rows left
    assert refused.status_code == 429, refused.text
    assert world.infer(second, rows(8)).status_code == 200
    assert world.infer(first, rows(1)).status_code == 429


def test_an_account_without_a_budget_gets_one_from_the_extraction_cost(world: World) -> None:
    _, text = world.key("costed-caller", account="costed-account")
    budget = EXTRACTION_COST // 2  # the default share, 0.5
    assert world.infer(text, rows(16), COSTED).status_code == 200
    refused = world.infer(text, rows(budget - 16 + 1), COSTED)
    assert refused.status_code == 429, refused.text
    assert world.infer(text, rows(budget - 16), COSTED).status_code == 200
    assert world.infer(text, rows(1), COSTED).status_code == 429
    # The model without a measured cost sets no account budget.
    for _ in range(4):
        assert world.infer(text, rows(16)).status_code == 200


def answered_rows(env: RegistryEnv, key_id: str) -> int:
    entries = env.audit_entries()
    return sum(int(e.details.get("rows", 0)) for e in entries if e.actor == key_id and e.action == "infer")


def test_the_request_that_raises_an_alarm_is_not_answered_under_suspend(fresh: World) -> None:
    world = fresh
    key_id, text = world.key("thief", account="thief-co")
    statuses = []
    for seed in range(40):
        answer = world.infer(text, marginal_rows(16, seed))
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            assert_refused(answer, 403, "suspended")
            break
    assert statuses[-1] == 403, f"no alarm in {len(statuses) * 16} marginal rows"
    world.gateway.assembled.observer.close()
    alarms = [e for e in world.env.audit_entries() if e.action == "alarm" and key_id in (e.details.get("keys") or [e.actor])]
    assert alarms, "the alarm was not recorded"
    # Every request before the alarming one was answered, and the alarming one was not.
    assert answered_rows(world.env, key_id) == 16 * (len(statuses) - 1)
    assert_refused(world.infer(text, rows(1)), 403, "suspended")


def test_ten_keys_of_one_account_add_up_to_one_caller(fresh: World) -> None:
    world = fresh
    keys = [world.key(f"sybil-{i}", account="sybil-co") for i in range(10)]
    refused_at = None
    for step in range(19):
        for i, (_, text) in enumerate(keys):
            answer = world.infer(text, marginal_rows(1, 1000 + step * 10 + i))
            if answer.status_code != 200:
                refused_at = step * 10 + i
                break
        if refused_at is not None:
            break
    assert refused_at is not None, "ten keys x 19 marginal rows raised no refusal"
    # The account's alarm suspends every key of the account.
    for _, text in keys:
        assert_refused(world.infer(text, rows(1)), 403, "suspended")


def test_two_replicas_share_budgets_and_throttles_and_a_restart_keeps_the_throttle(
    env: RegistryEnv, space: RedisSpace
) -> None:
    """Acceptance 4: one Redis, two replicas. The account budget is one budget whichever replica
    is asked; a throttle an alarm set on one replica holds on the other, and on a replica
    started afterwards."""
    settings = GatewaySettings(models=(ONNX, COSTED), redis_url=space.url, redis_prefix=space.prefix,
                               alarm_policy=AlarmPolicy(action="throttle"))
    a = start_gateway(env.registry, env.admin, settings)
    b = start_gateway(env.registry, env.admin, settings)
    try:
        first, second = World(env, a), World(env, b)
        # The budget: 40 rows for the account on either replica, keys made on A.
        a.assembled.gateway.store.set_account_limits(a.caller, "replicated", AccountLimits(quota=Quota(daily=40)))
        _, text = first.key("replicated-1", account="replicated")
        b.assembled.gateway.refresh()
        assert first.infer(text, rows(16)).status_code == 200
        assert second.infer(text, rows(16)).status_code == 200
        assert_refused(second.infer(text, rows(16)), 429, "account-daily-quota")
        assert_refused(first.infer(text, rows(16)), 429, "account-daily-quota")
        # The throttle: an alarm on A (marginal rows), then B and a restarted replica keep it.
        thief_id, thief = first.key("replicated-thief", account="replicated-thief")
        for seed in range(40):
            if first.infer(thief, marginal_rows(8, 500 + seed)).status_code != 200:
                break
        key = a.assembled.gateway.store.get(thief_id)
        assert key.throttle is not None, "no alarm throttled the key"
        b.assembled.gateway.refresh()
        assert_refused(second.infer(thief, rows(2)), 429, "rate")  # 2 rows > the throttle's burst of 1
    finally:
        a.stop()
        b.stop()
    restarted = start_gateway(env.registry, env.admin, settings)
    try:
        assert_refused(World(env, restarted).infer(thief, rows(2)), 429, "rate")
        assert restarted.assembled.gateway._state.keys[thief_id].throttle is not None
    finally:
        restarted.stop()
