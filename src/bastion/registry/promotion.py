"""Approving, checking and promoting versions, and proving a stage from its signed promotion.

A row saying `stage = 'production'` proves nothing: anyone who can write to the database can
write it. A stage other than the first is believed only with its evidence: the promotion's
attestation, signed by the registry key the reader trusts, naming this version's root digest
and this stage, and the audit entry that recorded that promotion with that attestation's digest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from bastion.db.tables import approvals, audit_entries, promotions, versions
from bastion.errors import AccessDenied, BastionError, ConfigError, NotFound, RegistryError
from bastion.registry.attest import PREDICATE_TYPE, attestation_statement, open_statement, sign_statement
from bastion.registry.evidence import PromotionEvidence
from bastion.registry.gate import evaluate_gate
from bastion.registry.records import Approval, GateDecision, ModelVersion
from bastion.registry.roles import Action, Principal
from bastion.sign.keys import PublicKey

if TYPE_CHECKING:
    from bastion.registry.service import Registry

PROMOTE_ACTION = "version.promote"
APPROVE_ACTION = "version.approve"


def _now() -> datetime:
    return datetime.now(UTC)


def check_stage(registry: Registry, stage: str) -> str:
    if stage not in registry.stages:
        raise ConfigError(f"unknown stage {stage!r}", hint=f"Stages are: {', '.join(registry.stages)}.")
    return stage


def approvers_of(connection: Connection, version: ModelVersion, stage: str) -> tuple[str, ...]:
    """Who approved `version` for `stage`: a row counts only with the audit entry that recorded it.

    A row inserted straight into the approvals table is no approval (like a stage set by SQL).
    """
    rows = connection.execute(
        select(approvals.c.approver).where(
            approvals.c.model == version.model, approvals.c.number == version.number, approvals.c.stage == stage
        )
    ).scalars().all()
    if not rows:
        return ()
    recorded = set()
    for body in _registry_entries(connection, f'"subject":{json.dumps(version.ref)}'):
        if body.get("action") == APPROVE_ACTION and body.get("details", {}).get("stage") == stage:
            recorded.add(body.get("actor"))
    return tuple(approver for approver in rows if approver in recorded)


def _registry_entries(connection: Connection, fragment: str) -> list[dict[str, Any]]:
    """The registry chain's entries whose canonical body holds `fragment`, parsed."""
    bodies = connection.execute(
        select(audit_entries.c.body).where(audit_entries.c.chain == "registry", audit_entries.c.body.contains(fragment))
    ).scalars().all()
    parsed = [json.loads(body) for body in bodies]
    return [entry for entry in parsed if isinstance(entry, dict) and isinstance(entry.get("details"), dict)]


def _audited(connection: Connection, version: ModelVersion, attestation: str) -> bool:
    """The registry chain holds the promotion entry naming this attestation."""
    return any(
        entry.get("action") == PROMOTE_ACTION and entry.get("subject") == version.ref
        and entry["details"].get("attestation") == attestation
        for entry in _registry_entries(connection, attestation)
    )


def prove_stage(
    registry: Registry, connection: Connection, version: ModelVersion, stage: str, key: PublicKey
) -> PromotionEvidence:
    """The evidence that `version` was promoted to `stage` by this registry's gate."""
    rows = connection.execute(
        select(promotions.c.attestation_blob)
        .where(
            promotions.c.model == version.model, promotions.c.number == version.number,
            promotions.c.to_stage == stage, promotions.c.allowed.is_(True),
        )
        .order_by(promotions.c.id.desc())
    ).scalars().all()
    problems = []
    for digest in rows:
        if digest is None:
            problems.append("a promotion row without an attestation")
            continue
        try:
            statement = open_statement(registry.blobs.read_bytes(digest), key)
        except BastionError as err:
            problems.append(f"attestation {digest}: {err.message}")
            continue
        predicate = statement.get("predicate", {})
        if statement.get("predicateType") != PREDICATE_TYPE or not isinstance(predicate, dict):
            problems.append(f"attestation {digest} is not a promotion attestation")
            continue
        claimed = (predicate.get("model"), predicate.get("version"), predicate.get("rootDigest"), predicate.get("toStage"))
        if claimed != (version.model, version.number, version.root_digest, stage):
            problems.append(f"attestation {digest} attests another version, digest or stage")
            continue
        if not _audited(connection, version, digest):
            problems.append(f"attestation {digest}: no audit entry records this promotion")
            continue
        return PromotionEvidence(stage, digest, root_digest=version.root_digest)
    if not problems:
        problems.append(f"no signed promotion of {version.ref} to {stage} exists")
    return PromotionEvidence(stage, None, "; ".join(problems))


def present_stage_evidence(
    registry: Registry, connection: Connection, version: ModelVersion, key: PublicKey
) -> PromotionEvidence | None:
    """The evidence for the version's present stage; None for the first stage (registration puts it there)."""
    if version.stage == registry.stages[0] or version.stage not in registry.stages:
        return None
    return prove_stage(registry, connection, version, version.stage, key)


