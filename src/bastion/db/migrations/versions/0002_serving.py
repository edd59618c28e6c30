"""serving gateway: keys and the kill switch

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('serve_disabled_models',
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled_by', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('model', name=op.f('pk_serve_disabled_models'))
    )
    op.create_table('serve_keys',
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('secret_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.Column('suspended_reason', sa.Text(), nullable=True),
    sa.Column('models', sa.Text(), nullable=False),
    sa.Column('operations', sa.Text(), nullable=False),
    sa.Column('output', sa.String(length=16), nullable=False),
    sa.Column('precision', sa.Integer(), nullable=True),
    sa.Column('rate_per_second', sa.Float(), nullable=True),
    sa.Column('burst', sa.Integer(), nullable=True),
    sa.Column('daily', sa.Integer(), nullable=True),
    sa.Column('monthly', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_serve_keys'))
    )


def downgrade() -> None:
    op.drop_table('serve_keys')
    op.drop_table('serve_disabled_models')
