"""serving gateway: keys belong to accounts, carry rows per request and a persisted throttle; account budgets

Existing keys become their own account (account = name) and get the default rows per request
(max_rows NULL); no account has a budget until one is set.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('serve_keys') as batch:
        batch.add_column(sa.Column('account', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('max_rows', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('throttle_per_second', sa.Float(), nullable=True))
        batch.add_column(sa.Column('throttle_burst', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('throttle_reason', sa.Text(), nullable=True))
    op.execute('UPDATE serve_keys SET account = name')
    with op.batch_alter_table('serve_keys') as batch:
        batch.alter_column('account', existing_type=sa.String(length=200), nullable=False)
        batch.create_index(batch.f('ix_serve_keys_account'), ['account'], unique=False)
    op.create_table('serve_accounts',
    sa.Column('account', sa.String(length=200), nullable=False),
    sa.Column('rate_per_second', sa.Float(), nullable=True),
    sa.Column('burst', sa.Integer(), nullable=True),
    sa.Column('daily', sa.Integer(), nullable=True),
    sa.Column('monthly', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('account', name=op.f('pk_serve_accounts'))
    )


def downgrade() -> None:
    op.drop_table('serve_accounts')
    with op.batch_alter_table('serve_keys') as batch:
        batch.drop_index(batch.f('ix_serve_keys_account'))
        batch.drop_column('throttle_reason')
        batch.drop_column('throttle_burst')
        batch.drop_column('throttle_per_second')
        batch.drop_column('max_rows')
        batch.drop_column('account')
