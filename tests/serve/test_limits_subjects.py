"""Several subjects charged for one request: a key and its account, together or not at all.

The gateway charges each request's rows to the key and to the key's account in one
`check_many`; either refusing means neither is charged, the longest wait is reported with the
subject it belongs to, and a cost above a burst or a budget is refused for ever. Run on the
in-process limiter and on a real Redis 7 (`BASTION_TEST_REDIS_URL`; a key prefix per test).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
import redis

from bastion.serve.limits import (
    LimitDecision,
    Limiter,
    LimitReason,
    LocalLimiter,
    Quota,
    RateLimit,
    RedisLimiter,
    SubjectLimit,
    Usage,
)
from corpus.redis_env import RedisSpace


def _at(text: str) -> float:
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
NOON = "2024-05-10T12:00:00"
MODEL = "fraud"


@pytest.fixture(params=["local", "redis"])
def make_clocked(request: pytest.FixtureRequest) -> MakeLimiter:
    if request.param == "local":
        return lambda clock: LocalLimiter(clock=clock)
    where: RedisSpace = request.getfixturevalue("space")
    return lambda clock: RedisLimiter(where.url, prefix=where.prefix, clock=clock)


def _key(quota: Quota | None = None, rate: RateLimit | None = None, name: str = "key:k1") -> SubjectLimit:
    return SubjectLimit(name, rate, quota)


def _account(quota: Quota | None = None, rate: RateLimit | None = None, name: str = "account:acme") -> SubjectLimit:
    return SubjectLimit(name, rate, quota)


async def _usages(limiter: Limiter, subjects: Sequence[str]) -> list[Usage]:
    return [await limiter.usage(subject, MODEL) for subject in subjects]


def test_an_account_refusal_charges_the_key_nothing(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at(NOON))

    async def scenario() -> tuple[list[LimitDecision], list[Usage]]:
        limiter = make_clocked(clock)
        try:
            subjects = [_key(Quota(daily=100)), _account(Quota(daily=10))]
            decisions = [await limiter.check_many(MODEL, subjects, cost) for cost in (8, 5, 2)]
            return decisions, await _usages(limiter, ["key:k1", "account:acme"])
        finally:
            await limiter.close()

    decisions, usages = asyncio.run(scenario())

    assert [d.allowed for d in decisions] == [True, False, True]
    refused = decisions[1]
    assert (refused.reason, refused.subject, refused.refusal) == (
        LimitReason.DAILY_QUOTA, "account:acme", "account-daily-quota",
    )
    assert refused.retry_after == pytest.approx(12 * 3600, abs=1e-6)  # to the next UTC midnight
    # 8 + 2 allowed; the refused 5 reached neither the key's nor the account's count.
    assert usages == [Usage(10, 10), Usage(10, 10)]


def test_a_key_refusal_charges_the_account_nothing(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at(NOON))

    async def scenario() -> tuple[list[LimitDecision], list[Usage]]:
        limiter = make_clocked(clock)
        try:
            first = [_key(Quota(daily=4)), _account(Quota(daily=100))]
            second = [_key(Quota(daily=100), name="key:k2"), _account(Quota(daily=100))]
            decisions = [
                await limiter.check_many(MODEL, first, 3),
                await limiter.check_many(MODEL, first, 3),  # k1's budget: refused
                await limiter.check_many(MODEL, second, 3),  # k2 of the same account: allowed
            ]
            return decisions, await _usages(limiter, ["key:k1", "key:k2", "account:acme"])
        finally:
            await limiter.close()

    decisions, usages = asyncio.run(scenario())

    assert [d.allowed for d in decisions] == [True, False, True]
    assert (decisions[1].subject, decisions[1].refusal) == ("key:k1", "daily-quota")
    assert usages == [Usage(3, 3), Usage(3, 3), Usage(6, 6)]


def test_a_rate_refusal_of_the_account_leaves_the_keys_burst_whole(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at(NOON))
    key_rate, account_rate = RateLimit(per_second=1.0, burst=20), RateLimit(per_second=1.0, burst=20)

    async def scenario() -> tuple[LimitDecision, LimitDecision, LimitDecision]:
        limiter = make_clocked(clock)
        try:
            other = [_key(rate=key_rate, name="key:other"), _account(rate=account_rate)]
            mine = [_key(rate=key_rate), _account(rate=account_rate)]
            spent = await limiter.check_many(MODEL, other, 10)  # half the account's burst
            refused = await limiter.check_many(MODEL, mine, 16)
            # Alone, k1 still has its full burst of 20: nothing was taken from it above.
            alone = await limiter.check_many(MODEL, [_key(rate=key_rate)], 20)
            return spent, refused, alone
        finally:
            await limiter.close()

    spent, refused, alone = asyncio.run(scenario())

    assert spent.allowed and alone.allowed
    assert (refused.allowed, refused.reason, refused.subject) == (False, LimitReason.RATE, "account:acme")
    assert refused.retry_after == pytest.approx(6.0, abs=1e-6)  # 10 + 16 units, 20 at once, at 1/s


def test_64_rows_against_a_burst_of_20_are_never_allowed(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at(NOON))

    async def scenario() -> tuple[list[LimitDecision], list[Usage]]:
        limiter = make_clocked(clock)
        try:
            subjects = [_key(Quota(daily=10_000), RateLimit(per_second=10.0, burst=20)), _account()]
            decisions = [await limiter.check_many(MODEL, subjects, 64)]
            clock.advance(3600.0)  # rested for an hour: the burst is full, and still too small
            decisions.append(await limiter.check_many(MODEL, subjects, 64))
            decisions.append(await limiter.check_many(MODEL, subjects, 20))
            return decisions, await _usages(limiter, ["key:k1", "account:acme"])
        finally:
            await limiter.close()

    decisions, usages = asyncio.run(scenario())

    for never in decisions[:2]:
        assert (never.allowed, never.reason, never.subject) == (False, LimitReason.RATE, "key:k1")
        assert never.retry_after == math.inf
    assert decisions[2].allowed
    assert usages == [Usage(20, 20), Usage(20, 20)]


def test_a_cost_above_the_accounts_budget_is_refused_for_ever(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at(NOON))

    async def scenario() -> LimitDecision:
        limiter = make_clocked(clock)
        try:
            return await limiter.check_many(MODEL, [_key(), _account(Quota(daily=50, monthly=1000))], 64)
        finally:
            await limiter.close()

    decision = asyncio.run(scenario())
    assert (decision.reason, decision.subject, decision.retry_after) == (LimitReason.DAILY_QUOTA, "account:acme", math.inf)
    assert decision.refusal == "account-daily-quota"


def test_the_longest_wait_of_any_subject_is_reported(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at("2024-05-31T23:00:00"))  # one hour to midnight and to the month's end

    async def scenario() -> list[LimitDecision]:
        limiter = make_clocked(clock)
        try:
            slow = RateLimit(per_second=1 / 7200, burst=1)  # refused: two hours to wait
            daily = [_key(rate=slow), _account(Quota(daily=1))]
            await limiter.check_many(MODEL, daily, 1)
            by_key = await limiter.check_many(MODEL, daily, 1)
            # Both subjects' daily budgets spent: the same wait, reported for the first subject.
            tie = [_key(Quota(daily=1), name="key:k2"), _account(Quota(daily=1), name="account:beta")]
            await limiter.check_many(MODEL, tie, 1)
            tied = await limiter.check_many(MODEL, tie, 1)
            return [by_key, tied]
        finally:
            await limiter.close()

    by_key, tied = asyncio.run(scenario())

    assert (by_key.reason, by_key.subject) == (LimitReason.RATE, "key:k1")
    assert by_key.retry_after == pytest.approx(7200.0, abs=1e-3)  # longer than the account's hour
    assert (tied.reason, tied.subject) == (LimitReason.DAILY_QUOTA, "key:k2")
    assert tied.retry_after == pytest.approx(3600.0, abs=1e-6)


def test_check_and_check_many_share_a_subjects_state(make_clocked: MakeLimiter) -> None:
    clock = FakeClock(_at(NOON))

    async def scenario() -> tuple[LimitDecision, LimitDecision, Usage]:
        limiter = make_clocked(clock)
        try:
            await limiter.check("key:k1", MODEL, None, Quota(daily=10), 6)
            many = await limiter.check_many(MODEL, [_key(Quota(daily=10)), _account()], 5)
            one = await limiter.check("key:k1", MODEL, None, Quota(daily=10), 4)
            return many, one, await limiter.usage("key:k1", MODEL)
        finally:
            await limiter.close()

    many, one, usage = asyncio.run(scenario())
    assert (many.allowed, many.subject) == (False, "key:k1")
    assert one.allowed
    assert usage == Usage(10, 10)


@pytest.mark.parametrize(
    ("subjects", "cost", "message"),
    [
        ([], 1, "at least one subject"),
        ([_key(), _key()], 1, "each subject is charged once"),
        ([_key(), _account(), _key()], 1, "each subject is charged once"),
        ([_key(), _account()], 0, "at least 1 unit"),
    ],
)
def test_malformed_requests_are_rejected_by_both_limiters(
    make_clocked: MakeLimiter, subjects: list[SubjectLimit], cost: int, message: str
) -> None:
    async def scenario() -> None:
        limiter = make_clocked(FakeClock(_at(NOON)))
        try:
            await limiter.check_many(MODEL, subjects, cost)
        finally:
            await limiter.close()

    with pytest.raises(ValueError, match=message):
        asyncio.run(scenario())


def test_the_refusal_label_names_the_subjects_kind() -> None:
    assert LimitDecision(False, 1.0, LimitReason.RATE, "key:k1").refusal == "rate"
    assert LimitDecision(False, 1.0, LimitReason.MONTHLY_QUOTA, "account:acme").refusal == "account-monthly-quota"
    assert LimitDecision(False, 1.0, LimitReason.RATE, "k1").refusal == "rate"  # `check`'s bare key id
    assert LimitDecision(True, 0.0, LimitReason.NONE).refusal == ""


# --- Redis: one script call, one hash slot -------------------------------------------------------


def _hash_tag(key: bytes) -> bytes:
    """The part of a key Redis Cluster hashes (its rule: the first {...} with something inside)."""
    start = key.find(b"{")
    end = key.find(b"}", start + 1) if start >= 0 else -1
    return key if start < 0 or end <= start + 1 else key[start + 1 : end]


def test_every_key_of_one_call_shares_a_cluster_hash_slot(space: RedisSpace) -> None:
    async def scenario() -> None:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            subjects = [_key(Quota(daily=5), name="key:a}{b"), _account(name="account:{acme}"), SubjectLimit("net:10.0.0.0/24")]
            assert (await limiter.check_many("fraud", subjects, 1)).allowed
        finally:
            await limiter.close()

    asyncio.run(scenario())
    with redis.Redis.from_url(space.url) as client:
        keys = list(client.scan_iter(match=f"{space.prefix}*"))
    assert len(keys) == 3
    assert {_hash_tag(key) for key in keys} == {b"5:fraud"}


def test_model_and_subject_names_cannot_run_into_each_other(make_clocked: MakeLimiter) -> None:
    async def scenario() -> list[Usage]:
        limiter = make_clocked(FakeClock(_at(NOON)))
        try:
            await limiter.check_many("a}b", [SubjectLimit("c")], 3)
            await limiter.check_many("a", [SubjectLimit("b}c")], 5)
            return [await limiter.usage("c", "a}b"), await limiter.usage("b}c", "a")]
        finally:
            await limiter.close()

    assert asyncio.run(scenario()) == [Usage(3, 3), Usage(5, 5)]


def test_concurrent_requests_of_many_keys_spend_the_accounts_budget_exactly(space: RedisSpace) -> None:
    keys = [f"key:k{i}" for i in range(10)]

    async def scenario() -> tuple[list[LimitDecision], list[Usage]]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            account = _account(Quota(daily=250))
            decisions = await asyncio.gather(
                *(limiter.check_many(MODEL, [_key(Quota(daily=40), name=keys[i % 10]), account], 1) for i in range(500))
            )
            return list(decisions), await _usages(limiter, [*keys, "account:acme"])
        finally:
            await limiter.close()

    decisions, usages = asyncio.run(scenario())

    assert sum(d.allowed for d in decisions) == 250
    assert usages[-1] == Usage(250, 250)
    assert sum(u.daily_used for u in usages[:-1]) == 250  # every allowed request charged both, no other
    assert all(u.daily_used <= 40 for u in usages[:-1])
    assert {d.subject for d in decisions if not d.allowed} <= {"account:acme", *keys}


# --- both backends agree -------------------------------------------------------------------------

_SUBJECTS = {
    "key:a": (RateLimit(per_second=5.0, burst=64), Quota(daily=300, monthly=700)),
    "key:b": (RateLimit(per_second=2.0, burst=32), Quota(daily=100)),
    "key:c": (None, Quota(daily=90)),
    "key:d": (RateLimit(per_second=1.0, burst=16), None),
    "account:one": (RateLimit(per_second=3.0, burst=70), Quota(daily=500, monthly=900)),
    "account:two": (None, Quota(daily=120)),
}
_ACCOUNT_OF = {"key:a": "account:one", "key:b": "account:one", "key:c": "account:two", "key:d": "account:two"}


def _sequence(seed: int, length: int) -> list[tuple[float, str, str, int]]:
    """(seconds to advance, key, model, rows): a caller mix that reaches every kind of refusal."""
    rng = random.Random(seed)
    steps = []
    for _ in range(length):
        advance = rng.choice([0.0, 0.0, 0.1, 0.5, 2.0, 30.0, 4 * 3600.0])
        steps.append((advance, rng.choice(list(_ACCOUNT_OF)), rng.choice(["m1", "m2"]), rng.choice([1, 4, 16, 25, 64])))
    return steps


def test_local_and_redis_limiters_agree_on_many_subjects(space: RedisSpace) -> None:
    steps = _sequence(seed=13, length=400)

    async def play(limiter: Limiter, clock: FakeClock) -> tuple[list[LimitDecision], list[Usage]]:
        decisions = []
        try:
            for advance, key, model, rows in steps:
                clock.advance(advance)
                subjects = [SubjectLimit(s, *_SUBJECTS[s]) for s in (key, _ACCOUNT_OF[key])]
                decisions.append(await limiter.check_many(model, subjects, rows))
            usage = [await limiter.usage(s, m) for s in _SUBJECTS for m in ("m1", "m2")]
        finally:
            await limiter.close()
        return decisions, usage

    start = _at("2024-02-28T20:00:00")  # crosses a day, a leap day and a month
    local_clock, redis_clock = FakeClock(start), FakeClock(start)
    local = asyncio.run(play(LocalLimiter(clock=local_clock), local_clock))
    shared = asyncio.run(play(RedisLimiter(space.url, prefix=space.prefix, clock=redis_clock), redis_clock))

    assert [(d.allowed, d.reason, d.subject) for d in shared[0]] == [(d.allowed, d.reason, d.subject) for d in local[0]]
    assert [d.retry_after for d in shared[0]] == pytest.approx([d.retry_after for d in local[0]], abs=1e-9)
    assert shared[1] == local[1]
    # The sequence reaches every outcome on both kinds of subject, so agreement means something.
    refusals = {(d.refusal, math.isinf(d.retry_after)) for d in local[0] if not d.allowed}
    assert {r for r, _ in refusals} == {
        "rate", "daily-quota", "monthly-quota", "account-rate", "account-daily-quota", "account-monthly-quota",
    }
    assert ("rate", True) in refusals  # 64 rows against a burst of 16 or 32: never
    assert sum(d.allowed for d in local[0]) > 50
