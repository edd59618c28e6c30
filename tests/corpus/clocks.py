"""A clock that tests move by hand, for expiry and timed checkpoints without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class ManualClock:
    """Time that moves only when the test says so, and the timers armed against it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        self.timers: list[tuple[datetime, Callable[[], None]]] = []

    def __call__(self) -> datetime:
        return self.now

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self.timers.append((self.now + timedelta(seconds=delay), action))

    def advance(self, seconds: float) -> None:
        """Move time on and run the timers that fall due, as the daemon timer would."""
        self.now += timedelta(seconds=seconds)
        due = [action for at, action in self.timers if at <= self.now]
        self.timers = [(at, action) for at, action in self.timers if at > self.now]
        for action in due:
            action()
