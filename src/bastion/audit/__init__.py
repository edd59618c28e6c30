"""A tamper-evident, append-only audit log: hash-chained entries, signed checkpoints, and a
witness kept outside the database and the registry folder that anchors both."""

from bastion.audit.log import AuditLog
from bastion.audit.model import (
    AuditEntry,
    AuditEvent,
    AuditProblem,
    AuditReport,
    KeySource,
    ProblemKind,
    WitnessSource,
)
from bastion.audit.witness import Witness, WitnessedHead

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "AuditProblem",
    "AuditReport",
    "KeySource",
    "ProblemKind",
    "Witness",
    "WitnessSource",
    "WitnessedHead",
]
