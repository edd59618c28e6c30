"""SERVE: how much may this caller, and the account it belongs to, ask of this model?

Limits guard every (subject, model) pair, where a subject is whoever is charged: an API key
(`"key:<id>"`), the account that owns it (`"account:<name>"`), or any other name. Units are
whatever the caller charges; the gateway charges rows, so a 64-row request costs 64.

- a rate limit, by GCRA (the generic cell rate algorithm): one timestamp per pair, the
  *theoretical arrival time* (TAT). A request of `cost` units pushes the TAT `cost / per_second`
  seconds on; it is refused while the TAT would lie more than `burst / per_second` seconds
  ahead of now. Idle callers may send `burst` units at once, then `per_second` a second,
  smoothly, with no fixed windows for clients to game;
- budgets per UTC day and UTC month, counted in buckets named by the day and the month,
  so yesterday's count is forgotten, never swept.

`Limiter.check_many` checks every subject of a request together and charges them together:
the request is allowed only if every subject's limits allow it, and then every subject is
charged; otherwise nothing is charged anywhere (an account over its budget does not eat its
key's allowance, nor the other way round). A refused request consumes nothing. When several
limits refuse, the decision carries the one with the longest wait, because nothing passes
before it does, and names the subject it belongs to.

`LocalLimiter` keeps the state in the process (the embedded default); `RedisLimiter` keeps it
in Redis, read and written by one Lua script call per request, whatever the number of
subjects, so any number of gateway replicas share the same limits and agree on the time (the
script reads Redis' clock, not theirs). `make_limiter` picks one from configuration. The
gateway turns a refusal into HTTP 429 with `Retry-After`; a `RedisLimiter` that cannot reach
Redis raises `BackendUnavailable`, and the gateway fails closed.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from collections.abc import Callable, Sequence
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
    "SubjectLimit",
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
    gateway should answer without a `Retry-After` header. `subject` names whose limit that is.
    """

    allowed: bool
    retry_after: float
    reason: LimitReason
    subject: str = ""  # the subject whose limit refused (e.g. "account:acme"); "" when allowed

    @property
    def refusal(self) -> str:
        """The reason as a refusal label: `daily-quota` for a key, `account-daily-quota` for an account.

        The label is the reason, prefixed by the subject's kind (what precedes its first colon)
        unless that kind is `key` or absent; empty when the request was allowed.
        """
        kind, colon, _name = self.subject.partition(":")
        if not self.reason or not colon or kind == "key":
            return self.reason.value
        return f"{kind}-{self.reason.value}"


