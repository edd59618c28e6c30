"""How long a test waits for something before calling it hung (issue 10).

Every wait in the tests (a subprocess, an HTTP client, a readiness poll, a join) is a deadlock
guard, never a speed bound: on a 2-core CI machine busy with other work, `bastion serve` took
more than 60 s to start and refuse its models. One generous figure, used everywhere, so a test
fails only when something is stuck, never because the machine is slow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

HANG_GUARD = 600.0  # seconds


async def until(check: Callable[[], bool], step: float = 0.01) -> None:
    """Yield to the event loop until `check()` holds; fail only if it never does within HANG_GUARD."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < HANG_GUARD, f"still not so after {HANG_GUARD:.0f} s: hung"
        await asyncio.sleep(step)
