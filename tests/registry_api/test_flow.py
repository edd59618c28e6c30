"""Upload, register, check, approve and promote a model over HTTP only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from bastion.registry.attest import PREDICATE_TYPE, open_statement
from bastion.sign.keys import load_public_key
from registry_api.clients import digest_of, malicious_pickle, numpy_model, register, upload
from registry_api.conftest import Server


def test_a_model_goes_from_upload_to_production(
    server: Server, user: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    alice = user("alice", "contributor", "sentiment")
    bob = user("bob", "approver")
    files = numpy_model(tmp_path / "model")

    for name, data in files.items():
        digest = digest_of(data)
        assert alice.head(f"/v1/blobs/{digest}").status_code == 404
        stored = alice.put(f"/v1/blobs/{digest}", content=data)
        assert stored.status_code == 201 and stored.json() == {"digest": digest, "stored": True}, name
        assert alice.head(f"/v1/blobs/{digest}").status_code == 200

    registered = register(
        alice, "sentiment", files, source="hf://acme/sentiment", licence="apache-2.0", description="sentiment, small"
    )
    assert registered.status_code == 201, registered.text
    version = registered.json()
    assert (version["model"], version["number"], version["stage"], version["registered_by"]) == (
        "sentiment",
        1,
        "dev",
        "alice",
    )
    assert {f["path"]: f["digest"] for f in version["files"]} == {n: digest_of(d) for n, d in files.items()}
    assert version["lineage"]["source"] == "hf://acme/sentiment"
    assert version["root_digest"].startswith("sha256:")

    path = "/v1/models/sentiment/versions/1"
    assert alice.get(path).json() == version
    assert [v["number"] for v in alice.get("/v1/models/sentiment/versions").json()] == [1]
    [summary] = alice.get("/v1/models").json()
    assert (summary["name"], summary["latest"], summary["stages"]) == ("sentiment", 1, {"dev": 1})
    scan = alice.get(f"{path}/scan")
    assert scan.headers["content-type"] == "application/json" and scan.json()["verdict"] == "pass"

    staged = alice.post(f"{path}/promotions", json={"stage": "staging"})
    assert staged.status_code == 200, staged.text
    decision = staged.json()
    assert decision["allowed"] and decision["promoted"] and decision["reasons"] == []
    assert {c["name"] for c in decision["checks"]} >= {"stored-bytes", "scan"}
    # Registry.attestation asks for read on every model, so alice (contributor on one) may not fetch it.
    envelope = bob.get(f"/v1/attestations/{decision['attestation']}")
    assert envelope.status_code == 200
    statement = open_statement(envelope.content, load_public_key(server.registry.config.public_key))
    assert statement["predicateType"] == PREDICATE_TYPE
    assert (statement["predicate"]["model"], statement["predicate"]["toStage"]) == ("sentiment", "staging")

    refused = alice.post(f"{path}/promotions", json={"stage": "production"})
    assert refused.status_code == 409
    body = refused.json()
    assert body["allowed"] is False and body["promoted"] is False and body["attestation"] is None
    assert any(reason.startswith("approvals:") for reason in body["reasons"])
    assert "approvals" in body["error"] and body["hint"]
    assert alice.get(path).json()["stage"] == "staging"

    own = alice.post(f"{path}/approvals", json={"stage": "production"})
    assert own.status_code == 403  # a contributor may not approve, let alone its own version
    approved = bob.post(f"{path}/approvals", json={"stage": "production"})
    assert approved.status_code == 201 and approved.json()["approver"] == "bob"
    assert bob.post(f"{path}/approvals", json={"stage": "production"}).status_code == 409  # only once

    promoted = alice.post(f"{path}/promotions", json={"stage": "production"})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["to_stage"] == "production" and promoted.json()["attestation"]
    assert alice.get(path).json()["stage"] == "production"
    assert alice.get("/v1/models").json()[0]["stages"] == {"production": 1}


def test_an_approver_may_not_approve_what_it_registered(user: Callable[..., httpx.Client], tmp_path: Path) -> None:
    carol = user("carol", "approver", "sentiment")
    assert register(carol, "sentiment", numpy_model(tmp_path / "model")).status_code == 201
    answer = carol.post("/v1/models/sentiment/versions/1/approvals", json={"stage": "production"})
    assert answer.status_code == 403
    assert "separation of duties" in answer.json()["error"]


def test_a_malicious_pickle_fails_the_gate_check(admin: httpx.Client, user: Callable[..., httpx.Client]) -> None:
    alice = user("alice", "contributor", "evil")
    registered = register(alice, "evil", {"model.pkl": malicious_pickle(), "config.json": b"{}"})
    assert registered.status_code == 201, registered.text
    assert alice.get("/v1/models/evil/versions/1/scan").json()["verdict"] == "fail"

    checked = alice.post("/v1/models/evil/versions/1/gate-check", json={"stage": "staging"})
    assert checked.status_code == 200
    decision = checked.json()
    assert decision["allowed"] is False and decision["promoted"] is False
    [scan] = [c for c in decision["checks"] if c["name"] == "scan"]
    assert scan["passed"] is False and "system" in scan["detail"]
    assert any(reason.startswith("scan:") for reason in decision["reasons"])

    refused = alice.post("/v1/models/evil/versions/1/promotions", json={"stage": "staging"})
    assert refused.status_code == 409
    assert admin.get("/v1/models/evil/versions/1").json()["stage"] == "dev"


def test_bad_requests_name_what_is_wrong(admin: httpx.Client, tmp_path: Path) -> None:
    assert admin.get("/v1/models/nothing/versions").status_code == 404
    assert admin.get("/v1/models/nothing/versions/1").status_code == 404
    assert admin.post("/v1/models/nothing/versions/1/promotions", json={"stage": "staging"}).status_code == 404
    assert admin.post("/v1/models/nothing/versions/1/approvals", json={"stage": "staging"}).status_code == 404

    files = numpy_model(tmp_path / "model")
    assert register(admin, "sentiment", files).status_code == 201
    assert admin.get("/v1/models/sentiment/versions/2").status_code == 404
    invalid = admin.get("/v1/models/sentiment/versions/0")
    assert invalid.status_code == 422 and set(invalid.json()) == {"error", "hint"}
    stage = admin.post("/v1/models/sentiment/versions/1/gate-check", json={"stage": "qa"})
    assert stage.status_code == 400 and "unknown stage" in stage.json()["error"]
    typo = admin.post("/v1/models/sentiment/versions/1/gate-check", json={"stage": "staging", "force": True})
    assert typo.status_code == 422 and "force" in typo.json()["error"]

    missing = {"w.npy": {"digest": digest_of(b"never uploaded"), "size": 14}}
    not_uploaded = admin.post("/v1/models/sentiment/versions", json={"files": missing})
    assert not_uploaded.status_code == 409 and "has not been uploaded" in not_uploaded.json()["error"]
    digest = upload(admin, b"{}")
    bad_name = admin.post("/v1/models/.hidden/versions", json={"files": {"c.json": {"digest": digest, "size": 2}}})
    assert bad_name.status_code == 422 and "model: bad name '.hidden'" in bad_name.json()["error"]

    weights = digest_of(files["weights.npy"])
    assert admin.get(f"/v1/attestations/{weights}").status_code == 404  # a blob, but no attestation
    assert admin.get(f"/v1/attestations/{digest_of(b'absent')}").status_code == 404
    assert admin.post("/v1/grants", json={"principal": "ghost", "role": "reader"}).status_code == 404
    assert admin.post("/v1/tokens", json={"principal": "ghost"}).status_code == 404
    assert admin.post("/v1/principals", json={"name": "admin"}).status_code == 409
    assert admin.post("/v1/grants", json={"principal": "admin", "role": "owner"}).status_code == 422
    unknown = admin.get("/v1/nowhere")
    assert unknown.status_code == 404 and set(unknown.json()) == {"error", "hint"}
    assert json.loads(admin.get("/v1/models").content)[0]["name"] == "sentiment"
