"""handoff to a person: conversation (who owns it: bot / waiting_for_human / with_human / closed),
handoff_event (its transitions), handoff_message (staff replies and notices relayed to the
customer), handoff_settings (per tenant), inbound_message.outcome

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('conversation',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('conversation_id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=False),
    sa.Column('route', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('handoff_reason', sa.String(length=32), nullable=True),
    sa.Column('refused_streak', sa.Integer(), nullable=False),
    sa.Column('handed_off_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_human_reply_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('staff_team_id', sa.String(length=64), nullable=True),
    sa.Column('staff_channel_id', sa.String(length=64), nullable=True),
    sa.Column('staff_thread_ts', sa.String(length=64), nullable=True),
    sa.Column('reply_deadline_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('flagged', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_conversation_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation')),
    sa.UniqueConstraint('tenant_id', 'channel', 'conversation_id', name=op.f('uq_conversation_tenant_id_channel_conversation_id'))
    )
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversation_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_conversation_state_deadline', ['state', 'reply_deadline_at'], unique=False)
        batch_op.create_index('ix_conversation_staff_thread', ['staff_channel_id', 'staff_thread_ts'], unique=False)

    op.create_table('handoff_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('conversation_id', sa.String(length=32), nullable=False),
    sa.Column('from_state', sa.String(length=24), nullable=False),
    sa.Column('to_state', sa.String(length=24), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], name=op.f('fk_handoff_event_conversation_id_conversation'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_handoff_event_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handoff_event'))
    )
    with op.batch_alter_table('handoff_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handoff_event_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_handoff_event_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('handoff_message',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('conversation_id', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('author', sa.String(length=16), nullable=False),
    sa.Column('author_id', sa.String(length=255), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], name=op.f('fk_handoff_message_conversation_id_conversation'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_handoff_message_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handoff_message')),
    sa.UniqueConstraint('tenant_id', 'external_id', name=op.f('uq_handoff_message_tenant_id_external_id'))
    )
    with op.batch_alter_table('handoff_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handoff_message_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_handoff_message_conv', ['conversation_id', 'created_at'], unique=False)
        batch_op.create_index('ix_handoff_message_status', ['status', 'created_at'], unique=False)

    op.create_table('handoff_settings',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('staff_team_id', sa.String(length=64), nullable=True),
    sa.Column('staff_channel_id', sa.String(length=64), nullable=True),
    sa.Column('hours', sa.Text(), nullable=False),
    sa.Column('expected_wait', sa.Text(), nullable=False),
    sa.Column('timeout_minutes', sa.Integer(), nullable=False),
    sa.Column('after_refusals', sa.Integer(), nullable=False),
    sa.Column('keywords', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_handoff_settings_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handoff_settings'))
    )
    with op.batch_alter_table('handoff_settings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handoff_settings_tenant_id'), ['tenant_id'], unique=True)

    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_column('outcome')

    with op.batch_alter_table('handoff_settings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handoff_settings_tenant_id'))
    op.drop_table('handoff_settings')

    with op.batch_alter_table('handoff_message', schema=None) as batch_op:
        batch_op.drop_index('ix_handoff_message_status')
        batch_op.drop_index('ix_handoff_message_conv')
        batch_op.drop_index(batch_op.f('ix_handoff_message_tenant_id'))
    op.drop_table('handoff_message')

    with op.batch_alter_table('handoff_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handoff_event_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_handoff_event_conversation_id'))
    op.drop_table('handoff_event')

    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_index('ix_conversation_staff_thread')
        batch_op.drop_index('ix_conversation_state_deadline')
        batch_op.drop_index(batch_op.f('ix_conversation_tenant_id'))
    op.drop_table('conversation')
