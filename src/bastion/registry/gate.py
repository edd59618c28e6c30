"""The promotion gate: a pure function from requirements, evidence and approvals to a decision.

No database, no files, no clock: the registry gathers the evidence (`bastion.registry.evidence`:
digests recomputed from one read of the stored bytes, a fresh scan of that copy, the signature
verified on it, the signed promotion behind the present stage) and this module decides. The
gateway asks the same module what stops a checked-out version from being served.
Each check yields a `Check` with a sentence a person can act on.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bastion.findings import Verdict
from bastion.policy.schema import GatePolicy, ScanPolicy, StageRequirements
from bastion.registry.evidence import Evidence, PromotionEvidence, matches_any
from bastion.registry.records import Check, GateDecision, ModelVersion

MAX_LISTED = 5


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    return shown + (f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def check_stage(
    version: ModelVersion, evidence: Evidence, promotion: PromotionEvidence | None, target: str, stages: Sequence[str]
) -> Check:
    """The target is the next stage, and the present stage is backed by a signed, audited promotion of these bytes."""
    if version.stage not in stages:
        return Check(
            "stage", False,
            f"{version.ref} is in stage {version.stage!r}, which the policy no longer lists "
            f"({', '.join(stages)}); restore the stage in the policy or register the model again",
        )
    if promotion is not None and not promotion.proven:
        return Check("stage", False, f"{version.ref} is in {version.stage} without a valid promotion: {promotion.problem}")
    if promotion is not None and not promotion.attests(evidence):
        return Check("stage", False, f"the bytes stored for {version.ref} are not those promoted to {version.stage}")
    here, there = stages.index(version.stage), stages.index(target)
    if there <= here:
        return Check("stage", False, f"{version.ref} is already in {version.stage}")
    if there != here + 1:
        return Check("stage", False, f"{version.ref} is in {version.stage}: promote it to {stages[here + 1]} first")
    return Check("stage", True, f"{version.stage} -> {target}")


def check_stored_bytes(version: ModelVersion, evidence: Evidence) -> Check:
    problems = []
    for stored in version.files:
        actual = evidence.digests.get(stored.path)
        if actual is None:
            problems.append(f"{stored.path}: its blob {stored.digest} is missing from the store")
        elif actual != stored.digest:
            problems.append(f"{stored.path}: the stored bytes changed since registration (now {actual})")
    if problems:
        return Check("stored-bytes", False, _listed(problems))
    return Check("stored-bytes", True, f"all {len(version.files)} files match the digests recorded at registration")


def check_scan(evidence: Evidence, policy: ScanPolicy) -> Check:
    report = evidence.scan
    if report is None:
        return Check("scan", False, f"the stored files could not be scanned: {evidence.scan_problem}")
    verdict = report.verdict(policy.block_at)
    if verdict is Verdict.PASS:
        return Check("scan", True, f"re-scanned {len(report.files)} files: nothing at or above {policy.block_at.name.lower()}")
    blocking = [f for f in report.findings if f.severity >= policy.block_at or f.is_incomplete]
    root = Path(evidence.scan_root)
    described = [
        f"{Path(f.location.file).relative_to(root) if Path(f.location.file).is_relative_to(root) else f.location.file}"
        f": {f.rule_id} ({f.severity.name.lower()}) {f.message}"
        for f in blocking
    ]
    what = "could not be fully analysed" if verdict is Verdict.INCOMPLETE else "holds code that runs on load"
    return Check("scan", False, f"re-scan: the model {what}: {_listed(described)}")


def check_signature(version: ModelVersion, evidence: Evidence, unsigned_allowed: Sequence[str]) -> Check:
    """A trusted key verified the signature, and it covers every stored file the policy does not exempt."""
    signature = evidence.signature
    if signature.problem:
        return Check("signature", False, signature.problem)
    uncovered = signature.uncovered([f.path for f in version.files])
    refused = [path for path in uncovered if not matches_any(path, unsigned_allowed)]
    if refused:
        return Check(
            "signature", False,
            f"stored files the signature does not cover: {_listed(refused)}; sign them, remove them, or name "
            "them in the stage's unsigned_allowed",
        )
    exempt = f"; unsigned but allowed: {_listed(uncovered)}" if uncovered else ""
    return Check("signature", True, f"signature verified with allowed {signature.verified_by}{exempt}")


def check_source(version: ModelVersion, allowed: Sequence[str]) -> Check:
    source = version.lineage.source
    if source and any(fnmatch.fnmatchcase(source, pattern) for pattern in allowed):
        return Check("source", True, f"source {source!r} is allowed")
    shown = repr(source) if source else "no source was recorded"
    return Check("source", False, f"{shown}; allowed sources are {', '.join(allowed)}")


def check_licence(version: ModelVersion, allowed: Sequence[str]) -> Check:
    licence = version.lineage.licence.lower()
    if licence and licence in allowed:
        return Check("licence", True, f"licence {licence} is allowed")
    shown = f"licence {licence!r} is not allowed" if licence else "no licence was recorded"
    return Check("licence", False, f"{shown}; allowed: {', '.join(allowed)}")


def check_approvals(version: ModelVersion, approvers: Sequence[str], needed: int, separate: bool) -> Check:
    counted = sorted({a for a in approvers if not (separate and a == version.registered_by)})
    if len(counted) >= needed:
        return Check("approvals", True, f"approved by {', '.join(counted)}")
    missing = needed - len(counted)
    who = " by someone other than the registrant" if separate else ""
    have = f" (have: {', '.join(counted)})" if counted else ""
    return Check("approvals", False, f"needs {missing} more approval(s){who}{have}")


def check_assessment(evidence: Evidence, requirements: StageRequirements) -> Check:
    if evidence.assessment is None:
        return Check("assessment", False, evidence.assessment_problem or "no assessment report was attached to this version")
    problems = []
    for metric, floor in requirements.assessment_min.items():
        value = evidence.assessment.get(metric)
        if value is None or value < floor:
            problems.append(f"{metric} is {value} (needs at least {floor})")
    for metric, ceiling in requirements.assessment_max.items():
        value = evidence.assessment.get(metric)
        if value is None or value > ceiling:
            problems.append(f"{metric} is {value} (needs at most {ceiling})")
    if problems:
        return Check("assessment", False, _listed(problems))
    return Check("assessment", True, "every assessment threshold is met")


def check_promotion(promotion: PromotionEvidence | None, evidence: Evidence, stage: str) -> Check:
    if promotion is None or promotion.stage != stage:
        return Check("promotion", False, f"no promotion to {stage} was checked")
    if not promotion.proven:
        return Check("promotion", False, promotion.problem)
    if not promotion.attests(evidence):
        # The database's digests were changed along with the blobs: the attestation still names the old bytes.
        return Check("promotion", False, f"the stored bytes are not those the attestation {promotion.attestation} names")
    return Check("promotion", True, f"promoted to {stage}: attestation {promotion.attestation} verified and audited")


def stage_scan_policy(requirements: StageRequirements, scan: ScanPolicy) -> ScanPolicy:
    if requirements.scan_block_at is None:
        return scan
    return ScanPolicy(requirements.scan_block_at, scan.allow_globals, scan.limits)


def evaluate_gate(
    requirements: StageRequirements,
    evidence: Evidence,
    approvals: Sequence[str],
    *,
    version: ModelVersion,
    promotion: PromotionEvidence | None,
    target: str,
    gate: GatePolicy,
    scan: ScanPolicy,
    decided_by: str,
    decided_at: datetime,
) -> GateDecision:
    """Every check the target stage asks for, plus the ones every promotion runs, and the decision."""
    checks = [
        check_stage(version, evidence, promotion, target, gate.stages),
        check_stored_bytes(version, evidence),
        check_scan(evidence, stage_scan_policy(requirements, scan)),
    ]
    if requirements.signature_keys:
        checks.append(check_signature(version, evidence, requirements.unsigned_allowed))
    if requirements.sources:
        checks.append(check_source(version, requirements.sources))
    if requirements.licences:
        checks.append(check_licence(version, requirements.licences))
    if requirements.approvals:
        checks.append(check_approvals(version, approvals, requirements.approvals, gate.separation_of_duties))
    if requirements.assessment_min or requirements.assessment_max:
        checks.append(check_assessment(evidence, requirements))
    return GateDecision(
        version.model, version.number, version.stage, target, all(c.passed for c in checks), tuple(checks),
        decided_by, decided_at,
    )


def serving_refusals(
    version: ModelVersion,
    evidence: Evidence,
    promotion: PromotionEvidence | None,
    *,
    stage: str,
    requirements: StageRequirements,
    scan: ScanPolicy,
) -> tuple[str, ...]:
    """What stops a checked-out version from being served in `stage`; empty: nothing does.

    The gateway serves only signed versions whose stage is proven by a signed, audited promotion.
    """
    checks = (
        check_promotion(promotion, evidence, stage),
        check_stored_bytes(version, evidence),
        check_signature(version, evidence, requirements.unsigned_allowed),
        check_scan(evidence, scan),
    )
    return tuple(f"{c.name}: {c.detail}" for c in checks if not c.passed)
