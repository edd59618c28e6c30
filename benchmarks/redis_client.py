"""Benchmark the shared limiter's Redis clients: the hand-written pipelined connection against redis-py.

Every client runs the limiter's own Lua script (``bastion.serve.limits._SCRIPT``) by EVALSHA,
with the arguments ``RedisLimiter.check`` sends (Redis' clock, a rate limit and budgets so high
they never refuse), against the same real Redis, under uvloop, in the same run:

* **resp**: the limiter's own client (``bastion.serve.resp.RedisConnection``): one socket, every
  command queued in one event-loop turn written in one ``write``, replies matched in order as they
  stream back (several batches in flight), hiredis.
* **redis-py**: the fairest redis-py found, and the limiter's client in commits 86f8afa..c4b60e3:
  calls gathered while a batch is in flight on one redis-py ``Connection``, packed by hiredis,
  sent in one write, replies read in order (hiredis parser), one deadline per batch.
* **redis-py-pooled**: ``redis.asyncio.Redis`` (hiredis parser), one ``evalsha`` per call, each on
  a connection of its pool: what the hand-written client was first measured against.
* **redis-py-turn**: every call made in one event-loop turn goes into one redis-py ``Pipeline``
  (``transaction=False``), executed at once on a connection of a pool of at most ``--connections``
  (a ``BlockingConnectionPool``): the hand-written client's per-turn batching, on redis-py.
* **redis-py-gather**: calls are gathered while a ``Pipeline`` is in flight; each of at most
  ``--connections`` connections takes everything waiting, executes it as one pipeline, and comes
  back for more.

All redis-py clients: no retries (the script is not idempotent), the limiter's 1 s timeouts.
``use_in_limiter`` puts any of them inside ``RedisLimiter``, for the end-to-end gateway run:
``benchmarks/serve.py --only bastion-redis --redis-client resp --redis-client redis-py``.

``--concurrency`` coroutines each make ``--calls`` limiter calls one after another (each on its own
key, so the script reads and writes as it does for distinct callers); a round runs every client
once, in an order that rotates between rounds (A B C, B C A, ...), so a neighbour's load falls on
all of them alike. The table gives each client's median calls/s over the rounds, the spread (min
and max) and the ratio to resp (the hand-written client); the rule it informs (``ARCHITECTURE.md``): a hand-written client
only where redis-py (pipelined, hiredis) cannot come within 10%.

Keys are written under a random prefix and deleted at the end.

    .venv/bin/python benchmarks/redis_client.py
    .venv/bin/python benchmarks/redis_client.py --concurrency 1,16,256 --calls 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import hiredis
import redis
import redis.asyncio as aioredis
import uvloop
from _table import fmt, render_table  # benchmarks/ is on sys.path when run as a script
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bastion.serve import limits
from bastion.serve.limits import _SCRIPT
from bastion.serve.resp import RedisConnection, RedisDown, RedisReplyError, redacted

DEFAULT_URL: Final = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SHA: Final = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
# RedisLimiter.check's arguments after the key: Redis' clock, 1 us per unit (a million a second),
# a burst of a million, budgets of a billion: every call is allowed and written.
ARGS: Final = ("", 1, 1_000_000, 1_000_000_000, 1_000_000_000, 1)


class Client(Protocol):
    """Send one command, get its reply."""

    async def call(self, *args: Any) -> Any: ...

    async def close(self) -> None: ...


Waiting = list[tuple[tuple[Any, ...], "asyncio.Future[Any]"]]


class Resp:
    """The limiter's own client: one socket, a write per loop turn, replies streamed back."""

    def __init__(self, url: str, connections: int) -> None:
        self._connection = RedisConnection(url, timeout=1.0)

    async def call(self, *args: Any) -> Any:
        return await self._connection.call(*args)

    async def close(self) -> None:
        self._connection.close()


