"""feedback and delivery failures: answer_feedback (👍/👎 per answer and rater, with the question,
sources and answerer), delivery_failure (a message that did not reach the customer, and why), and
an index on inbound_message's conversations (the messaging window reads the last message)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 19:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('answer_feedback',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('message_id', sa.String(length=32), nullable=False),
    sa.Column('rating', sa.String(length=8), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('rater_id', sa.String(length=255), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('answerer', sa.String(length=64), nullable=False),
    sa.Column('comment_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['inbound_message.id'],
                            name=op.f('fk_answer_feedback_message_id_inbound_message'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_answer_feedback_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_answer_feedback')),
    sa.UniqueConstraint('message_id', 'rater_id', name=op.f('uq_answer_feedback_message_id_rater_id'))
    )
    with op.batch_alter_table('answer_feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_answer_feedback_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_answer_feedback_tenant_created', ['tenant_id', 'created_at'], unique=False)
        batch_op.create_index('ix_answer_feedback_rater', ['tenant_id', 'channel', 'rater_id'], unique=False)

    op.create_table('delivery_failure',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('conversation_id', sa.String(length=255), nullable=False),
    sa.Column('message_id', sa.String(length=32), nullable=True),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('by', sa.String(length=8), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['inbound_message.id'],
                            name=op.f('fk_delivery_failure_message_id_inbound_message'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_delivery_failure_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_failure'))
    )
    with op.batch_alter_table('delivery_failure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_failure_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_delivery_failure_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_delivery_failure_tenant_at', ['tenant_id', 'at'], unique=False)
        batch_op.create_index('ix_delivery_failure_conversation', ['tenant_id', 'channel', 'conversation_id'], unique=False)

    # the conversation's last inbound message (Instagram's messaging window) is read before every send
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_message_conversation', ['tenant_id', 'conversation_id', 'received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_message_conversation')

    with op.batch_alter_table('delivery_failure', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_failure_conversation')
        batch_op.drop_index('ix_delivery_failure_tenant_at')
        batch_op.drop_index(batch_op.f('ix_delivery_failure_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_delivery_failure_message_id'))

    op.drop_table('delivery_failure')
    with op.batch_alter_table('answer_feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_answer_feedback_rater')
        batch_op.drop_index('ix_answer_feedback_tenant_created')
        batch_op.drop_index(batch_op.f('ix_answer_feedback_tenant_id'))

    op.drop_table('answer_feedback')
