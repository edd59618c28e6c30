"""SERVE: how often may this key ask this model, and how much this day and month?

Two limits guard every (API key, model) pair:

- a rate limit, by GCRA (the generic cell rate algorithm): one timestamp per pair, the
  *theoretical arrival time* (TAT). A request of `cost` units pushes the TAT `cost / per_second`
  seconds on; it is refused while the TAT would lie more than `burst / per_second` seconds
  ahead of now. Idle callers may send `burst` requests at once, then `per_second` a second,
  smoothly, with no fixed windows for clients to game;
- query budgets per UTC day and UTC month, counted in buckets named by the day and the month,
  so yesterday's count is forgotten, never swept.

A refused request consumes nothing: neither rate nor budget. When several limits refuse, the
decision carries the one with the longest wait, because nothing passes before it does.

`LocalLimiter` keeps the state in the process (the embedded default); `RedisLimiter` keeps it
in Redis, read and written by one Lua script per request, so any number of gateway replicas
share the same limits and agree on the time (the script reads Redis' clock, not theirs).
`make_limiter` picks one from configuration. The gateway turns a refusal into HTTP 429 with
`Retry-After`; a `RedisLimiter` that cannot reach Redis raises `BackendUnavailable`, and the
gateway fails closed.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final, Protocol

from bastion.errors import BackendUnavailable, ConfigError
from bastion.serve.resp import RedisConnection, RedisDown, RedisReplyError

__all__ = [
    "LimitDecision",
    "LimitReason",
    "Limiter",
    "LocalLimiter",
    "Quota",
    "QuotaWindows",
    "RateLimit",
    "RedisLimiter",
    "Usage",
    "make_limiter",
    "quota_windows",
]

_DAY_SECONDS: Final = 86_400
_EPOCH: Final = date(1970, 1, 1)
# Times are whole microseconds (Redis TIME's resolution) in Python ints and in the script's
# doubles alike: exact below 2**53 (year 2255), so sums of intervals never drift by a rounding
# error into refusing a client that sends exactly at the limit, and both limiters agree exactly.
_US: Final = 1_000_000
_DAY_US: Final = _DAY_SECONDS * _US
_EXACT_US: Final = 2**53


class LimitReason(enum.StrEnum):
    """Why a request was refused; `NONE` (the empty string) when it was allowed."""

    NONE = ""
    RATE = "rate"
    DAILY_QUOTA = "daily-quota"
    MONTHLY_QUOTA = "monthly-quota"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A GCRA rate limit: `per_second` units a second on average, `burst` at once when idle.

    `interval_us`, derived, is the time one unit takes: `1 / per_second` in whole microseconds,
    rounded down (so the limit errs by at most a millionth of a second per unit, in the
    caller's favour).

    Raises:
        ConfigError: `per_second` is not in (0, 1 000 000], or `burst` is below 1, or the two
            make a burst window too long to compute exactly (centuries).
    """

    per_second: float
    burst: int
    interval_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and 0 < self.per_second <= _US):
            raise ConfigError(f"rate limit: per_second must be in (0, 1000000], got {self.per_second!r}")
        if self.burst < 1:
            raise ConfigError(f"rate limit: burst must be at least 1, got {self.burst!r}")
        interval_us = int(_US / self.per_second)
        if interval_us * self.burst >= _EXACT_US:
            raise ConfigError(f"rate limit: {self.burst} at {self.per_second}/s spans more time than can be counted")
        object.__setattr__(self, "interval_us", interval_us)  # frozen: set once, here


@dataclass(frozen=True, slots=True)
class Quota:
    """Budgets of units per UTC day and per UTC month; `None` means no such budget.

    Raises:
        ConfigError: a budget is negative.
    """

    daily: int | None = None
    monthly: int | None = None

    def __post_init__(self) -> None:
        for name, budget in (("daily", self.daily), ("monthly", self.monthly)):
            if budget is not None and budget < 0:
                raise ConfigError(f"quota: {name} budget must not be negative, got {budget!r}")


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """The outcome of one check.

    `retry_after` is in seconds: GCRA's wait for `RATE`, the time to the next UTC midnight or
    first of the month for the quotas, 0 when allowed, and `math.inf` when the request can never
    pass under these limits (its cost exceeds the burst or the whole budget), in which case the
    gateway should answer without a `Retry-After` header.
    """

    allowed: bool
    retry_after: float
    reason: LimitReason


