"""How long a test waits for something before calling it hung (issue 10).

Every wait in the tests (a subprocess, an HTTP client, a readiness poll, a join) is a deadlock
guard, never a speed bound: on a 2-core CI machine busy with other work, `bastion serve` took
more than 60 s to start and refuse its models. One generous figure, used everywhere, so a test
fails only when something is stuck, never because the machine is slow.

This module is the only place in the tests that compares the clock with a limit
(`tests/distribution/test_no_wall_clock.py` enforces that): a poll goes through `wait_until`
(threads, subprocesses) or `until` (the event loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

HANG_GUARD = 600.0  # seconds


class Hung(AssertionError):
    """What a test waited for never happened: something is stuck (or the thing waited on died)."""


def _give_up_if_hung(started: float, what: str, alive: Callable[[], bool] | None) -> None:
    if alive is not None and not alive():
        raise Hung(f"{what}: what it waited on has stopped")
    if time.monotonic() - started >= HANG_GUARD:
        raise Hung(f"{what}: still not so after {HANG_GUARD:.0f} s (hung)")


def wait_until(
    check: Callable[[], bool], what: str = "the condition", *, alive: Callable[[], bool] | None = None, step: float = 0.01
) -> None:
    """Sleep-poll until `check()` holds. Fails at once if `alive()` turns false (a server thread or
    subprocess that exited will never become ready), and otherwise only after HANG_GUARD."""
    started = time.monotonic()
    while not check():
        _give_up_if_hung(started, what, alive)
        time.sleep(step)


def keep_doing(action: Callable[[], object], *, seconds: float, times: int, step: float) -> None:
    """Repeat `action` for at least `seconds` and at least `times` times: the length of an injected
    fault (a database outage held open). A slow machine only makes it last longer; it never fails."""
    started = time.monotonic()
    done = 0
    while done < times or time.monotonic() - started < seconds:
        action()
        done += 1
        time.sleep(step)


async def until(check: Callable[[], bool], what: str = "the condition", step: float = 0.01) -> None:
    """Yield to the event loop until `check()` holds; fail only if it never does within HANG_GUARD."""
    started = time.monotonic()
    while not check():
        _give_up_if_hung(started, what, None)
        await asyncio.sleep(step)
