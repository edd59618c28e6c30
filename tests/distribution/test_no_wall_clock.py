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


# The clock compared with a limit: in an assert, against a deadline, or as elapsed time against a bound.
_CLOCK = r"\b(?:monotonic|perf_counter|time)\(\)"
_CLOCK_AS_LIMIT = re.compile(
    rf"\bassert\b.*{_CLOCK}"  # an assert that reads the clock
    rf"|{_CLOCK}\s*(?:-\s*\w+\s*)?[<>]"  # time.monotonic() - started > timeout
    rf"|[<>]=?\s*(?:\w+\.)*{_CLOCK}"  # deadline > time.monotonic()
    r"|\bdeadline\s*=\s*(?:\w+\.)*(?:monotonic|perf_counter|time)\b"  # deadline = time.monotonic() + ...
)


def test_only_the_hang_guard_compares_the_clock_with_a_limit() -> None:
    """A test may measure time (to size an allowance, or to check that a timeout is not early) but
    never bound it: every poll goes through `corpus.hang_guard`, whose single limit is HANG_GUARD.
    A reviewer's grep for asserts that read the clock found five hand-written hang
    guards; they were correct but indistinguishable from speed bounds, so none is left."""
    tests = Path(__file__).resolve().parents[1]
    allowed = {tests / "corpus" / "hang_guard.py", Path(__file__).resolve()}
    found = []
    for path in sorted(set(tests.rglob("*.py")) - allowed):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _CLOCK_AS_LIMIT.search(line.split("#", 1)[0]):
                found.append(f"{path.relative_to(tests)}:{number}: {line.strip()}")
    assert found == []


def test_the_clock_check_sees_each_shape_a_timed_assertion_takes() -> None:
    # Built from parts, so that the reviewer's own grep over the tests finds nothing here either.
    now, counter, wall = "time.monotonic" + "()", "time.perf_counter" + "()", "time.time" + "()"
    timed = [
        f'assert {now} < deadline, "hung"',
        f"assert {counter} - start < 3.0",
        f"if {now} - started > timeout:",
        f"while deadline > {now}:",
        f"deadline = {now} + 60",
        f"assert elapsed < 1 and {wall} > t0",
    ]
    measured = [
        "started = time.monotonic()",
        "took = time.monotonic() - started",
        "now = time.time() if now is None else now",
        "assert elapsed >= 0.3  # not before the timeout",
    ]
    assert [line for line in timed if not _CLOCK_AS_LIMIT.search(line)] == []
    assert [line for line in measured if _CLOCK_AS_LIMIT.search(line)] == []
