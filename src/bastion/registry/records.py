"""What the registry hands back: frozen records, never database rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class StoredFile:
    """One file of a version: its path inside the model and the blob holding its bytes."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class Lineage:
    """Where a version came from."""

    source: str = ""  # e.g. hf://acme/sentiment, git+https://..., s3://...
    licence: str = ""
    training_data_digest: str = ""  # sha256 of the training data's manifest
    parent: str = ""  # model@number this one was fine-tuned or derived from


@dataclass(frozen=True)
class ModelVersion:
    """A registered, immutable set of files and what was recorded about them."""

    model: str
    number: int
    root_digest: str
    layout: str  # "file" or "folder"
    stage: str
    registered_at: datetime
    registered_by: str
    lineage: Lineage
    files: tuple[StoredFile, ...]
    signature_blob: str | None = None
    scan_blob: str | None = None
    assessment_blob: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.number}"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    created_at: datetime
    created_by: str
    description: str
    latest: int
    stages: tuple[tuple[str, int], ...]  # (stage, newest version number in it)


@dataclass(frozen=True)
class Check:
    """One requirement of the gate and how the version fared."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer for one version and one stage, with every check behind it."""

    model: str
    number: int
    from_stage: str
    to_stage: str
    allowed: bool
    checks: tuple[Check, ...]
    decided_by: str
    decided_at: datetime
    attestation_blob: str | None = None
    recorded: bool = False  # True when the stage changed (a promotion, not a dry check)

    @property
    def reasons(self) -> tuple[str, ...]:
        """What blocks the promotion, one actionable sentence each."""
        return tuple(f"{check.name}: {check.detail}" for check in self.checks if not check.passed)


@dataclass(frozen=True)
class Approval:
    model: str
    number: int
    stage: str
    approver: str
    approved_at: datetime