class RedisPy:
    """The fairest redis-py found: calls gathered while a batch is in flight on one redis-py
    `Connection`, packed by hiredis, sent in one write, replies read in order, one deadline per
    batch, no retries; a failure fails the batch and everything waiting, and the next call
    reconnects. (It replaced resp.py in the limiter for a day: commit 86f8afa, c4b60e3.)
    """

    def __init__(self, url: str, connections: int) -> None:
        pool = aioredis.ConnectionPool.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=None, retry=Retry(NoBackoff(), 0)
        )
        self._connection = pool.make_connection()
        self._waiting: Waiting = []
        self._sending: Waiting = []
        self._worker: asyncio.Task[None] | None = None

    async def call(self, *args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._work())
        return await future

    async def _work(self) -> None:
        try:
            while self._waiting:
                self._sending, self._waiting = self._waiting, []
                try:
                    async with asyncio.timeout(1.0):
                        await self._exchange(self._sending)
                except Exception as err:  # every caller learns why
                    await self._connection.disconnect(nowait=True)
                    for _args, future in [*self._sending, *self._waiting]:
                        if not future.done():
                            future.set_exception(err)
                    self._waiting = []
                self._sending = []
        finally:
            self._worker = None

    async def _exchange(self, batch: Waiting) -> None:
        connection = self._connection
        # hiredis packs in C (redis.asyncio packs in Python, at eight times the cost)
        await connection.send_packed_command([hiredis.pack_command(args) for args, _future in batch])
        for _args, future in batch:
            try:
                reply = await connection.read_response()
            except redis.ResponseError as err:
                if not future.done():
                    future.set_exception(err)
                continue
            if not future.done():
                future.set_result(reply)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        await self._connection.disconnect(nowait=True)


def _redis_py(url: str, connections: int, blocking: bool = False) -> aioredis.Redis:
    # No retries (the script is not idempotent), the limiter's 1 s timeout; hiredis is picked up.
    options: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "retry": Retry(NoBackoff(), 0)}
    if blocking:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=connections, timeout=None, **options)
        return aioredis.Redis(connection_pool=pool)
    return aioredis.Redis.from_url(url, max_connections=connections, **options)


class RedisPyPooled:
    """redis-py as documented: one command per call, on a pooled connection (100, its default size)."""

    def __init__(self, url: str, connections: int) -> None:
        # Blocking: past 100 calls at once the default pool raises "Too many connections".
        self._redis = _redis_py(url, 100, blocking=True)

    async def call(self, *args: Any) -> Any:
        return await self._redis.execute_command(*args)

    async def close(self) -> None:
        await self._redis.aclose()


async def _execute(redis_client: aioredis.Redis, batch: Waiting) -> None:
    """Run `batch` as one redis-py pipeline and hand each caller its reply or error."""
    pipe = redis_client.pipeline(transaction=False)
    for args, _future in batch:
        pipe.execute_command(*args)
    try:
        replies = await pipe.execute(raise_on_error=False)
    except Exception as err:  # every caller learns why
        for _args, future in batch:
            if not future.done():
                future.set_exception(err)
        return
    for (_args, future), reply in zip(batch, replies, strict=True):
        if future.done():
            continue
        if isinstance(reply, Exception):
            future.set_exception(reply)
        else:
            future.set_result(reply)


