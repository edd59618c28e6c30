"""Rate limits and query budgets, in-process and shared through a real Redis 7.

Redis is expected at 127.0.0.1:6379 (`BASTION_TEST_REDIS_URL` overrides): missing, the Redis
tests are skipped locally and fail under CI=true. Each test writes under a random key prefix
and deletes its keys at the end.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from bastion.errors import BackendUnavailable
from bastion.serve.limits import (
    LimitDecision,
    Limiter,
    LimitReason,
    LocalLimiter,
    Quota,
    RateLimit,
    RedisLimiter,
    Usage,
    make_limiter,
    quota_windows,
)
from corpus.hang_guard import HANG_GUARD
from corpus.redis_env import RedisSpace


def _at(text: str) -> float:
    """Unix time of an ISO-8601 UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class FakeClock:
    """A Unix clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeLimiter = Callable[[FakeClock], Limiter]


@pytest.fixture(params=["local", "redis"])
def make_clocked(request: pytest.FixtureRequest) -> MakeLimiter:
    """A limiter of either kind that reads the given fake clock (Redis: passed to the script)."""
    if request.param == "local":
        return lambda clock: LocalLimiter(clock=clock)
    where: RedisSpace = request.getfixturevalue("space")
    return lambda clock: RedisLimiter(where.url, prefix=where.prefix, clock=clock)


async def _checks(
    limiter: Limiter, n: int, rate: RateLimit | None, quota: Quota | None, key: str = "k1"
) -> list[LimitDecision]:
    return [await limiter.check(key, "fraud-detector", rate, quota) for _ in range(n)]


# --- GCRA ---------------------------------------------------------------------------------


def test_burst_is_allowed_then_refused_with_the_gcra_wait(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-10T12:00:00"))
    rate = RateLimit(per_second=4.0, burst=5)

    async def scenario() -> tuple[list[LimitDecision], LimitDecision]:
        limiter = make_clocked(clock)
        try:
            burst = await _checks(limiter, 6, rate, None)
            clock.advance(0.2)
            still_early = await limiter.check("k1", "fraud-detector", rate, None)
            return burst, still_early
        finally:
            await limiter.close()

    burst, still_early = asyncio.run(scenario())
    assert [d.allowed for d in burst] == [True] * 5 + [False]
    assert burst[5].reason == "rate"
    assert burst[5].retry_after == pytest.approx(0.25, abs=1e-6)
    assert not still_early.allowed
    assert still_early.retry_after == pytest.approx(0.05, abs=1e-6)


def test_burst_on_redis_time_is_refused_with_the_gcra_wait(space: RedisSpace) -> None:
    rate = RateLimit(per_second=2.0, burst=3)

    async def scenario() -> tuple[list[LimitDecision], float]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            started = time.monotonic()
            decisions = await _checks(limiter, 4, rate, None)
            return decisions, time.monotonic() - started
        finally:
            await limiter.close()

    decisions, took = asyncio.run(scenario())
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].reason is LimitReason.RATE
    # 0.5 s minus the time the four round trips took, however long that was (no bound on speed).
    assert 0.5 - took - 0.001 <= decisions[3].retry_after <= 0.5


def test_steady_rate_at_the_limit_is_allowed(make_clocked: MakeLimiter) -> None:
    start = _at("2024-05-10T12:00:00.123456")
    clock = FakeClock(start)
    # 1/9 s is not exact in binary: summed as floats into the TAT, it drifted ulps past the
    # clock's `start + k/9` (found by search); such rounding must not turn into a refusal.
    rate = RateLimit(per_second=9.0, burst=1)

    async def scenario() -> tuple[list[LimitDecision], LimitDecision]:
        limiter = make_clocked(clock)
        try:
            steady = []
            for k in range(300):
                clock.now = start + k / 9
                steady.append(await limiter.check("k1", "fraud-detector", rate, None))
            clock.now = start + 299 / 9 + 1 / 18
            early = await limiter.check("k1", "fraud-detector", rate, None)
            return steady, early
        finally:
            await limiter.close()

    steady, early = asyncio.run(scenario())
    assert all(d.allowed for d in steady)
    assert not early.allowed
    assert early.retry_after == pytest.approx(1 / 18, abs=1e-6)


def test_steady_rate_on_redis_time_is_allowed(space: RedisSpace) -> None:
    rate = RateLimit(per_second=20.0, burst=1)

    async def scenario() -> list[LimitDecision]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        decisions = []
        try:
            for _ in range(10):
                decisions.append(await limiter.check("k1", "fraud-detector", rate, None))
                await asyncio.sleep(0.05)
        finally:
            await limiter.close()
        return decisions

    assert all(d.allowed for d in asyncio.run(scenario()))


# --- budgets --------------------------------------------------------------------------------


def test_daily_quota_refuses_until_the_next_utc_midnight(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-12-31T23:59:00"))
    quota = Quota(daily=3)

    async def scenario() -> tuple[list[LimitDecision], LimitDecision, Usage]:
        limiter = make_clocked(clock)
        try:
            today = await _checks(limiter, 4, None, quota)
            clock.now = _at("2025-01-01T00:00:00")
            tomorrow = await limiter.check("k1", "fraud-detector", None, quota)
            return today, tomorrow, await limiter.usage("k1", "fraud-detector")
        finally:
            await limiter.close()

    today, tomorrow, usage = asyncio.run(scenario())
    assert [d.allowed for d in today] == [True, True, True, False]
    assert today[3].reason is LimitReason.DAILY_QUOTA
    assert today[3].retry_after == pytest.approx(60.0, abs=1e-6)
    assert tomorrow.allowed
    assert usage == Usage(daily_used=1, monthly_used=1)  # a new year is a new month too


def test_monthly_quota_refuses_until_the_first_of_next_month(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-02-28T10:00:00"))
    quota = Quota(daily=10, monthly=3)

    async def scenario() -> tuple[list[LimitDecision], LimitDecision, LimitDecision, Usage]:
        limiter = make_clocked(clock)
        try:
            first = await _checks(limiter, 2, None, quota)
            clock.now = _at("2024-02-29T23:00:00")  # a leap day
            later = await _checks(limiter, 2, None, quota)
            clock.now = _at("2024-03-01T00:00:00")
            march = await limiter.check("k1", "fraud-detector", None, quota)
            usage = await limiter.usage("k1", "fraud-detector")
            clock.now = _at("2024-03-01T00:00:01")
            return first + later, march, await limiter.check("k1", "fraud-detector", None, quota), usage
        finally:
            await limiter.close()

    decisions, march, _, usage = asyncio.run(scenario())
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].reason is LimitReason.MONTHLY_QUOTA
    assert decisions[3].retry_after == pytest.approx(3600.0, abs=1e-6)
    assert march.allowed
    assert usage == Usage(daily_used=1, monthly_used=1)


def test_quota_counts_on_redis_time(space: RedisSpace) -> None:
    quota = Quota(daily=3, monthly=100)

    async def scenario() -> tuple[list[LimitDecision], Usage]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            decisions = await _checks(limiter, 5, None, quota)
            return decisions, await limiter.usage("k1", "fraud-detector")
        finally:
            await limiter.close()

    decisions, usage = asyncio.run(scenario())
    now = time.time()
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert decisions[3].reason is LimitReason.DAILY_QUOTA
    assert decisions[3].retry_after == pytest.approx(quota_windows(now).day_ends_at - now, abs=2.0)
    assert usage == Usage(daily_used=3, monthly_used=3)


@pytest.mark.parametrize(
    ("instant", "day_ends", "month_ends"),
    [
        ("2024-03-15T00:00:00", "2024-03-16T00:00:00", "2024-04-01T00:00:00"),
        ("2024-03-15T23:59:59.999", "2024-03-16T00:00:00", "2024-04-01T00:00:00"),
        ("2024-12-31T23:59:59", "2025-01-01T00:00:00", "2025-01-01T00:00:00"),
        ("2024-02-29T12:00:00", "2024-03-01T00:00:00", "2024-03-01T00:00:00"),
        ("2023-02-28T12:00:00", "2023-03-01T00:00:00", "2023-03-01T00:00:00"),
        ("2100-02-28T12:00:00", "2100-03-01T00:00:00", "2100-03-01T00:00:00"),  # not a leap year
        ("2000-02-28T12:00:00", "2000-02-29T00:00:00", "2000-03-01T00:00:00"),  # a leap year
        ("1970-01-01T00:00:00", "1970-01-02T00:00:00", "1970-02-01T00:00:00"),
    ],
)
def test_quota_windows_end_at_utc_day_and_month_boundaries(instant: str, day_ends: str, month_ends: str) -> None:
    windows = quota_windows(_at(instant))
    assert windows.day_ends_at == _at(day_ends)
    assert windows.month_ends_at == _at(month_ends)


def test_redis_script_computes_the_same_boundaries_as_python(space: RedisSpace) -> None:
    # The script does its own calendar arithmetic on Redis' clock; any instant must give the
    # same reset times as `quota_windows`.
    rng = random.Random(7)
    instants = [rng.uniform(_at("1999-01-01T00:00:00"), _at("2101-01-01T00:00:00")) for _ in range(150)]
    instants += [
        _at(f"{y}-{m:02d}-01T00:00:00") - d for y in (2023, 2024, 2100) for m in range(1, 13) for d in (0.0, 0.5)
    ]
    clock = FakeClock(0.0)

    async def scenario() -> list[tuple[float, float, float]]:
        limiter = RedisLimiter(space.url, prefix=space.prefix, clock=clock)
        waits = []
        try:
            for index, instant in enumerate(instants):
                clock.now = instant
                key = f"boundary-{index}"
                await limiter.check(key, "m", None, None)
                daily = await limiter.check(key, "m", None, Quota(daily=1))
                monthly = await limiter.check(key, "m", None, Quota(monthly=1))
                waits.append((instant, daily.retry_after, monthly.retry_after))
        finally:
            await limiter.close()
        return waits

    for instant, day_wait, month_wait in asyncio.run(scenario()):
        windows = quota_windows(instant)
        when = datetime.fromtimestamp(instant, UTC)
        assert day_wait == pytest.approx(windows.day_ends_at - instant, abs=1e-6), when
        assert month_wait == pytest.approx(windows.month_ends_at - instant, abs=1e-6), when


# --- refusals consume nothing ------------------------------------------------------------------


def test_rate_refusals_do_not_consume_quota(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-10T12:00:00"))
    rate = RateLimit(per_second=1.0, burst=2)
    quota = Quota(daily=5, monthly=50)

    async def scenario() -> tuple[list[LimitDecision], Usage, list[LimitDecision], Usage]:
        limiter = make_clocked(clock)
        try:
            hammered = await _checks(limiter, 12, rate, quota)
            after_hammering = await limiter.usage("k1", "fraud-detector")
            clock.advance(3.0)
            later = await _checks(limiter, 3, rate, quota)
            return hammered, after_hammering, later, await limiter.usage("k1", "fraud-detector")
        finally:
            await limiter.close()

    hammered, after_hammering, later, usage = asyncio.run(scenario())
    assert sum(d.allowed for d in hammered) == 2
    assert {d.reason for d in hammered[2:]} == {LimitReason.RATE}
    assert after_hammering == Usage(daily_used=2, monthly_used=2)
    assert [d.allowed for d in later] == [True, True, False]
    assert usage == Usage(daily_used=4, monthly_used=4)


def test_quota_refusals_do_not_consume_rate(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-10T23:59:00"))
    rate = RateLimit(per_second=1 / 3600, burst=2)  # one an hour, two at once
    quota = Quota(daily=1)

    async def scenario() -> tuple[list[LimitDecision], LimitDecision]:
        limiter = make_clocked(clock)
        try:
            today = await _checks(limiter, 4, rate, quota)
            clock.now = _at("2024-05-11T00:00:00")
            # Had the refusals spent rate, the TAT would be hours ahead and this refused.
            return today, await limiter.check("k1", "fraud-detector", rate, quota)
        finally:
            await limiter.close()

    today, tomorrow = asyncio.run(scenario())
    assert [d.allowed for d in today] == [True, False, False, False]
    assert {d.reason for d in today[1:]} == {LimitReason.DAILY_QUOTA}
    assert tomorrow.allowed


def test_the_longest_wait_is_the_one_reported(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-10T23:00:00"))
    rate = RateLimit(per_second=1.0, burst=1)
    slow = RateLimit(per_second=1 / 7200, burst=1)  # a two-hour wait, past midnight

    async def scenario() -> list[LimitDecision]:
        limiter = make_clocked(clock)
        try:
            refusals = []
            for key, limit, quota in [
                ("k1", rate, Quota(daily=1)),
                ("k2", slow, Quota(daily=1)),
                ("k3", rate, Quota(daily=1, monthly=1)),
            ]:
                await limiter.check(key, "m", limit, quota)
                refusals.append(await limiter.check(key, "m", limit, quota))
            return refusals
        finally:
            await limiter.close()

    daily, rated, monthly = asyncio.run(scenario())
    month_left = _at("2024-06-01T00:00:00") - _at("2024-05-10T23:00:00")
    assert [d.reason for d in (daily, rated, monthly)] == ["daily-quota", "rate", "monthly-quota"]
    assert [d.retry_after for d in (daily, rated, monthly)] == pytest.approx([3600.0, 7200.0, month_left])


def test_a_request_larger_than_any_allowance_is_refused_for_ever_and_counts_nothing(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-10T12:00:00"))

    async def scenario() -> tuple[list[LimitDecision], Usage]:
        limiter = make_clocked(clock)
        try:
            decisions = [
                await limiter.check("k1", "m", RateLimit(10.0, burst=4), None, cost=5),
                await limiter.check("k1", "m", None, Quota(daily=4), cost=5),
                await limiter.check("k1", "m", None, Quota(daily=100, monthly=4), cost=5),
                await limiter.check("k1", "m", RateLimit(10.0, burst=8), Quota(daily=8), cost=5),
            ]
            return decisions, await limiter.usage("k1", "m")
        finally:
            await limiter.close()

    decisions, usage = asyncio.run(scenario())
    assert [(d.allowed, d.reason) for d in decisions[:3]] == [
        (False, LimitReason.RATE),
        (False, LimitReason.DAILY_QUOTA),
        (False, LimitReason.MONTHLY_QUOTA),
    ]
    assert all(math.isinf(d.retry_after) for d in decisions[:3])
    assert decisions[3].allowed
    assert usage == Usage(daily_used=5, monthly_used=5)


def test_a_cost_below_one_is_rejected() -> None:
    async def scenario() -> None:
        await LocalLimiter().check("k1", "m", None, None, cost=0)

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(scenario())


def test_pairs_are_limited_separately(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-10T12:00:00"))
    rate = RateLimit(per_second=1.0, burst=1)

    async def scenario() -> list[bool]:
        limiter = make_clocked(clock)
        try:
            # ("a:b", "c") and ("a", "b:c") must not share a key in Redis.
            pairs = [("k1", "m1"), ("k1", "m2"), ("k2", "m1"), ("a:b", "c"), ("a", "b:c"), ("k1", "m1")]
            return [(await limiter.check(key, model, rate, None)).allowed for key, model in pairs]
        finally:
            await limiter.close()

    assert asyncio.run(scenario()) == [True, True, True, True, True, False]


# --- memory and keys are bounded ---------------------------------------------------------------


def test_local_limiter_forgets_pairs_idle_since_last_month() -> None:
    clock = FakeClock(_at("2024-05-31T12:00:00"))

    async def scenario() -> int:
        limiter = LocalLimiter(clock=clock)
        for index in range(100):
            await limiter.check(f"k{index}", "m", RateLimit(1.0, burst=1), Quota(monthly=10))
        clock.now = _at("2024-06-01T00:00:01")
        await limiter.check("k0", "m", None, None)
        return len(limiter._pairs)  # the bound itself is the behaviour under test

    assert asyncio.run(scenario()) == 1


def test_redis_state_expires_by_the_end_of_the_month(space: RedisSpace) -> None:
    async def scenario() -> None:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            await limiter.check("k1", "m", RateLimit(5.0, burst=2), Quota(daily=5))
            await limiter.check("k2", "m", None, None)
        finally:
            await limiter.close()

    asyncio.run(scenario())
    now = time.time()
    to_month_end = quota_windows(now).month_ends_at - now
    with redis.Redis.from_url(space.url) as client:
        keys = list(client.scan_iter(match=f"{space.prefix}*"))
        assert len(keys) == 2
        for key in keys:
            ttl = client.pttl(key) / 1000
            assert 0 < ttl <= to_month_end + 2


# --- shared by replicas ------------------------------------------------------------------------


def test_two_replicas_share_one_burst(space: RedisSpace) -> None:
    rate = RateLimit(per_second=0.001, burst=10)

    async def scenario() -> list[LimitDecision]:
        replicas = [RedisLimiter(space.url, prefix=space.prefix) for _ in range(2)]
        try:
            return await asyncio.gather(*(replicas[i % 2].check("k1", "m", rate, None) for i in range(20)))
        finally:
            for replica in replicas:
                await replica.close()

    decisions = asyncio.run(scenario())
    assert sum(d.allowed for d in decisions) == 10
    assert {d.reason for d in decisions if not d.allowed} == {LimitReason.RATE}


_REPLICA_PROCESS = """
import asyncio, sys
from bastion.serve.limits import Quota, RateLimit, RedisLimiter

