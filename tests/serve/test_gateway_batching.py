"""Adaptive batching over real HTTP: concurrent requests share model calls, never each other's answers.

32 clients send requests of one to four distinct rows at once to a served ONNX model; each
answer must hold exactly the probabilities ONNX Runtime gives for that request's own rows, one
row at a time, while the gateway made fewer model calls than it answered requests. A model
call that fails answers a generic 500 that is counted and audited like every other outcome.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from bastion.serve.batching import Batcher
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.limits import RateLimit
from bastion.serve.run import Assembled, GatewaySettings
from corpus.gateway_env import (
    INPUT,
    ONNX,
    OUTPUT_MARKERS,
    BuiltModels,
    RegistryEnv,
    bearer,
    built_models,
    infer_body,
    make_registry,
    running,
    start_gateway,
)
from corpus.hang_guard import HANG_GUARD
from corpus.serving import dataset

REQUESTS = 320
CLIENTS = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuiltModels, RegistryEnv]:
    root = tmp_path_factory.mktemp("batching")
    models = built_models(root / "shared")
    env = make_registry(root / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    return models, env


def _one_by_one(model: Path, batches: list[NDArray[np.float32]]) -> list[NDArray[np.float32]]:
    """ONNX Runtime's probabilities for every row on its own: the answers batching must not change."""
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [
        np.vstack([session.run(["probabilities"], {name: row[None, :]})[0] for row in batch]) for batch in batches
    ]


async def _send_all(url: str, key: str, batches: list[NDArray[np.float32]]) -> list[httpx.Response]:
    answers: list[httpx.Response | None] = [None] * len(batches)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(batches)):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = infer_body(batches[i].tolist(), request_id=f"r{i}")
            answers[i] = await http.post(url, json=body, headers=bearer(key))

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=HANG_GUARD, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(
    world: tuple[BuiltModels, RegistryEnv],
) -> None:
    models, env = world
    rng = np.random.default_rng(3)
    pool = dataset().x_test.astype(np.float32)
    sizes = rng.integers(1, 5, size=REQUESTS)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    batches = [pool[s : s + n] for s, n in zip(starts, sizes, strict=True)]
    settings = GatewaySettings(models=(ONNX,), alarm_policy=AlarmPolicy(action="alert"))
    with running(env.registry, env.admin, settings) as gateway:
        _, key = gateway.key("batch", output="probabilities", rate=RateLimit(100_000, 100_000), quota=None)
        answers = asyncio.run(_send_all(f"{gateway.url}/v2/models/{ONNX}/infer", key, batches))
        batcher = gateway.assembled.gateway.batchers[ONNX]
        calls, predicted = batcher.calls, batcher.rows
        metrics = httpx.get(f"{gateway.admin_url}/metrics", headers=bearer(env.admin_token), timeout=HANG_GUARD).text
    expected = _one_by_one(models.folder("onnx") / "model.onnx", batches)
    for i, (answer, want) in enumerate(zip(answers, expected, strict=True)):
        assert answer.status_code == 200, answer.text
        document = answer.json()
        assert document["id"] == f"r{i}"
        (probabilities,) = [o for o in document["outputs"] if o["name"] == "probabilities"]
        assert probabilities["shape"] == [len(want), 2]
        np.testing.assert_allclose(np.reshape(probabilities["data"], want.shape), want, rtol=1e-5, atol=1e-6)
    assert predicted == int(sizes.sum())
    assert calls < REQUESTS, "no request shared a model call with another"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("bastion_gateway_requests_total", (("model", ONNX), ("outcome", "ok")))] == REQUESTS
    assert samples[("bastion_gateway_latency_seconds_count", (("model", ONNX),))] == REQUESTS
    assert samples[("bastion_gateway_latency_seconds_sum", (("model", ONNX),))] > 0
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "bastion_gateway_latency_seconds_bucket"
    )
    assert buckets[-1] == (float("inf"), REQUESTS)
    assert all(a[1] <= b[1] for a, b in pairwise(buckets))  # cumulative


def test_a_failing_model_call_answers_a_generic_500_that_is_audited(world: tuple[BuiltModels, RegistryEnv]) -> None:
    _, env = world

    def broken(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        raise RuntimeError("secret internal detail: /srv/models/fraud.onnx")

    def swap_model(assembled: Assembled) -> None:
        assembled.gateway.batchers[ONNX] = Batcher(broken)

    gateway = start_gateway(env.registry, env.admin, GatewaySettings(models=(ONNX,)), prepare=swap_model)
    try:
        key, text = gateway.key("broken")
        answer = httpx.post(
            f"{gateway.url}/v2/models/{ONNX}/infer", json=infer_body([[0.1] * 20]), headers=bearer(text), timeout=HANG_GUARD
        )
        ready = httpx.get(f"{gateway.url}/v2/models/{ONNX}/ready", headers=bearer(text), timeout=HANG_GUARD)
        metrics = httpx.get(f"{gateway.admin_url}/metrics", headers=bearer(env.admin_token), timeout=HANG_GUARD).text
    finally:
        gateway.stop()
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error"}
    assert "secret" not in answer.text and INPUT not in answer.text
    assert not any(marker in answer.text for marker in OUTPUT_MARKERS)
    assert 'bastion_gateway_refusals_total{reason="error"} 1.0' in metrics
    errors = [e for e in env.audit_entries() if e.action == "infer.error"]
    assert len(errors) == 1
    assert errors[0].actor == key.key_id and errors[0].details == {"status": 500, "reason": "model-error"}
    assert ready.status_code == 200  # the gateway itself goes on answering