@dataclass(frozen=True, slots=True)
class Usage:
    """Units a (key, model) pair has had allowed in the current UTC day and month."""

    daily_used: int
    monthly_used: int


@dataclass(frozen=True, slots=True)
class QuotaWindows:
    """The UTC day and month that `now` falls in, and when each ends (Unix seconds)."""

    day: int
    day_ends_at: int
    month: int
    month_ends_at: int


def quota_windows(now: float) -> QuotaWindows:
    """The UTC day and month buckets of a Unix time, and the boundaries where they reset.

    Unix time has no leap seconds, so a UTC day is always 86 400 of its seconds. The Lua
    script in `RedisLimiter` computes the same values from Redis' clock.

    Args:
        now: seconds since 1970-01-01T00:00:00Z.

    Returns:
        `day` (days since the epoch), `month` (`year * 12 + month - 1`) and the Unix times at
        which the next day and month begin.

    Example:
        >>> quota_windows(1_709_251_199.5).month_ends_at  # 2024-02-29T23:59:59.5Z
        1709251200
    """
    return _windows_of_day(int(now // _DAY_SECONDS))


def _windows_of_day(day: int) -> QuotaWindows:
    today = _EPOCH + timedelta(days=day)
    next_year, next_month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    month_ends_at = (date(next_year, next_month, 1) - _EPOCH).days * _DAY_SECONDS
    return QuotaWindows(
        day=day,
        day_ends_at=(day + 1) * _DAY_SECONDS,
        month=today.year * 12 + today.month - 1,
        month_ends_at=month_ends_at,
    )


class Limiter(Protocol):
    """Rate limits and budgets per (API key id, model); in-process or shared through Redis."""

    async def check(
        self,
        key_id: str,
        model: str,
        rate: RateLimit | None,
        quota: Quota | None,
        cost: int = 1,
    ) -> LimitDecision:
        """Allow and count a request of `cost` units, or refuse it and count nothing.

        Args:
            key_id: the caller's key id (never the secret).
            model: the model asked.
            rate: the rate limit, or `None` for none.
            quota: the budgets, or `None` for none.
            cost: units the request spends (1 per request, or e.g. its batch size).

        Returns:
            The decision; `retry_after` and `reason` say why a refusal happened.

        Raises:
            ValueError: `cost` is below 1.
            BackendUnavailable: the shared store could not be reached.
        """
        ...

    async def usage(self, key_id: str, model: str) -> Usage:
        """Units allowed for the pair in the current UTC day and month."""
        ...

    async def close(self) -> None:
        """Release connections; the limiter must not be used afterwards."""
        ...


_ALLOWED: Final = LimitDecision(allowed=True, retry_after=0.0, reason=LimitReason.NONE)
# Module constants: attribute lookups on an enum class cost more than the rest of a check.
_NONE: Final = LimitReason.NONE
_RATE: Final = LimitReason.RATE
_DAILY_QUOTA: Final = LimitReason.DAILY_QUOTA
_MONTHLY_QUOTA: Final = LimitReason.MONTHLY_QUOTA


def _check_cost(cost: int) -> None:
    if cost < 1:
        raise ValueError(f"a request costs at least 1 unit, got {cost!r}")


def _never_allowed(rate: RateLimit | None, quota: Quota | None, cost: int) -> LimitDecision | None:
    # Without this, GCRA and the budgets would name a wait after which the request is refused
    # again, forever; a client honouring Retry-After would loop.
    if quota is not None:
        if quota.monthly is not None and cost > quota.monthly:
            return LimitDecision(allowed=False, retry_after=math.inf, reason=LimitReason.MONTHLY_QUOTA)
        if quota.daily is not None and cost > quota.daily:
            return LimitDecision(allowed=False, retry_after=math.inf, reason=LimitReason.DAILY_QUOTA)
    if rate is not None and cost > rate.burst:
        return LimitDecision(allowed=False, retry_after=math.inf, reason=LimitReason.RATE)
    return None


class _PairState:
    """Mutable state of one (key, model) pair; a plain slotted class because it is hot."""

    __slots__ = ("day", "day_used", "month", "month_used", "tat")

    def __init__(self) -> None:
        self.tat = 0  # microseconds
        self.day = -1
        self.day_used = 0
        self.month = -1
        self.month_used = 0


class LocalLimiter:
    """Limits kept in this process: the embedded default for a single gateway.

    One small record per (key, model) pair: the GCRA theoretical arrival time and the current
    day's and month's counts. Counts from an earlier day or month are replaced, not kept, and
    when the month turns, pairs idle since the previous month are dropped, so memory is bounded
    by the pairs active this month.

    No lock: the gateway calls `check` from its asyncio event loop, one task at a time, and
    `check` never awaits between reading and writing a pair, so no other task can interleave.
    It is not safe to share across threads.

    Args:
        clock: the Unix time in seconds; injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pairs: dict[tuple[str, str], _PairState] = {}
        self._day = -1
        self._day_starts_at = 0
        self._day_ends_at = 0
        self._month = -1
        self._month_ends_at = 0

    def _now(self) -> int:
        """The clock in whole microseconds; moves the day and month bounds when they pass."""
        now = int(self._clock() * _US + 0.5)
        if not self._day_starts_at <= now < self._day_ends_at:
            self._roll(now)
        return now

    def _roll(self, now: int) -> None:
        # Computing the month costs a date conversion: once a day, not per request.
        windows = _windows_of_day(now // _DAY_US)
        if windows.month != self._month:
            idle = [pair for pair, state in self._pairs.items() if state.month != windows.month and state.tat <= now]
            for pair in idle:
                del self._pairs[pair]
        self._day = windows.day
        self._day_ends_at = windows.day_ends_at * _US
        self._day_starts_at = self._day_ends_at - _DAY_US
        self._month = windows.month
        self._month_ends_at = windows.month_ends_at * _US

    async def check(
        self,
        key_id: str,
        model: str,
        rate: RateLimit | None,
        quota: Quota | None,
        cost: int = 1,
    ) -> LimitDecision:
        """Allow and count a request of `cost` units, or refuse it and count nothing.

        See `Limiter.check`.
        """
        # The gateway spends a few microseconds on all its checks; this runs on every request,
        # so it is written flat: no helper calls, no enum lookups, on the allowed path.
        if cost < 1:
            _check_cost(cost)
        now = int(self._clock() * 1_000_000 + 0.5)
        if not self._day_starts_at <= now < self._day_ends_at:
            self._roll(now)
        state = self._pairs.get((key_id, model))
        if state is None:
            state = _PairState()
        day_used = state.day_used if state.day == self._day else 0
        month_used = state.month_used if state.month == self._month else 0

        # The script's arithmetic, in the same order: the two limiters must agree.
        wait = 0
        reason = _NONE
        if quota is not None:
            if quota.monthly is not None and month_used + cost > quota.monthly:
                wait = self._month_ends_at - now
                reason = _MONTHLY_QUOTA
            if quota.daily is not None and day_used + cost > quota.daily and self._day_ends_at - now > wait:
                wait = self._day_ends_at - now
                reason = _DAILY_QUOTA
        tat = state.tat if state.tat > now else now
        if rate is not None:
            interval = rate.interval_us
            new_tat = tat + interval * cost
            rate_wait = new_tat - interval * rate.burst - now
            if rate_wait > wait:
                wait = rate_wait
                reason = _RATE
            tat = new_tat
        if reason:
            # A cost above the burst or a budget is always refused here; say so.
            never = _never_allowed(rate, quota, cost)
            return never or LimitDecision(allowed=False, retry_after=wait / _US, reason=reason)

        state.tat = tat
        state.day = self._day
        state.day_used = day_used + cost
        state.month = self._month
        state.month_used = month_used + cost
        self._pairs[key_id, model] = state
        return _ALLOWED

    async def usage(self, key_id: str, model: str) -> Usage:
        """Units allowed for the pair in the current UTC day and month."""
        self._now()
        state = self._pairs.get((key_id, model))
        if state is None:
            return Usage(daily_used=0, monthly_used=0)
        return Usage(
            daily_used=state.day_used if state.day == self._day else 0,
            monthly_used=state.month_used if state.month == self._month else 0,
        )

    async def close(self) -> None:
        """Forget every pair."""
        self._pairs.clear()


# One hash per (key, model): t = GCRA theoretical arrival time, d/dn = UTC day number and
# units used that day, m/mn = month number (year * 12 + month - 1) and units used that month.
# Times are whole microseconds. Its TTL runs to the end of the month (or the TAT, if later),
# so idle pairs vanish.
#
# TIME before a write is allowed because scripts replicate their effects (the only mode in
# Redis 7; requested explicitly for Redis 5 and 6), so replicas never re-run TIME.
_SCRIPT: Final = """
if redis.replicate_commands then redis.replicate_commands() end
-- ARGV: now in us ('' = Redis TIME), interval in us ('' = no rate limit), burst,
--       daily ('' = none), monthly ('' = none), cost (0 = only read the usage)
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[6])
local DAY = 86400000000

-- The UTC day, and the civil date of it (H. Hinnant's civil_from_days).
local day = math.floor(now / DAY)
local day_end = (day + 1) * DAY
local z = day + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local mday = doy - math.floor((153 * mp + 2) / 5) + 1
local year = yoe + era * 400
local month = mp + 3
if mp >= 10 then month = mp - 9 end
if month <= 2 then year = year + 1 end
local month_days = ({31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[month]
if month == 2 and ((year % 4 == 0 and year % 100 ~= 0) or year % 400 == 0) then month_days = 29 end
local month_end = (day - mday + 1 + month_days) * DAY
local month_id = year * 12 + month - 1

local h = redis.call('HMGET', KEYS[1], 't', 'd', 'dn', 'm', 'mn')
local day_used = 0
if tonumber(h[2]) == day then day_used = tonumber(h[3]) end
local month_used = 0
if tonumber(h[4]) == month_id then month_used = tonumber(h[5]) end

-- The longest wait wins: nothing passes before it.
local wait = 0
local reason = ''
if ARGV[5] ~= '' and month_used + cost > tonumber(ARGV[5]) then
  wait = month_end - now
  reason = 'monthly-quota'
end
if ARGV[4] ~= '' and day_used + cost > tonumber(ARGV[4]) and day_end - now > wait then
  wait = day_end - now
  reason = 'daily-quota'
end
local tat = tonumber(h[1]) or now
if tat < now then tat = now end
if ARGV[2] ~= '' then
  local interval = tonumber(ARGV[2])
  local new_tat = tat + interval * cost
  local rate_wait = new_tat - interval * tonumber(ARGV[3]) - now
  if rate_wait > wait then
    wait = rate_wait
    reason = 'rate'
  end
  tat = new_tat
end
if reason ~= '' then
  return {0, wait, reason, day_used, month_used}
end
if cost > 0 then
  day_used = day_used + cost
  month_used = month_used + cost
  redis.call('HSET', KEYS[1], 't', string.format('%d', tat), 'd', day, 'dn', day_used,
             'm', month_id, 'mn', month_used)
  redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(month_end, tat) - now) / 1000) + 1000)
end
return {1, 0, '', day_used, month_used}
"""

_REASONS: Final = {reason.value.encode(): reason for reason in LimitReason}


class RedisLimiter:
    """Limits kept in Redis and shared by every gateway replica that uses the same `prefix`.

    Each check is one EVALSHA of one Lua script (loaded once; reloaded if Redis answers
    NOSCRIPT, e.g. after a restart) that reads the pair's state, decides and writes it
    atomically, with Redis' own clock, so replicas with skewed clocks agree. All of a pair's
    state is one hash whose key carries a hash tag, so it also works on Redis Cluster.

    Commands are not retried: the script is not idempotent, and a retry after a lost reply
    would count the request twice. A failure raises `BackendUnavailable` at once.

    Args:
        url: a redis-py URL (`redis://host:6379/0`, `rediss://`, `unix://`).
        prefix: the start of every key this limiter writes.
        timeout: seconds to wait for a connection or a reply.
        clock: `None` (the default, and the only right choice for replicas) uses Redis' clock;
            a callable supplies the time instead, so tests can cross day and month boundaries.

    Raises:
        ConfigError: the URL cannot be parsed.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "bastion:limits:",
        *,
        timeout: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = RedisConnection(url, timeout=timeout)  # ConfigError for a bad URL
        self._where = self._redis.where
        self._sha = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._prefix = prefix
        self._clock = clock

    def _key(self, key_id: str, model: str) -> str:
        # The length prefix keeps ("a:b", "c") and ("a", "b:c") apart; the braces are a Redis
        # Cluster hash tag.
        return f"{self._prefix}{{{len(key_id)}:{key_id}:{model}}}"

    async def _run(self, key_id: str, model: str, args: list[str | int]) -> list[Any]:
        key = self._key(key_id, model)
        try:
            try:
                reply: list[Any] = await self._redis.call("EVALSHA", self._sha, 1, key, *args)
            except RedisReplyError as err:
                if not str(err).startswith("NOSCRIPT"):
                    raise
                # Redis restarted or flushed its scripts; the script did not run, so running it
                # again counts the request once.
                loaded = await self._redis.call("SCRIPT", "LOAD", _SCRIPT)
                self._sha = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
                reply = await self._redis.call("EVALSHA", self._sha, 1, key, *args)
        except (RedisDown, RedisReplyError) as err:
            raise BackendUnavailable(
                f"Redis at {self._where} did not answer the rate-limit script: {err}",
                hint="Check that Redis is running and reachable; until it is, requests are refused.",
            ) from err
        return reply

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * _US + 0.5))

    async def check(
        self,
        key_id: str,
        model: str,
        rate: RateLimit | None,
        quota: Quota | None,
        cost: int = 1,
    ) -> LimitDecision:
        """Allow and count a request of `cost` units, or refuse it and count nothing.

        See `Limiter.check`.
        """
        _check_cost(cost)
        never = _never_allowed(rate, quota, cost)
        if never is not None:
            return never
        args: list[str | int] = [
            self._now_arg(),
            "" if rate is None else rate.interval_us,
            0 if rate is None else rate.burst,
            "" if quota is None or quota.daily is None else quota.daily,
            "" if quota is None or quota.monthly is None else quota.monthly,
            cost,
        ]
        reply = await self._run(key_id, model, args)
        if reply[0] == 1:
            return _ALLOWED
        return LimitDecision(allowed=False, retry_after=int(reply[1]) / _US, reason=_REASONS[reply[2]])

    async def usage(self, key_id: str, model: str) -> Usage:
        """Units allowed for the pair in the current UTC day and month (by Redis' clock)."""
        reply = await self._run(key_id, model, [self._now_arg(), "", 0, "", "", 0])
        return Usage(daily_used=int(reply[3]), monthly_used=int(reply[4]))

    async def close(self) -> None:
        """Close the connection to Redis."""
        self._redis.close()


def make_limiter(redis_url: str | None, prefix: str = "bastion:limits:") -> Limiter:
    """The limiter configuration asks for: shared through Redis if a URL is given, else local.

    Args:
        redis_url: where the replicas' shared Redis is, or `None` (or empty) for one gateway.
        prefix: the Redis key prefix; gateways that must not share limits use different ones.

    Returns:
        A `RedisLimiter` for a URL, otherwise a `LocalLimiter`.

    Raises:
        ConfigError: the URL cannot be parsed.

    Example:
        >>> limiter = make_limiter(None)
        >>> type(limiter).__name__
        'LocalLimiter'
    """
    if redis_url:
        return RedisLimiter(redis_url, prefix)
    return LocalLimiter()
