"""The audit log over HTTP: verified and exported by an administrator only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from registry_api.clients import numpy_model, register


def test_every_change_is_audited_verified_and_exported(
    admin: httpx.Client, user: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    alice = user("alice", "contributor")
    assert register(alice, "sentiment", numpy_model(tmp_path / "model")).status_code == 201
    assert alice.post("/v1/models/sentiment/versions/1/promotions", json={"stage": "staging"}).status_code == 200

    report = admin.get("/v1/audit/verify")
    assert report.status_code == 200
    verified = report.json()
    assert verified["ok"] is True and verified["problems"] == [] and verified["entries"] >= 7
    # The server's check rests on its own folder's key and witness, and says so (issue 10, section 4).
    assert verified["anchored"] is False and verified["unwitnessed_tail"] == 0
    assert verified["last_witnessed_seq"] == verified["last_seq"] and verified["witness_location"]

    export = admin.get("/v1/audit/export")
    assert export.status_code == 200
    assert export.headers["content-type"] == "application/x-ndjson"
    lines = export.text.splitlines()
    assert len(lines) == verified["entries"] == int(export.headers["X-Audit-Entries"])
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    actions = [e["body"]["action"] for e in entries]
    for action in [
        "registry.bootstrap",
        "principal.add",
        "access.grant",
        "token.issue",
        "version.register",
        "version.promote",
    ]:
        assert action in actions

    assert alice.get("/v1/audit/verify").status_code == 403
    assert alice.get("/v1/audit/export").status_code == 403
