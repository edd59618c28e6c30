"""Inputs reach the gateway's audit log only when asked for, and then with personal features masked."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bastion.serve.run import GatewaySettings
from corpus.gateway_env import INPUT, ONNX, built_models, make_registry, start_gateway


@pytest.mark.parametrize("log_inputs", [False, True])
def test_inputs_logged_only_when_asked_and_masked(tmp_path: Path, log_inputs: bool) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    settings = GatewaySettings(models=(ONNX,), log_inputs=log_inputs, masked_features=(0, 3))
    running = start_gateway(env.registry, env.admin, settings)
    try:
        _, key = running.key()
        row = [0.25 + 0.1 * i for i in range(20)]  # inside the declared range
        body = {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1, 20], "data": row}]}
        answer = httpx.post(f"{running.url}/v2/models/{ONNX}/infer", json=body, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
    finally:
        running.stop()
    infer = [e for e in env.audit_entries() if e.action == "infer"]
    assert len(infer) == 1
    if not log_inputs:
        assert "inputs" not in infer[0].details
        return
    logged = infer[0].details["inputs"][0]
    assert logged[0] == "***" and logged[3] == "***"
    assert logged[1] == pytest.approx(0.35) and logged[19] == pytest.approx(2.15)
    assert not any(v == pytest.approx(0.25) or v == pytest.approx(0.55) for v in logged[1:] if v != "***")
