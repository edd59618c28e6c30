"""The policy file's schema: pydantic at the edge, converted at once to frozen values."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.findings import Severity
from bastion.policy.schema import Policy, ScanPolicy
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


class PolicyFile(BaseModel):
    """The YAML file's schema; unknown keys are errors, so a typo cannot weaken policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    scan: ScanSection = ScanSection()

    def to_policy(self) -> Policy:
        limits = ScanLimits(**self.scan.limits.model_dump())
        return Policy(
            version=self.version,
            scan=ScanPolicy(Severity.parse(self.scan.block_at), self.scan.allow_globals, limits),
        )
