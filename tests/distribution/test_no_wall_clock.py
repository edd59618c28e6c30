"""No test depends on how fast the machine is: Hypothesis' timing checks are off for every test.

A 200 ms deadline per example and the "data generation is too slow" health check both fail
on a loaded CI machine for reasons that have nothing to do with the code under test.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def test_the_default_profile_has_no_deadline_and_no_speed_health_check() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check


@given(st.integers())
def test_a_test_without_its_own_settings_inherits_the_profile(value: int) -> None:
    assert settings().deadline is None
    assert isinstance(value, int)


# A wait whose length is the behaviour under test: the Redis client's own short timeout.
_TIMEOUT_UNDER_TEST = re.compile(r"(RedisConnection|RedisLimiter)\(.*timeout=0\.\d+\)")
_LITERAL_WAIT = re.compile(r"(?<![\w.])timeout\s*=\s*(\d+(?:\.\d+)?)|monotonic\(\)\s*\+\s*(\d+(?:\.\d+)?)")


def test_no_test_waits_a_short_literal_time_before_calling_something_hung() -> None:
    """Every hang guard is HANG_GUARD (or a literal of minutes): a 60 s subprocess timeout failed
    `bastion serve` on a loaded 2-core machine, where starting alone took longer."""
    tests = Path(__file__).resolve().parents[1]
    short = []
    for path in sorted(set(tests.rglob("*.py")) - {Path(__file__).resolve()}):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _LITERAL_WAIT.finditer(line):
                seconds = float(match.group(1) or match.group(2))
                if seconds < 300 and not _TIMEOUT_UNDER_TEST.search(line):
                    short.append(f"{path.relative_to(tests)}:{number}: {line.strip()}")
    assert short == []
