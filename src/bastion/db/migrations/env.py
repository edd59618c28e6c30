"""Alembic environment: runs on the connection `bastion.db.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from bastion.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: only through bastion.db.upgrade
    raise RuntimeError("run migrations through bastion.db.upgrade(engine)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
