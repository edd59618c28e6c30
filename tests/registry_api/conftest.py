"""A real registry behind a real uvicorn server on 127.0.0.1, and httpx clients that talk to it.

Each test gets a fresh registry (SQLite and a blob folder under tmp_path) and its own server on
a free port, started in a background thread and stopped when the test ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bastion.registry import Registry, init_registry
from bastion.registry.api import create_app
from corpus.hang_guard import HANG_GUARD, wait_until

STARTUP_SECONDS = HANG_GUARD


@dataclass
class Server:
    url: str
    registry: Registry
    app: FastAPI
    admin_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=HANG_GUARD)


@pytest.fixture
def registry_policy() -> str | None:
    """The registry's policy (YAML); None: the default. A test module overrides this fixture."""
    return None


@pytest.fixture
def server(tmp_path: Path, registry_policy: str | None) -> Iterator[Server]:
    config = init_registry(tmp_path / "reg")
    if registry_policy is not None:
        config.policy.write_text(registry_policy, encoding="utf-8")
    registry = Registry(config)
    admin_token = registry.bootstrap("admin")
    app = create_app(registry)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, name="registry-api", daemon=True)
    thread.start()
    wait_until(lambda: running.started, "the registry API server starting", alive=thread.is_alive)
    host, port = running.servers[0].sockets[0].getsockname()[:2]
    try:
        yield Server(f"http://{host}:{port}", registry, app, admin_token)
    finally:
        running.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
        registry.close()


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as client:
        yield client


@pytest.fixture
def user(server: Server, admin: httpx.Client) -> Iterator[Callable[..., httpx.Client]]:
    """`user(name, role, model)`: a new principal with that role, as a client holding its token."""
    opened: list[httpx.Client] = []

    def make(name: str, role: str, model: str = "*") -> httpx.Client:
        assert admin.post("/v1/principals", json={"name": name, "kind": "user"}).status_code == 201
        assert admin.post("/v1/grants", json={"principal": name, "role": role, "model": model}).status_code == 200
        issued = admin.post("/v1/tokens", json={"principal": name})
        assert issued.status_code == 201, issued.text
        client = server.client(issued.json()["token"])
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
