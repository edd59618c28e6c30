"""The pipelined Redis connection, against a real Redis 7 and real sockets that misbehave.

Redis is expected at 127.0.0.1:6379 (`BASTION_TEST_REDIS_URL` overrides): missing, the Redis
tests are skipped locally and fail under CI=true. Each test writes under a random key prefix
and deletes its keys at the end. Servers that never answer, refuse connections or relay
traffic are real TCP sockets on 127.0.0.1, opened by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import hiredis
import pytest
import redis

from bastion.errors import ConfigError
from bastion.serve.resp import RedisAddress, RedisConnection, RedisDown, RedisReplyError, encode, redacted
from corpus.hang_guard import HANG_GUARD, until
from corpus.redis_env import RedisSpace
from serve.tcp_peers import listening, silent_server

SECRET = "s3cr3t-Pa55"


def _tcp_redis(url: str) -> RedisAddress:
    """The address of a plain-TCP Redis, or a skip (these tests relay or rebuild its URL)."""
    address = RedisAddress.parse(url)
    if address.path is not None or address.tls:
        pytest.skip(f"this test needs Redis over plain TCP, not {redacted(url)}")
    return address


def _with_host(url: str, host: str, port: int) -> str:
    """`url` pointed at host:port, keeping its credentials, database and query."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, so nobody else takes it, never listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]




@dataclass
class Relay:
    """What a relay between the connection and Redis saw."""

    port: int = 0
    connections: int = 0
    client_chunks: list[int] = field(default_factory=list)  # sizes of the reads from the client
    sent_before_first_reply: int | None = None  # client bytes relayed before Redis's first reply


@contextlib.asynccontextmanager
async def _relay(target: RedisAddress, drip: bool = False) -> AsyncIterator[Relay]:
    """A TCP relay to Redis that records the client's reads; `drip` hands replies back byte by byte."""
    state = Relay()
    streams: list[asyncio.StreamWriter] = []

    async def upstream(client: asyncio.StreamReader, redis_side: asyncio.StreamWriter) -> None:
        while data := await client.read(65536):
            state.client_chunks.append(len(data))
            redis_side.write(data)
            await redis_side.drain()
        redis_side.close()

    async def downstream(redis_side: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        while data := await redis_side.read(65536):
            if state.sent_before_first_reply is None:
                state.sent_before_first_reply = sum(state.client_chunks)
            if drip:
                for byte in data:
                    client.write(bytes([byte]))
                    await client.drain()
                    await asyncio.sleep(0)
            else:
                client.write(data)
                await client.drain()
        client.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        redis_reader, redis_writer = await asyncio.open_connection(target.host, target.port)
        streams.extend([writer, redis_writer])
        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(reader, redis_writer), downstream(redis_reader, writer))

    async with listening(handle, streams) as port:
        state.port = port
        yield state


# --- URLs -----------------------------------------------------------------------------------


def test_parse_reads_host_port_and_database() -> None:
    address = RedisAddress.parse("redis://cache.internal:6380/4")
    assert (address.host, address.port, address.db) == ("cache.internal", 6380, 4)
    assert (address.tls, address.path) == (False, None)
    assert (address.username, address.password) == (None, None)


def test_parse_defaults_to_port_6379_and_database_0() -> None:
    for url in ("redis://cache.internal", "redis://cache.internal/", "redis://cache.internal:6379/0"):
        address = RedisAddress.parse(url)
        assert (address.host, address.port, address.db, address.tls) == ("cache.internal", 6379, 0, False), url


def test_parse_rediss_turns_tls_on() -> None:
    address = RedisAddress.parse("rediss://cache.internal:6390/2")
    assert (address.host, address.port, address.db, address.tls) == ("cache.internal", 6390, 2, True)


def test_parse_unix_socket_takes_the_database_from_the_query() -> None:
    address = RedisAddress.parse("unix:///run/redis/redis.sock?db=3")
    assert (address.path, address.db, address.tls) == ("/run/redis/redis.sock", 3, False)
    assert RedisAddress.parse("unix:///run/redis/redis.sock").db == 0


def test_parse_percent_decodes_user_name_and_password() -> None:
    address = RedisAddress.parse("redis://gate%40way:p%3Ass%2Fw%40rd%25@cache.internal:6380/1")
    assert address.username == "gate@way"
    assert address.password == "p:ss/w@rd%"
    assert (address.host, address.port, address.db) == ("cache.internal", 6380, 1)
    only_password = RedisAddress.parse(f"redis://:{SECRET}@cache.internal")
    assert (only_password.username, only_password.password) == (None, SECRET)


