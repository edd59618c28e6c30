"""The registry's own work folder: private copies made while registering or checking a version.

A copy of a model under the system temp folder outlives a `kill -9` and is readable by whoever
shares that folder. Copies go instead to `HOME/work` (mode 0700), one folder per use named
`<use>-<host>-<pid>-<random>`, removed when the use ends; what a killed process left behind is
removed when a registry next opens: a folder whose process is gone (same host), or any folder
older than `STALE_AFTER`. Several processes share one registry, so a folder of a live process
on this host is never touched while it is young.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_AFTER = 6 * 3600.0  # seconds: no checkout or registration takes this long
FOLDER_MODE = 0o700

Clock = Callable[[], float]


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class WorkFolder:
    """Private folders under `root`, and the removal of those a dead process left behind."""

    def __init__(self, root: Path, *, clock: Clock = time.time, stale_after: float = STALE_AFTER) -> None:
        self.root = root
        self._clock = clock
        self._stale_after = stale_after
        root.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        root.chmod(FOLDER_MODE)

    @contextmanager
    def folder(self, use: str) -> Iterator[Path]:
        """A new empty folder of this process, removed afterwards whatever happens."""
        path = self.root / f"{use}-{_host()}-{os.getpid()}-{secrets.token_hex(6)}"
        path.mkdir(mode=FOLDER_MODE)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def is_stale(self, path: Path) -> bool:
        try:
            age = self._clock() - path.lstat().st_mtime
        except FileNotFoundError:
            return False
        if age > self._stale_after:
            return True
        parts = path.name.split("-")
        if len(parts) != 4 or parts[1] != _host() or not parts[2].isdigit():
            return False  # another host's, or not ours: only its age can tell
        return not _alive(int(parts[2]))

    def remove_stale(self) -> tuple[str, ...]:
        """Remove what dead processes left behind; returns the names removed."""
        removed = []
        for path in sorted(self.root.iterdir()):
            if self.is_stale(path):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path.name)
        return tuple(removed)
