"""registry: a principal can be disabled (its tokens stop authenticating)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('principals') as batch:
        batch.add_column(sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('principals') as batch:
        batch.drop_column('disabled')
