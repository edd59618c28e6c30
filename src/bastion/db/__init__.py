"""Metadata storage shared by the registry and the audit log: SQLAlchemy 2, migrated by Alembic."""

from bastion.db.engine import connect, make_engine, snapshot, upgrade, writer

__all__ = ["connect", "make_engine", "snapshot", "upgrade", "writer"]