@pytest.mark.parametrize(
    "url",
    [
        f"http://gateway:{SECRET}@cache.internal:6379/0",  # not a Redis scheme
        f"redis://gateway:{SECRET}@cache.internal:6379/zero",  # database not a number
        f"redis://gateway:{SECRET}@cache.internal:6379/?db=one",
        f"redis://gateway:{SECRET}@cache.internal:port/0",  # port not a number
        f"redis://gateway:{SECRET}@cache.internal:70000/0",  # port out of range
        f"redis://gateway:{SECRET}@cache.internal:0/0",  # port zero, not "the default"
        f"redis://gateway:{SECRET}@cache.internal:6379/-1",  # a negative database
        f"redis://gateway:{SECRET}@/0",  # no host
        f"unix://gateway:{SECRET}@",  # no socket path
    ],
)
def test_parse_refuses_a_bad_url_without_showing_its_password(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^Redis URL (<unparseable URL>|\S+) (is not valid|names no socket path)") as caught:
        RedisAddress.parse(url)
    shown = f"{caught.value} {caught.value.diagnostics()}"
    assert SECRET not in shown
    assert "gateway" not in shown


def test_redacted_drops_user_name_and_password() -> None:
    assert redacted(f"redis://gateway:{SECRET}@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert redacted(f"rediss://:{SECRET}@cache.internal/0") == "rediss://cache.internal/0"
    assert redacted("redis://cache.internal:6379/0") == "redis://cache.internal:6379/0"
    assert SECRET not in redacted(f"redis://gateway:{SECRET}@cache.internal:notaport/0")


# --- RESP -----------------------------------------------------------------------------------


def test_encode_writes_an_array_of_bulk_strings() -> None:
    assert encode(("PING",)) == b"*1\r\n$4\r\nPING\r\n"
    assert encode(("SET", b"k\r\ney", 42)) == b"*3\r\n$3\r\nSET\r\n$5\r\nk\r\ney\r\n$2\r\n42\r\n"
    assert encode(("INCRBY", "n", -7, 0)) == b"*4\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$2\r\n-7\r\n$1\r\n0\r\n"
    assert encode(("ECHO", "")) == b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"
    assert encode(("ECHO", "héllo")) == b"*2\r\n$4\r\nECHO\r\n$6\r\nh\xc3\xa9llo\r\n"  # length in bytes


def test_encoded_commands_parse_back_as_sent() -> None:
    commands: list[tuple[bytes | str | int, ...]] = [
        ("SET", b"\x00\xff\r\n", 1),
        ("EVALSHA", "0" * 40, 0),
        ("ECHO", "é"),
    ]
    reader = hiredis.Reader()
    reader.feed(b"".join(encode(command) for command in commands))
    for command in commands:
        assert reader.gets() == [arg if isinstance(arg, bytes) else str(arg).encode() for arg in command]
    assert reader.gets() is False


# --- against Redis --------------------------------------------------------------------------


def test_500_concurrent_calls_each_get_their_own_reply(space: RedisSpace) -> None:
    counter = f"{space.prefix}counter"

    async def scenario() -> tuple[list[Any], list[Any], list[Any], Any]:
        connection = RedisConnection(space.url)
        try:
            ids = await asyncio.gather(*(connection.call("CLIENT", "ID") for _ in range(100)))  # from cold
            echoes = await asyncio.gather(*(connection.call("ECHO", f"v{i}") for i in range(500)))
            counts = await asyncio.gather(*(connection.call("INCR", counter) for _ in range(500)))
            return ids, echoes, counts, await connection.call("GET", counter)
        finally:
            connection.close()

    ids, echoes, counts, total = asyncio.run(scenario())

    assert len(set(ids)) == 1  # callers racing to connect share the one connection
    assert echoes == [f"v{i}".encode() for i in range(500)]
    assert counts == list(range(1, 501))  # replies handed back in the order the calls were made
    assert total == b"500"


def test_concurrent_calls_share_one_connection_and_go_out_together(space: RedisSpace) -> None:
    target = _tcp_redis(space.url)
    commands = [("ECHO", f"pipelined-{i}") for i in range(500)]

    async def scenario() -> tuple[Relay, list[Any]]:
        async with _relay(target) as relay:
            connection = RedisConnection(_with_host(space.url, "127.0.0.1", relay.port))
            try:
                await connection.call("PING")  # connected (and logged in, if the URL says so)
                relay.client_chunks.clear()
                relay.sent_before_first_reply = None
                replies = await asyncio.gather(*(connection.call(*command) for command in commands))
            finally:
                connection.close()
            return relay, replies

    relay, replies = asyncio.run(scenario())

    assert replies == [f"pipelined-{i}".encode() for i in range(500)]
    assert relay.connections == 1
    assert sum(relay.client_chunks) == sum(len(encode(command)) for command in commands)
    # one command per round trip would take 500 reads, and Redis would answer the first alone
    assert len(relay.client_chunks) <= 10
    assert relay.sent_before_first_reply is not None
    assert relay.sent_before_first_reply >= sum(len(encode(command)) for command in commands[:250])


def test_replies_that_arrive_in_fragments_are_reassembled(space: RedisSpace) -> None:
    target = _tcp_redis(space.url)

    async def scenario() -> list[Any]:
        async with _relay(target, drip=True) as relay:
            connection = RedisConnection(_with_host(space.url, "127.0.0.1", relay.port), timeout=HANG_GUARD)
            try:
                return list(
                    await asyncio.gather(
                        connection.call("ECHO", "a" * 40),
                        connection.call("ECHO", ""),
                        connection.call("INCRBY", f"{space.prefix}n", 12),
                        connection.call("PING"),
                        connection.call("ECHO", "last"),
                    )
                )
            finally:
                connection.close()

    assert asyncio.run(scenario()) == [b"a" * 40, b"", 12, b"PONG", b"last"]


def test_an_error_reply_fails_its_call_only_and_the_connection_keeps_working(space: RedisSpace) -> None:
    async def scenario() -> tuple[BaseException, list[Any], Any]:
        connection = RedisConnection(space.url)
        try:
            with pytest.raises(RedisReplyError, match="NOSCRIPT") as caught:
                await connection.call("EVALSHA", "0" * 40, 0)
            mixed = await asyncio.gather(
                connection.call("ECHO", "before"),
                connection.call("EVALSHA", "0" * 40, 0),
                connection.call("ECHO", "after"),
                return_exceptions=True,
            )
            return caught.value, list(mixed), await connection.call("PING")
        finally:
            connection.close()

    error, mixed, pong = asyncio.run(scenario())

    assert "NOSCRIPT" in str(error)
    assert mixed[0] == b"before"
    assert isinstance(mixed[1], RedisReplyError)
    assert "NOSCRIPT" in str(mixed[1])
    assert mixed[2] == b"after"
    assert pong == b"PONG"


def test_an_unreachable_redis_fails_fast_and_never_shows_the_password() -> None:
    async def scenario(port: int) -> RedisDown:
        # A timeout far beyond any machine's slowness: refused at once is told by the reason, not the time.
        connection = RedisConnection(f"redis://gateway:{SECRET}@127.0.0.1:{port}/0", timeout=HANG_GUARD)
        with pytest.raises(RedisDown, match=r"could not be reached: (?!timed out)") as caught:
            await connection.call("PING")
        return caught.value

    with _closed_port() as port:
        error = asyncio.run(scenario(port))

    message = str(error)
    assert f"127.0.0.1:{port}" in message
    assert SECRET not in message
    assert "gateway" not in message


def test_a_server_that_never_answers_fails_every_waiting_call_after_the_timeout() -> None:
    async def scenario() -> tuple[list[Any], float, Any, int]:
        async with silent_server() as silent:
            connection = RedisConnection(f"redis://127.0.0.1:{silent.port}/0", timeout=0.3)
            try:
                started = time.monotonic()
                results = await asyncio.wait_for(  # hang guards, not speed bounds
                    asyncio.gather(*(connection.call("ECHO", f"v{i}") for i in range(10)), return_exceptions=True),
                    timeout=HANG_GUARD,
                )
                elapsed = time.monotonic() - started
                # the next call opens a new connection (which fails the same way)
                again = await asyncio.wait_for(
                    asyncio.gather(connection.call("PING"), return_exceptions=True), timeout=HANG_GUARD
                )
            finally:
                connection.close()
            return results, elapsed, again[0], silent.accepted

    results, elapsed, again, accepted = asyncio.run(scenario())

    assert all(isinstance(result, RedisDown) for result in results), results
    assert all("did not answer within 0.3 s" in str(result) for result in results)
    assert elapsed >= 0.3  # not before the timeout (a slow machine only adds to it)
    assert isinstance(again, RedisDown)
    assert accepted == 2


def test_a_server_that_never_answers_the_database_switch_fails_the_call() -> None:
    async def scenario() -> tuple[BaseException, float]:
        async with silent_server() as silent:
            connection = RedisConnection(f"redis://127.0.0.1:{silent.port}/5", timeout=0.3)
            try:
                started = time.monotonic()
                with pytest.raises(RedisDown, match=r"did not answer within 0\.3 s") as caught:
                    await asyncio.wait_for(connection.call("PING"), timeout=HANG_GUARD)  # a hang guard
                elapsed = time.monotonic() - started
            finally:
                connection.close()
            assert encode(("SELECT", 5)) in silent.received
            return caught.value, elapsed

    error, elapsed = asyncio.run(scenario())

    assert "0.3 s" in str(error)
    assert elapsed >= 0.3  # not before the timeout (a slow machine only adds to it)


def test_a_connection_killed_by_the_server_fails_the_waiting_call_then_reconnects(space: RedisSpace) -> None:
    async def scenario() -> tuple[BaseException, int, int, Any]:
        connection = RedisConnection(space.url, timeout=HANG_GUARD)
        try:
            first_id = await connection.call("CLIENT", "ID")
            waiting = asyncio.ensure_future(connection.call("BLPOP", f"{space.prefix}never", 0))  # 0: blocks until the kill, however late
            with redis.Redis.from_url(space.url) as admin:
                await until(lambda: admin.client_list(client_id=[first_id])[0]["cmd"] == "blpop")
                assert admin.client_kill_filter(_id=first_id) == 1
            with pytest.raises(RedisDown, match="the connection was lost") as caught:
                await asyncio.wait_for(waiting, timeout=HANG_GUARD)  # a hang guard
            second_id = await connection.call("CLIENT", "ID")
            return caught.value, first_id, second_id, await connection.call("ECHO", "back")
        finally:
            connection.close()

    error, first_id, second_id, echo = asyncio.run(scenario())

    assert "lost" in str(error)
    assert second_id != first_id
    assert echo == b"back"


def test_a_connection_killed_while_idle_is_replaced_by_a_new_one(space: RedisSpace) -> None:
    async def scenario() -> tuple[int, int, list[Any]]:
        connection = RedisConnection(space.url, timeout=HANG_GUARD)
        try:
            first_id = await connection.call("CLIENT", "ID")
            with redis.Redis.from_url(space.url) as admin:
                assert admin.client_kill_filter(_id=first_id) == 1
            # the next call may meet the dead socket (RedisDown) or a new one; a later call works
            attempt = await asyncio.gather(connection.call("PING"), return_exceptions=True)
            second_id = await connection.call("CLIENT", "ID")
            return first_id, second_id, list(attempt)
        finally:
            connection.close()

    first_id, second_id, attempt = asyncio.run(scenario())

    assert attempt[0] == b"PONG" or isinstance(attempt[0], RedisDown)
    assert second_id != first_id


def test_close_fails_waiting_calls_and_the_next_call_reconnects(space: RedisSpace) -> None:
    async def scenario() -> tuple[list[Any], Any]:
        connection = RedisConnection(space.url, timeout=HANG_GUARD)
        try:
            await connection.call("PING")
            waiting = [asyncio.ensure_future(connection.call("BLPOP", f"{space.prefix}never-{i}", 0)) for i in range(3)]
            await asyncio.sleep(0)
            connection.close()
            results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=HANG_GUARD)
            return results, await connection.call("ECHO", "reopened")
        finally:
            connection.close()

    results, echo = asyncio.run(scenario())

    assert all(isinstance(result, RedisDown) for result in results), results
    assert all("closed" in str(result) for result in results)
    assert echo == b"reopened"


def test_close_while_logging_in_fails_the_waiting_call_with_redis_down() -> None:
    async def scenario() -> BaseException | None:
        async with silent_server() as silent:
            connection = RedisConnection(f"redis://127.0.0.1:{silent.port}/1", timeout=HANG_GUARD)
            waiting = asyncio.ensure_future(connection.call("PING"))
            await until(lambda: encode(("SELECT", 1)) in silent.received)  # connected, SELECT unanswered
            connection.close()
            await asyncio.wait({waiting}, timeout=HANG_GUARD)  # returns as soon as it is done
            assert waiting.done(), "the call still waits after close()"
            return None if waiting.cancelled() else waiting.exception()

    error = asyncio.run(scenario())

    assert isinstance(error, RedisDown)


# --- logging in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AclUser:
    name: str
    password: str
    address: RedisAddress

    def url(self, password: str | None = None, db: int | None = None) -> str:
        secret = self.password if password is None else password
        database = self.address.db if db is None else db
        return (
            f"redis://{quote(self.name, safe='')}:{quote(secret, safe='')}"
            f"@{self.address.host}:{self.address.port}/{database}"
        )


@pytest.fixture
def acl_user(space: RedisSpace) -> Iterator[AclUser]:
    address = _tcp_redis(space.url)
    name = f"bastion-test-{secrets.token_hex(6)}"
    password = f"p@ss:w/rd%{secrets.token_hex(12)}"  # characters a URL must percent-encode
    with redis.Redis.from_url(space.url) as admin:
        try:
            admin.execute_command("ACL", "SETUSER", name, "on", f">{password}", f"~{space.prefix}*", "+@all")
        except redis.ResponseError as err:
            pytest.skip(f"this Redis refuses ACL SETUSER: {err}")
        try:
            yield AclUser(name, password, address)
        finally:
            admin.execute_command("ACL", "DELUSER", name)


def test_the_right_password_logs_in_as_the_url_user(acl_user: AclUser, space: RedisSpace) -> None:
    async def scenario() -> tuple[Any, Any]:
        connection = RedisConnection(acl_user.url())
        try:
            who = await connection.call("ACL", "WHOAMI")
            return who, await connection.call("SET", f"{space.prefix}mine", "yes")
        finally:
            connection.close()

    who, stored = asyncio.run(scenario())

    assert who == acl_user.name.encode()
    assert stored == b"OK"


def test_a_wrong_password_fails_with_redis_down_that_never_shows_it(acl_user: AclUser) -> None:
    wrong = f"{acl_user.password}-wrong"

    async def scenario() -> tuple[RedisDown, RedisDown]:
        connection = RedisConnection(acl_user.url(password=wrong))
        try:
            with pytest.raises(RedisDown, match="refused AUTH") as first:
                await connection.call("PING")
            with pytest.raises(RedisDown, match="refused AUTH") as second:  # and stays refused: no half-open connection
                await connection.call("PING")
            return first.value, second.value
        finally:
            connection.close()

    for error in asyncio.run(scenario()):
        message = str(error)
        assert "AUTH" in message
        assert wrong not in message
        assert acl_user.password not in message
        assert quote(wrong, safe="") not in message
        assert acl_user.name not in message


def _with_db(url: str, db: int) -> str:
    """`url` naming database `db` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}", query=""))


def test_calls_made_while_logging_in_run_on_the_url_database(acl_user: AclUser, space: RedisSpace) -> None:
    db = acl_user.address.db or 1  # not database 0, so the connection must SELECT it
    with redis.Redis.from_url(_with_db(space.url, 0)) as db0, redis.Redis.from_url(_with_db(space.url, db)) as dbn:
        try:
            dbn.ping()
        except redis.ResponseError as err:
            pytest.skip(f"this Redis has no database {db}: {err}")

        async def one_try(turns: int) -> str:
            key = f"{space.prefix}turns-{turns}"
            connection = RedisConnection(acl_user.url(db=db))

            async def later() -> None:  # a second request, arriving while the first one connects
                for _ in range(turns):
                    await asyncio.sleep(0)
                await connection.call("SET", key, "x")

            try:
                await asyncio.gather(connection.call("PING"), later())
            finally:
                connection.close()
            return key

        misplaced: list[str] = []
        try:
            for turns in range(200):
                key = asyncio.run(one_try(turns))
                if db0.exists(key):
                    misplaced.append(key)
                    break
        finally:
            for client in (db0, dbn):
                keys = list(client.scan_iter(match=f"{space.prefix}*", count=1000))
                if keys:
                    client.delete(*keys)

    assert misplaced == []
