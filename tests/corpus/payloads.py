"""Objects whose pickles call something on load; pickled with the real pickle module.

The payloads are harmless, but unpickling any of them really runs it: never load them.
"""

from __future__ import annotations

import os


class SystemCall:
    """Pickles as `os.system(command)` (written as `posix.system`): a classic poisoned checkpoint."""

    def __init__(self, command: str = "true") -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class EvalCall:
    """Pickles as `builtins.eval(source)`."""

    def __init__(self, source: str = "1+1") -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (self.source,))
