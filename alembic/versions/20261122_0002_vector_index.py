"""vector index: vector_tenant (per-tenant change sequence) and vector_entry (embedded index truth)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:47:38.797398
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('vector_entry',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('document_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('heading_path', sa.JSON(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_vector_entry'))
    )
    with op.batch_alter_table('vector_entry', schema=None) as batch_op:
        batch_op.create_index('ix_vector_entry_tenant_document', ['tenant_id', 'document_id'], unique=False)
        batch_op.create_index('ix_vector_entry_tenant_seq', ['tenant_id', 'seq'], unique=False)

    op.create_table('vector_tenant',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('generation', sa.String(length=32), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('dimension', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_vector_tenant'))
    )


def downgrade() -> None:
    op.drop_table('vector_tenant')
    with op.batch_alter_table('vector_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_vector_entry_tenant_seq')
        batch_op.drop_index('ix_vector_entry_tenant_document')

    op.drop_table('vector_entry')
