"""Pickled (joblib) models: served only where the policy allows pickle, and only with a clean scan.

A joblib file is a pickle: loading it runs what it names. The gateway loads one only when the
serving stage's policy says `allow_pickle: true` and a scan of the file finds nothing at all.
A version that a lenient gate let into production with a medium finding (an instance of a class
outside the known-safe set) is still refused at load.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from bastion.registry import Registry, init_registry
from bastion.serve import loader
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.run import GatewaySettings, assemble
from bastion.sign.keys import generate_key, save_keypair
from bastion.sign.ossf import sign_model
from corpus.gateway_env import RegistryEnv, bearer, infer_body, start_gateway
from corpus.hang_guard import HANG_GUARD
from corpus.serving import dataset, write_model

CLEAN = "fraud-joblib"
TAINTED = "fraud-joblib-tainted"


@dataclass(frozen=True)
class Signed:
    key: Path
    pub: Path
    clean: Path
    tainted: Path
    model: LogisticRegression  # what both files hold


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    root = tmp_path_factory.mktemp("joblib-models")
    key = generate_key("ecdsa-p256")
    save_keypair(key, root / "signer.key")
    clean = root / "clean"
    model = write_model(clean, "joblib", dataset())
    tainted = root / "tainted"
    write_model(tainted, "joblib", dataset())
    # The same classifier beside an object of a class outside the known-safe set: a medium
    # finding, below the gate's blocking level, yet not a clean scan.
    joblib.dump({"model": model, "note": string.Template("$x")}, tainted / "model.joblib")
    for folder in (clean, tainted):
        sign_model(folder, key)
    return Signed(root / "signer.key", root / "signer.pub", clean, tainted, model)


def _registry(home: Path, signer_pub: Path, *, allow_pickle: bool) -> RegistryEnv:
    config = init_registry(home)
    production = {"signature_keys": [str(signer_pub)], "allow_pickle": allow_pickle}
    policy = {"version": 1, "gate": {"separation_of_duties": False, "require": {"production": production}}}
    config.policy.write_text(yaml.safe_dump(policy), encoding="utf-8")
    registry = Registry(config)
    token = registry.bootstrap("admin")
    return RegistryEnv(home, registry, registry.authenticate(token), token)


def _refusal(env: RegistryEnv, model: str) -> str:
    """Why a gateway assembled for `model` alone refused it (it must have)."""
    assembled = assemble(env.registry, env.admin, GatewaySettings(models=(model,)))
    try:
        assert model not in assembled.gateway.models
        return assembled.refused[model]
    finally:
        assembled.close()


def test_a_joblib_model_is_refused_where_the_policy_does_not_allow_pickle(tmp_path: Path, signed: Signed) -> None:
    env = _registry(tmp_path / "registry", signed.pub, allow_pickle=False)
    env.publish(CLEAN, signed.clean)
    assert "policy does not allow pickle in production" in _refusal(env, CLEAN)
    refusals = [e for e in env.audit_entries() if e.action == "model.load.refused"]
    assert any("allow pickle" in reason for e in refusals for reason in e.details["reasons"])


def test_a_joblib_model_with_a_finding_is_refused_even_where_pickle_is_allowed(tmp_path: Path, signed: Signed) -> None:
    env = _registry(tmp_path / "registry", signed.pub, allow_pickle=True)
    env.publish(TAINTED, signed.tainted)  # the gate blocks at high: a medium finding passes it
    refusal = _refusal(env, TAINTED)
    assert "pickle.unknown-class" in refusal
    assert "scan is not clean" in refusal


def test_a_clean_joblib_model_is_served_where_pickle_is_allowed(tmp_path: Path, signed: Signed) -> None:
    env = _registry(tmp_path / "registry", signed.pub, allow_pickle=True)
    env.publish(CLEAN, signed.clean)
    rows = dataset().x_test[:5].astype(np.float32)
    settings = GatewaySettings(models=(CLEAN,), alarm_policy=AlarmPolicy(action="alert"))
    gateway = start_gateway(env.registry, env.admin, settings)
    try:
        _, key = gateway.key("reader", output="probabilities")
        answer = httpx.post(
            f"{gateway.url}/v2/models/{CLEAN}/infer", json=infer_body(rows.tolist()), headers=bearer(key), timeout=HANG_GUARD
        )
    finally:
        gateway.stop()
    assert answer.status_code == 200, answer.text
    (probabilities,) = [o for o in answer.json()["outputs"] if o["name"] == "probabilities"]
    np.testing.assert_allclose(np.reshape(probabilities["data"], (5, 2)), signed.model.predict_proba(rows), rtol=1e-6)


def test_bytes_swapped_after_the_checks_are_not_loaded(
    tmp_path: Path, signed: Signed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10, section 3: the loader loads the bytes that were checked, never a path opened again.

    Between the checks and the load, the private copy is replaced by another (benign) estimator:
    an attacker's window on any re-opened path. Serving it would answer with a model no gate saw.
    """
    env = _registry(tmp_path / "registry", signed.pub, allow_pickle=True)
    env.publish(CLEAN, signed.clean)
    other = tmp_path / "other.joblib"
    data = dataset()
    joblib.dump(LogisticRegression(max_iter=200).fit(data.x_test, 1 - data.y_test), other)
    checked_then = loader.serving_refusals

    def swap_after_checking(*args: object, **kwargs: object) -> tuple[str, ...]:
        refusals = checked_then(*args, **kwargs)  # type: ignore[arg-type]  # passed through unchanged
        evidence = args[1]
        (Path(evidence.scan_root) / "model.joblib").write_bytes(other.read_bytes())  # type: ignore[attr-defined]
        return refusals

    monkeypatch.setattr(loader, "serving_refusals", swap_after_checking)
    assert "model.joblib is not the bytes recorded at registration" in _refusal(env, CLEAN)
