"""A tamper-evident, append-only audit log: hash-chained entries and signed checkpoints."""

from bastion.audit.log import AuditLog
from bastion.audit.model import AuditEntry, AuditEvent, AuditProblem, AuditReport, ProblemKind

__all__ = ["AuditEntry", "AuditEvent", "AuditLog", "AuditProblem", "AuditReport", "ProblemKind"]
