"""Promotion attestations: an in-toto statement of what the gate checked, in a signed DSSE envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

from bastion.errors import VerificationError
from bastion.registry.records import GateDecision, ModelVersion
from bastion.sign.keys import PrivateKey, PublicKey
from bastion.sign.ossf import PAYLOAD_TYPE, STATEMENT_TYPE, pae
from bastion.sign.raw import key_id, sign_bytes, signature_valid

PREDICATE_TYPE = "https://bastion.dev/attestation/promotion/v1"


def attestation_statement(version: ModelVersion, decision: GateDecision, policy_digest: str) -> dict[str, Any]:
    """The statement: every file by digest as subject, the decision and its checks as predicate."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": f"{version.ref}/{stored.path}", "digest": {"sha256": stored.digest.removeprefix("sha256:")}}
            for stored in version.files
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "model": version.model,
            "version": version.number,
            "rootDigest": version.root_digest,
            "fromStage": decision.from_stage,
            "toStage": decision.to_stage,
            "decidedBy": decision.decided_by,
            "decidedAt": decision.decided_at.isoformat(),
            "policyDigest": policy_digest,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
            "registeredBy": version.registered_by,
            "source": version.lineage.source,
            "licence": version.lineage.licence,
            "trainingDataDigest": version.lineage.training_data_digest,
            "parent": version.lineage.parent,
        },
    }


def sign_statement(statement: dict[str, Any], key: PrivateKey) -> bytes:
    """A DSSE envelope (JSON) around `statement`, signed with `key`."""
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key_id(key.public_key()), "sig": base64.b64encode(sign_bytes(key, pae(payload))).decode()}],
    }
    return json.dumps(envelope, indent=2).encode()


def open_statement(envelope_bytes: bytes, key: PublicKey) -> dict[str, Any]:
    """The statement inside a DSSE envelope, once its signature by `key` is checked."""
    try:
        envelope = json.loads(envelope_bytes)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError) as err:
        raise VerificationError(f"not a DSSE envelope: {err}") from err
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise VerificationError(f"unexpected payload type {envelope.get('payloadType')!r}")
    if not any(signature_valid(key, sig, pae(payload)) for sig in signatures):
        raise VerificationError(f"the attestation is not signed by key {key_id(key)}")
    statement: dict[str, Any] = json.loads(payload)
    return statement
