"""The inference gateway over real HTTP: uvicorn on 127.0.0.1, httpx and tritonclient as callers.

Every refusal is checked for its status, its `x-bastion-refusal` reason and the absence of any
model output; input refusals also for the one generic message, which echoes nothing sent.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.audit import AuditLog
from bastion.registry import Role
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.keys import KeyStore
from bastion.serve.limits import Quota, RateLimit
from bastion.serve.run import AUDIT_CHAIN, GatewaySettings
from bastion.serve.tokens import TokenMinter
from bastion.sign.keys import load_public_key
from corpus.gateway_env import (
    FEATURES,
    INPUT,
    ONNX,
    SKOPS,
    BuiltModels,
    RegistryEnv,
    RunningGateway,
    assert_generic_refusal,
    assert_refused,
    bearer,
    built_models,
    copy_model,
    infer_body,
    make_registry,
    output_names,
    rows,
    running,
    seconds_to_utc_midnight,
    start_gateway,
    wait_for_refresh,
)
from corpus.hang_guard import HANG_GUARD, wait_until

UNBOUNDED = "fraud-unbounded"  # the ONNX model with min and max removed from its serving.yaml
ALERT_ONLY = AlarmPolicy(action="alert")  # detectors must not throttle the keys these tests use


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    """One folder for every xdist worker of this run (the run's own folder without xdist)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@dataclass
class World:
    built: BuiltModels
    env: RegistryEnv
    gateway: RunningGateway
    client: httpx.Client
    admin: httpx.Client  # the admin port, with the registry administrator's token
    reader_token: str  # a registry token without the administrator role

    def infer(self, key: str | None, model: str = ONNX, body: object = None, **kwargs: object) -> httpx.Response:
        headers = bearer(key) if key is not None else {}
        content = orjson.dumps(infer_body() if body is None else body)
        return self.client.post(f"/v2/models/{model}/infer", content=content, headers=headers, **kwargs)

    def token(self, key: str, model: str = ONNX, lifetime: int = 300) -> httpx.Response:
        return self.client.post("/v2/tokens", json={"model": model, "lifetime": lifetime}, headers=bearer(key))

    def refused_reasons(self, key_id: str, count: int) -> list[str]:
        """The reasons of the gateway's `infer.refused` records of `key_id`, once `count` are written."""
        found: list[str] = []

        def written() -> bool:
            found[:] = [
                e.details["reason"]
                for e in self.env.audit_entries()
                if e.action == "infer.refused" and e.actor == key_id
            ]
            return len(found) >= count

        wait_until(written, "the audit entry being written")
        return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = built_models(shared_dir(tmp_path_factory))
    home = tmp_path_factory.mktemp("http")
    env = make_registry(home / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))
    env.publish(SKOPS, built.folder("sklearn"))

    def unbounded(spec: dict[str, object]) -> None:
        tensor = spec["inputs"][0]  # type: ignore[index]
        del tensor["min"], tensor["max"]

    env.publish(UNBOUNDED, copy_model(built.folder("onnx"), home / "unbounded", signed_by=built.signer, edit=unbounded))
    env.registry.add_principal(env.admin, "auditor")
    env.registry.grant(env.admin, "auditor", Role.READER)
    reader_token = env.registry.issue_token(env.admin, "auditor")
    settings = GatewaySettings(models=(ONNX, SKOPS, UNBOUNDED), alarm_policy=ALERT_ONLY)
    gateway = start_gateway(env.registry, env.admin, settings)
    assert gateway.assembled.refused == {}
    with (
        httpx.Client(base_url=gateway.url, timeout=HANG_GUARD) as client,
        httpx.Client(base_url=gateway.admin_url, timeout=HANG_GUARD, headers=bearer(env.admin_token)) as admin,
    ):
        yield World(built, env, gateway, client, admin, reader_token)
    gateway.stop()


# --- authentication --------------------------------------------------------------------------


