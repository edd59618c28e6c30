"""No test depends on how fast the machine is: Hypothesis' timing checks are off for every test.

A 200 ms deadline per example and the "data generation is too slow" health check both fail
on a loaded CI machine for reasons that have nothing to do with the code under test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def test_the_default_profile_has_no_deadline_and_no_speed_health_check() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check


@given(st.integers())
def test_a_test_without_its_own_settings_inherits_the_profile(value: int) -> None:
    assert settings().deadline is None
    assert isinstance(value, int)
