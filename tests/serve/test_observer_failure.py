"""The gateway never answers what it cannot record (issue 10, section 2).

Before: `kill -9` of the observer child, or a PostgreSQL outage longer than the observer's 40
retries, left the gateway answering every request with no audit entry and no detection, and
`/v2/health/ready` still said ready. Now, while the observer is down or cannot write, inference
is refused with 503 and Retry-After and readiness says 503; the observer is restarted, or keeps
retrying the database, and the gateway recovers by itself; every answered request (200) has
its entry in the chain afterwards, including those whose records sat in the pipe or in the
child's memory when it died.

The database outage is real but private: the registry reaches the shared PostgreSQL through a
TCP relay that the test cuts and restores. Set BASTION_TEST_OUTAGE_SECONDS=90 to hold the cut
for that long with the default retry schedule (a by-hand run; the suite uses a short schedule).
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from bastion.audit import AuditEntry, AuditLog
from bastion.registry import Registry, init_registry
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.observer import RetrySchedule
from bastion.serve.run import GatewaySettings
from bastion.sign.keys import load_public_key
from corpus.gateway_env import (
    ONNX,
    RegistryEnv,
    bearer,
    built_models,
    infer_body,
    make_registry,
    rows,
    start_gateway,
)
from corpus.hang_guard import HANG_GUARD, keep_doing, until
from registry.backends import PG_ADMIN_URL, under_ci
from serve.relay import TcpRelay

ALERT = AlarmPolicy(action="alert")  # the detectors must not throttle the load below
WORKERS = 8
OUTAGE_SECONDS = float(os.environ.get("BASTION_TEST_OUTAGE_SECONDS", "0"))
OLD_GIVE_UP = 40  # tries after which the old observer exited


@dataclass
class Outcomes:
    """What the clients saw: every answer's status, request id, refusal and Retry-After."""

    answers: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)

    def count(self, status: int) -> int:
        return sum(1 for answer in self.answers if answer[0] == status)

    def answered_ids(self) -> set[str]:
        return {rid for status, rid, _, _ in self.answers if status == 200}


def _observer_pids() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.name == "bastion-observer" and p.pid is not None}


def _audited(env: RegistryEnv) -> tuple[list[AuditEntry], set[str]]:
    entries = env.audit_entries()
    return entries, {str(e.details.get("request_id")) for e in entries if e.action == "infer"}


def _check_chain(env: RegistryEnv) -> None:
    report = AuditLog(env.registry.engine, "gateway").verify([load_public_key(env.registry.config.public_key)])
    assert report.ok, report.problems


def _refused_unrecordable(entries: list[AuditEntry]) -> int:
    """Refusals while the log could not be written: tallied, one entry per source and interval."""
    return sum(
        int(e.details.get("count", 1))
        for e in entries
        if e.action == "infer.refused" and e.details.get("reason") == "audit-unavailable"
    )


def test_killing_the_observer_under_load_loses_no_answer_and_refuses_until_it_is_back(tmp_path: Path) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), observer="process", alarm_policy=ALERT)
    running = start_gateway(env.registry, env.admin, settings)
    seen = Outcomes()
    killed: list[int] = []
    try:
        _, key = running.key(rate=None, quota=None)
        before = _observer_pids()
        assert len(before) == 1

        async def load() -> None:
            stop = asyncio.Event()
            limits = httpx.Limits(max_connections=WORKERS + 1)
            async with httpx.AsyncClient(base_url=running.url, timeout=HANG_GUARD, limits=limits) as http:

                async def client(worker: int) -> None:
                    sent = 0
                    while not stop.is_set():
                        rid = f"w{worker}-{sent}"
                        sent += 1
                        body = infer_body(rows(1), request_id=rid)
                        answer = await http.post(f"/v2/models/{ONNX}/infer", json=body, headers=bearer(key))
                        seen.answers.append(
                            (answer.status_code, rid, answer.headers.get("x-bastion-refusal"), answer.headers.get("retry-after"))
                        )

                async def readiness() -> None:
                    while not stop.is_set():
                        answer = await http.get("/v2/health/ready", headers=bearer(key))
                        seen.ready.append(answer.status_code)
                        await asyncio.sleep(0.02)

                tasks = [asyncio.create_task(client(w)) for w in range(WORKERS)] + [asyncio.create_task(readiness())]
                await until(lambda: seen.count(200) >= 300)
                pid = next(iter(before))
                os.kill(pid, signal.SIGKILL)  # records sit in the pipe and in the child's memory now
                killed.append(pid)
                await until(lambda: seen.count(503) > 0 and 503 in seen.ready)
                answered_at_kill = seen.count(200)
                await until(lambda: seen.count(200) >= answered_at_kill + 300)  # recovered without a restart of ours
                stop.set()
                await asyncio.gather(*tasks)

        asyncio.run(load())
        after = _observer_pids()
        assert after and not after & set(killed)  # a new child, not the killed one
        assert seen.ready[-1] == 200
    finally:
        running.stop()
    entries, recorded = _audited(env)
    missing = seen.answered_ids() - recorded
    assert not missing, f"{len(missing)} answered requests have no audit entry, e.g. {sorted(missing)[:5]}"
    refused = [a for a in seen.answers if a[0] != 200]
    assert refused and all(a[0] == 503 and a[2] == "audit-unavailable" and a[3] == "1" for a in refused)
    assert _refused_unrecordable(entries) == len(refused)  # refusals are in the chain too, as counts
    _check_chain(env)


