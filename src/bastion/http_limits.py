"""Bounds on what an HTTP client can make a Bastion server hold: bodies, time, connections.

Every API (the gateway's inference and admin ports, the registry's) runs behind the same
bounds. The review found a 100 MB body read whole before a scope check (+310 MB of memory,
then a 403), and a client that sent half a body and stalled held its connection for ever.

- `BodyLimit` (an ASGI wrapper) refuses a body over its route's cap before reading it: by its
  Content-Length at once, and by counting as a chunked body streams in; it drops a client
  whose body stalls (no bytes for `read_timeout`) or trickles (under `min_rate` after that).
- `GuardedHttpTools` (uvicorn's httptools protocol) drops a connection whose request head is
  not complete within `head_timeout` or grows past `max_head_bytes` (slow or endless headers).
- uvicorn's own bounds: `limit_concurrency` (503 past it) and `timeout_keep_alive`.

`server_config` puts the three together; `app_from_environment` does the same for a factory
named by BASTION_HTTP_APP, for `uvicorn.run(..., workers=N)`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LIMITS_VARIABLE = "BASTION_HTTP_LIMITS"
APP_VARIABLE = "BASTION_HTTP_APP"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may make a server hold.

    Attributes:
        max_body: bytes of a request body, unless a prefix in `body_limits` says otherwise.
        body_limits: (path prefix, bytes) pairs; the longest matching prefix wins.
        read_timeout: seconds a body may go without a byte before the client is dropped (408).
        min_rate: bytes per second a body must average once it has taken `read_timeout`.
        head_timeout: seconds from a request's first byte to the end of its headers.
        max_head_bytes: bytes of request line and headers together.
        max_connections: open connections; past it requests get 503 (uvicorn's limit_concurrency).
        keep_alive: seconds an idle connection stays open between requests.
    """

    max_body: int = 1 << 20
    body_limits: tuple[tuple[str, int], ...] = ()
    read_timeout: float = 30.0
    min_rate: float = 10_000.0
    head_timeout: float = 10.0
    max_head_bytes: int = 64 * 1024
    max_connections: int = 1000
    keep_alive: int = 5

    def body_cap(self, path: str) -> int:
        """The most bytes a body sent to `path` may hold."""
        best, cap = -1, self.max_body
        for prefix, limit in self.body_limits:
            if path.startswith(prefix) and len(prefix) > best:
                best, cap = len(prefix), limit
        return cap

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HttpLimits:
        raw = json.loads(text)
        raw["body_limits"] = tuple((str(prefix), int(cap)) for prefix, cap in raw.get("body_limits", ()))
        return cls(**raw)


class _Refused(Exception):
    """The body broke a bound; the wrapper has answered the client itself."""


def _reply(status: int, message: bytes) -> tuple[Message, Message]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(message)).encode()),
        (b"connection", b"close"),  # uvicorn closes the connection once this is sent
    ]
    return {"type": "http.response.start", "status": status, "headers": headers}, {
        "type": "http.response.body",
        "body": message,
    }


TOO_LARGE = _reply(413, b'{"error":"the request body is too large"}')
TIMED_OUT = _reply(408, b'{"error":"the request body did not arrive in time"}')


class BodyLimit:
    """An ASGI wrapper that bounds request bodies in size and in time, before the app reads them."""

    def __init__(self, app: ASGIApp, limits: HttpLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limits = limits
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.body_cap(scope["path"])
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            for message in TOO_LARGE:  # before a byte of the body is read
                await send(message)
            return
        guard = _Guard(self.limits, cap, receive, send, self.clock)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.answered:  # the app's own failure, not a bound of ours
                raise


class _Guard:
    """One request's receive and send, bounded: past a bound, answer (413/408) and end the body."""

    def __init__(self, limits: HttpLimits, cap: int, receive: Receive, send: Send, clock: Callable[[], float]) -> None:
        self.limits, self.cap, self._receive, self._send, self.clock = limits, cap, receive, send, clock
        self.size = 0
        self.started: float | None = None
        self.body_done = False
        self.response_started = False
        self.answered = False  # by this guard: the app's later messages are dropped

    async def receive(self) -> Message:
        if self.answered:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()  # only a disconnect can come now
        now = self.clock()
        if self.started is None:
            self.started = now
        wait = self.limits.read_timeout
        elapsed = now - self.started
        if elapsed > self.limits.read_timeout:  # a trickle: at least min_rate on average from here on
            wait = max(0.0, (self.size / self.limits.min_rate) - elapsed + self.limits.read_timeout)
            wait = min(wait, self.limits.read_timeout)
        try:
            message = await asyncio.wait_for(self._receive(), timeout=wait)
        except TimeoutError:
            return await self._refuse(TIMED_OUT)
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.cap:
                return await self._refuse(TOO_LARGE)
            self.body_done = not message.get("more_body", False)
        return message

    async def _refuse(self, reply: tuple[Message, Message]) -> Message:
        if not self.response_started:
            self.answered = True
            for message in reply:
                await self._send(message)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound on each request head.

    Limits come from BASTION_HTTP_LIMITS (set by `server_config` / the `serve` commands), so
    that the class can be handed to uvicorn by reference, in every worker.
    """

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()  # the next request on a kept-alive connection begins
        super().data_received(data)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            # Raised inside the parser's callback: uvicorn answers 400 and closes the connection.
            raise ValueError("the request head is too large")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)


def _protocol_for(limits: HttpLimits) -> type[GuardedHttpTools]:
    return type("BoundedHttpTools", (GuardedHttpTools,), {"limits": limits})


def server_config(app: ASGIApp, limits: HttpLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration serving `app` within `limits` (other uvicorn options as given)."""
    return uvicorn.Config(
        BodyLimit(app, limits),
        http=_protocol_for(limits),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive,
        **options,
    )


class EnvironmentHttpTools(GuardedHttpTools):
    """`GuardedHttpTools` with the limits of BASTION_HTTP_LIMITS, for uvicorn worker processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits_from_environment()


def limits_from_environment() -> HttpLimits:
    text = os.environ.get(LIMITS_VARIABLE)
    return HttpLimits.from_json(text) if text else HttpLimits()


def app_from_environment() -> ASGIApp:
    """The factory BASTION_HTTP_APP names ("module:function"), within BASTION_HTTP_LIMITS."""
    module, _, name = os.environ[APP_VARIABLE].partition(":")
    factory = getattr(importlib.import_module(module), name)
    return BodyLimit(factory(), limits_from_environment())
