"""Misbehaving TCP peers for the Redis client's failure tests: a real socket, never a mock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Silent:
    """A TCP server that accepts connections, reads what it is sent and never answers."""

    port: int = 0
    accepted: int = 0
    received: bytearray = field(default_factory=bytearray)


@contextlib.asynccontextmanager
async def listening(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], streams: list[asyncio.StreamWriter]
) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running `handle`; its port. Closes `streams` when done."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for stream in streams:
            stream.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[Silent]:
    state = Silent()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.accepted += 1
        writers.append(writer)
        while data := await reader.read(65536):
            state.received += data

    async with listening(handle, writers) as port:
        state.port = port
        yield state