# --- a database outage -------------------------------------------------------------------------


@pytest.fixture
def relayed_database() -> Iterator[tuple[str, TcpRelay]]:
    """A fresh PostgreSQL database reached through a relay: (its URL through the relay, the relay)."""
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=int(HANG_GUARD)) as admin:
            name = f"bastion_outage_{secrets.token_hex(6)}"
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as err:
        if under_ci():
            pytest.fail(f"PostgreSQL is not reachable: {err}")
        pytest.skip(f"PostgreSQL is not reachable: {err}")
    direct = make_url(PG_ADMIN_URL)
    relay = TcpRelay((direct.host or "127.0.0.1", direct.port or 5432)).start()
    url = direct.set(database=name, host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    try:
        yield url, relay
    finally:
        relay.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _registry_on(home: Path, database: str, signature_keys: list[Path]) -> RegistryEnv:
    config = init_registry(home, database=database)
    production = {"signature_keys": [str(k) for k in signature_keys]}
    policy = {"version": 1, "gate": {"separation_of_duties": False, "require": {"production": production}}}
    config.policy.write_text(yaml.safe_dump(policy), encoding="utf-8")
    registry = Registry(config)
    token = registry.bootstrap("admin")
    return RegistryEnv(home, registry, registry.authenticate(token), token)


@pytest.mark.parametrize("mode", ["process", "inline"])
def test_a_database_outage_is_refused_until_it_ends_and_loses_nothing(
    tmp_path: Path, relayed_database: tuple[str, TcpRelay], mode: str
) -> None:
    url, relay = relayed_database
    models = built_models(tmp_path / "shared")
    env = _registry_on(tmp_path / "registry", url, [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    # A short schedule stands for the real one: OLD_GIVE_UP tries take a second, not a minute.
    retry = RetrySchedule() if OUTAGE_SECONDS else RetrySchedule(first=0.01, cap=0.02)
    settings = GatewaySettings(models=(ONNX,), observer=mode, alarm_policy=ALERT, observer_retry=retry)
    running = start_gateway(env.registry, env.admin, settings)
    seen = Outcomes()
    statuses_during: collections.Counter[int] = collections.Counter()
    try:
        _, key = running.key(rate=None, quota=None)
        with httpx.Client(base_url=running.url, timeout=HANG_GUARD) as http:
            sent = 0

            def ask() -> int:
                nonlocal sent
                rid = f"r{sent}"
                sent += 1
                answer = http.post(f"/v2/models/{ONNX}/infer", json=infer_body(rows(1), request_id=rid), headers=bearer(key))
                seen.answers.append((answer.status_code, rid, answer.headers.get("x-bastion-refusal"), answer.headers.get("retry-after")))
                return answer.status_code

            def ready() -> int:
                return http.get("/v2/health/ready", headers=bearer(key)).status_code

            assert [ask() for _ in range(20)] == [200] * 20
            relay.cut()
            asyncio.run(until(lambda: ask() == 503))
            assert ready() == 503
            observer = running.assembled.observer
            if mode == "process":  # past the point where the old observer gave up and exited
                asyncio.run(until(lambda: getattr(observer, "failed_writes", 0) > OLD_GIVE_UP))

            def tally() -> None:
                statuses_during[ask()] += 1

            keep_doing(tally, seconds=OUTAGE_SECONDS, times=50, step=0.05 if not OUTAGE_SECONDS else 1.0)
            assert ready() == 503
            relay.restore()
            asyncio.run(until(lambda: ask() == 200))
            assert ready() == 200
            assert [ask() for _ in range(20)] == [200] * 20
    finally:
        running.stop()
    assert statuses_during == {503: statuses_during.total()}  # nothing answered while nothing could be recorded
    entries, recorded = _audited(env)
    missing = seen.answered_ids() - recorded
    assert not missing, f"answered without an entry: {sorted(missing)}"
    refused = [a for a in seen.answers if a[0] != 200]
    assert all(a[0] == 503 and a[2] == "audit-unavailable" and a[3] == "1" for a in refused)
    assert _refused_unrecordable(entries) == len(refused)
    _check_chain(env)
