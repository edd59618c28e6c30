"""initial schema: registry and audit log

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('approvals',
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('approver', sa.String(length=200), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('model', 'number', 'stage', 'approver', name=op.f('pk_approvals'))
    )
    op.create_table('audit_checkpoints',
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('entry_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('chain', 'seq', name=op.f('pk_audit_checkpoints'))
    )
    op.create_table('audit_entries',
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('entry_hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('chain', 'seq', name=op.f('pk_audit_entries'))
    )
    op.create_table('audit_heads',
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('entry_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('checkpoint_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_audit_heads'))
    )
    op.create_table('models',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_models'))
    )
    op.create_table('principals',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_principals'))
    )
    op.create_table('promotions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('from_stage', sa.String(length=64), nullable=False),
    sa.Column('to_stage', sa.String(length=64), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('attestation_blob', sa.String(length=71), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions'))
    )
    op.create_table('version_files',
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=71), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('model', 'number', 'path', name=op.f('pk_version_files'))
    )
    op.create_table('grants',
    sa.Column('principal', sa.String(length=200), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['principal'], ['principals.name'], name=op.f('fk_grants_principal_principals')),
    sa.PrimaryKeyConstraint('principal', 'model', name=op.f('pk_grants'))
    )
    op.create_table('tokens',
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('principal', sa.String(length=200), nullable=False),
    sa.Column('secret_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['principal'], ['principals.name'], name=op.f('fk_tokens_principal_principals')),
    sa.PrimaryKeyConstraint('token_id', name=op.f('pk_tokens'))
    )
    op.create_table('versions',
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('root_digest', sa.String(length=71), nullable=False),
    sa.Column('layout', sa.String(length=8), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('registered_by', sa.String(length=200), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('licence', sa.String(length=100), nullable=False),
    sa.Column('training_data_digest', sa.String(length=71), nullable=False),
    sa.Column('parent', sa.String(length=220), nullable=False),
    sa.Column('signature_blob', sa.String(length=71), nullable=True),
    sa.Column('scan_blob', sa.String(length=71), nullable=True),
    sa.Column('assessment_blob', sa.String(length=71), nullable=True),
    sa.ForeignKeyConstraint(['model'], ['models.name'], name=op.f('fk_versions_model_models')),
    sa.PrimaryKeyConstraint('model', 'number', name=op.f('pk_versions'))
    )


def downgrade() -> None:
    op.drop_table('versions')
    op.drop_table('tokens')
    op.drop_table('grants')
    op.drop_table('version_files')
    op.drop_table('promotions')
    op.drop_table('principals')
    op.drop_table('models')
    op.drop_table('audit_heads')
    op.drop_table('audit_entries')
    op.drop_table('audit_checkpoints')
    op.drop_table('approvals')