def approve(registry: Registry, actor: Principal, model: str, number: int, stage: str) -> Approval:
    """Record `actor`'s approval of a version for `stage`."""
    actor.require(Action.APPROVE, model)
    check_stage(registry, stage)
    refusal: AccessDenied | None = None
    now = _now()
    with registry._change() as connection:
        version = registry._version_in(connection, model, number)
        if registry.policy.gate.separation_of_duties and version.registered_by == actor.name:
            registry._record(connection, actor.name, "version.approve.refused", version.ref, stage=stage,
                             reason="separation of duties: the registrant may not approve")
            refusal = AccessDenied(
                f"{actor.name} registered {version.ref} and so may not approve it (separation of duties)",
                hint="Another approver must approve it.",
            )
        else:
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(approvals).values(model=model, number=number, stage=stage, approver=actor.name, approved_at=now)
                    )
            except IntegrityError:
                raise RegistryError(f"{actor.name} already approved {version.ref} for {stage}") from None
            registry._record(connection, actor.name, APPROVE_ACTION, version.ref, stage=stage)
    if refusal is not None:
        raise refusal
    return Approval(model, number, stage, actor.name, now)


def decide(
    registry: Registry, actor: Principal, version: ModelVersion, stage: str, *, fresh: bool
) -> GateDecision:
    """The gate's decision on `version` for `stage`, from the evidence the registry gathers (see `evaluate_gate`)."""
    evidence, promotion, approvers = registry.gate_inputs(actor, version, stage, fresh=fresh)
    return evaluate_gate(
        registry.policy.gate.requirements_for(stage), evidence, approvers,
        version=version, promotion=promotion, target=stage, gate=registry.policy.gate,
        scan=registry.policy.scan, decided_by=actor.name, decided_at=_now(),
    )


def decision_details(decision: GateDecision) -> dict[str, object]:
    return {
        "from_stage": decision.from_stage,
        "to_stage": decision.to_stage,
        "allowed": decision.allowed,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
    }


def check_gate(registry: Registry, actor: Principal, model: str, number: int | None, stage: str) -> GateDecision:
    """What the gate would decide now, without promoting; the check itself is audited.

    The evidence of a version's bytes is reused by root digest and policy digest for a while
    (see `Registry.evidence_ttl`), so that a reader asking again and again does not make the
    registry copy and re-scan the model each time; a promotion always checks afresh.
    """
    actor.require(Action.GATE_CHECK, model)
    check_stage(registry, stage)
    version = registry.version(actor, model, number)
    decision = decide(registry, actor, version, stage, fresh=False)
    with registry._change() as connection:
        registry._record(connection, actor.name, "gate.check", version.ref, **decision_details(decision))
    return decision


def promote(registry: Registry, actor: Principal, model: str, number: int, stage: str) -> GateDecision:
    """Re-check a version against `stage`'s requirements and move it there if every check passes.

    The decision, allowed or not, goes to the audit log with its reasons; an allowed one
    also gets a signed attestation, stored as a blob and named in the decision and the entry.
    """
    actor.require(Action.PROMOTE, model)
    check_stage(registry, stage)
    version = registry.version(actor, model, number)
    decision = decide(registry, actor, version, stage, fresh=True)
    attestation = None
    if decision.allowed:
        envelope = sign_statement(attestation_statement(version, decision, registry.policy_digest), registry.signing_key)
        attestation = registry.blobs.put_bytes(envelope)
    with registry._change() as connection:
        if decision.allowed:
            moved = connection.execute(
                update(versions)
                .where(versions.c.model == model, versions.c.number == number, versions.c.stage == version.stage)
                .values(stage=stage)
            )
            if not moved.rowcount:
                raise RegistryError(f"{version.ref} changed stage while it was being checked; try again")
        connection.execute(
            insert(promotions).values(
                model=model, number=number, from_stage=version.stage, to_stage=stage,
                decided_at=decision.decided_at, decided_by=actor.name, allowed=decision.allowed,
                reasons=json.dumps([c.__dict__ for c in decision.checks]), attestation_blob=attestation,
            )
        )
        action = PROMOTE_ACTION if decision.allowed else "version.promote.refused"
        registry._record(connection, actor.name, action, version.ref, attestation=attestation,
                         **decision_details(decision))
    return GateDecision(
        decision.model, decision.number, decision.from_stage, decision.to_stage, decision.allowed,
        decision.checks, decision.decided_by, decision.decided_at, attestation, decision.allowed,
    )


def attestation(registry: Registry, actor: Principal, digest: str) -> bytes:
    """The signed attestation of a promotion, by digest; only promotions' attestations are served."""
    with registry.engine.connect() as connection:
        model = connection.execute(
            select(promotions.c.model).where(promotions.c.attestation_blob == digest).limit(1)
        ).scalar_one_or_none()
    if model is None:
        raise NotFound(f"{digest} is not the attestation of any promotion")
    actor.require(Action.READ, model)
    return registry.read_recorded_blob(actor, digest, f"attestation {digest}")

