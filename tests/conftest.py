"""Make the fixture builders in `tests/corpus/` importable as `corpus` from every test module."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# No test may depend on the machine's speed (issue 10): Hypothesis' per-example deadline and its
# "too slow" health check are wall-clock bounds, so they are off for every test. A test that
# passes its own `settings(...)` inherits this for whatever it does not set.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("bastion", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bastion")
