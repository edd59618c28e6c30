"""What the audit log holds and what checking it finds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

GENESIS = bytes(32)  # the "previous hash" of a chain's first entry


@dataclass(frozen=True)
class AuditEvent:
    """Something to record: who did what to which subject, with details."""

    actor: str
    action: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded event at its place in a chain."""

    chain: str
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]
    entry_hash: str  # hex SHA-256 of previous hash + body

    @classmethod
    def from_body(cls, body: str, entry_hash: bytes) -> AuditEntry:
        data = json.loads(body)
        return cls(
            chain=data["chain"],
            seq=data["seq"],
            at=datetime.fromisoformat(data["at"]),
            actor=data["actor"],
            action=data["action"],
            subject=data["subject"],
            details=data["details"],
            entry_hash=entry_hash.hex(),
        )


def entry_body(chain: str, seq: int, at: datetime, event: AuditEvent) -> str:
    """The canonical text of an entry: the exact bytes that are hashed and stored.

    `seq` and `chain` come first so that checking an entry's place needs no JSON parsing.
    """
    record = {
        "seq": seq,
        "chain": chain,
        "at": at.isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "details": dict(event.details),
    }
    return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def body_prefix(chain: str, seq: int) -> str:
    """How the body of entry `seq` of `chain` must start."""
    return f'{{"seq":{seq},"chain":{json.dumps(chain, ensure_ascii=False)},'


def checkpoint_message(chain: str, seq: int, entry_hash: bytes, signed_at: datetime) -> bytes:
    """The bytes a checkpoint signature covers (the time in UTC, as every database returns it)."""
    utc = signed_at.astimezone(UTC) if signed_at.tzinfo else signed_at.replace(tzinfo=UTC)
    stamp = utc.isoformat(timespec="microseconds")
    return f"bastion-audit-checkpoint/1\n{chain}\n{seq}\n{entry_hash.hex()}\n{stamp}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """A signature over the hash of entry `seq`, and so over every entry before it."""

    seq: int
    entry_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes


class ProblemKind(StrEnum):
    """How an audit log departs from what was written."""

    EDITED = "edited"  # content no longer matches its own hash
    MISSING = "missing"  # a gap in the sequence
    OUT_OF_PLACE = "out-of-place"  # an entry sits at another position than it was written at
    BROKEN_LINK = "broken-link"  # an entry does not follow the one before it
    REWRITTEN = "rewritten"  # a signed checkpoint names another hash for that entry
    TRUNCATED = "truncated"  # a signed checkpoint or witnessed head covers entries that are gone
    BAD_SIGNATURE = "bad-signature"  # a checkpoint's signature does not verify
    UNKNOWN_KEY = "unknown-key"  # a checkpoint signed by a key not trusted here
    HEAD_MISMATCH = "head-mismatch"  # the recorded head is not the last entry
    FORKED = "forked"  # the witness saw another hash at that entry: history was rewritten
    WITNESS_MISSING = "witness-missing"  # a witness was written, and is gone or rolled back
    WITNESS_TAMPERED = "witness-tampered"  # heads missing from, or unreadable in, the witness


class KeySource(StrEnum):
    """Where the key that checked the signatures came from."""

    PINNED = "pinned"  # the verifier's own configuration (--trusted-key, BASTION_AUDIT_KEY)
    REGISTRY_FOLDER = "registry-folder"  # registry.pub beside the database: replaceable by its writers


class WitnessSource(StrEnum):
    """Where the witness that was checked is named."""

    VERIFIER = "verifier"  # the verifier's own configuration (--witness, BASTION_AUDIT_WITNESS)
    REGISTRY_CONFIG = "registry-config"  # registry.yaml: editable by whoever can write the folder
    REGISTRY_FOLDER = "registry-folder"  # inside the registry folder, whoever named it


@dataclass(frozen=True)
class AuditProblem:
    """One departure, at the entry where it shows."""

    kind: ProblemKind
    seq: int
    message: str


@dataclass(frozen=True)
class AuditReport:
    """The outcome of checking one chain from its first entry to its last."""

    chain: str
    entries: int
    last_seq: int
    checkpoints: int
    last_signed_seq: int
    problems: tuple[AuditProblem, ...]
    problems_not_listed: int = 0
    witness_location: str = ""  # "" when no witness was checked
    witness_heads: int = 0
    last_witnessed_seq: int = 0
    key_source: KeySource = KeySource.REGISTRY_FOLDER
    witness_source: WitnessSource | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def anchored(self) -> bool:
        """Whether trust rests on the verifier's own key and witness, not on the folder being checked."""
        return self.key_source is KeySource.PINNED and self.witness_source is WitnessSource.VERIFIER

    def shortfalls(self, *, require_anchor: bool = False, max_unwitnessed: int | None = None) -> tuple[str, ...]:
        """Why an intact chain still falls short of what the verifier asked for (empty: it does not)."""
        found = []
        if require_anchor and not self.anchored:
            found.append("the check is not anchored in the verifier's own key and witness")
        if max_unwitnessed is not None and self.unwitnessed_tail > max_unwitnessed:
            found.append(
                f"{self.unwitnessed_tail} entries after the last witnessed head (at most {max_unwitnessed} allowed): "
                "whoever can write the database and holds the registry's key could rewrite them unseen"
            )
        return tuple(found)

    @property
    def unwitnessed_tail(self) -> int:
        """Entries after the last witnessed head: a writer of the database could still cut them unseen."""
        return max(0, self.last_seq - self.last_witnessed_seq) if self.witness_location else self.last_seq

    @property
    def unsigned_tail(self) -> int:
        """Entries after the last signed checkpoint: chained, but not yet covered by a signature."""
        return max(0, self.last_seq - self.last_signed_seq)
