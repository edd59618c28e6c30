"""Two gateway replicas on one registry and one Redis: shared limits, and changes seen by both.

Redis is expected at BASTION_TEST_REDIS_URL (default redis://127.0.0.1:6379/0): without it these
tests are skipped locally and fail under CI=true. Every key they write carries a prefix of this
run's own, and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.registry import Registry
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.limits import RateLimit, RedisLimiter
from bastion.serve.run import Assembled, GatewaySettings
from corpus.gateway_env import (
    ONNX,
    RegistryEnv,
    RunningGateway,
    assert_refused,
    bearer,
    built_models,
    infer_body,
    make_registry,
    start_gateway,
    wait_for_refresh,
)
from corpus.hang_guard import HANG_GUARD

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A key prefix of this module's own in a reachable Redis; its keys are deleted afterwards."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=int(HANG_GUARD), socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required under CI: {err}")
        pytest.skip(f"no Redis at {REDIS_URL}: {err}")
    prefix = f"bastion-test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        for name in list(client.scan_iter(match=f"{prefix}*")):
            client.delete(name)
        assert not list(client.scan_iter(match=f"{prefix}*"))
        client.close()


def shared_limits(prefix: str) -> Callable[[Assembled], None]:
    """Swap the limiter `assemble` made (default prefix) for one under `prefix`.

    `GatewaySettings` has no field for the Redis key prefix, so a test cannot ask `assemble`
    for one; replicas only share limits when their prefixes agree.
    """

    def prepare(assembled: Assembled) -> None:
        made = assembled.gateway.limiter
        assert isinstance(made, RedisLimiter)
        assembled.gateway.limiter = RedisLimiter(REDIS_URL, prefix)
        asyncio.run(made.close())

    return prepare


@dataclass
class Replicas:
    env: RegistryEnv
    a: RunningGateway
    b: RunningGateway

    def infer(self, replica: RunningGateway, key: str) -> httpx.Response:
        with httpx.Client(base_url=replica.url, timeout=HANG_GUARD) as client:
            return client.post(f"/v2/models/{ONNX}/infer", json=infer_body(), headers=bearer(key))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, redis_prefix: str) -> Iterator[Replicas]:
    built = built_models(shared_dir(tmp_path_factory))
    env = make_registry(tmp_path_factory.mktemp("replicas") / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), redis_url=REDIS_URL, alarm_policy=AlarmPolicy(action="alert"))
    second = Registry.open(env.home)  # each replica opens the registry for itself
    a = start_gateway(env.registry, env.admin, settings, shared_limits(redis_prefix))
    try:
        b = start_gateway(second, second.authenticate(env.admin_token), settings, shared_limits(redis_prefix))
    except BaseException:
        a.stop()
        raise
    assert a.assembled.refused == b.assembled.refused == {}
    try:
        yield Replicas(env, a, b)
    finally:
        a.stop()
        b.stop()


def test_replicas_share_one_rate_limit(replicas: Replicas) -> None:
    _, text = replicas.a.key(rate=RateLimit(per_second=0.0001, burst=20), quota=None)  # ten 2-row requests
    replicas.b.assembled.gateway.refresh()
    answers = [replicas.infer(replicas.a if i % 2 == 0 else replicas.b, text) for i in range(30)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10, statuses
    assert statuses[:10] == [200] * 10  # both replicas answered until the shared burst was spent
    for refused in answers[10:]:
        assert_refused(refused, 429, "rate")
        assert int(refused.headers["retry-after"]) >= 1


def test_a_revocation_on_one_replica_reaches_the_other_within_its_refresh(replicas: Replicas) -> None:
    key, text = replicas.a.key()
    replicas.b.assembled.gateway.refresh()
    assert replicas.infer(replicas.b, text).status_code == 200
    replicas.a.assembled.gateway.store.revoke(replicas.env.admin, key.key_id, "leaked")  # what the admin route does
    replicas.a.assembled.gateway.refresh()
    assert_refused(replicas.infer(replicas.a, text), 401, "revoked")
    wait_for_refresh(replicas.b.assembled.gateway)  # counted rather than timed
    assert_refused(replicas.infer(replicas.b, text), 401, "revoked")


def test_a_revocation_through_replica_a_admin_api_reaches_replica_b(replicas: Replicas) -> None:
    key, text = replicas.a.key()
    replicas.b.assembled.gateway.refresh()
    assert replicas.infer(replicas.b, text).status_code == 200
    with httpx.Client(base_url=replicas.a.admin_url, timeout=HANG_GUARD) as admin:
        assert admin.delete(f"/admin/keys/{key.key_id}", headers=bearer(replicas.env.admin_token)).status_code == 204
    assert_refused(replicas.infer(replicas.a, text), 401, "revoked")
    wait_for_refresh(replicas.b.assembled.gateway)  # counted rather than timed
    assert_refused(replicas.infer(replicas.b, text), 401, "revoked")


def test_an_unreachable_redis_fails_closed(tmp_path_factory: pytest.TempPathFactory) -> None:
    built = built_models(shared_dir(tmp_path_factory))
    env = make_registry(tmp_path_factory.mktemp("no-redis") / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), redis_url="redis://127.0.0.1:1/0", alarm_policy=AlarmPolicy("alert"))
    gateway = start_gateway(env.registry, env.admin, settings)
    try:
        key, text = gateway.key(output="probabilities")
        with httpx.Client(base_url=gateway.url, timeout=HANG_GUARD) as client:
            answer = client.post(f"/v2/models/{ONNX}/infer", json=infer_body(), headers=bearer(text))
        assert_refused(answer, 503, "limits-unavailable")
        assert "127.0.0.1:1" not in answer.text
    finally:
        gateway.stop()
    refused = [e for e in env.audit_entries() if e.action == "infer.refused" and e.actor == key.key_id]
    assert [(e.details["status"], e.details["reason"]) for e in refused] == [(503, "limits-unavailable")]
