"""Loading: the gateway serves only promoted, signed, intact models with a valid serving.yaml.

The registry here requires no signature for production, so that unsigned and wrongly signed
versions reach production; the gateway, given a trusted key, must still refuse them, say why,
and record the refusal in its audit chain.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, update

from bastion.db.tables import promotions, versions
from bastion.registry.attest import attestation_statement, sign_statement
from bastion.registry.records import GateDecision, Lineage
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.run import GatewaySettings, assemble
from bastion.sign.keys import generate_key, save_keypair
from corpus.gateway_env import (
    ONNX,
    BuiltModels,
    RegistryEnv,
    RunningGateway,
    assert_refused,
    bearer,
    built_models,
    copy_model,
    infer_body,
    make_registry,
    start_gateway,
)
from corpus.hang_guard import HANG_GUARD

UNSIGNED = "unsigned"
OTHER_SIGNER = "other-signer"
SWAPPED = "swapped-blob"
BAD_SPEC = "bad-spec"
STAGING_ONLY = "staging-only"
REFUSED = {  # model -> what its refusal must name
    UNSIGNED: ("signature", "no signature was registered"),
    OTHER_SIGNER: ("signature", "no allowed key verifies the signature"),
    SWAPPED: ("stored-bytes", "serving.yaml"),
    BAD_SPEC: ("serving.yaml", "max_batch"),
}


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@dataclass
class Loaded:
    built: BuiltModels
    env: RegistryEnv
    gateway: RunningGateway


def _batch_of(size: int) -> Callable[[dict[str, object]], None]:
    def edit(spec: dict[str, object]) -> None:
        spec["max_batch"] = size

    return edit


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    built = built_models(shared_dir(tmp_path_factory))
    work = tmp_path_factory.mktemp("loading")
    env = make_registry(work / "registry")  # production requires no signature
    stranger = generate_key("ecdsa-p256")
    save_keypair(stranger, work / "stranger.key")
    onnx = built.folder("onnx")
    env.publish(ONNX, onnx)
    env.publish(UNSIGNED, copy_model(onnx, work / UNSIGNED))
    env.publish(OTHER_SIGNER, copy_model(onnx, work / OTHER_SIGNER, signed_by=work / "stranger.key"))
    # A serving.yaml of its own, so that its blob is shared with no other model.
    swapped = env.publish(SWAPPED, copy_model(onnx, work / SWAPPED, signed_by=built.signer, edit=_batch_of(63)))
    env.publish(BAD_SPEC, copy_model(onnx, work / BAD_SPEC, signed_by=built.signer, edit=_batch_of(0)))
    env.publish(STAGING_ONLY, onnx, stages=("staging",))
    stored = next(f for f in swapped.files if f.path == "serving.yaml")
    blob = Path(env.registry.blobs.path_of(stored.digest))
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"max_batch: 63", b"max_batch: 99999"))
    settings = GatewaySettings(
        models=(ONNX, UNSIGNED, OTHER_SIGNER, SWAPPED, BAD_SPEC),
        trusted_keys=(built.signer_pub,),
        alarm_policy=AlarmPolicy(action="alert"),
    )
    gateway = start_gateway(env.registry, env.admin, settings)
    try:
        yield Loaded(built, env, gateway)
    finally:
        gateway.stop()


def test_the_intact_signed_model_is_served(loaded: Loaded) -> None:
    assert list(loaded.gateway.assembled.gateway.models) == [ONNX]
    _, text = loaded.gateway.key()
    with httpx.Client(base_url=loaded.gateway.url, timeout=HANG_GUARD) as client:
        assert client.post(f"/v2/models/{ONNX}/infer", json=infer_body(), headers=bearer(text)).status_code == 200


@pytest.mark.parametrize("model", list(REFUSED))
def test_a_model_failing_a_check_is_refused_with_the_reason_and_audited(loaded: Loaded, model: str) -> None:
    refused = loaded.gateway.assembled.refused
    assert model in refused
    assert model not in loaded.gateway.assembled.gateway.models
    for named in REFUSED[model]:
        assert named in refused[model], refused[model]
    records = [e for e in loaded.env.audit_entries() if e.action == "model.load.refused" and e.subject == f"{model}@1"]
    assert len(records) == 1
    reasons = " ".join(records[0].details["reasons"])
    for named in REFUSED[model]:
        assert named in reasons
    _, text = loaded.gateway.key()
    with httpx.Client(base_url=loaded.gateway.url, timeout=HANG_GUARD) as client:
        answer = client.post(f"/v2/models/{model}/infer", json=infer_body(), headers=bearer(text))
    assert_refused(answer, 404, "unknown-model")


def test_the_served_model_is_audited_as_loaded(loaded: Loaded) -> None:
    loads = [e for e in loaded.env.audit_entries() if e.action == "model.load"]
    assert [e.subject for e in loads] == [f"{ONNX}@1"]
    assert loads[0].details["stage"] == "production"


def test_a_model_only_in_staging_is_refused(loaded: Loaded) -> None:
    settings = GatewaySettings(models=(ONNX, STAGING_ONLY), trusted_keys=(loaded.built.signer_pub,))
    assembled = assemble(loaded.env.registry, loaded.env.admin, settings)
    try:
        assert list(assembled.gateway.models) == [ONNX]
        assert "no version of 'staging-only' is in stage production" in assembled.refused[STAGING_ONLY]
        records = [e for e in loaded.env.audit_entries() if e.action == "model.load.refused"]
        assert any("stage production" in " ".join(e.details["reasons"]) for e in records)
    finally:
        assembled.observer.close()


def test_without_a_trusted_key_nothing_is_served(loaded: Loaded) -> None:
    # The policy requires no key for production and none is given: even the signed model is refused.
    assembled = assemble(loaded.env.registry, loaded.env.admin, GatewaySettings(models=(ONNX,)))
    try:
        assert assembled.gateway.models == {}
        assert "no trusted signing key" in assembled.refused[ONNX]
    finally:
        assembled.observer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (
            (UNSIGNED, BAD_SPEC),
            (
                "refused unsigned:",
                "no signature was registered",
                "refused bad-spec:",
                "max_batch",
                "no model passed its checks",
            ),
        ),
        ((STAGING_ONLY,), ("no version of 'staging-only' is in stage production",)),
    ],
    ids=["failed-checks", "not-promoted"],
)
@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_bastion_serve_with_only_refused_models_exits_with_the_reasons(
    loaded: Loaded, models: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    command = [
        sys.executable,
        "-m",
        "bastion.cli.main",
        "serve",
        "--registry",
        str(loaded.env.home),
        "--trusted-key",
        str(loaded.built.signer_pub),
        "--port",
        str(_free_port()),
        "--admin-port",
        str(_free_port()),
    ]
    for model in models:
        command += ["--model", model]
    env = {**os.environ, "BASTION_TOKEN": loaded.env.admin_token}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD, check=False)
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    for named in expected:
        assert named in done.stderr, done.stderr
    assert "serving " not in done.stderr


# --- the stage is proven by the promotion's evidence, not read from a column (issue 10, section 3) ---


def _set_stage_by_sql(env: RegistryEnv, model: str, number: int, stage: str) -> None:
    """What an attacker with write access to the database does: one UPDATE, no gate."""
    with env.registry.engine.begin() as connection:
        connection.execute(
            update(versions).where(versions.c.model == model, versions.c.number == number).values(stage=stage)
        )


def test_bastion_serve_refuses_a_version_whose_stage_was_set_by_sql_and_audits_it(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    built = built_models(shared_dir(tmp_path_factory))
    env = make_registry(tmp_path / "registry")
    # Unapproved, with a licence the gate would refuse: it never went through a promotion.
    env.registry.register(env.admin, "sneaky", built.folder("onnx"), lineage=Lineage(licence="proprietary"))
    _set_stage_by_sql(env, "sneaky", 1, "production")
    pinned = tmp_path / "pinned-registry.pub"  # the operator's own copy, outside the registry folder
    shutil.copy(env.registry.config.public_key, pinned)
    command = [
        sys.executable, "-m", "bastion.cli.main", "serve", "--registry", str(env.home), "--model", "sneaky",
        "--trusted-key", str(built.signer_pub), "--registry-key", str(pinned),
        "--port", str(_free_port()), "--admin-port", str(_free_port()),
    ]
    done = subprocess.run(
        command, env={**os.environ, "BASTION_TOKEN": env.admin_token}, capture_output=True, text=True, timeout=HANG_GUARD,
        check=False,
    )

    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    assert "refused sneaky:" in done.stderr
    assert "promotion: no signed promotion of sneaky@1 to production exists" in done.stderr
    assert "serving " not in done.stderr
    refusals = [e for e in env.audit_entries() if e.action == "model.load.refused" and e.subject == "sneaky@1"]
    assert len(refusals) == 1
    assert any("no signed promotion" in reason for reason in refusals[0].details["reasons"])


def test_a_promotion_attested_by_another_key_is_refused(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    built = built_models(shared_dir(tmp_path_factory))
    env = make_registry(tmp_path / "registry")
    registry = env.registry
    version = registry.register(env.admin, "forged", built.folder("onnx"))
    # The whole record of a promotion, forged: the row, an attestation in the right shape signed by
    # the attacker's key, and even an audit entry naming it. Only the registry key is missing.
    forger = generate_key("ed25519")
    now = datetime.now(UTC)
    claimed = GateDecision("forged", 1, "dev", "production", True, (), "admin", now)
    digest = registry.blobs.put_bytes(sign_statement(attestation_statement(version, claimed, ""), forger))
    with registry._change() as connection:
        connection.execute(update(versions).where(versions.c.model == "forged").values(stage="production"))
        connection.execute(
            insert(promotions).values(
                model="forged", number=1, from_stage="dev", to_stage="production", decided_at=now,
                decided_by="admin", allowed=True, reasons="[]", attestation_blob=digest,
            )
        )
        registry._record(connection, "admin", "version.promote", "forged@1", attestation=digest)

    assembled = assemble(registry, env.admin, GatewaySettings(models=("forged",), trusted_keys=(built.signer_pub,)))
    try:
        assert assembled.gateway.models == {}
        assert f"attestation {digest}: the attestation is not signed by key" in assembled.refused["forged"]
    finally:
        assembled.close()


def test_a_pinned_registry_key_serves_what_that_key_promoted_and_nothing_else(
    loaded: Loaded, tmp_path: Path
) -> None:
    pinned = tmp_path / "registry.pub"
    shutil.copy(loaded.env.registry.config.public_key, pinned)
    stranger = generate_key("ed25519")
    save_keypair(stranger, tmp_path / "stranger.key")
    signer = (loaded.built.signer_pub,)

    trusted = assemble(loaded.env.registry, loaded.env.admin, GatewaySettings((ONNX,), trusted_keys=signer, registry_key=pinned))
    other = assemble(
        loaded.env.registry, loaded.env.admin,
        GatewaySettings((ONNX,), trusted_keys=signer, registry_key=tmp_path / "stranger.pub"),
    )
    try:
        assert list(trusted.gateway.models) == [ONNX]
        assert other.gateway.models == {}
        assert "the attestation is not signed by key" in other.refused[ONNX]
    finally:
        trusted.close()
        other.close()
