"""Make the fixture builders in `tests/corpus/` importable as `corpus` from every test module."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
