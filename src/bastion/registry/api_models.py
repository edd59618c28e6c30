"""The registry HTTP API's request and response bodies: pydantic models over the library's records.

Requests forbid unknown keys, so a misspelt field is a 422 naming it rather than a silent default.
Every request field and path parameter is bounded by the checks in `fields.py`, the same ones the
library applies, so no value reaches the database that its columns cannot hold (a 500 on SQLite or
PostgreSQL): a value out of bounds is a 422 naming the field. Member paths are normalised to their
one spelling before the library sees them.
Responses are built from the frozen records in `records.py` by the `of` class methods, the only
place where a record's shape becomes a JSON shape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bastion.audit import AuditReport
from bastion.errors import ConfigError
from bastion.registry import fields
from bastion.registry.fields import DIGEST_PATTERN, MAX_FILE_BYTES, MAX_MEMBERS, MAX_VERSION_NUMBER
from bastion.registry.records import Approval, GateDecision, Lineage, ModelSummary, ModelVersion

__all__ = ["DIGEST_PATTERN"]  # re-exported: api.py imports it from here
RoleName = Literal["reader", "contributor", "approver", "admin"]
_T = TypeVar("_T")


def _checked(check: Callable[[Any], _T]) -> AfterValidator:
    """A pydantic validator running one of `fields.py`'s checks: its ConfigError becomes a 422 on the field."""

    def validate(value: Any) -> _T:
        try:
            return check(value)
        except ConfigError as err:
            raise ValueError(err.message) from None

    return AfterValidator(validate)


def _parent(text: str) -> str:
    if text:
        fields.parse_ref(text, "parent")
    return text


ModelNameText = Annotated[str, _checked(fields.check_model_name)]
PrincipalNameText = Annotated[str, _checked(fields.check_principal_name)]
GrantTargetText = Annotated[str, _checked(fields.check_grant_target)]
StageText = Annotated[str, _checked(fields.check_stage_name)]
DigestText = Annotated[str, _checked(fields.check_digest)]
OptionalDigestText = Annotated[str, _checked(lambda text: fields.check_optional_digest(text, "training_data_digest"))]
LicenceText = Annotated[str, _checked(fields.check_licence)]
SourceText = Annotated[str, _checked(fields.check_source)]
DescriptionText = Annotated[str, _checked(fields.check_description)]
ParentText = Annotated[str, _checked(_parent)]

# Path parameters of api.py's routes, bounded like the bodies' fields.
ModelName = Annotated[str, Path(min_length=1, max_length=fields.MAX_NAME_CHARS), _checked(fields.check_model_name)]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION_NUMBER)]
Digest = Annotated[str, Path(pattern=DIGEST_PATTERN)]
TokenId = Annotated[str, Path(min_length=1, max_length=fields.MAX_TOKEN_ID_CHARS), _checked(fields.check_token_id)]


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
    digest: DigestText
    size: int = Field(ge=0, le=MAX_FILE_BYTES)


class RegisterVersion(_Request):
    """A new version from blobs already uploaded with PUT /v1/blobs/{digest}.

    `files` maps each path inside the model to its blob; the paths arrive normalised
    (`fields.check_member_paths`): one spelling each, none escaping the model, none clashing.
    """

    files: dict[str, FileRef] = Field(min_length=1, max_length=MAX_MEMBERS)
    layout: Literal["file", "folder"] = "folder"
    source: SourceText = ""
    licence: LicenceText = ""
    training_data_digest: OptionalDigestText = ""
    parent: ParentText = ""  # MODEL@NUMBER
    signature_blob: DigestText | None = None
    assessment_blob: DigestText | None = None
    description: DescriptionText = ""

    @model_validator(mode="before")
    @classmethod
    def _normalise_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return data  # the fields' own validation names what is wrong
        layout = data.get("layout", "folder")
        try:
            normal = fields.check_member_paths(
                data["files"], layout=layout if layout in fields.LAYOUTS else "folder", field="files"
            )
        except ConfigError as err:
            raise ValueError(err.message) from None
        return {**data, "files": dict(zip(normal, data["files"].values(), strict=True))}

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.source, self.licence, self.training_data_digest, self.parent)


# --- approving, checking, promoting ----------------------------------------------------------


class StageRequest(_Request):
    stage: StageText


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
    name: PrincipalNameText
    kind: Literal["user", "service"] = "user"


class PrincipalBody(_Response):
    name: str
    kind: str


class NewGrant(_Request):
    principal: PrincipalNameText
    role: RoleName
    model: GrantTargetText = "*"  # "*": every model


class GrantBody(_Response):
    principal: str
    role: str
    model: str


class NewToken(_Request):
    principal: PrincipalNameText
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
    # The server checks against its own folder's key and witness: never anchored. Anchor a
    # check with `bastion audit verify --trusted-key --witness` from outside the folder.
    anchored: bool
    witness_location: str
    last_witnessed_seq: int
    unwitnessed_tail: int

    @classmethod
    def of(cls, report: AuditReport) -> AuditReportBody:
        return cls.model_validate(report)


class Health(_Response):
    status: Literal["ok"] = "ok"
