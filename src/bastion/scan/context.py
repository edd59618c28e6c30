"""The state one scan of one top-level file carries: findings, limits, budgets, recursion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.errors import LimitExceeded
from bastion.findings import Finding, Location, Severity
from bastion.scan.limits import ScanLimits
from bastion.scan.source import ByteSource

# scan_source(ctx, src, location, name, depth): sniff the format and scan.
Dispatcher = Callable[["ScanContext", ByteSource, Location, str, int], None]


@dataclass(slots=True)
class ScanContext:
    """Collects findings for one top-level file and enforces the scan's budgets."""

    limits: ScanLimits
    dispatch: Dispatcher
    allow_globals: frozenset[str] = frozenset()
    findings: list[Finding] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    expanded: int = 0
    embedded: int = 0
    first_pickle_refs: dict[Location, list[object]] = field(default_factory=dict)
    """Persistent ids of the first pickle read from the start of each stream, by its location:
    checks that need them again (PyTorch's storage records) take them here, not re-emulate."""

    def add(
        self,
        rule_id: str,
        severity: Severity,
        location: Location,
        message: str,
        fmt: str,
        evidence: str = "",
    ) -> None:
        """Record a finding."""
        self.findings.append(Finding(rule_id, severity, location, message, fmt, evidence))

    def incomplete(self, location: Location, message: str, fmt: str, rule_id: str = "scan.incomplete") -> None:
        """Record that part of the input could not be analysed: never reported as clean."""
        self.add(rule_id, Severity.HIGH, location, message, fmt)

    def saw(self, fmt: str) -> None:
        """Note a format met while scanning (for the report)."""
        if fmt not in self.formats:
            self.formats.append(fmt)

    def spend(self, amount: int) -> None:
        """Count decompressed bytes against the whole file's budget."""
        self.expanded += amount
        if self.expanded > self.limits.max_expanded_bytes:
            raise LimitExceeded(f"more than {self.limits.max_expanded_bytes} bytes decompressed (zip bomb?)")

    def nested(self, src: ByteSource, location: Location, name: str, depth: int) -> None:
        """Scan a member or embedded stream one level deeper."""
        if depth > self.limits.max_depth:
            self.incomplete(
                location,
                f"nested more than {self.limits.max_depth} containers deep; not analysed",
                "archive",
                "scan.limit-exceeded",
            )
            return
        self.dispatch(self, src, location, name, depth)
