"""Every call reaches the gateway's audit chain, not only inference: readiness, metadata, tokens."""

from __future__ import annotations

from pathlib import Path

import httpx

from bastion.serve.run import GatewaySettings
from corpus.gateway_env import ONNX, built_models, make_registry, start_gateway


def test_calls_other_than_infer_are_audited_with_their_outcome(tmp_path: Path) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    running = start_gateway(env.registry, env.admin, GatewaySettings(models=(ONNX,)))
    try:
        key, text = running.key(operations=("infer", "metadata"))
        auth = {"Authorization": f"Bearer {text}"}
        assert httpx.get(f"{running.url}/v2/health/ready", headers=auth).status_code == 200
        assert httpx.get(f"{running.url}/v2/models/{ONNX}", headers=auth).status_code == 200
        assert httpx.get(f"{running.url}/v2/models/{ONNX}/ready").status_code == 401
        assert httpx.post(f"{running.url}/v2/tokens", json={"model": ONNX}, headers=auth).status_code == 403
    finally:
        running.stop()
    seen = [(e.actor, e.action, e.subject, e.details.get("reason")) for e in env.audit_entries()]
    assert (key.key_id, "ready", "-", None) in seen
    assert (key.key_id, "metadata", ONNX, None) in seen
    assert ("-", "ready.refused", "-", "missing-credentials") in seen  # tallied: no caller-chosen subject
    assert (key.key_id, "token.refused", "-", "out-of-scope") in seen
