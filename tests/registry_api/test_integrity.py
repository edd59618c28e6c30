"""A tampered blob is an integrity failure, with its own status and audit entry (issue 10, section 3).

The review swapped the bytes of stored blobs on disk and asked the API for them: the answer was
404 "not found", as if nothing had happened but a typo. Now each is a 409 naming what was
altered, and each is written to the registry's audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from registry_api.clients import numpy_model, register
from registry_api.conftest import Server


def _tamper(server: Server, digest: str, data: bytes = b'{"verdict": "pass"}') -> None:
    blob = Path(server.registry.blobs.path_of(digest))
    blob.chmod(0o644)
    blob.write_bytes(data)


def _integrity_entries(server: Server) -> list[dict[str, object]]:
    return [
        {"actor": e.actor, "subject": e.subject, **e.details}
        for e in server.registry.audit.entries()
        if e.action == "integrity.failure"
    ]


def test_a_tampered_scan_report_is_a_409_and_audited(
    server: Server, user: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    alice = user("alice", "contributor")
    version = register(alice, "m", numpy_model(tmp_path / "model")).json()
    scan_blob = server.registry.version(server.registry.authenticate(server.admin_token), "m", 1).scan_blob
    assert scan_blob is not None
    _tamper(server, scan_blob)

    answer = alice.get(f"/v1/models/m/versions/{version['number']}/scan")

    assert answer.status_code == 409, answer.text
    assert "is altered in the blob store" in answer.json()["error"]
    assert _integrity_entries(server) == [
        {"actor": "alice", "subject": scan_blob, "what": "the scan report of m@1", "problem": "altered"}
    ]


def test_a_tampered_attestation_is_a_409_not_a_404(
    server: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    register(admin, "m", numpy_model(tmp_path / "model"))
    promoted = admin.post("/v1/models/m/versions/1/promotions", json={"stage": "staging"})
    assert promoted.status_code == 200, promoted.text
    attestation = promoted.json()["attestation"]
    _tamper(server, attestation, b'{"payloadType": "forged"}')

    answer = admin.get(f"/v1/attestations/{attestation}")

    assert answer.status_code == 409, answer.text
    assert [e["subject"] for e in _integrity_entries(server)] == [attestation]


def test_a_tampered_model_file_fails_the_gate_and_is_audited_as_such(
    server: Server, user: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    rita = user("rita", "reader")
    alice = user("alice", "contributor")
    version = register(alice, "m", numpy_model(tmp_path / "model")).json()
    weights = next(f for f in version["files"] if f["path"] == "weights.npy")
    _tamper(server, weights["digest"], b"\x93NUMPY swapped")

    checked = rita.post("/v1/models/m/versions/1/gate-check", json={"stage": "staging"})

    assert checked.status_code == 200, checked.text
    assert not checked.json()["allowed"]
    assert any(r.startswith("stored-bytes: weights.npy: the stored bytes changed") for r in checked.json()["reasons"])
    [entry] = _integrity_entries(server)
    assert (entry["actor"], entry["subject"]) == ("rita", "m@1")
    assert list(entry["files"]) == ["weights.npy"]  # type: ignore[call-overload]  # a JSON object
