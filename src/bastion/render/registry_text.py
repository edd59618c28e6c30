"""Registry records as text for people and as JSON for machines."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from bastion.audit import AuditReport
from bastion.audit.model import KeySource, WitnessSource
from bastion.registry.access import TokenInfo
from bastion.registry.records import GateDecision, ModelSummary, ModelVersion


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def as_json(value: Any) -> str:
    """Any record (or list of records) as indented JSON."""
    payload = _plain(value)
    if isinstance(value, GateDecision):
        payload["reasons"] = list(value.reasons)
    if isinstance(value, AuditReport):
        payload["ok"] = value.ok
        payload["unsigned_tail"] = value.unsigned_tail
        payload["unwitnessed_tail"] = value.unwitnessed_tail
        payload["anchored"] = value.anchored
    return json.dumps(payload, indent=2)


def decision_text(decision: GateDecision) -> str:
    verb = "promoted" if decision.recorded else ("may go" if decision.allowed else "refused")
    head = f"{decision.model}@{decision.number}: {decision.from_stage} -> {decision.to_stage}: {verb}"
    lines = [head]
    for check in decision.checks:
        lines.append(f"  [{'ok' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    if decision.attestation_blob:
        lines.append(f"  attestation: {decision.attestation_blob}")
    return "\n".join(lines)


def version_text(version: ModelVersion) -> str:
    lineage = version.lineage
    lines = [
        f"{version.ref}  stage {version.stage}  {version.root_digest}",
        f"  registered {version.registered_at:%Y-%m-%d %H:%M:%S} UTC by {version.registered_by}",
        f"  signed: {'yes' if version.signature_blob else 'no'}",
    ]
    for label, value in (
        ("source", lineage.source),
        ("licence", lineage.licence),
        ("training data", lineage.training_data_digest),
        ("parent", lineage.parent),
    ):
        if value:
            lines.append(f"  {label}: {value}")
    lines.extend(f"  {f.digest}  {f.size:>12}  {f.path}" for f in version.files)
    return "\n".join(lines)


def models_text(summaries: list[ModelSummary]) -> str:
    if not summaries:
        return "no models"
    rows = [f"{'model':<32} {'latest':>6}  stages"]
    for s in summaries:
        staged = ", ".join(f"{stage}@{number}" for stage, number in s.stages)
        rows.append(f"{s.name:<32} {s.latest:>6}  {staged}")
    return "\n".join(rows)


def audit_text(report: AuditReport) -> str:
    status = "intact" if report.ok else f"TAMPERED: {len(report.problems) + report.problems_not_listed} problem(s)"
    lines = [
        f"audit chain {report.chain!r}: {report.entries} entries, {report.checkpoints} signed checkpoints: {status}"
    ]
    lines.extend(f"  entry {p.seq}: [{p.kind.value}] {p.message}" for p in report.problems)
    if report.problems_not_listed:
        lines.append(f"  ... and {report.problems_not_listed} more")
    if report.unsigned_tail:
        lines.append(f"  note: the last {report.unsigned_tail} entries are chained but not yet under a signed checkpoint")
    lines.extend(audit_anchor_lines(report))
    return "\n".join(lines)


def audit_anchor_lines(report: AuditReport) -> list[str]:
    """What the verdict rests on: whose key, whose witness, and what is not yet witnessed."""
    if report.witness_location:
        lines = [
            f"  witness: {report.witness_location} ({report.witness_source}): {report.witness_heads} heads, "
            f"last witnessed entry {report.last_witnessed_seq}"
        ]
        if report.unwitnessed_tail:
            lines.append(f"  note: the last {report.unwitnessed_tail} entries are not yet witnessed")
    else:
        lines = ["  witness: none checked"]
    if report.anchored:
        lines.append("  anchored: the key and the witness come from the verifier's own configuration")
    else:
        gaps = []
        if report.key_source is not KeySource.PINNED:
            gaps.append("trusts the registry folder's own key (registry.pub)")
        if report.witness_source is not WitnessSource.VERIFIER:
            gaps.append("holds no witness of its own outside the registry folder")
        lines.append(
            f"  UNANCHORED: this check {' and '.join(gaps)}; anyone with write access to the registry folder "
            "could replace them and rewrite the log unseen. Pass --trusted-key and --witness "
            "(or BASTION_AUDIT_KEY and BASTION_AUDIT_WITNESS)."
        )
    return lines


def tokens_text(found: Sequence[TokenInfo]) -> str:
    """One line per token: id, state, creation and expiry (never a secret: none is kept)."""
    lines = []
    for token in found:
        state = "revoked" if token.revoked else "active"
        expires = f"expires {token.expires_at.isoformat(timespec='seconds')}" if token.expires_at else "no expiry"
        lines.append(f"{token.token_id}  {token.principal}  {state}  created {token.created_at.isoformat(timespec='seconds')}  {expires}")
    return "\n".join(lines) or "no tokens"
