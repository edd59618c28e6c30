"""The policy as typed, frozen values (the YAML schema is in `policy/file.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.findings import Severity
from bastion.scan.limits import DEFAULT_LIMITS, ScanLimits


@dataclass(frozen=True, slots=True)
class ScanPolicy:
    """What the scanner blocks on, which extra globals it trusts, and its safety limits."""

    block_at: Severity = Severity.HIGH
    allow_globals: tuple[str, ...] = ()
    limits: ScanLimits = field(default_factory=lambda: DEFAULT_LIMITS)

    def allowed_globals(self) -> frozenset[str]:
        return frozenset(self.allow_globals)


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole policy; later stages add their sections."""

    version: int = 1
    scan: ScanPolicy = field(default_factory=ScanPolicy)