@dataclass(frozen=True, slots=True)
class SubjectLimit:
    """One subject charged for a request, and its limits on the model asked.

    `subject` names the state: `"key:<id>"` for an API key, `"account:<name>"` for an
    account, by the gateway's convention (`LimitDecision.refusal` reads the kind before the
    colon). `None` means no such limit; the subject's usage is counted all the same.
    """

    subject: str
    rate: RateLimit | None = None
    quota: Quota | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Units a (subject, model) pair has had allowed in the current UTC day and month."""

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
    """Rate limits and budgets per (subject, model); in-process or shared through Redis."""

    async def check_many(self, model: str, subjects: Sequence[SubjectLimit], cost: int = 1) -> LimitDecision:
        """Allow a request of `cost` units and charge every subject, or refuse it and charge none.

        Args:
            model: the model asked.
            subjects: everyone the request is charged to (e.g. its key and the key's account),
                each with its limits; distinct names, at least one.
            cost: units the request spends (the gateway: its row count).

        Returns:
            The decision; `retry_after`, `reason` and `subject` say why a refusal happened:
            of every limit that refuses, the one with the longest wait (the first subject's on
            a tie), or `math.inf` when some subject's burst or budget is below `cost`.

        Raises:
            ValueError: `cost` is below 1, no subject is given, or one is given twice.
            BackendUnavailable: the shared store could not be reached.
        """
        ...

    async def check(
        self,
        key_id: str,
        model: str,
        rate: RateLimit | None,
        quota: Quota | None,
        cost: int = 1,
    ) -> LimitDecision:
        """`check_many(model, [SubjectLimit(key_id, rate, quota)], cost)`: one subject.

        Implemented here once for the limiters that subclass this protocol.
        """
        return await self.check_many(model, (SubjectLimit(key_id, rate, quota),), cost)

    async def usage(self, subject: str, model: str) -> Usage:
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


def _check_request(subjects: Sequence[SubjectLimit], cost: int) -> None:
    if cost < 1:
        raise ValueError(f"a request costs at least 1 unit, got {cost!r}")
    if not subjects:
        raise ValueError("a request is charged to at least one subject")
    if len(subjects) > 1 and len({s.subject for s in subjects}) != len(subjects):
        # Charged twice in one step, a subject's second write would overwrite its first.
        raise ValueError(f"each subject is charged once per request: {[s.subject for s in subjects]}")


def _never_allowed(subjects: Sequence[SubjectLimit], cost: int) -> LimitDecision | None:
    # Without this, GCRA and the budgets would name a wait after which the request is refused
    # again, forever; a client honouring Retry-After would loop.
    for limits in subjects:
        quota, rate = limits.quota, limits.rate
        if quota is not None:
            if quota.monthly is not None and cost > quota.monthly:
                return LimitDecision(False, math.inf, LimitReason.MONTHLY_QUOTA, limits.subject)
            if quota.daily is not None and cost > quota.daily:
                return LimitDecision(False, math.inf, LimitReason.DAILY_QUOTA, limits.subject)
        if rate is not None and cost > rate.burst:
            return LimitDecision(False, math.inf, LimitReason.RATE, limits.subject)
    return None


class _PairState:
    """Mutable state of one (subject, model) pair; a plain slotted class because it is hot."""

    __slots__ = ("day", "day_used", "month", "month_used", "tat")

    def __init__(self) -> None:
        self.tat = 0  # microseconds
        self.day = -1
        self.day_used = 0
        self.month = -1
        self.month_used = 0


class LocalLimiter(Limiter):
    """Limits kept in this process: the embedded default for a single gateway.

    One small record per (subject, model) pair: the GCRA theoretical arrival time and the
    current day's and month's counts. Counts from an earlier day or month are replaced, not
    kept, and when the month turns, pairs idle since the previous month are dropped, so memory
    is bounded by the pairs active this month.

    No lock: the gateway calls `check_many` from its asyncio event loop, one task at a time,
    and it never awaits between reading and writing its pairs, so no other task can
    interleave: all subjects are charged, or none. It is not safe to share across threads.

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

    async def check_many(self, model: str, subjects: Sequence[SubjectLimit], cost: int = 1) -> LimitDecision:
        """Allow a request and charge every subject, or refuse it and charge none.

        See `Limiter.check_many`.
        """
        # The gateway spends a few microseconds on all its checks; this runs on every request,
        # so it is written flat: no helper calls, no enum lookups, on the allowed path.
        if cost < 1 or len(subjects) != 2 or subjects[0].subject == subjects[1].subject:
            _check_request(subjects, cost)
        now = int(self._clock() * 1_000_000 + 0.5)
        if not self._day_starts_at <= now < self._day_ends_at:
            self._roll(now)
        day, month = self._day, self._month
        day_wait, month_wait = self._day_ends_at - now, self._month_ends_at - now
        pairs = self._pairs

        # The script's arithmetic, in the same order: the two limiters must agree. Across
        # subjects as within one, a later limit wins only with a strictly longer wait.
        wait = 0
        reason = _NONE
        refused_by = ""
        charged: list[tuple[str, _PairState, int, int, int]] = []
        for limits in subjects:
            state = pairs.get((limits.subject, model))
            if state is None:
                state = _PairState()
            day_used = state.day_used if state.day == day else 0
            month_used = state.month_used if state.month == month else 0
            quota = limits.quota
            if quota is not None:
                if quota.monthly is not None and month_used + cost > quota.monthly and month_wait > wait:
                    wait = month_wait
                    reason = _MONTHLY_QUOTA
                    refused_by = limits.subject
                if quota.daily is not None and day_used + cost > quota.daily and day_wait > wait:
                    wait = day_wait
                    reason = _DAILY_QUOTA
                    refused_by = limits.subject
            tat = state.tat if state.tat > now else now
            rate = limits.rate
            if rate is not None:
                interval = rate.interval_us
                new_tat = tat + interval * cost
                rate_wait = new_tat - interval * rate.burst - now
                if rate_wait > wait:
                    wait = rate_wait
                    reason = _RATE
                    refused_by = limits.subject
                tat = new_tat
            charged.append((limits.subject, state, tat, day_used, month_used))
        if reason:
            # A cost above a burst or a budget is always refused here; say so.
            never = _never_allowed(subjects, cost)
            return never or LimitDecision(False, wait / _US, reason, refused_by)

        for subject, state, tat, day_used, month_used in charged:
            state.tat = tat
            state.day = day
            state.day_used = day_used + cost
            state.month = month
            state.month_used = month_used + cost
            pairs[subject, model] = state
        return _ALLOWED

    async def usage(self, subject: str, model: str) -> Usage:
        """Units allowed for the pair in the current UTC day and month."""
        self._now()
        state = self._pairs.get((subject, model))
        if state is None:
            return Usage(daily_used=0, monthly_used=0)
        return Usage(
            daily_used=state.day_used if state.day == self._day else 0,
            monthly_used=state.month_used if state.month == self._month else 0,
        )

    async def close(self) -> None:
        """Forget every pair."""
        self._pairs.clear()


# One hash per (subject, model): t = GCRA theoretical arrival time, d/dn = UTC day number and
# units used that day, m/mn = month number (year * 12 + month - 1) and units used that month.
# Times are whole microseconds. Its TTL runs to the end of the month (or the TAT, if later),
# so idle pairs vanish. One call decides for every subject of a request (KEYS[1..N]) and
# writes all of them or none: a Lua script runs atomically.
#
# TIME before a write is allowed because scripts replicate their effects (the only mode in
# Redis 7; requested explicitly for Redis 5 and 6), so replicas never re-run TIME.
_SCRIPT: Final = """
if redis.replicate_commands then redis.replicate_commands() end
-- ARGV[1]: now in us ('' = Redis TIME); ARGV[2]: cost (0 = only read the usage);
-- then per key, 4 arguments: interval in us ('' = no rate limit), burst,
--   daily ('' = none), monthly ('' = none)
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
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

-- The longest wait wins: nothing passes before it. A later limit wins only if strictly longer.
local wait = 0
local reason = ''
local refused_by = 0
local tats, days, months = {}, {}, {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 4
  local h = redis.call('HMGET', KEYS[i], 't', 'd', 'dn', 'm', 'mn')
  local day_used = 0
  if tonumber(h[2]) == day then day_used = tonumber(h[3]) end
  local month_used = 0
  if tonumber(h[4]) == month_id then month_used = tonumber(h[5]) end
  if ARGV[a + 4] ~= '' and month_used + cost > tonumber(ARGV[a + 4]) and month_end - now > wait then
    wait = month_end - now
    reason = 'monthly-quota'
    refused_by = i
  end
  if ARGV[a + 3] ~= '' and day_used + cost > tonumber(ARGV[a + 3]) and day_end - now > wait then
    wait = day_end - now
    reason = 'daily-quota'
    refused_by = i
  end
  local tat = tonumber(h[1]) or now
  if tat < now then tat = now end
  if ARGV[a + 1] ~= '' then
    local interval = tonumber(ARGV[a + 1])
    local new_tat = tat + interval * cost
    local rate_wait = new_tat - interval * tonumber(ARGV[a + 2]) - now
    if rate_wait > wait then
      wait = rate_wait
      reason = 'rate'
      refused_by = i
    end
    tat = new_tat
  end
  tats[i], days[i], months[i] = tat, day_used, month_used
end
local reply = {0, wait, reason, refused_by}
if reason == '' then
  reply[1] = 1
  reply[2] = 0
  for i = 1, #KEYS do
    if cost > 0 then
      days[i] = days[i] + cost
      months[i] = months[i] + cost
      redis.call('HSET', KEYS[i], 't', string.format('%d', tats[i]), 'd', day, 'dn', days[i],
                 'm', month_id, 'mn', months[i])
      redis.call('PEXPIRE', KEYS[i], math.ceil((math.max(month_end, tats[i]) - now) / 1000) + 1000)
    end
  end
end
for i = 1, #KEYS do
  reply[3 + 2 * i] = days[i]
  reply[4 + 2 * i] = months[i]
end
return reply
"""

_REASONS: Final = {reason.value.encode(): reason for reason in LimitReason}


class RedisLimiter(Limiter):
    """Limits kept in Redis and shared by every gateway replica that uses the same `prefix`.

    Each check is one EVALSHA of one Lua script (loaded once; reloaded if Redis answers
    NOSCRIPT, e.g. after a restart) that reads every subject's state, decides and writes them
    all atomically, with Redis' own clock, so replicas with skewed clocks agree and a request
    is charged to its key and its account together or not at all.

    Redis Cluster runs a script only if all its keys hash to one slot. The hash tag of every
    key is the model (`{<len>:<model>}`), the one thing all subjects of a call share, so a
    key and its account always meet on one shard, and `check` and `check_many` read the same
    state for a subject. The price is that one model's limits live on one shard: a cluster
    spreads models, not callers, and one model's traffic is bounded by what one Redis serves
    (tens of thousands of script calls a second). Tagging by account instead would spread one
    model's callers, but would tie a key's counters to the account it was checked with and
    fail the call whenever a caller combined subjects of two accounts.

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

    def _key(self, subject: str, model: str) -> str:
        # The braces are the Redis Cluster hash tag: every subject of one model shares a slot.
        # The model's length makes the split unambiguous: ("a}b", "c") and ("a", "b}c") differ.
        return f"{self._prefix}{{{len(model)}:{model}}}{subject}"

    async def _run(self, model: str, subjects: Sequence[str], args: list[str | int]) -> list[Any]:
        keys = [self._key(subject, model) for subject in subjects]
        try:
            try:
                reply: list[Any] = await self._redis.call("EVALSHA", self._sha, len(keys), *keys, *args)
            except RedisReplyError as err:
                if not str(err).startswith("NOSCRIPT"):
                    raise
                # Redis restarted or flushed its scripts; the script did not run, so running it
                # again counts the request once.
                loaded = await self._redis.call("SCRIPT", "LOAD", _SCRIPT)
                self._sha = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
                reply = await self._redis.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except (RedisDown, RedisReplyError) as err:
            raise BackendUnavailable(
                f"Redis at {self._where} did not answer the rate-limit script: {err}",
                hint="Check that Redis is running and reachable; until it is, requests are refused.",
            ) from err
        return reply

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * _US + 0.5))

    async def check_many(self, model: str, subjects: Sequence[SubjectLimit], cost: int = 1) -> LimitDecision:
        """Allow a request and charge every subject, or refuse it and charge none: one script call.

        See `Limiter.check_many`.
        """
        _check_request(subjects, cost)
        never = _never_allowed(subjects, cost)
        if never is not None:
            return never
        args: list[str | int] = [self._now_arg(), cost]
        for limits in subjects:
            rate, quota = limits.rate, limits.quota
            args += (
                "" if rate is None else rate.interval_us,
                0 if rate is None else rate.burst,
                "" if quota is None or quota.daily is None else quota.daily,
                "" if quota is None or quota.monthly is None else quota.monthly,
            )
        reply = await self._run(model, [limits.subject for limits in subjects], args)
        if reply[0] == 1:
            return _ALLOWED
        return LimitDecision(
            allowed=False, retry_after=int(reply[1]) / _US, reason=_REASONS[reply[2]],
            subject=subjects[int(reply[3]) - 1].subject,
        )

    async def usage(self, subject: str, model: str) -> Usage:
        """Units allowed for the pair in the current UTC day and month (by Redis' clock)."""
        reply = await self._run(model, [subject], [self._now_arg(), 0, "", 0, "", ""])
        return Usage(daily_used=int(reply[4]), monthly_used=int(reply[5]))

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
