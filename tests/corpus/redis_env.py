"""The Redis the serving tests share: where it is, and a key prefix per test."""

from __future__ import annotations

import os
from dataclasses import dataclass

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def under_ci() -> bool:
    """True under CI=true: an unreachable Redis fails the tests there instead of skipping them."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


@dataclass(frozen=True)
class RedisSpace:
    """A reachable Redis and a key prefix of this test's own."""

    url: str
    prefix: str
