"""Refusals of callers without a valid key: counted, not written one by one, and limited.

Anyone can send a request without a key. Written as one audit entry each, with the URL's model
name as subject, 5,000 such requests with 60 KB names were 300 MB of audit log. Here they are
counted per (source address, action, reason, status) and written as one entry per interval,
the map of sources is bounded, and a source refused too often is answered 429 without more
work. Names that do go into entries (an authenticated caller's unknown model) are bounded by
`bounded_name`.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from bastion.audit import AuditEvent

MAX_NAME = 128  # characters of a caller-chosen name kept in an audit entry
OTHER_SOURCES = "other"  # where counts go once `max_sources` sources are tracked in one interval


def bounded_name(name: str) -> str:
    """`name` as an audit subject: itself when short and printable, else a prefix and a digest.

    A digest keeps distinct long names distinct in the log without storing them.
    """
    if len(name) <= MAX_NAME and name.isprintable():
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = "".join(c if c.isprintable() else "?" for c in name[:48])
    return f"{prefix}...[{len(name)} chars, sha256:{digest}]"


@dataclass(frozen=True, slots=True)
class RefusalLimit:
    """How many anonymous refusals one source may cause: a sustained rate and a burst."""

    per_second: float = 10.0
    burst: int = 100


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class TallyKey:
    source: str
    action: str
    reason: str
    status: int


class RefusalTally:
    """Counts of anonymous refusals for the current interval, and each source's refusal budget."""

    def __init__(
        self,
        *,
        interval: float = 10.0,
        limit: RefusalLimit | None = None,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.limit = limit or RefusalLimit()
        self.max_sources = max_sources
        self.clock = clock
        self._counts: dict[TallyKey, int] = {}
        self._sources: set[str] = set()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._since = clock()

    def allow(self, source: str) -> bool:
        """Spend one of `source`'s refusals; False once it is over its budget (answer 429)."""
        now = self.clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = _Bucket(float(self.limit.burst), now)
            self._buckets[source] = bucket
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)  # the least recently refused source starts afresh
        else:
            self._buckets.move_to_end(source)
            bucket.tokens = min(float(self.limit.burst), bucket.tokens + (now - bucket.at) * self.limit.per_second)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def count(self, source: str, action: str, reason: str, status: int) -> None:
        """Count one refusal for the current interval."""
        if source not in self._sources:
            if len(self._sources) >= self.max_sources:
                source = OTHER_SOURCES
            else:
                self._sources.add(source)
        key = TallyKey(source, action, reason, status)
        self._counts[key] = self._counts.get(key, 0) + 1

    def due(self) -> bool:
        return bool(self._counts) and self.clock() - self._since >= self.interval

    def drain(self) -> list[AuditEvent]:
        """One event per counted (source, action, reason, status) since the last drain."""
        now = self.clock()
        seconds = round(now - self._since, 3)
        counts, self._counts, self._sources, self._since = self._counts, {}, set(), now
        return [
            AuditEvent(
                "-", key.action, "-",
                {"status": key.status, "reason": key.reason, "source": key.source, "count": count,
                 "interval_s": seconds},
            )
            for key, count in counts.items()
        ]
