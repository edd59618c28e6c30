"""The registry HTTP API's request and response bodies: pydantic models over the library's records.

Requests forbid unknown keys, so a misspelt field is a 422 naming it rather than a silent default.
Responses are built from the frozen records in `records.py` by the `of` class methods, the only
place where a record's shape becomes a JSON shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.audit import AuditReport
from bastion.registry.records import Approval, GateDecision, Lineage, ModelSummary, ModelVersion

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
RoleName = Literal["reader", "contributor", "approver", "admin"]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Response(BaseModel):
    # from_attributes: a body is read straight off the frozen record (properties included).
    model_config = ConfigDict(frozen=True, from_attributes=True)


# --- errors ----------------------------------------------------------------------------------


class ErrorBody(_Response):
    """Every error: what went wrong, and what to do about it."""

    error: str
    hint: str


# --- blobs -----------------------------------------------------------------------------------


class BlobStored(_Response):
    digest: str
    stored: bool  # False: the store held these bytes already


# --- models and versions ---------------------------------------------------------------------


class ModelSummaryBody(_Response):
    name: str
    created_at: datetime
    created_by: str
    description: str
    latest: int
    stages: dict[str, int]  # stage -> newest version number in it, in the policy's stage order

    @classmethod
    def of(cls, summary: ModelSummary) -> ModelSummaryBody:
        return cls(
            name=summary.name,
            created_at=summary.created_at,
            created_by=summary.created_by,
            description=summary.description,
            latest=summary.latest,
            stages=dict(summary.stages),
        )


class LineageBody(_Response):
    source: str
    licence: str
    training_data_digest: str
    parent: str


class StoredFileBody(_Response):
    path: str
    digest: str
    size: int


class VersionBody(_Response):
    model: str
    number: int
    ref: str
    root_digest: str
    layout: str
    stage: str
    registered_at: datetime
    registered_by: str
    lineage: LineageBody
    files: list[StoredFileBody]
    signature_blob: str | None
    scan_blob: str | None
    assessment_blob: str | None

    @classmethod
    def of(cls, version: ModelVersion) -> VersionBody:
        lineage = version.lineage
        return cls(
            model=version.model,
            number=version.number,
            ref=version.ref,
            root_digest=version.root_digest,
            layout=version.layout,
            stage=version.stage,
            registered_at=version.registered_at,
            registered_by=version.registered_by,
            lineage=LineageBody(
                source=lineage.source,
                licence=lineage.licence,
                training_data_digest=lineage.training_data_digest,
                parent=lineage.parent,
            ),
            files=[StoredFileBody(path=f.path, digest=f.digest, size=f.size) for f in version.files],
            signature_blob=version.signature_blob,
            scan_blob=version.scan_blob,
            assessment_blob=version.assessment_blob,
        )


class FileRef(_Request):
    digest: str = Field(pattern=DIGEST_PATTERN)
    size: int = Field(ge=0)


class RegisterVersion(_Request):
    """A new version from blobs already uploaded with PUT /v1/blobs/{digest}."""

    files: dict[str, FileRef] = Field(min_length=1)  # path inside the model -> its blob
    layout: Literal["file", "folder"] = "folder"
    source: str = ""
    licence: str = ""
    training_data_digest: str = ""
    parent: str = ""  # MODEL@NUMBER
    signature_blob: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    assessment_blob: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    description: str = Field(default="", max_length=10_000)

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.source, self.licence, self.training_data_digest, self.parent)


# --- approving, checking, promoting ----------------------------------------------------------


class StageRequest(_Request):
    stage: str = Field(min_length=1, max_length=200)


class ApprovalBody(_Response):
    model: str
    number: int
    stage: str
    approver: str
    approved_at: datetime

    @classmethod
    def of(cls, approval: Approval) -> ApprovalBody:
        return cls.model_validate(approval)


class CheckBody(_Response):
    name: str
    passed: bool
    detail: str


class DecisionBody(_Response):
    """The gate's decision with every check behind it; `reasons` lists what blocks it."""

    model: str
    number: int
    from_stage: str
    to_stage: str
    allowed: bool
    checks: list[CheckBody]
    reasons: list[str]
    decided_by: str
    decided_at: datetime
    attestation: str | None  # digest of the signed attestation, when promoted
    promoted: bool  # True only when the stage changed

    @classmethod
    def fields_of(cls, decision: GateDecision) -> dict[str, object]:
        return {
            "model": decision.model,
            "number": decision.number,
            "from_stage": decision.from_stage,
            "to_stage": decision.to_stage,
            "allowed": decision.allowed,
            "checks": [CheckBody(name=c.name, passed=c.passed, detail=c.detail) for c in decision.checks],
            "reasons": list(decision.reasons),
            "decided_by": decision.decided_by,
            "decided_at": decision.decided_at,
            "attestation": decision.attestation_blob,
            "promoted": decision.recorded,
        }

    @classmethod
    def of(cls, decision: GateDecision) -> DecisionBody:
        return cls.model_validate(cls.fields_of(decision))


class PromotionRefused(DecisionBody):
    """A refused promotion: the decision, plus the error and hint every error body carries."""

    error: str
    hint: str

    @classmethod
    def refusing(cls, decision: GateDecision) -> PromotionRefused:
        return cls.model_validate(
            {
                **cls.fields_of(decision),
                "error": f"the gate refused {decision.model}@{decision.number} for {decision.to_stage}: "
                + "; ".join(decision.reasons),
                "hint": "Fix what each failing check names, then ask for the promotion again.",
            }
        )


# --- identities, roles and tokens ------------------------------------------------------------


class NewPrincipal(_Request):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["user", "service"] = "user"


class PrincipalBody(_Response):
    name: str
    kind: str


class NewGrant(_Request):
    principal: str = Field(min_length=1, max_length=200)
    role: RoleName
    model: str = Field(default="*", min_length=1, max_length=200)  # "*": every model


class GrantBody(_Response):
    principal: str
    role: str
    model: str


class NewToken(_Request):
    principal: str = Field(min_length=1, max_length=200)
    expires_in_seconds: int | None = Field(default=None, gt=0, le=10 * 365 * 24 * 3600)  # None: never


class TokenBody(_Response):
    """A token as issued: `token` is shown here once and never again."""

    token: str
    token_id: str
    principal: str
    expires_in_seconds: int | None


# --- the audit log ---------------------------------------------------------------------------


class AuditProblemBody(_Response):
    kind: str
    seq: int
    message: str


class AuditReportBody(_Response):
    ok: bool
    chain: str
    entries: int
    last_seq: int
    checkpoints: int
    last_signed_seq: int
    unsigned_tail: int
    problems: list[AuditProblemBody]
    problems_not_listed: int

    @classmethod
    def of(cls, report: AuditReport) -> AuditReportBody:
        return cls.model_validate(report)


class Health(_Response):
    status: Literal["ok"] = "ok"
