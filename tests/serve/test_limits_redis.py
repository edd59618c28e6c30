"""The shared limiter through Redis under concurrency and failure: what any client under it must do.

Checks made at once are each decided on their own and counted once, also when Redis has
forgotten the script; a Redis that accepts connections and never answers fails every check
closed at the timeout, without showing the password. Redis is expected at 127.0.0.1:6379
(`BASTION_TEST_REDIS_URL` overrides); each test writes under a random key prefix, deleted at
the end. The silent server is a real TCP socket on 127.0.0.1, opened by the test.
"""

from __future__ import annotations

import asyncio

from bastion.errors import BackendUnavailable
from bastion.serve.limits import LimitDecision, LimitReason, Quota, RateLimit, RedisLimiter, Usage
from corpus.hang_guard import HANG_GUARD
from corpus.redis_env import RedisSpace
from serve.tcp_peers import silent_server

SECRET = "s3cr3t-Pa55"




def test_500_concurrent_checks_on_one_pair_spend_the_budget_exactly(space: RedisSpace) -> None:
    async def scenario() -> tuple[list[LimitDecision], Usage]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            decisions = await asyncio.gather(*(limiter.check("k1", "m", None, Quota(daily=250)) for _ in range(500)))
            return list(decisions), await limiter.usage("k1", "m")
        finally:
            await limiter.close()

    decisions, usage = asyncio.run(scenario())

    assert sum(d.allowed for d in decisions) == 250
    assert all(d.reason is LimitReason.DAILY_QUOTA for d in decisions if not d.allowed)
    assert usage == Usage(daily_used=250, monthly_used=250)


def test_concurrent_checks_that_meet_noscript_are_each_counted_once(space: RedisSpace) -> None:
    async def scenario() -> tuple[list[LimitDecision], Usage]:
        limiter = RedisLimiter(space.url, prefix=space.prefix)
        try:
            await limiter.check("k1", "m", None, None)
            limiter._sha = "0" * 40  # as if Redis had restarted and forgotten the script
            decisions = await asyncio.gather(*(limiter.check("k1", "m", None, None) for _ in range(50)))
            return list(decisions), await limiter.usage("k1", "m")
        finally:
            await limiter.close()

    decisions, usage = asyncio.run(scenario())

    assert all(d.allowed for d in decisions)
    assert usage == Usage(daily_used=51, monthly_used=51)


def test_a_redis_that_never_answers_fails_the_check_closed_at_the_timeout() -> None:
    async def scenario() -> list[BaseException]:
        async with silent_server() as silent:
            limiter = RedisLimiter(f"redis://gateway:{SECRET}@127.0.0.1:{silent.port}/0", timeout=0.3)
            try:
                results = await asyncio.wait_for(  # a hang guard, not a speed bound
                    asyncio.gather(
                        *(limiter.check("k1", "m", RateLimit(10.0, burst=10), None) for _ in range(5)),
                        return_exceptions=True,
                    ),
                    timeout=HANG_GUARD,
                )
            finally:
                await limiter.close()
        return [r for r in results if isinstance(r, BaseException)]

    errors = asyncio.run(scenario())

    assert len(errors) == 5
    assert all(isinstance(e, BackendUnavailable) for e in errors), errors
    assert all("did not answer within 0.3 s" in str(e) for e in errors)
    assert all(SECRET not in e.diagnostics() for e in errors if isinstance(e, BackendUnavailable))