def test_a_valid_key_is_answered_by_both_header_forms(world: World) -> None:
    _, key = world.gateway.key()
    assert world.infer(key).status_code == 200
    answer = world.client.post(f"/v2/models/{SKOPS}/infer", json=infer_body(), headers={"X-Api-Key": key})
    assert answer.status_code == 200
    assert output_names(answer) == ["label"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v2/models/{ONNX}/infer"),
        ("POST", f"/v2/models/{ONNX}/versions/1/infer"),
        ("GET", f"/v2/models/{ONNX}"),
        ("GET", f"/v2/models/{ONNX}/ready"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2"),
        ("POST", "/v2/tokens"),
    ],
)
def test_no_credentials_is_401_with_a_challenge(world: World, method: str, path: str) -> None:
    body = orjson.dumps(infer_body()) if path.endswith("infer") else orjson.dumps({"model": ONNX})
    answer = world.client.request(method, path, content=body if method == "POST" else None)
    assert_refused(answer, 401, "missing-credentials")
    assert answer.headers["www-authenticate"].lower().startswith("bearer")


def test_a_wrong_secret_is_401(world: World) -> None:
    key, text = world.gateway.key()
    forged = f"bsk_{key.key_id}_{'A' * 43}"
    assert forged != text
    answer = world.infer(forged)
    assert_refused(answer, 401, "bad-key")
    assert "www-authenticate" in answer.headers
    assert world.infer(text).status_code == 200  # the key itself still works


@pytest.mark.parametrize("text", ["garbage", "bsk_", "bsk__secret", "bsk_id_", "xyz_abc_def", "Bearer", "bst1."])
def test_a_malformed_key_is_401(world: World, text: str) -> None:
    assert_refused(world.infer(text), 401, "bad-token" if text.startswith("bst1.") else "bad-key")


def test_an_unknown_key_id_is_401(world: World) -> None:
    key, text = world.gateway.key()
    secret = text.split("_", 2)[2]
    assert_refused(world.infer(f"bsk_{'0' * 16}_{secret}"), 401, "bad-key")
    assert_refused(world.infer(f"bsk_{key.key_id}x_{secret}"), 401, "bad-key")


