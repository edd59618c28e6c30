"""`bastion serve` as a user runs it: a real process, keys from `bastion keys create`, SIGTERM.

The command must serve the promoted model on both ports, refuse what it should, and on
SIGTERM write every call to the audit chain before it exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bastion.audit import AuditLog
from bastion.sign.keys import load_public_key
from corpus.gateway_env import INPUT, ONNX, built_models, make_registry
from corpus.hang_guard import HANG_GUARD, wait_until
from corpus.serving import dataset


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bastion(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args], env=env, capture_output=True, text=True, timeout=HANG_GUARD, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("target", "stop_signal"),
    [
        ("process", signal.SIGTERM),  # e.g. Kubernetes: PID 1 of the container
        ("group", signal.SIGTERM),  # e.g. systemd's default KillMode: every process of the unit
        ("group", signal.SIGINT),  # Ctrl-C in a terminal: the foreground process group
    ],
)
@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_serve_answers_refuses_and_flushes_its_audit_when_stopped(
    tmp_path: Path, target: str, stop_signal: signal.Signals
) -> None:
    models = built_models(tmp_path / "shared")
    registry = make_registry(tmp_path / "registry", [models.signer_pub])
    registry.publish(ONNX, models.folder("onnx"))
    env = {**os.environ, "BASTION_REGISTRY": str(registry.home), "BASTION_TOKEN": registry.admin_token}
    key = _bastion(
        "keys", "create", "app", "--model", ONNX, "--output", "score", "--precision", "2", "--rate", "0", env=env
    )
    port, admin_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.main", "serve", "--model", ONNX, "--port", str(port),
         "--admin-port", str(admin_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    sent = 0
    try:
        with httpx.Client(timeout=HANG_GUARD) as client:

            def ready() -> bool:
                nonlocal sent
                try:
                    answer = client.get(f"{url}/v2/health/ready", headers={"Authorization": f"Bearer {key}"})
                except httpx.TransportError:
                    return False
                sent += 1
                return answer.status_code == 200

            wait_until(ready, "bastion serve coming up", alive=lambda: server.poll() is None, step=0.2)
            rows = dataset().x_test[:2]
            body = {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [2, 20], "data": rows.ravel().tolist()}]}
            answer = client.post(f"{url}/v2/models/{ONNX}/infer", json=body, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200
            outputs = {o["name"]: o for o in answer.json()["outputs"]}
            assert set(outputs) == {"label", "score"}
            assert all(round(v, 2) == v for v in outputs["score"]["data"])
            assert client.post(f"{url}/v2/models/{ONNX}/infer", json=body).status_code == 401
            for row in dataset().x_test[2:202]:  # records still queued in the server or its observer at the signal
                one = {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [1, 20], "data": row.tolist()}]}
                assert client.post(
                    f"{url}/v2/models/{ONNX}/infer", json=one, headers={"Authorization": f"Bearer {key}"}
                ).status_code == 200
            sent += 200
            metrics = client.get(
                f"http://127.0.0.1:{admin_port}/metrics", headers={"Authorization": f"Bearer {registry.admin_token}"}
            )
            assert metrics.status_code == 200 and "bastion_gateway_refusals" in metrics.text
            sent += 2
    finally:
        if target == "group":
            os.killpg(server.pid, stop_signal)
        else:
            server.send_signal(stop_signal)
        _, stderr = server.communicate(timeout=HANG_GUARD)
    assert server.returncode == 0, stderr
    entries = list(AuditLog(registry.registry.engine, "gateway").entries())
    calls = [e for e in entries if e.action.split(".")[0] in {"ready", "infer"}]
    assert len(calls) == sent
    report = AuditLog(registry.registry.engine, "gateway").verify([load_public_key(registry.registry.config.public_key)])
    assert report.ok, report.problems
