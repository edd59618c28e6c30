"""The vocabulary every stage shares: severities, verdicts, locations and findings."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bastion.errors import ConfigError


class Severity(enum.IntEnum):
    """How bad a finding is; ordered, so `finding.severity >= policy.block_at` works."""

    INFO = 10
    LOW = 20
    MEDIUM = 30
    HIGH = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Read a severity name case-insensitively (`high`, `HIGH`)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ConfigError(f"unknown severity {text!r}", hint=f"Use one of: {names}.") from None


class Verdict(enum.StrEnum):
    """The outcome of a check. INCOMPLETE blocks like FAIL: unanalysed is never safe."""

    PASS = "pass"  # noqa: S105  # nosec B105  # a verdict, not a password
    FAIL = "fail"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding applies: a file, the path of members inside containers, a byte offset."""

    file: str
    members: tuple[str, ...] = ()
    offset: int | None = None

    @property
    def member(self) -> str | None:
        """The member path inside nested containers, joined with `!`, or None."""
        return "!".join(self.members) if self.members else None

    def __str__(self) -> str:
        text = self.file
        if self.members:
            text += "!" + "!".join(self.members)
        if self.offset is not None:
            text += f"@{self.offset}"
        return text

    def inside(self, member: str) -> Location:
        """The location of a member nested in this one."""
        return Location(self.file, (*self.members, member))

    def at(self, offset: int | None) -> Location:
        """This location at a byte offset."""
        return Location(self.file, self.members, offset)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a scan found: what, where, how bad, and why it matters."""

    rule_id: str
    severity: Severity
    location: Location
    message: str
    format: str = ""
    evidence: str = ""

    @property
    def is_incomplete(self) -> bool:
        """True when the finding says part of the input could not be analysed."""
        return self.rule_id.startswith("scan.incomplete") or self.rule_id in INCOMPLETE_RULES


INCOMPLETE_RULES = frozenset(
    {
        "scan.incomplete",
        "scan.limit-exceeded",
        "scan.unsupported-format",
        "scan.read-error",
    }
)
