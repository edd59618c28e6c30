"""Probing outside the declared input ranges is refused (400) and also seen by the detectors.

A refusal alone would let a caller map the ranges for free, query after query; fed to the
out-of-distribution test, such probing raises an alarm like any other extraction attempt.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from bastion.serve.gateway import AlarmPolicy
from bastion.serve.limits import RateLimit
from bastion.serve.run import GatewaySettings
from corpus.gateway_env import INPUT, ONNX, built_models, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD
from corpus.serving import dataset


def test_out_of_range_probes_raise_an_alarm(tmp_path: Path) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), alarm_policy=AlarmPolicy(action="suspend"))
    running = start_gateway(env.registry, env.admin, settings)
    data = dataset()
    beyond = float(data.x_train.max()) + 10.0  # past serving.yaml's max (data max + 3)
    statuses = []
    try:
        _, key = running.key("prober", rate=RateLimit(1000, 1000), quota=None)
        rng = np.random.default_rng(5)
        with httpx.Client(timeout=HANG_GUARD) as client:
            for _ in range(60):
                row = rng.uniform(-beyond, beyond, size=20)
                body = {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1, 20], "data": row.tolist()}]}
                answer = client.post(
                    f"{running.url}/v2/models/{ONNX}/infer", json=body, headers={"Authorization": f"Bearer {key}"}
                )
                statuses.append(answer.status_code)
                if answer.status_code == 403:
                    assert answer.headers["x-bastion-refusal"] == "suspended"
                    break
    finally:
        running.stop()
    assert 400 in statuses and statuses[-1] == 403  # refused as invalid, then suspended on the alarm
    alarms = [e for e in env.audit_entries() if e.action == "alarm"]
    # Raised on the key's stream before answering (and on its account's and network's, which
    # hold only its rows here), and by the observer's per-key test: all of one kind.
    assert {a.details["kind"] for a in alarms} == {"extraction.out-of-distribution"}
    assert any(a.details.get("stream", "").startswith("key:") for a in alarms), [a.details for a in alarms]
