"""Bodies, time and connections are bounded on the gateway and the registry API (issue 10, section 2).

Before: the token route read any body before its scope check (100 MB: +310 MB of memory, then
403); a client that sent half a body, or half a request head, and stalled held its connection
for ever, on the gateway and on the registry API; connections were unbounded. The servers
here run exactly as `bastion serve` and `bastion registry serve` run them, with test-short
timeouts; the socket timeouts below only stop a broken test from hanging.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from bastion.http_limits import HttpLimits
from bastion.serve.run import Assembled, GatewaySettings, assemble, server_configs
from corpus.gateway_env import ONNX, RegistryEnv, bearer, built_models, infer_body, make_registry
from corpus.hang_guard import HANG_GUARD, wait_until

SHORT = 0.5  # seconds: the read and head timeout these servers run with
CONNECTIONS = 4
GUARD = HANG_GUARD  # a test that waits this long has failed; no speed is asserted


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _answers(url: str) -> bool:
    """Whether anything listens and answers at `url` yet (a readiness probe, whatever the status)."""
    try:
        httpx.get(url, timeout=HANG_GUARD)
    except httpx.TransportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    env: RegistryEnv
    assembled: Assembled
    port: int
    admin_port: int
    key: str  # may mint tokens
    plain: str  # may not


class _Thread:
    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, "the server starting", alive=self.thread.is_alive)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=GUARD)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("limits")
    built = built_models(home / "shared")
    env = make_registry(home / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))
    limits = HttpLimits(read_timeout=SHORT, head_timeout=SHORT, max_connections=CONNECTIONS)
    settings = GatewaySettings(models=(ONNX,), http=limits, port=_free_port(), admin_port=_free_port())
    assembled = assemble(env.registry, env.admin, settings)
    key = assembled.gateway.store.create(env.admin, _spec("minter", ("infer", "token")))[1]
    plain = assembled.gateway.store.create(env.admin, _spec("plain", ("infer",)))[1]
    assembled.gateway.refresh()
    inference_config, admin_config = server_configs(assembled, settings)
    servers = [_Thread(inference_config), _Thread(admin_config)]
    try:
        yield Served(env, assembled, settings.port, settings.admin_port, key, plain)
    finally:
        for server in servers:
            server.stop()
        assembled.close()


def _spec(name: str, operations: tuple[str, ...]) -> object:
    from bastion.serve.keys import KeySpec  # noqa: PLC0415

    return KeySpec(name, operations=operations, rate=None, quota=None)


def _send_until_answered(port: int, head: bytes, body_chunk: bytes, total: int) -> tuple[bytes, int]:
    """Send `head`, then up to `total` bytes of body in `body_chunk`s, stopping as soon as the
    server answers; returns what it answered and how many body bytes went out."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as conn:
        conn.sendall(head)
        while sent < total and not select.select([conn], [], [], 0.2)[0]:
            try:
                conn.sendall(body_chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(body_chunk)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received, sent


# --- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("operations", ["token", "no-token"])
def test_a_100_mb_body_to_the_token_route_is_refused_before_it_is_read(served: Served, operations: str) -> None:
    key = served.key if operations == "token" else served.plain
    head = (
        f"POST /v2/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    ).encode()
    before = _rss_kib()
    answer, sent = _send_until_answered(served.port, head, b" " * (1 << 20), 100_000_000)
    grown = _rss_kib() - before
    # Refused by its declared size (413) before the route runs, whichever the key's scope.
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 10 << 20, f"{sent} bytes of body went out before the refusal"
    assert grown < 8 * 1024, f"the server grew by {grown} KiB"


def test_a_chunked_body_is_cut_off_at_the_token_routes_cap(served: Served) -> None:
    head = (
        f"POST /v2/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {served.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b" " * 8192
    before = _rss_kib()
    answer, sent = _send_until_answered(served.port, head, b"%x\r\n%s\r\n" % (len(chunk), chunk), 100_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 10 << 20
    assert _rss_kib() - before < 8 * 1024


def test_an_ordinary_token_request_still_works(served: Served) -> None:
    answer = httpx.post(f"http://127.0.0.1:{served.port}/v2/tokens", json={"model": ONNX}, headers=bearer(served.key))
    assert answer.status_code == 200 and answer.json()["model"] == ONNX
    assert httpx.post(
        f"http://127.0.0.1:{served.port}/v2/models/{ONNX}/infer", json=infer_body(), headers=bearer(served.plain)
    ).status_code == 200


# --- stalls -----------------------------------------------------------------------------------------


def _stall(port: int, data: bytes) -> bytes:
    """Send `data` and go quiet; everything the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as conn:
        conn.sendall(data)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pytest.fail(f"the server held a stalled connection for {GUARD} s")
        except ConnectionResetError:
            pass
        return received


def _half_body(path: str, token: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs": ['
    ).encode()


def test_a_stalled_body_on_infer_is_dropped(served: Served) -> None:
    received = _stall(served.port, _half_body(f"/v2/models/{ONNX}/infer", served.plain))
    assert received.startswith(b"HTTP/1.1 408"), received[:200]


def test_a_stalled_body_on_the_admin_api_is_dropped(served: Served) -> None:
    received = _stall(served.admin_port, _half_body("/admin/keys", served.env.admin_token))
    assert received.startswith(b"HTTP/1.1 408"), received[:200]


@pytest.mark.parametrize("port", ["inference", "admin"])
def test_a_stalled_request_head_is_dropped(served: Served, port: str) -> None:
    number = served.port if port == "inference" else served.admin_port
    assert _stall(number, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") == b""


def test_an_endless_request_head_is_refused(served: Served) -> None:
    line = b"X-Pad: " + b"a" * 40_000 + b"\r\n"
    answer, sent = _send_until_answered(served.port, b"GET /v2/health/live HTTP/1.1\r\n", line, 1 << 26)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]  # closed, by its size or its time
    assert sent < 1 << 20


def test_a_token_request_without_the_scope_is_refused_before_its_body_is_read(served: Served) -> None:
    head = (
        f"POST /v2/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {served.plain}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer, sent = _send_until_answered(served.port, head, b"400\r\n" + b" " * 1024 + b"\r\n", 1 << 24)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert sent < 1 << 20


# --- connections --------------------------------------------------------------------------------------


def _past_the_connection_limit(port: int, path: str) -> int:
    idle = [socket.create_connection(("127.0.0.1", port), timeout=GUARD) for _ in range(CONNECTIONS)]
    try:
        for conn in idle:
            conn.sendall(b"G")  # a request begun, held open (within the head timeout)
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=GUARD).status_code
    finally:
        for conn in idle:
            conn.close()


def test_connections_past_the_limit_get_503_on_the_gateway(served: Served) -> None:
    assert _past_the_connection_limit(served.port, "/v2/health/live") == 503


# --- the registry API, as `bastion registry serve` runs it ------------------------------------------------


@pytest.fixture(scope="module")
def registry_server(served: Served) -> Iterator[tuple[int, str]]:
    port = _free_port()
    env = {**os.environ, "BASTION_REGISTRY": str(served.env.home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.main", "registry", "serve", "--port", str(port),
         "--read-timeout", str(SHORT), "--max-connections", str(CONNECTIONS)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/v1/models"), "the registry coming up",
                   alive=lambda: server.poll() is None, step=0.1)
        yield port, served.env.admin_token
    finally:
        server.terminate()
        server.communicate(timeout=GUARD)


def test_a_stalled_body_on_the_registry_api_is_dropped(registry_server: tuple[int, str]) -> None:
    port, token = registry_server
    received = _stall(port, _half_body("/v1/principals", token))
    assert received.startswith(b"HTTP/1.1 408"), received[:200]


def test_a_stalled_head_on_the_registry_api_is_dropped(registry_server: tuple[int, str]) -> None:
    port, _ = registry_server
    assert _stall(port, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") == b""


def test_a_huge_json_body_on_the_registry_api_is_refused_before_it_is_read(registry_server: tuple[int, str]) -> None:
    port, token = registry_server
    head = (
        f"POST /v1/principals HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    ).encode()
    answer, sent = _send_until_answered(port, head, b" " * (1 << 20), 100_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 10 << 20


def test_connections_past_the_limit_get_503_on_the_registry_api(registry_server: tuple[int, str]) -> None:
    port, _ = registry_server
    assert _past_the_connection_limit(port, "/v1/models") == 503
