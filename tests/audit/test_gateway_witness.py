"""A real gateway (uvicorn on 127.0.0.1, inline or with its observer process) witnesses its chain.

The gateway's chain had no witness at all, so its newest entries could be cut together with
their checkpoint unseen (issue 10, section 4). Here a gateway serves real requests and stops; the
registry's witness must then hold the chain's last entry, and a cut of the tail must show.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bastion.audit import AuditLog, ProblemKind
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.run import AUDIT_CHAIN, GatewaySettings
from bastion.sign.keys import load_public_key
from corpus.gateway_env import ONNX, bearer, built_models, infer_body, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD


@pytest.mark.parametrize("observer", ["inline", "process"])
def test_a_gateway_run_leaves_its_chain_witnessed_and_a_cut_tail_shows(tmp_path: Path, observer: str) -> None:
    models = built_models(tmp_path / "shared")
    env = make_registry(tmp_path / "registry", [models.signer_pub])
    env.publish(ONNX, models.folder("onnx"))
    # Alarms on these repetitive queries are written to the chain but do not throttle the key.
    settings = GatewaySettings(models=(ONNX,), observer=observer, alarm_policy=AlarmPolicy(action="alert"))
    running = start_gateway(env.registry, env.admin, settings)
    try:
        _, key = running.key("app", rate=None, quota=None)
        with httpx.Client(timeout=HANG_GUARD) as client:
            for _ in range(20):
                answer = client.post(f"{running.url}/v2/models/{ONNX}/infer", json=infer_body(), headers=bearer(key))
                assert answer.status_code == 200, answer.headers.get("x-bastion-refusal")
    finally:
        running.stop()
    trusted = [load_public_key(env.registry.config.public_key)]
    witness = env.registry.witness
    assert witness is not None
    log = AuditLog(env.registry.engine, AUDIT_CHAIN)

    honest = log.verify(trusted, witness, witness_required=True)
    with env.registry.engine.begin() as connection:  # the last ten entries cut, with their checkpoint
        last = honest.last_seq
        params = {"c": AUDIT_CHAIN, "keep": last - 10}
        connection.execute(text("DELETE FROM audit_entries WHERE chain = :c AND seq > :keep"), params)
        connection.execute(text("DELETE FROM audit_checkpoints WHERE chain = :c AND seq > :keep"), params)
        kept = connection.execute(
            text("SELECT entry_hash FROM audit_entries WHERE chain = :c AND seq = :keep"), params
        ).scalar_one()
        connection.execute(
            text("UPDATE audit_heads SET seq = :keep, entry_hash = :h, checkpoint_seq = :keep WHERE chain = :c"),
            {**params, "h": kept},
        )
    cut = log.verify(trusted, witness, witness_required=True)

    assert honest.ok, honest.problems
    assert honest.last_seq >= 20
    assert honest.last_witnessed_seq == honest.last_seq  # stopping signed and witnessed the tail
    assert [p.kind for p in cut.problems] == [ProblemKind.TRUNCATED]
    assert f"the log is behind its witness: {witness.location} saw entry {last}" in cut.problems[0].message
