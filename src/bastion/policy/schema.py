"""The policy as typed, frozen values (the YAML schema is in `policy/file.py`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
class StageRequirements:
    """What a model version must show to enter one stage.

    Every promotion re-scans and re-checks digests whatever this says; these add to that.
    """

    scan_block_at: Severity | None = None  # None: the policy's scan.block_at
    signature_keys: tuple[Path, ...] = ()  # a valid signature by one of these; empty: not required
    sources: tuple[str, ...] = ()  # glob patterns of allowed sources; empty: any
    licences: tuple[str, ...] = ()  # allowed licence ids (lower case); empty: any
    approvals: int = 0  # distinct approvers, never the registrant when duties are separated
    assessment_min: Mapping[str, float] = field(default_factory=dict)
    assessment_max: Mapping[str, float] = field(default_factory=dict)
    # The gateway may load this stage's models from pickle (joblib), and then only a file whose
    # scan finds nothing at all: loading a pickle runs whatever it names.
    allow_pickle: bool = False
    # Stored files the signature need not cover (globs over paths in the model); empty: every
    # stored file must be listed in the signed manifest, or the gate refuses the version.
    unsigned_allowed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """The stages in order and what each requires."""

    stages: tuple[str, ...] = ("dev", "staging", "production")
    separation_of_duties: bool = True
    requirements: Mapping[str, StageRequirements] = field(default_factory=dict)

    def requirements_for(self, stage: str) -> StageRequirements:
        return self.requirements.get(stage, StageRequirements())


class BudgetAction(enum.StrEnum):
    """What `bastion keys create` does when a budget lets a caller copy a model (see `ServePolicy`)."""

    WARN = "warn"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class ServePolicy:
    """What the serving gateway's keys and accounts may be given.

    `budget_over_extraction_cost`: a key or account budget that lets its holder spend a served
    model's measured extraction cost (the rows an attacker needs for 95 % agreement, from the
    production version's assessment) within a month is warned about (`warn`, the default) or
    refused, creating nothing (`refuse`).
    """

    budget_over_extraction_cost: BudgetAction = BudgetAction.WARN


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole policy; later stages add their sections."""

    version: int = 1
    scan: ScanPolicy = field(default_factory=ScanPolicy)
    gate: GatePolicy = field(default_factory=GatePolicy)
    serve: ServePolicy = field(default_factory=ServePolicy)
