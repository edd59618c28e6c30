"""A pipelined Redis connection for the gateway's shared limits: one socket, many requests in flight.

A general Redis client pays per command for a pooled connection, a lock, a round trip of its
own and its reply parsing in Python; at thousands of requests a second that costs more than
the gateway's other checks together. The limiter needs one thing, fast: send a command and get
its reply. This connection writes every command queued during one event-loop turn in one
`write`, and matches replies to callers in order as they stream back (Redis answers a
connection's commands in the order sent), parsed by hiredis in C.

Failures fail fast and loudly: a connection that cannot be opened, that breaks, or that leaves
a reply unanswered for `timeout` seconds fails every command waiting on it with `RedisDown`,
and the next command opens a new connection. Nothing is retried here: the caller decides.

Why hand-written (ARCHITECTURE.md: only where redis-py, pipelined on hiredis, cannot come within
10% in the same run). Measured 2026-12-02 on the shared 2-core machine, load average 4-5,
rounds interleaved, medians:

- `benchmarks/redis_client.py --concurrency 1,16,256 --calls 200 --rounds 5`, limiter calls/s,
  ratio to this client at 1 / 16 / 256 coroutines: redis-py's fairest form (calls gathered
  onto one `Connection` while a batch is in flight, packed by hiredis, one deadline a batch)
  0.71 / 0.85 / 1.12; a `Pipeline` per loop turn 0.27 / 0.34 / 0.52; gathered `Pipeline`s
  0.35 / 0.62 / 0.55; the pooled client 0.52 / 0.18 / 0.16.
- `benchmarks/serve.py --only starlette --only bastion-redis --kinds onnx --rounds 5 --duration 8
  --redis-client resp --redis-client redis-py`, the gateway with every check on, wrk -c32:
  2,395 req/s here, 1,927 with the redis-py client (0.80; per round 0.64-0.90, median 0.87).
  With `--connections 2`: 940 against 973 (1.04).
- The same two, re-run when the machine fell quiet (load 0.5 at start): micro 0.88 / 0.98 / 0.88;
  gateway at -c32 3,098 against 3,117 req/s (1.01; per round 0.74-1.25). Borderline: outside
  10% under load and at 1 and 256 coroutines, level end to end on a quiet machine.

redis-py's asyncio connection is one request, then its reply: a batch waits for the previous
one, where this connection keeps writing each turn's commands while replies stream back; and
`redis.asyncio` packs commands in Python (61 us against hiredis' 7.4 us for the limiter's
EVALSHA). The redis-py client was the limiter's for commits 86f8afa..c4b60e3; its tests of the
limiter's behaviour under concurrency and failure stay, in tests/serve/test_limits_redis.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from bastion.errors import ConfigError


class RedisDown(Exception):
    """Redis could not be reached, or did not answer in time."""


class RedisReplyError(Exception):
    """Redis answered a command with an error (e.g. NOSCRIPT)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in, parsed from a `redis://`, `rediss://` or `unix://` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a Unix socket
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        try:
            db_text = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0] or "0"
            db = int(db_text)
            port = 6379 if parts.port is None else parts.port
        except ValueError as err:
            raise ConfigError(f"Redis URL {redacted(url)} is not valid: {err}") from err
        if db < 0 or not 0 < port < 65536:
            raise ConfigError(f"Redis URL {redacted(url)} is not valid: port {port}, database {db}")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigError(f"Redis URL {redacted(url)} names no socket path")
            return cls(path=parts.path, username=username, password=password, db=db)
        if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
            raise ConfigError(
                f"Redis URL {redacted(url)} is not valid",
                hint="Use redis://host:port/db, rediss:// for TLS, or unix:///path.",
            )
        return cls(parts.hostname, port, None, parts.scheme == "rediss", username, password, db)


def redacted(url: str) -> str:
    """The URL without its user name and password, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def encode(args: tuple[bytes | str | int, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RedisConnection) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class RedisConnection:
    """One pipelined connection to Redis; `call` is safe from any task of one event loop.

    Args:
        url: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or
            `unix:///path?db=N`.
        timeout: seconds to connect, and the longest any reply may take.
    """

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.address = RedisAddress.parse(url)
        self.where = redacted(url)
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._ready = False  # logged in and on the URL's database: open to every caller
        self._connecting: asyncio.Task[None] | None = None
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        """Send one command and return its reply (RedisReplyError for an error reply)."""
        if not self._ready:
            await self._connect()
        return await self._send(args)

    async def _send(self, args: tuple[bytes | str | int, ...]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, time.monotonic()))
        self._outgoing.append(encode(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing:
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self._transport is None:
            self._fail(RedisDown(f"Redis at {self.where}: the connection closed"))
            return
        self._transport.write(data)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout / 2, self._check_overdue)

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connecting.cancelled() and (task is None or not task.cancelling()):
                # close() stopped the connection being opened, not this caller's task
                raise RedisDown(f"Redis at {self.where}: the connection was closed") from None
            raise
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            async with asyncio.timeout(self.timeout):
                if address.path is not None:
                    transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), address.path)
                else:
                    context = ssl.create_default_context() if address.tls else None
                    transport, _ = await loop.create_connection(
                        lambda: _Protocol(self), address.host, address.port, ssl=context
                    )
        except (OSError, TimeoutError) as err:
            raise RedisDown(f"Redis at {self.where} could not be reached: {err or 'timed out'}") from err
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._transport = transport
        hello: list[tuple[str | int, ...]] = []
        if address.password is not None:
            hello.append(("AUTH", address.username, address.password) if address.username else ("AUTH", address.password))
        if address.db:
            hello.append(("SELECT", address.db))
        for command in hello:  # sent ahead of everything else: nobody else may call yet
            try:
                await self._send(command)
            except RedisReplyError as err:
                refused = RedisDown(f"Redis at {self.where} refused {command[0]}: {err}")
                self._broken(refused)
                raise refused from err
        self._ready = True

    def _received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if not self._waiting:  # a reply nobody asked for: the stream is out of step
                self._broken(RedisDown(f"Redis at {self.where} sent an unexpected reply"))
                return
            future, _sent = self._waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, RedisReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        oldest = self._waiting[0][1]
        if time.monotonic() - oldest > self.timeout:
            self._broken(RedisDown(f"Redis at {self.where} did not answer within {self.timeout:g} s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout / 2, self._check_overdue)

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._ready = False
        self._fail(RedisDown(f"Redis at {self.where}: the connection was lost{f': {exc}' if exc else ''}"))

    def _broken(self, error: RedisDown) -> None:
        self._ready = False
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        self._fail(error)

    def _fail(self, error: RedisDown) -> None:
        waiting, self._waiting = self._waiting, deque()
        self._outgoing.clear()
        for future, _sent in waiting:
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def close(self) -> None:
        """Close the connection; commands still waiting fail with RedisDown."""
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self._ready = False
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                transport.close()
        self._fail(RedisDown(f"Redis at {self.where}: the connection was closed"))
