"""A load run loses no audit entry: concurrent requests, answered and refused, all reach the chain.

32 concurrent clients send 3,000 requests to a gateway running its observer process; some
are over the key's rate limit, some carry no key. After a clean stop the gateway's chain holds
exactly one entry per request sent, and verifies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bastion.audit import AuditLog
from bastion.serve.anonymous import RefusalLimit
from bastion.serve.limits import RateLimit
from bastion.serve.run import GatewaySettings
from bastion.sign.keys import load_public_key
from corpus.gateway_env import INPUT, ONNX, built_models, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD
from corpus.serving import dataset

REQUESTS = 3_000
CLIENTS = 32


async def _load(url: str, good: str, limited: str) -> Counter[int]:
    data = dataset()
    statuses: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            row = data.x_test[i % len(data.x_test)]
            body = {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1, 20], "data": row.tolist()}]}
            key = (good, limited, None)[i % 3]
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            answer = await http.post(url, json=body, headers=headers)
            statuses[answer.status_code] += 1

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=HANG_GUARD, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return statuses


@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_a_load_run_loses_no_entry(tmp_path: Path) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    # Anonymous refusals are limited per source (429 past a budget); this load comes from one
    # address and is about losing no entry, so its budget is lifted.
    unlimited = RefusalLimit(per_second=1e9, burst=10**9)
    settings = GatewaySettings(models=(ONNX,), observer="process", refusal_limit=unlimited)
    running = start_gateway(env.registry, env.admin, settings)
    try:
        _, good = running.key("steady", rate=RateLimit(100_000, 100_000), quota=None)
        _, limited = running.key("bursty", rate=RateLimit(0.001, 5), quota=None)
        statuses = asyncio.run(_load(f"{running.url}/v2/models/{ONNX}/infer", good, limited))
    finally:
        running.stop()
    assert sum(statuses.values()) == REQUESTS
    assert statuses[200] > 1000 and statuses[429] > 500 and statuses[401] == REQUESTS // 3
    entries = [e for e in env.audit_entries() if e.action in {"infer", "infer.refused"}]
    recorded: Counter[int] = Counter()
    for e in entries:  # anonymous refusals are tallied: one entry per source and reason, counted
        recorded[e.details["status"]] += int(e.details.get("count", 1))
    assert recorded == statuses
    report = AuditLog(env.registry.engine, "gateway").verify([load_public_key(env.registry.config.public_key)])
    assert report.ok, report.problems