class RedisPyTurn:
    """Every call of one event-loop turn in one redis-py pipeline, on a pool of `connections`."""

    def __init__(self, url: str, connections: int) -> None:
        self._redis = _redis_py(url, connections, blocking=True)
        self._waiting: Waiting = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((args, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(_execute(self._redis, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await self._redis.aclose()


class RedisPyGather:
    """Calls gathered while a pipeline is in flight; at most `connections` pipelines in flight."""

    def __init__(self, url: str, connections: int) -> None:
        self._redis = _redis_py(url, connections)
        self._limit = connections
        self._waiting: Waiting = []
        self._workers = 0
        self._starting = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, *args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if not self._starting and self._workers < self._limit:
            self._starting = True
            self._workers += 1
            task = asyncio.ensure_future(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _work(self) -> None:
        self._starting = False
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await _execute(self._redis, batch)
        finally:
            self._workers -= 1

    async def close(self) -> None:
        await self._redis.aclose()


CLIENTS: Final[dict[str, Callable[[str, int], Client]]] = {
    "resp": Resp,
    "redis-py": RedisPy,
    "redis-py-pooled": RedisPyPooled,
    "redis-py-turn": RedisPyTurn,
    "redis-py-gather": RedisPyGather,
}


class LimiterConnection:
    """One of the clients above in place of the limiter's own `RedisConnection`, inside `RedisLimiter`.

    What `RedisLimiter` expects of its connection: `where`, `call` raising `RedisReplyError` for
    an error reply (NOSCRIPT) and `RedisDown` when Redis cannot answer, and `close`.
    """

    def __init__(self, name: str, url: str, timeout: float = 1.0) -> None:
        self.where = redacted(url)
        self._client = CLIENTS[name](url, 1)
        print(f"redis_client: the limiter talks to {self.where} through {name}", file=sys.stderr, flush=True)

    async def call(self, *args: Any) -> Any:
        try:
            return await self._client.call(*args)
        except redis.exceptions.NoScriptError as err:  # redis-py strips the NOSCRIPT prefix
            raise RedisReplyError(f"NOSCRIPT {err}") from err
        except redis.ResponseError as err:
            raise RedisReplyError(str(err)) from err
        except Exception as err:  # every failure, as the limiter's own client reports it
            raise RedisDown(f"Redis at {self.where}: {err}") from err

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing left to close
            task = asyncio.get_running_loop().create_task(self._client.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


def use_in_limiter(name: str) -> None:
    """Make every `RedisLimiter` created from now on in this process talk through client `name`.

    `benchmarks/serve.py` calls this in the gateway process it starts, so the gateway runs
    unchanged but for its Redis client.
    """
    if name == "resp":
        return  # the limiter's own

    def connect(url: str, timeout: float = 1.0) -> LimiterConnection:
        return LimiterConnection(name, url, timeout)

    limits.RedisConnection = connect  # type: ignore[assignment, misc]  # the one seam a benchmark may bend


@dataclass(frozen=True, slots=True)
class Run:
    client: str
    concurrency: int
    calls_per_s: float


async def _drive(client: Client, prefix: str, concurrency: int, calls: int) -> float:
    """`concurrency` coroutines, `calls` limiter calls each; the calls per second of the whole."""

    async def caller(index: int) -> None:
        key = f"{prefix}{{{index}:bench:m}}"
        for _ in range(calls):
            reply = await client.call("EVALSHA", SHA, 1, key, *ARGS)
            if reply[0] != 1:
                raise AssertionError(f"the script refused a call: {reply!r}")

    await asyncio.gather(*(caller(i) for i in range(min(concurrency, 8))))  # connect, warm up
    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return concurrency * calls / (time.perf_counter() - started)


async def _one(name: str, url: str, prefix: str, concurrency: int, calls: int, connections: int) -> Run:
    client = CLIENTS[name](url, connections)
    try:
        return Run(name, concurrency, await _drive(client, prefix, concurrency, calls))
    finally:
        await client.close()


def _rounds(names: Sequence[str], rounds: int) -> list[list[str]]:
    """Each round's order: the list rotated by one more each round, so nobody always goes first."""
    return [[names[(r + i) % len(names)] for i in range(len(names))] for r in range(rounds)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"Redis (default {DEFAULT_URL})")
    parser.add_argument("--concurrency", default="1,16,256", help="coroutines at once, comma-separated")
    parser.add_argument("--calls", type=int, default=1000, help="limiter calls per coroutine per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median shown)")
    parser.add_argument(
        "--connections", type=int, default=1, help="connections for the redis-py turn and gather clients"
    )
    parser.add_argument("--only", action="append", choices=tuple(CLIENTS), help="run only this client (repeatable)")
    args = parser.parse_args(argv)
    names = [n for n in CLIENTS if not args.only or n in args.only]
    levels = [int(c) for c in args.concurrency.split(",")]
    prefix = f"bastion:bench:{secrets.token_hex(6)}:"

    with redis.Redis.from_url(args.url) as admin:
        admin.script_load(_SCRIPT)
        runs: list[Run] = []
        try:
            for concurrency in levels:
                calls = max(1, args.calls if concurrency > 1 else args.calls * 4)
                for order in _rounds(names, args.rounds):
                    for name in order:
                        run = uvloop.run(_one(name, args.url, prefix, concurrency, calls, args.connections))
                        runs.append(run)
                        print(
                            f"{name:16} c={concurrency:<4} {run.calls_per_s:10.0f} calls/s", file=sys.stderr, flush=True
                        )
        finally:
            keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                admin.delete(*keys)

    rows = []
    for concurrency in levels:
        medians = {
            n: statistics.median(r.calls_per_s for r in runs if r.client == n and r.concurrency == concurrency)
            for n in names
        }
        base = medians.get("resp")  # the hand-written client: the rule asks how close redis-py comes to it
        for name in names:
            of = [r.calls_per_s for r in runs if r.client == name and r.concurrency == concurrency]
            rows.append(
                [
                    str(concurrency),
                    name,
                    fmt(medians[name], 0),
                    f"{min(of):.0f}-{max(of):.0f}",
                    fmt(medians[name] / base) if base else "-",
                ]
            )
    print(
        f"Redis {redis.Redis.from_url(args.url).connection_pool.connection_kwargs.get('host')}, "
        f"{args.rounds} rounds, {args.calls} calls per coroutine, redis-py {redis.__version__}, "
        f"pipelined clients on {args.connections} connection(s), load average {os.getloadavg()[0]:.2f}"
    )
    print(render_table(["coroutines", "client", "median calls/s", "min-max", "ratio to resp"], rows))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