def test_an_expired_key_and_its_tokens_stop_working(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = world.gateway.assembled.gateway
    key, text = world.gateway.key(operations=("infer", "token"), expires_in=timedelta(seconds=60))
    issued = world.token(text)  # 300 s: the token outlives its key
    assert issued.status_code == 200
    assert key.expires_at is not None
    expiry = key.expires_at.timestamp()
    monkeypatch.setattr(gateway, "clock", lambda: expiry - 0.5)  # the gateway's clock, not a sleep
    assert world.infer(text).status_code == 200
    assert world.infer(issued.json()["token"]).status_code == 200
    monkeypatch.setattr(gateway, "clock", lambda: expiry + 0.5)
    assert_refused(world.infer(text), 401, "expired")
    assert_refused(world.infer(issued.json()["token"]), 401, "expired")


def test_a_key_revoked_in_the_store_is_refused_with_its_tokens(world: World) -> None:
    key, text = world.gateway.key(operations=("infer", "token"))
    token = world.token(text).json()["token"]
    assert world.infer(token).status_code == 200
    world.gateway.assembled.gateway.store.revoke(world.env.admin, key.key_id, "test")
    world.gateway.assembled.gateway.refresh()
    assert_refused(world.infer(text), 401, "revoked")
    assert_refused(world.infer(token), 401, "revoked")


def test_a_key_revoked_through_the_admin_api_is_refused_at_once(world: World) -> None:
    key, text = world.gateway.key()
    assert world.infer(text).status_code == 200
    assert world.admin.delete(f"/admin/keys/{key.key_id}").status_code == 204
    assert_refused(world.infer(text), 401, "revoked")
    listed = world.admin.get("/admin/keys")
    assert {k["key_id"]: k for k in listed.json()}[key.key_id]["revoked"] is True
    assert text.split("_", 2)[2] not in listed.text


def test_a_revocation_by_another_process_applies_within_the_refresh_interval(world: World) -> None:
    key, text = world.gateway.key()
    assert world.infer(text).status_code == 200
    # Another process (`bastion keys revoke`) writes to the database; this gateway is not told.
    other = KeyStore(world.env.registry.engine, AuditLog(world.env.registry.engine, AUDIT_CHAIN))
    other.revoke(world.env.admin, key.key_id, "from the CLI")
    wait_for_refresh(world.gateway.assembled.gateway)  # the periodic refresh, counted rather than timed
    assert_refused(world.infer(text), 401, "revoked")


def test_a_suspended_key_is_403_until_resumed(world: World) -> None:
    key, text = world.gateway.key()
    store = world.gateway.assembled.gateway.store
    store.suspend(world.env.admin, key.key_id, "looks like a crawler")
    world.gateway.assembled.gateway.refresh()
    assert_refused(world.infer(text), 403, "suspended")
    assert_refused(world.client.get(f"/v2/models/{ONNX}", headers=bearer(text)), 403, "suspended")
    store.resume(world.env.admin, key.key_id, "checked")
    world.gateway.assembled.gateway.refresh()
    assert world.infer(text).status_code == 200


def test_suspend_and_resume_through_the_admin_api(world: World) -> None:
    key, text = world.gateway.key()
    assert world.admin.post(f"/admin/keys/{key.key_id}/suspend", json={"reason": "crawler"}).status_code == 200
    assert_refused(world.infer(text), 403, "suspended")
    assert world.admin.post(f"/admin/keys/{key.key_id}/resume", json={"reason": "checked"}).status_code == 200
    assert world.infer(text).status_code == 200


def test_a_key_scoped_to_another_model_is_403(world: World) -> None:
    _, text = world.gateway.key(models=(SKOPS,))
    assert world.infer(text, SKOPS).status_code == 200
    assert_refused(world.infer(text, ONNX), 403, "out-of-scope")
    assert_refused(world.client.get(f"/v2/models/{ONNX}", headers=bearer(text)), 403, "out-of-scope")


def test_a_key_without_the_infer_operation_is_403(world: World) -> None:
    _, text = world.gateway.key(operations=("metadata",))
    assert world.client.get(f"/v2/models/{ONNX}", headers=bearer(text)).status_code == 200
    assert_refused(world.infer(text), 403, "out-of-scope")


def test_an_unknown_model_is_404(world: World) -> None:
    _, text = world.gateway.key()
    assert_refused(world.infer(text, "no-such-model"), 404, "unknown-model")


def test_a_version_that_is_not_served_is_404(world: World) -> None:
    _, text = world.gateway.key()
    answer = world.client.post(f"/v2/models/{ONNX}/versions/99/infer", json=infer_body(), headers=bearer(text))
    assert answer.status_code == 404
    assert "outputs" not in answer.text


# --- tokens ---------------------------------------------------------------------------------


def test_a_token_is_confined_to_its_model(world: World) -> None:
    _, text = world.gateway.key(operations=("infer", "token"))
    issued = world.token(text, ONNX)
    assert issued.status_code == 200
    token = issued.json()["token"]
    assert token.startswith("bst1.") and issued.json()["model"] == ONNX
    assert world.infer(token, ONNX).status_code == 200
    assert_refused(world.infer(token, SKOPS), 403, "out-of-scope")


def test_an_expired_token_is_401(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    key, text = world.gateway.key(operations=("infer", "token"))
    gateway = world.gateway.assembled.gateway
    minter = gateway.minter
    stale, _ = minter.issue(key.key_id, ONNX, 60, now=time.time() - 61)
    fresh, _ = minter.issue(key.key_id, ONNX, 60)
    assert world.infer(fresh).status_code == 200
    assert_refused(world.infer(stale), 401, "bad-token")
    issued_at = float(int(time.time()))
    monkeypatch.setattr(gateway, "clock", lambda: issued_at)  # the gateway's clock, not a sleep
    short = world.token(text, ONNX, lifetime=1).json()
    assert short["expires"] == issued_at + 1
    monkeypatch.setattr(gateway, "clock", lambda: issued_at + 0.5)
    assert world.infer(short["token"]).status_code == 200
    monkeypatch.setattr(gateway, "clock", lambda: issued_at + 1)
    assert_refused(world.infer(short["token"]), 401, "bad-token")


def test_a_forged_token_is_401(world: World) -> None:
    key, text = world.gateway.key(operations=("infer", "token"))
    token = world.token(text, ONNX).json()["token"]
    payload, mac = token[len("bst1.") :].split(".")

    def flip(part: str, at: int) -> str:
        return part[:at] + ("A" if part[at] != "A" else "B") + part[at + 1 :]

    forgeries = [
        f"bst1.{flip(payload, 3)}.{mac}",
        f"bst1.{payload}.{flip(mac, 5)}",
        f"bst1.{payload}",
        TokenMinter(b"k" * 32).issue(key.key_id, ONNX, 60)[0],  # right claims, wrong secret
    ]
    for forged in forgeries:
        assert_refused(world.infer(forged), 401, "bad-token")
    assert world.infer(token).status_code == 200


def test_tokens_cannot_mint_tokens_nor_be_minted_beyond_the_key(world: World) -> None:
    _, text = world.gateway.key(models=(ONNX,), operations=("infer", "token"))
    token = world.token(text, ONNX).json()["token"]
    assert_refused(world.token(token, ONNX), 403, "token-from-token")
    assert_refused(world.token(text, SKOPS), 403, "out-of-scope")
    _, plain = world.gateway.key()  # no "token" operation
    assert_refused(world.token(plain, ONNX), 403, "out-of-scope")


# --- limits ---------------------------------------------------------------------------------


def test_over_the_rate_is_429_with_retry_after(world: World) -> None:
    # One row per 100 s after a burst of four rows (two requests of two rows): at one per second,
    # three requests spread over more than a second by a loaded machine all passed. The wait is
    # measured, never bounded. Limits count rows: the third request's two rows wait 200 s.
    _, text = world.gateway.key(rate=RateLimit(0.01, burst=4), quota=None)
    _, other = world.gateway.key(rate=RateLimit(0.01, burst=4), quota=None)
    started = time.monotonic()
    answers = [world.infer(text) for _ in range(3)]
    took = time.monotonic() - started
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_refused(answers[2], 429, "rate")
    retry = answers[2].headers["retry-after"]
    assert retry.isdigit() and max(1.0, 200 - took) <= int(retry) <= 200, (retry, took)
    assert world.infer(other).status_code == 200  # limits are per key


def test_over_the_daily_quota_is_429_until_midnight_utc(world: World) -> None:
    _, text = world.gateway.key(rate=None, quota=Quota(daily=6))  # rows: three requests of two
    assert [world.infer(text).status_code for _ in range(3)] == [200, 200, 200]
    before = seconds_to_utc_midnight()
    answer = world.infer(text)
    after = seconds_to_utc_midnight()
    assert_refused(answer, 429, "daily-quota")
    retry = answer.headers["retry-after"]
    assert retry.isdigit() and int(retry) > 0
    # The wait until midnight as the gateway saw it, between readings taken around the request
    # (a loaded machine widens that interval, never the rule; it was "within 5 s" of one reading).
    assert math.floor(after) <= int(retry) <= math.ceil(before) + 1, (retry, before, after)


# --- input validation -----------------------------------------------------------------------


def _raw(values: str, shape: str = "[1, 20]") -> bytes:
    return f'{{"inputs": [{{"name": "features", "datatype": "FP32", "shape": {shape}, "data": [{values}]}}]}}'.encode()


def _fp32(value: str) -> bytes:
    return _raw(", ".join([value] * FEATURES))


INVALID: dict[str, tuple[bytes, str, tuple[str, ...]]] = {  # body, the recorded reason, what must not be echoed
    "not-json": (b'{"inputs": [{"name": "features", "data": [1.5, 2.5', "not-json", ("1.5",)),
    "not-an-object": (b"[1.5]", "not-an-object", ("1.5",)),
    "no-inputs": (b'{"outputs": []}', "inputs", ()),
    "wrong-name": (orjson.dumps(infer_body(name="feature_vector")), "name-or-datatype", ("feature_vector",)),
    "wrong-datatype": (orjson.dumps(infer_body(datatype="FP64")), "name-or-datatype", ("FP64",)),
    "wrong-shape": (orjson.dumps(infer_body(rows(2), shape=[2, 19])), "shape", ("19",)),
    "batch-above-max": (orjson.dumps(infer_body(rows(65))), "shape", ("65",)),
    "data-length": (orjson.dumps(infer_body([[0.5] * 39], shape=[1, 20])), "data-length", ()),
    "string-element": (_fp32('"0.5"'), "element-type", ()),
    "bool-element": (_fp32("true"), "element-type", ()),
    "nan": (_fp32("NaN"), "not-json", ("NaN",)),
    "infinity": (_fp32("Infinity"), "not-json", ("Infinity",)),
    "overflowing-literal": (_fp32("1e999"), "not-json", ("1e999",)),
    "above-max": (orjson.dumps(infer_body([[1000.5] * FEATURES])), "above-max", ("1000.5",)),
    "below-min": (orjson.dumps(infer_body([[0.25] * 19 + [-1000.5]])), "below-min", ("1000.5",)),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_input_is_one_generic_400_that_echoes_nothing(world: World, case: str) -> None:
    body, reason, sent = INVALID[case]
    key, text = world.gateway.key(output="probabilities", rate=None, quota=None)
    answer = world.client.post(f"/v2/models/{ONNX}/infer", content=body, headers=bearer(text))
    spec = world.gateway.assembled.gateway.models[ONNX].spec
    bounds = (f"{spec.input.minimum[0]:.3f}"[:-1], f"{spec.input.maximum[0]:.3f}"[:-1])  # type: ignore[index]
    assert_generic_refusal(answer, INPUT, *sent, *bounds, "min", "max")
    assert world.refused_reasons(key.key_id, 1) == [f"invalid-input:{reason}"]


def test_input_bounds_are_per_feature_and_inclusive(world: World) -> None:
    _, text = world.gateway.key(rate=None, quota=None)
    spec = world.gateway.assembled.gateway.models[ONNX].spec
    low, high = spec.input.minimum, spec.input.maximum
    assert low is not None and high is not None
    edge = [float(np.float32(high[0]))] * 10 + [float(np.float32(low[0]))] * 10
    assert world.infer(text, body=infer_body([edge])).status_code == 200


def test_a_number_beyond_fp32_is_refused_even_without_bounds(world: World) -> None:
    _, text = world.gateway.key(output="probabilities", rate=None, quota=None)
    answer = world.client.post(f"/v2/models/{UNBOUNDED}/infer", content=_fp32("1e39"), headers=bearer(text))
    assert_generic_refusal(answer, INPUT, "1e39", "1e+39")


def test_the_unbounded_model_answers_ordinary_input(world: World) -> None:
    _, text = world.gateway.key(rate=None, quota=None)
    assert world.infer(text, UNBOUNDED, body=infer_body([[1000.5] * FEATURES])).status_code == 200


def _oversized() -> bytes:
    """A well-formed request (answered if size were not checked), over the 65 536-byte limit."""
    body = infer_body(rows(1), request_id="x")
    text = orjson.dumps(body)
    return text[:-1] + b" " * (70_000 - len(text)) + b"}"


def test_an_oversized_body_with_content_length_is_refused(world: World) -> None:
    key, text = world.gateway.key(output="probabilities", rate=None, quota=None)
    body = _oversized()
    assert len(orjson.loads(body)["inputs"]) == 1  # valid JSON: only its size is wrong
    answer = world.client.post(f"/v2/models/{ONNX}/infer", content=body, headers=bearer(text))
    assert "content-length" in answer.request.headers
    assert_generic_refusal(answer, INPUT)
    assert world.refused_reasons(key.key_id, 1) == ["invalid-input:too-large"]


def test_an_oversized_chunked_body_is_refused(world: World) -> None:
    key, text = world.gateway.key(output="probabilities", rate=None, quota=None)
    body = _oversized()

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(body), 8192):
            yield body[at : at + 8192]

    answer = world.client.post(f"/v2/models/{ONNX}/infer", content=chunks(), headers=bearer(text))
    assert "content-length" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert_generic_refusal(answer, INPUT)
    assert world.refused_reasons(key.key_id, 1) == ["invalid-input:too-large"]


def _raw_exchange(port: int, head: str, body: bytes) -> bytes:
    """Send a request head and part of a body, never finish it, and read what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as conn:
        conn.sendall(head.encode() + body)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pytest.fail("the gateway waited for a body it should have refused by its size")
        return received


def test_a_declared_length_over_the_limit_is_refused_before_reading(world: World) -> None:
    _, text = world.gateway.key(rate=None, quota=None)
    head = (
        f"POST /v2/models/{ONNX}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {text}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    )
    received = _raw_exchange(world.gateway.inference.port, head, b'{"inputs": [')
    assert received.startswith(b"HTTP/1.1 400"), received[:200]
    assert b"x-bastion-refusal: invalid-input" in received


def test_a_chunked_body_is_cut_off_at_the_limit(world: World) -> None:
    _, text = world.gateway.key(rate=None, quota=None)
    head = (
        f"POST /v2/models/{ONNX}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {text}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(9))  # 73 728 bytes, never ended
    received = _raw_exchange(world.gateway.inference.port, head, body)
    assert received.startswith(b"HTTP/1.1 400"), received[:200]
    assert b"x-bastion-refusal: invalid-input" in received


# --- output policy --------------------------------------------------------------------------


@pytest.mark.parametrize("model", [ONNX, SKOPS])
def test_a_label_key_gets_only_the_label(world: World, model: str) -> None:
    _, text = world.gateway.key(output="label")
    answer = world.infer(text, model, body=infer_body(rows(3)))
    assert answer.status_code == 200
    assert output_names(answer) == ["label"]
    assert set(answer.json()["outputs"][0]["data"]) <= {"legit", "fraud"}
    assert "probabilities" not in answer.text and "score" not in answer.text


def test_score_and_probabilities_keys_get_what_they_were_granted(world: World) -> None:
    data = [[0.1 * (i + 1) * (-1) ** j for j in range(FEATURES)] for i in range(4)]
    _, full_key = world.gateway.key(output="probabilities")
    _, score_key = world.gateway.key(output="score", precision=1)
    full = world.infer(full_key, body=infer_body(data))
    scored = world.infer(score_key, body=infer_body(data))
    assert output_names(full) == ["label", "probabilities"]
    assert output_names(scored) == ["label", "score"]
    assert "probabilities" not in scored.text
    probabilities = np.asarray(full.json()["outputs"][1]["data"]).reshape(4, 2)
    assert full.json()["outputs"][1]["shape"] == [4, 2]
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert full.json()["outputs"][0]["data"] == [("legit", "fraud")[i] for i in probabilities.argmax(axis=1)]
    assert np.round(probabilities.max(axis=1), 6).tolist() != np.round(probabilities.max(axis=1), 1).tolist()
    scores = scored.json()["outputs"][1]["data"]
    assert scores == np.round(probabilities.max(axis=1), 1).tolist()
    assert all(round(s, 1) == s for s in scores)
    assert scored.json()["outputs"][0]["data"] == full.json()["outputs"][0]["data"]


@pytest.mark.parametrize(
    ("detail", "outputs"),
    [
        ("label", ["label"]),
        ("score", ["label", "score"]),
        ("probabilities", ["label", "probabilities"]),
    ],
)
def test_metadata_hides_the_input_ranges(world: World, detail: str, outputs: list[str]) -> None:
    _, text = world.gateway.key(output=detail)
    spec = world.gateway.assembled.gateway.models[ONNX].spec
    for path in (f"/v2/models/{ONNX}", f"/v2/models/{ONNX}/versions/1"):
        answer = world.client.get(path, headers=bearer(text))
        assert answer.status_code == 200
        document = answer.json()
        assert document["inputs"] == [{"name": INPUT, "datatype": "FP32", "shape": [-1, FEATURES]}]
        assert [o["name"] for o in document["outputs"]] == outputs
        for bound in (spec.input.minimum, spec.input.maximum):
            assert bound is not None
            assert f"{bound[0]:.4f}"[:-1] not in answer.text
        assert "min" not in answer.text and "max" not in answer.text and "profile" not in answer.text


# --- kill switch ----------------------------------------------------------------------------


def test_the_kill_switch_stops_a_model_for_everyone_and_is_audited(world: World) -> None:
    _, first = world.gateway.key(operations=("infer", "token"))
    _, second = world.gateway.key(output="probabilities")
    token = world.token(first).json()["token"]
    assert world.admin.post(f"/admin/models/{ONNX}/disable", json={"reason": "drill"}).status_code == 200
    try:
        for caller in (first, second, token):
            assert_refused(world.infer(caller), 503, "model-disabled")
        assert world.infer(second, SKOPS).status_code == 200
    finally:
        assert world.admin.post(f"/admin/models/{ONNX}/enable", json={"reason": "drill over"}).status_code == 200
    assert world.infer(second).status_code == 200
    actions = [(e.action, e.actor, e.details.get("reason")) for e in world.env.audit_entries() if e.subject == ONNX]
    assert ("model.disable", "admin", "drill") in actions
    assert ("model.enable", "admin", "drill over") in actions


def test_the_kill_switch_from_another_process_applies_at_the_next_refresh(world: World) -> None:
    _, text = world.gateway.key()
    other = KeyStore(world.env.registry.engine, AuditLog(world.env.registry.engine, AUDIT_CHAIN))
    other.disable_model(world.env.admin, SKOPS, "from the CLI")
    try:
        wait_for_refresh(world.gateway.assembled.gateway)  # counted rather than timed
        assert_refused(world.infer(text, SKOPS), 503, "model-disabled")
    finally:
        other.enable_model(world.env.admin, SKOPS, "drill over")
    wait_for_refresh(world.gateway.assembled.gateway)
    assert world.infer(text, SKOPS).status_code == 200
    actions = [(e.action, e.actor, e.details.get("reason")) for e in world.env.audit_entries() if e.subject == SKOPS]
    assert ("model.disable", "admin", "from the CLI") in actions
    assert ("model.enable", "admin", "drill over") in actions


def test_the_admin_api_requires_a_registry_administrator(world: World) -> None:
    _, text = world.gateway.key()
    with httpx.Client(base_url=world.gateway.admin_url, timeout=HANG_GUARD) as anonymous:
        for headers in ({}, bearer("not-a-token"), bearer(text)):
            assert anonymous.post(f"/admin/models/{ONNX}/disable", json={}, headers=headers).status_code == 401
            assert anonymous.get("/admin/keys", headers=headers).status_code == 401
        reader = bearer(world.reader_token)
        assert anonymous.post(f"/admin/models/{ONNX}/disable", json={}, headers=reader).status_code == 403
        assert anonymous.post("/admin/keys", json={"name": "x"}, headers=reader).status_code == 403
    assert world.infer(text).status_code == 200  # nothing was disabled
    created = world.admin.post("/admin/keys", json={"name": "via-api", "models": [SKOPS], "output": "score"})
    assert created.status_code == 201
    answer = world.infer(created.json()["key"], SKOPS)
    assert output_names(answer) == ["label", "score"]


# --- the Triton client ----------------------------------------------------------------------


def test_the_triton_http_client_works_with_a_key_and_fails_without(world: World) -> None:
    import tritonclient.http as httpclient  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    _, text = world.gateway.key()
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{world.gateway.inference.port}")
    try:
        assert client.is_server_ready(headers=bearer(text))
        assert client.is_model_ready(ONNX, headers=bearer(text))
        assert not client.is_server_ready()
        features = httpclient.InferInput(INPUT, [2, FEATURES], "FP32")
        features.set_data_from_numpy(np.full((2, FEATURES), 0.3, dtype=np.float32), binary_data=False)
        wanted = [httpclient.InferRequestedOutput("label", binary_data=False)]
        result = client.infer(ONNX, [features], outputs=wanted, headers=bearer(text))
        labels = result.as_numpy("label")
        assert labels is not None and labels.shape == (2,)
        assert {str(v) for v in labels} <= {"legit", "fraud"}
        assert result.as_numpy("probabilities") is None
        with pytest.raises(InferenceServerException, match="an API key or token is required") as refused:
            client.infer(ONNX, [features], outputs=wanted)
        assert str(refused.value.status()) == "401"
    finally:
        client.close()


# --- metrics --------------------------------------------------------------------------------


def _refusals(world: World, *, over_http: bool = True) -> dict[str, float]:
    if over_http:
        answer = world.admin.get("/metrics")
        assert answer.status_code == 200
        exposition = answer.text
    else:
        exposition = world.gateway.assembled.gateway.metrics.exposition().decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "bastion_gateway_refusals_total"
    }


def test_metrics_need_an_administrator(world: World) -> None:
    with httpx.Client(base_url=world.gateway.admin_url, timeout=HANG_GUARD) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/metrics", headers=bearer("nope")).status_code == 401
        assert anonymous.get("/metrics", headers=bearer(world.reader_token)).status_code == 403
    assert "bastion_gateway_refusals_total" in world.admin.get("/metrics").text


@pytest.mark.parametrize("over_http", [pytest.param(True), False], ids=["admin-port", "in-process"])
def test_metrics_count_refusals_by_reason(world: World, over_http: bool) -> None:
    _, text = world.gateway.key(models=(SKOPS,))
    before = _refusals(world, over_http=over_http)
    for _ in range(3):
        world.infer("bsk_0000_wrong")
    world.infer(text, ONNX)
    world.infer(text, body={"inputs": []}, model=SKOPS)
    after = _refusals(world, over_http=over_http)
    assert after.get("bad-key", 0) - before.get("bad-key", 0) == 3
    assert after.get("out-of-scope", 0) - before.get("out-of-scope", 0) == 1
    assert after.get("invalid-input", 0) - before.get("invalid-input", 0) == 1


# --- the audit trail ------------------------------------------------------------------------


def test_every_request_is_audited_once_in_a_verifiable_chain(world: World, tmp_path: Path) -> None:
    env = make_registry(tmp_path / "registry", [world.built.signer_pub])
    env.publish(ONNX, world.built.folder("onnx"))
    env.publish(SKOPS, world.built.folder("sklearn"))
    with running(env.registry, env.admin, GatewaySettings(models=(ONNX, SKOPS), alarm_policy=ALERT_ONLY)) as gateway:
        _, ok = gateway.key(rate=RateLimit(1000, burst=1000), quota=None)  # 16 requests of 2 rows at once
        _, limited = gateway.key(rate=RateLimit(0.001, burst=4), quota=None)  # two 2-row requests; no refill meanwhile
        _, narrow = gateway.key(models=(SKOPS,))
        plan = (
            [(ok, ONNX, infer_body())] * 12
            + [(ok, SKOPS, infer_body())] * 4
            + [("bsk_1234_wrong", ONNX, infer_body())] * 5
            + [(None, ONNX, infer_body())] * 3
            + [(ok, ONNX, {"inputs": "nope"})] * 4
            + [(narrow, ONNX, infer_body())] * 3
            + [(limited, ONNX, infer_body())] * 5
        )

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=HANG_GUARD) as client:
                return await asyncio.gather(
                    *(
                        client.post(f"/v2/models/{model}/infer", json=body, headers=bearer(key) if key else {})
                        for key, model, body in plan
                    )
                )

        answers = asyncio.run(burst())
    # `running` stopped the servers and closed the gateway: its audit writer has flushed.
    statuses = collections.Counter(a.status_code for a in answers)
    assert statuses == {200: 18, 401: 8, 400: 4, 403: 3, 429: 3}
    log = AuditLog(env.registry.engine, AUDIT_CHAIN)
    entries = [e for e in log.entries() if e.action in {"infer", "infer.refused"}]
    # Refusals of callers without a valid key are tallied: one entry per source and reason, counted.
    assert sum(int(e.details.get("count", 1)) for e in entries) == len(plan)
    assert sum(e.action == "infer" for e in entries) == statuses[200]
    recorded: collections.Counter[str] = collections.Counter()
    for e in entries:
        if e.action == "infer.refused":
            recorded[e.details["reason"].split(":")[0]] += int(e.details.get("count", 1))
    sent = collections.Counter(a.headers["x-bastion-refusal"] for a in answers if a.status_code != 200)
    assert recorded == sent
    report = log.verify([load_public_key(env.registry.config.public_key)])
    assert report.ok, report.problems
    assert report.last_signed_seq == report.last_seq  # the clean shutdown signed the head