async def main():
    limiter = RedisLimiter(sys.argv[1], prefix=sys.argv[2])
    await limiter.usage("k1", "m")  # connected before the start signal
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    rate, quota = RateLimit(per_second=0.001, burst=10), Quota(daily=1000)
    decisions = await asyncio.gather(*(limiter.check("k1", "m", rate, quota) for _ in range(int(sys.argv[3]))))
    print(sum(d.allowed for d in decisions), flush=True)
    await limiter.close()

asyncio.run(main())
"""


def test_two_processes_share_one_burst(space: RedisSpace) -> None:
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA_PROCESS, space.url, space.prefix, "15"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for replica in replicas:
            assert replica.stdout is not None
            assert replica.stdout.readline().strip() == "ready"
        for replica in replicas:  # both fire at once
            assert replica.stdin is not None
            replica.stdin.write("go\n")
            replica.stdin.flush()
        allowed = [int(replica.communicate(timeout=HANG_GUARD)[0]) for replica in replicas]
    finally:
        for replica in replicas:
            replica.kill()
            replica.wait()

    assert sum(allowed) == 10

    async def usage() -> Usage:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            return await limiter.usage("k1", "m")
        finally:
            await limiter.close()

    assert asyncio.run(usage()) == Usage(daily_used=10, monthly_used=10)


# --- Redis unavailable --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_redis_raises_backend_unavailable_without_the_password() -> None:
    url = f"redis://gateway:s3cret-pw@127.0.0.1:{_closed_port()}/0"

    async def scenario(call: str) -> None:
        limiter = RedisLimiter(url, timeout=0.5)
        try:
            if call == "check":
                await limiter.check("k1", "m", RateLimit(1.0, burst=1), None)
            else:
                await limiter.usage("k1", "m")
        finally:
            await limiter.close()

    for call in ("check", "usage"):
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1") as caught:
            asyncio.run(scenario(call))
        assert "s3cret-pw" not in caught.value.diagnostics()


def test_the_script_is_loaded_again_after_redis_forgets_it(space: RedisSpace) -> None:
    async def scenario() -> list[LimitDecision]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            first = await limiter.check("k1", "m", None, Quota(daily=5))
            # As if Redis had restarted: EVALSHA answers NOSCRIPT for this digest.
            limiter._sha = "0" * 40
            return [first, await limiter.check("k1", "m", None, Quota(daily=5))]
        finally:
            await limiter.close()

    assert all(d.allowed for d in asyncio.run(scenario()))


def test_make_limiter_picks_the_backend_from_configuration(redis_url: str) -> None:
    async def kinds() -> list[str]:
        limiters = [make_limiter(None), make_limiter(""), make_limiter(redis_url)]
        for limiter in limiters:
            await limiter.close()
        return [type(limiter).__name__ for limiter in limiters]

    assert asyncio.run(kinds()) == ["LocalLimiter", "LocalLimiter", "RedisLimiter"]


# --- both backends agree -----------------------------------------------------------------------

_RATE = RateLimit(per_second=3.0, burst=4)
_SLOW = RateLimit(per_second=0.5, burst=2)
_QUOTA = Quota(daily=6, monthly=9)

# (seconds to advance, key, model, rate, quota, cost)
_SCRIPT: list[tuple[float, str, str, RateLimit | None, Quota | None, int]] = [
    *[(0.0, "alice", "m1", _RATE, _QUOTA, 1)] * 6,  # burst of 4, then rate refusals
    (0.2, "alice", "m1", _RATE, _QUOTA, 1),
    (0.15, "alice", "m1", _RATE, _QUOTA, 1),
    (0.0, "alice", "m1", _RATE, _QUOTA, 2),
    (1.0, "alice", "m1", _RATE, _QUOTA, 2),  # past the daily budget
    (0.0, "alice", "m2", _SLOW, None, 1),
    (0.0, "alice", "m2", _SLOW, None, 1),
    (0.1, "alice", "m2", _SLOW, None, 1),
    (1.9, "alice", "m2", _SLOW, None, 1),
    (0.0, "bob", "m1", None, Quota(daily=2), 1),
    (0.0, "bob", "m1", None, Quota(daily=2), 1),
    (0.0, "bob", "m1", None, Quota(daily=2), 1),
    (0.0, "bob", "m1", None, None, 3),  # no budget now: allowed
    (43_200.0, "alice", "m1", _RATE, _QUOTA, 1),  # next day: daily reset, monthly is not
    *[(0.5, "alice", "m1", _RATE, _QUOTA, 1)] * 5,  # the month's budget runs out
    (0.0, "bob", "m1", None, Quota(daily=2), 1),
    (86_400.0 * 20, "alice", "m1", _RATE, _QUOTA, 1),  # next month
    (0.0, "alice", "m1", _RATE, _QUOTA, 9),
    (0.0, "alice", "m1", _RATE, _QUOTA, 3),
]


def test_local_and_redis_limiters_agree_on_a_scripted_sequence(space: RedisSpace) -> None:
    async def play(limiter: Limiter, clock: FakeClock) -> tuple[list[LimitDecision], list[Usage]]:
        decisions = []
        try:
            for advance, key, model, rate, quota, cost in _SCRIPT:
                clock.advance(advance)
                decisions.append(await limiter.check(key, model, rate, quota, cost))
            usage = [
                await limiter.usage(key, model) for key, model in (("alice", "m1"), ("alice", "m2"), ("bob", "m1"))
            ]
        finally:
            await limiter.close()
        return decisions, usage

    local_clock, redis_clock = FakeClock(_at("2024-05-10T20:00:00")), FakeClock(_at("2024-05-10T20:00:00"))
    local = asyncio.run(play(LocalLimiter(clock=local_clock), local_clock))
    shared = asyncio.run(play(RedisLimiter(space.url, prefix=space.prefix, clock=redis_clock), redis_clock))

    assert [(d.allowed, d.reason) for d in shared[0]] == [(d.allowed, d.reason) for d in local[0]]
    assert [d.retry_after for d in shared[0]] == pytest.approx([d.retry_after for d in local[0]], abs=1e-9)
    assert shared[1] == local[1]
    # The sequence reaches every outcome, so agreement means something.
    assert {d.reason for d in local[0]} == set(LimitReason)
