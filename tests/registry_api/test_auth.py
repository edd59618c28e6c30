"""Nothing is anonymous: tokens are checked on every route, and roles on every action."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from registry_api.clients import digest_of, numpy_model, register
from registry_api.conftest import Server


def _is_401(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    body = answer.json()
    assert set(body) == {"error", "hint"} and body["error"]


def test_health_is_the_only_anonymous_route(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        for method, path in [
            ("GET", "/v1/models"),
            ("GET", "/v1/models/m/versions"),
            ("GET", "/v1/models/m/versions/1/scan"),
            ("POST", "/v1/models/m/versions"),
            ("PUT", f"/v1/blobs/{digest_of(b'x')}"),
            ("GET", "/v1/audit/export"),
            ("POST", "/v1/tokens"),
        ]:
            _is_401(anonymous.request(method, path))
        assert anonymous.get("/openapi.json").status_code == 404  # no public schema either
        assert anonymous.head(f"/v1/blobs/{digest_of(b'x')}").status_code == 401


@pytest.mark.parametrize("token", ["nope", "bst_0123456789abcdef_wrong-secret", "bst__", ""])
def test_unknown_or_malformed_tokens_are_401(server: Server, token: str) -> None:
    with server.client(token) as client:
        _is_401(client.get("/v1/models"))


def test_another_scheme_is_401(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Basic {server.admin_token}"}) as client:
        answer = client.get("/v1/models")
        _is_401(answer)
        assert "Authorization: Bearer" in answer.json()["hint"]


def test_a_wrong_secret_for_a_real_token_id_is_401(server: Server) -> None:
    token_id = server.admin_token.split("_")[1]
    with server.client(f"bst_{token_id}_not-the-secret") as client:
        _is_401(client.get("/v1/models"))


def test_revoked_and_expired_tokens_are_401(
    server: Server, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert admin.post("/v1/principals", json={"name": "ci-bot", "kind": "service"}).status_code == 201
    assert admin.post("/v1/grants", json={"principal": "ci-bot", "role": "reader"}).status_code == 200
    issued = admin.post("/v1/tokens", json={"principal": "ci-bot"}).json()
    with server.client(issued["token"]) as bot:
        assert bot.get("/v1/models").status_code == 200
        assert admin.delete(f"/v1/tokens/{issued['token_id']}").status_code == 204
        answer = bot.get("/v1/models")
        _is_401(answer)
        assert "revoked" in answer.json()["error"]
    assert admin.delete("/v1/tokens/0000000000000000").status_code == 404

    issued_at = time.time()
    monkeypatch.setattr(server.registry, "_clock", lambda: issued_at)  # the registry's clock, not a sleep
    brief = admin.post("/v1/tokens", json={"principal": "ci-bot", "expires_in_seconds": 1}).json()
    assert brief["expires_in_seconds"] == 1
    with server.client(brief["token"]) as bot:
        monkeypatch.setattr(server.registry, "_clock", lambda: issued_at + 0.9)
        assert bot.get("/v1/models").status_code == 200
        monkeypatch.setattr(server.registry, "_clock", lambda: issued_at + 1.0)
        answer = bot.get("/v1/models")
        _is_401(answer)
        assert "expired" in answer.json()["error"]


def test_a_reader_may_read_but_change_nothing(
    server: Server, admin: httpx.Client, user: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    files = numpy_model(tmp_path / "model")
    assert register(admin, "sentiment", files).status_code == 201
    reader = user("rita", "reader")
    version = "/v1/models/sentiment/versions/1"

    assert reader.get(version).status_code == 200
    assert reader.post(f"{version}/gate-check", json={"stage": "staging"}).status_code == 200
    refs = {"weights.npy": {"digest": digest_of(files["weights.npy"]), "size": len(files["weights.npy"])}}
    for method, path, body in [
        ("POST", "/v1/models/sentiment/versions", {"files": refs}),
        ("POST", f"{version}/promotions", {"stage": "staging"}),
        ("POST", f"{version}/approvals", {"stage": "staging"}),
        ("POST", "/v1/grants", {"principal": "rita", "role": "admin"}),
        ("POST", "/v1/tokens", {"principal": "admin"}),
        ("POST", "/v1/principals", {"name": "mallory"}),
        ("GET", "/v1/audit/verify", None),
        ("GET", "/v1/audit/export", None),
    ]:
        answer = reader.request(method, path, json=body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"].startswith("rita")
    assert reader.put(f"/v1/blobs/{digest_of(b'x')}", content=b"x").status_code == 403
    assert reader.head(f"/v1/blobs/{digest_of(b'x')}").status_code == 403
    assert admin.get(version).json()["stage"] == "dev"


def test_roles_are_per_model(admin: httpx.Client, user: Callable[..., httpx.Client], tmp_path: Path) -> None:
    assert register(admin, "sentiment", numpy_model(tmp_path / "model")).status_code == 201
    other = user("olga", "contributor", "fraud")
    assert other.get("/v1/models").json() == []
    assert other.get("/v1/models/sentiment/versions").status_code == 403
    assert other.get("/v1/models/sentiment/versions/1").status_code == 403
    refused = register(other, "sentiment", {"x.json": b"{}"})  # may upload (contributor somewhere) ...
    assert refused.status_code == 403  # ... but not register under a model it holds no role on
