"""Every table Bastion keeps, on one MetaData so that one Alembic history migrates them all.

SQLAlchemy Core tables (not ORM classes): the library reads rows into frozen dataclasses of
its own, so nothing outside `bastion.registry.store` and `bastion.audit.log` sees a row.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = DateTime(timezone=True)

# --- the audit log: one hash chain per `chain` name ---------------------------------------

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("chain", String(64), primary_key=True),
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("body", Text, nullable=False),  # canonical JSON, exactly the bytes hashed
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("entry_hash", LargeBinary(32), nullable=False),
)

audit_heads = Table(  # the last entry of each chain; its row lock serialises appends
    "audit_heads",
    metadata,
    Column("chain", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("entry_hash", LargeBinary(32), nullable=False),
    Column("checkpoint_seq", BigInteger, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("chain", String(64), primary_key=True),
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("entry_hash", LargeBinary(32), nullable=False),
    Column("signed_at", Timestamp, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# --- the registry --------------------------------------------------------------------------

principals = Table(
    "principals",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),  # user | service
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),  # its tokens stop working
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),  # the public half, shown in lists
    Column("principal", String(200), ForeignKey("principals.name"), nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),  # SHA-256 of the secret half
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
)

grants = Table(  # a role on one model, or on every model when model is "*"
    "grants",
    metadata,
    Column("principal", String(200), ForeignKey("principals.name"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("role", String(16), nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
)

versions = Table(
    "versions",
    metadata,
    Column("model", String(200), ForeignKey("models.name"), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("root_digest", String(71), nullable=False),  # sha256:<hex> over the manifest
    Column("layout", String(8), nullable=False),  # "file" (one file) or "folder"
    Column("stage", String(64), nullable=False),
    Column("registered_at", Timestamp, nullable=False),
    Column("registered_by", String(200), nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("licence", String(100), nullable=False, default=""),
    Column("training_data_digest", String(71), nullable=False, default=""),
    Column("parent", String(220), nullable=False, default=""),  # model@number
    Column("signature_blob", String(71), nullable=True),  # the OpenSSF bundle, stored as a blob
    Column("scan_blob", String(71), nullable=True),  # the scan report at registration (JSON)
    Column("assessment_blob", String(71), nullable=True),
)

version_files = Table(
    "version_files",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("path", Text, primary_key=True),
    Column("digest", String(71), nullable=False),
    Column("size", BigInteger, nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("stage", String(64), primary_key=True),
    Column("approver", String(200), primary_key=True),
    Column("approved_at", Timestamp, nullable=False),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("from_stage", String(64), nullable=False),
    Column("to_stage", String(64), nullable=False),
    Column("decided_at", Timestamp, nullable=False),
    Column("decided_by", String(200), nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list of the checks and their outcome
    Column("attestation_blob", String(71), nullable=True),
)

# --- the serving gateway -------------------------------------------------------------------

serve_keys = Table(  # API keys of the inference gateway; only a hash of the secret is kept
    "serve_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("name", String(200), nullable=False),  # who holds it, e.g. "mobile-backend"
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", Timestamp, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("suspended_reason", Text, nullable=True),  # set by an alarm or an operator; None: active
    Column("models", Text, nullable=False),  # JSON list of model names, or ["*"]
    Column("operations", Text, nullable=False),  # JSON list: infer, metadata, token
    Column("output", String(16), nullable=False),  # label | score | probabilities
    Column("precision", Integer, nullable=True),  # decimals of scores/probabilities; None: as computed
    Column("rate_per_second", Float, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("daily", Integer, nullable=True),
    Column("monthly", Integer, nullable=True),
    Column("account", String(200), nullable=False, index=True),  # who pays: budgets shared by its keys
    Column("max_rows", Integer, nullable=True),  # rows per request; None: the default (keys.DEFAULT_MAX_ROWS)
    # A throttle an alarm set: the key's rate until an operator lifts it (shared by replicas, kept on restart).
    Column("throttle_per_second", Float, nullable=True),
    Column("throttle_burst", Integer, nullable=True),
    Column("throttle_reason", Text, nullable=True),
)

serve_accounts = Table(  # an account's budget per model, shared by all its keys; no row: no account budget
    "serve_accounts",
    metadata,
    Column("account", String(200), primary_key=True),
    Column("rate_per_second", Float, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("daily", Integer, nullable=True),
    Column("monthly", Integer, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("updated_by", String(200), nullable=False),
)

serve_disabled_models = Table(  # the kill switch: a model listed here is not served
    "serve_disabled_models",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("disabled_at", Timestamp, nullable=False),
    Column("disabled_by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
)
