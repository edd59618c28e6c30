"""Make `import packaging` mean the `packaging` library, not the `tests/packaging/` test folder.

`tests/conftest.py` puts `tests/` first on `sys.path` so that `corpus` imports, and the folder
`tests/packaging/` has an `__init__.py`: from then on `from packaging import version` (which
transformers, accelerate and Lightning run when they are imported) finds the test folder and
fails. Tests that import those libraries call `use_the_packaging_library()` first; the test
modules already imported from `tests/packaging/` keep working, since they hold their own names.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]


def use_the_packaging_library() -> None:
    current = sys.modules.get("packaging")
    if current is not None and _TESTS not in Path(getattr(current, "__file__", None) or "/").resolve().parents:
        return  # already the library
    if current is not None:
        del sys.modules["packaging"]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TESTS]
    try:
        for name in ("packaging", "packaging.version", "packaging.specifiers", "packaging.requirements",
                     "packaging.markers", "packaging.utils"):
            importlib.import_module(name)
    finally:
        sys.path[:] = saved
