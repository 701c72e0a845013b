"""bus: pending_message (fairness backlog), processed_message (consumer idempotency), dead_letter (DLQ index)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 03:32:18.600264
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dead_letter',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('message_type', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.JSON(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('dead_lettered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('replay_message_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letter')),
    sa.UniqueConstraint('queue', 'message_id', name=op.f('uq_dead_letter_queue_message_id'))
    )
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.create_index('ix_dead_letter_queue_status', ['queue', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_dead_letter_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('pending_message',
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('queue', sa.String(length=128), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_pending_message'))
    )
    with op.batch_alter_table('pending_message', schema=None) as batch_op:
        batch_op.create_index('ix_pending_message_queue_tenant', ['queue', 'tenant_id'], unique=False)

    op.create_table('processed_message',
    sa.Column('consumer', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'key', name=op.f('pk_processed_message'))
    )
    with op.batch_alter_table('processed_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_processed_message_processed_at'), ['processed_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('processed_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_processed_message_processed_at'))

    op.drop_table('processed_message')
    with op.batch_alter_table('pending_message', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_message_queue_tenant')

    op.drop_table('pending_message')
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letter_tenant_id'))
        batch_op.drop_index('ix_dead_letter_queue_status')

    op.drop_table('dead_letter')
