"""Fixtures for the serving tests: the real Redis (started by `.ci/run`) and a key space per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from corpus.hang_guard import HANG_GUARD
from corpus.redis_env import REDIS_URL, RedisSpace, under_ci


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=int(HANG_GUARD), socket_timeout=2, retry=None) as client:
            client.ping()
    except redis.RedisError as err:
        message = f"Redis is not reachable at {REDIS_URL}: {err}"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def space(redis_url: str) -> Iterator[RedisSpace]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"bastion:test:{secrets.token_hex(8)}:"
    yield RedisSpace(redis_url, prefix)
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
