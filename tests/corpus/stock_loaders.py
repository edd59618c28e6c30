"""Proof that a crafted file is real: the stock loader, in a child process, runs its payload.

The payloads in these tests only touch a marker file. A case that claims "the loader
executes this" runs the loader (`np.load`, `joblib.load`, `torch.load`) on the file in a
separate interpreter and checks that the marker appeared; the test process itself never
deserialises anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from corpus.hang_guard import HANG_GUARD
from corpus.payloads import SystemCall


def marker_payload(folder: Path, name: str = "ran") -> tuple[SystemCall, Path]:
    """A payload that creates `folder/name` when unpickled, and that marker's path."""
    marker = folder / f"{name}.marker"
    return SystemCall(f"touch {marker}"), marker


def loader_runs_payload(statement: str, marker: Path, cwd: Path) -> bool:
    """Run `statement` (which loads a file) in a fresh interpreter; True if the marker appeared."""
    marker.unlink(missing_ok=True)
    subprocess.run(  # the statement is test code, the file it loads is the test's own
        [sys.executable, "-W", "ignore", "-c", statement],
        cwd=cwd,
        capture_output=True,
        timeout=HANG_GUARD,
        check=False,
    )
    return marker.exists()
