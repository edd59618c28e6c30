"""The gate decided without a database, a blob store or a file: requirements + evidence + approvals.

`evaluate_gate` and `serving_refusals` are pure functions; each case here builds the evidence a
checkout would have gathered and asserts the decision and the sentence that explains it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.findings import Finding, Location, Severity
from bastion.policy.schema import GatePolicy, ScanPolicy, StageRequirements
from bastion.registry.evidence import Evidence, PromotionEvidence, SignatureEvidence
from bastion.registry.gate import evaluate_gate, serving_refusals
from bastion.registry.records import GateDecision, Lineage, ModelVersion, StoredFile
from bastion.scan.report import FileReport, ScanReport

ROOT = "/private/checkout/model"
WEIGHTS = StoredFile("weights.onnx", "sha256:" + "a" * 64, 10)
SPEC = StoredFile("serving.yaml", "sha256:" + "b" * 64, 5)
AT = datetime(2026, 1, 2, tzinfo=UTC)
GATE = GatePolicy(stages=("dev", "staging", "production"), separation_of_duties=True)
SIGNED = StageRequirements(signature_keys=(Path("release.pub"),))
ANY = StageRequirements()


def _version(stage: str = "dev", licence: str = "apache-2.0") -> ModelVersion:
    return ModelVersion(
        "fraud", 3, "sha256:" + "c" * 64, "folder", stage, AT, "carol", Lineage(licence=licence), (SPEC, WEIGHTS),
        signature_blob="sha256:" + "d" * 64,
    )


def _scan(*findings: Finding) -> ScanReport:
    return ScanReport((ROOT,), (FileReport(f"{ROOT}/weights.onnx", 10, ("onnx",), findings),))


def _evidence(**changes: object) -> Evidence:
    good = Evidence(
        digests={WEIGHTS.path: WEIGHTS.digest, SPEC.path: SPEC.digest},
        scan=_scan(),
        scan_problem="",
        scan_root=ROOT,
        signature=SignatureEvidence(True, "key 1234 (release.pub)", "", (SPEC.path, WEIGHTS.path)),
        assessment={"accuracy": 0.93},
    )
    return dataclasses.replace(good, **changes)  # type: ignore[arg-type]  # test data, named fields


def _decide(
    requirements: StageRequirements = ANY,
    evidence: Evidence | None = None,
    approvals: tuple[str, ...] = (),
    *,
    version: ModelVersion | None = None,
    promotion: PromotionEvidence | None = None,
    target: str = "staging",
) -> GateDecision:
    return evaluate_gate(
        requirements, evidence or _evidence(), approvals, version=version or _version(), promotion=promotion,
        target=target, gate=GATE, scan=ScanPolicy(), decided_by="rita", decided_at=AT,
    )


def _failed(decision: GateDecision) -> dict[str, str]:
    return {c.name: c.detail for c in decision.checks if not c.passed}


def test_intact_scanned_signed_bytes_pass_and_every_check_is_listed() -> None:
    decision = _decide(SIGNED)

    assert decision.allowed
    assert [c.name for c in decision.checks] == ["stage", "stored-bytes", "scan", "signature"]
    assert (decision.from_stage, decision.to_stage, decision.decided_by, decision.decided_at) == (
        "dev", "staging", "rita", AT
    )


@pytest.mark.parametrize(
    ("evidence", "check", "detail"),
    [
        (_evidence(digests={WEIGHTS.path: "sha256:" + "e" * 64, SPEC.path: SPEC.digest}), "stored-bytes",
         "weights.onnx: the stored bytes changed since registration"),
        (_evidence(digests={WEIGHTS.path: None, SPEC.path: SPEC.digest}), "stored-bytes",
         "weights.onnx: its blob sha256:aaaa"),
        (_evidence(scan=None, scan_problem="the archive is truncated"), "scan",
         "the stored files could not be scanned: the archive is truncated"),
        (_evidence(scan=_scan(Finding("pickle.unsafe-global", Severity.CRITICAL, Location(f"{ROOT}/weights.onnx"),
                                      "posix.system runs on load"))), "scan",
         "weights.onnx: pickle.unsafe-global (critical) posix.system runs on load"),
        (_evidence(signature=SignatureEvidence(True, problem="no allowed key verifies the signature: x")), "signature",
         "no allowed key verifies the signature"),
        (_evidence(signature=SignatureEvidence(True, "key 1234 (release.pub)", "", (WEIGHTS.path,))), "signature",
         "stored files the signature does not cover: serving.yaml"),
    ],
    ids=["changed-bytes", "missing-blob", "unscannable", "finding", "bad-signature", "unsigned-file"],
)
def test_evidence_that_fails_a_check_refuses_with_the_reason(evidence: Evidence, check: str, detail: str) -> None:
    decision = _decide(SIGNED, evidence)

    assert not decision.allowed
    assert detail in _failed(decision)[check]


def test_a_file_the_policy_names_may_be_unsigned() -> None:
    evidence = _evidence(signature=SignatureEvidence(True, "key 1234 (release.pub)", "", (WEIGHTS.path,)))
    requirements = dataclasses.replace(SIGNED, unsigned_allowed=("*.yaml",))

    decision = _decide(requirements, evidence)

    assert decision.allowed, decision.reasons
    assert "unsigned but allowed: serving.yaml" in {c.name: c.detail for c in decision.checks}["signature"]


def test_a_stage_without_its_promotion_evidence_cannot_be_promoted_from() -> None:
    # What a SQL UPDATE of the stage column leaves: the row says staging, nothing proves it.
    proof = PromotionEvidence("staging", None, "no signed promotion of fraud@3 to staging exists")

    decision = _decide(version=_version("staging"), promotion=proof, target="production")

    assert _failed(decision) == {
        "stage": "fraud@3 is in staging without a valid promotion: no signed promotion of fraud@3 to staging exists"
    }


@pytest.mark.parametrize(
    ("stage", "target", "detail"),
    [
        ("dev", "production", "fraud@3 is in dev: promote it to staging first"),
        ("staging", "staging", "fraud@3 is already in staging"),
        ("retired", "production", "which the policy no longer lists"),
    ],
)
def test_the_target_must_be_the_next_stage(stage: str, target: str, detail: str) -> None:
    proof = PromotionEvidence(stage, "sha256:" + "f" * 64, root_digest=_evidence().root_digest() or "") if stage != "dev" else None

    decision = _decide(version=_version(stage), promotion=proof, target=target)

    assert detail in _failed(decision)["stage"]


def test_the_registrant_approval_does_not_count_when_duties_are_separated() -> None:
    requirements = StageRequirements(approvals=1, licences=("apache-2.0",))

    alone = _decide(requirements, approvals=("carol",))
    seconded = _decide(requirements, approvals=("carol", "alex"))

    assert _failed(alone) == {"approvals": "needs 1 more approval(s) by someone other than the registrant"}
    assert seconded.allowed


def test_a_licence_outside_the_list_is_refused() -> None:
    decision = _decide(StageRequirements(licences=("apache-2.0", "mit")), version=_version(licence="proprietary"))

    assert _failed(decision) == {"licence": "licence 'proprietary' is not allowed; allowed: apache-2.0, mit"}


def test_assessment_thresholds_are_read_from_the_evidence() -> None:
    requirements = StageRequirements(assessment_min={"accuracy": 0.95})

    assert _failed(_decide(requirements)) == {"assessment": "accuracy is 0.93 (needs at least 0.95)"}
    assert "no assessment report" in _failed(_decide(requirements, _evidence(assessment=None)))["assessment"]


def test_serving_needs_the_proof_of_the_stage_as_well_as_intact_signed_clean_bytes() -> None:
    proven = PromotionEvidence("production", "sha256:" + "f" * 64, root_digest=_evidence().root_digest() or "")
    unproven = PromotionEvidence("production", None, "no signed promotion of fraud@3 to production exists")
    version = _version("production")

    def refusals(evidence: Evidence, promotion: PromotionEvidence | None) -> tuple[str, ...]:
        return serving_refusals(
            version, evidence, promotion, stage="production", requirements=StageRequirements(), scan=ScanPolicy()
        )

    assert refusals(_evidence(), proven) == ()
    assert refusals(_evidence(), unproven) == ("promotion: no signed promotion of fraud@3 to production exists",)
    assert refusals(_evidence(), None) == ("promotion: no promotion to production was checked",)
    unsigned = _evidence(signature=SignatureEvidence(True, "key 1234 (release.pub)", "", (WEIGHTS.path,)))
    assert refusals(unsigned, proven) == (
        "signature: stored files the signature does not cover: serving.yaml; sign them, remove them, or name them "
        "in the stage's unsigned_allowed",
    )


def test_a_proven_stage_covers_only_the_bytes_its_attestation_names() -> None:
    # Blobs swapped together with their digests in the database: the files match the records,
    # but the attestation names the root digest of the bytes that were promoted.
    swapped = _evidence(digests={WEIGHTS.path: "sha256:" + "e" * 64, SPEC.path: SPEC.digest})
    version = dataclasses.replace(_version("staging"), files=(SPEC, StoredFile(WEIGHTS.path, "sha256:" + "e" * 64, 10)))
    proof = PromotionEvidence("staging", "sha256:" + "f" * 64, root_digest=_evidence().root_digest() or "")

    decision = _decide(evidence=swapped, version=version, promotion=proof, target="production")
    refused = serving_refusals(
        version, swapped, dataclasses.replace(proof, stage="production"), stage="production",
        requirements=StageRequirements(), scan=ScanPolicy(),
    )

    assert _failed(decision) == {"stage": "the bytes stored for fraud@3 are not those promoted to staging"}
    assert refused == ("promotion: the stored bytes are not those the attestation sha256:ffff"
                       "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff names",)
