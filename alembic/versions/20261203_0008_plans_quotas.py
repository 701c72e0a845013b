"""plans and quotas: per-tenant plan overrides (tenant_plan), usage counters locked by the
transaction that consumes them (tenant_usage), and idempotency charges (quota_charge)

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-03 19:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMITS = ('max_documents', 'max_stored_bytes', 'max_chunks', 'max_products', 'max_questions_per_day',
          'max_questions_per_month', 'max_uploads_per_hour')


def upgrade() -> None:
    op.create_table('tenant_plan',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=True),
    *[sa.Column(limit, sa.BigInteger(), nullable=True) for limit in LIMITS],
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_tenant_plan_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_tenant_plan'))
    )
    op.create_table('tenant_usage',
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('documents', sa.BigInteger(), nullable=False),
    sa.Column('blob_bytes', sa.BigInteger(), nullable=False),
    sa.Column('chunks', sa.BigInteger(), nullable=False),
    sa.Column('products', sa.BigInteger(), nullable=False),
    sa.Column('questions_day', sa.Integer(), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('questions_month', sa.Integer(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('uploads_hour', sa.Integer(), nullable=False),
    sa.Column('hour', sa.String(length=13), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_tenant_usage_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_tenant_usage'))
    )
    op.create_table('quota_charge',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_quota_charge_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_charge')),
    sa.UniqueConstraint('tenant_id', 'kind', 'key', name=op.f('uq_quota_charge_tenant_id_kind_key'))
    )
    with op.batch_alter_table('quota_charge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quota_charge_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('quota_charge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quota_charge_tenant_id'))

    op.drop_table('quota_charge')
    op.drop_table('tenant_usage')
    op.drop_table('tenant_plan')
