"""The policy file's schema: pydantic at the edge, converted at once to frozen values."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.findings import Severity
from bastion.policy.schema import BudgetAction, GatePolicy, Policy, ScanPolicy, ServePolicy, StageRequirements
from bastion.scan.limits import DEFAULT_LIMITS, ScanLimits

SeverityName = Literal["info", "low", "medium", "high", "critical"]


class LimitsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_depth: int = Field(DEFAULT_LIMITS.max_depth, ge=1, le=64)
    max_members: int = Field(DEFAULT_LIMITS.max_members, ge=1)
    max_expanded_bytes: int = Field(DEFAULT_LIMITS.max_expanded_bytes, ge=1)
    max_compression_ratio: int = Field(DEFAULT_LIMITS.max_compression_ratio, ge=2)
    max_pickle_opcodes: int = Field(DEFAULT_LIMITS.max_pickle_opcodes, ge=1)


class ScanSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    block_at: SeverityName = "high"
    allow_globals: tuple[str, ...] = ()
    limits: LimitsFile = Field(default_factory=LimitsFile)

    @field_validator("allow_globals")
    @classmethod
    def _dotted(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if "." not in name or not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a dotted name like torch._utils._rebuild_tensor_v2")
        return names


class StageFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scan_block_at: SeverityName | None = None
    signature_keys: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    licences: tuple[str, ...] = ()
    approvals: int = Field(0, ge=0, le=10)
    assessment_min: dict[str, float] = Field(default_factory=dict)
    assessment_max: dict[str, float] = Field(default_factory=dict)
    allow_pickle: bool = False
    unsigned_allowed: tuple[str, ...] = ()

    def to_requirements(self, base: Path) -> StageRequirements:
        return StageRequirements(
            scan_block_at=Severity.parse(self.scan_block_at) if self.scan_block_at else None,
            signature_keys=tuple(_relative_to(base, key) for key in self.signature_keys),
            sources=self.sources,
            licences=tuple(licence.lower() for licence in self.licences),
            approvals=self.approvals,
            assessment_min=dict(self.assessment_min),
            assessment_max=dict(self.assessment_max),
            allow_pickle=self.allow_pickle,
            unsigned_allowed=self.unsigned_allowed,
        )


class GateSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stages: tuple[str, ...] = ("dev", "staging", "production")
    separation_of_duties: bool = True
    require: dict[str, StageFile] = Field(default_factory=dict)

    @field_validator("stages")
    @classmethod
    def _distinct(cls, stages: tuple[str, ...]) -> tuple[str, ...]:
        if len(stages) < 2 or len(set(stages)) != len(stages):
            raise ValueError("list at least two distinct stages, in promotion order")
        for stage in stages:
            if not stage.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"stage {stage!r} may hold only letters, digits, - and _")
        return stages

    @model_validator(mode="after")
    def _known_stages(self) -> GateSection:
        unknown = sorted(set(self.require) - set(self.stages))
        if unknown:
            raise ValueError(f"requirements for unknown stage(s) {', '.join(unknown)}; stages are {list(self.stages)}")
        return self


class ServeSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_over_extraction_cost: Literal["warn", "refuse"] = "warn"

    def to_policy(self) -> ServePolicy:
        return ServePolicy(budget_over_extraction_cost=BudgetAction(self.budget_over_extraction_cost))


def _relative_to(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


class PolicyFile(BaseModel):
    """The YAML file's schema; unknown keys are errors, so a typo cannot weaken policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    scan: ScanSection = ScanSection()
    gate: GateSection = GateSection()
    serve: ServeSection = ServeSection()

    def to_policy(self, base: Path = Path()) -> Policy:
        """The typed policy; key paths in the file are relative to `base`, the file's folder."""
        limits = ScanLimits(**self.scan.limits.model_dump())
        gate = GatePolicy(
            stages=self.gate.stages,
            separation_of_duties=self.gate.separation_of_duties,
            requirements={stage: section.to_requirements(base) for stage, section in self.gate.require.items()},
        )
        return Policy(
            version=self.version,
            scan=ScanPolicy(Severity.parse(self.scan.block_at), self.scan.allow_globals, limits),
            gate=gate,
            serve=self.serve.to_policy(),
        )
