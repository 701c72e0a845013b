"""knowledge audit: knowledge_event (who changed the knowledge base, when, what replaced what),
document.uploader, and the per-channel uploader policy (uploader_policy, uploader)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('knowledge_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('action', sa.Enum('uploaded', 'replaced', 'deleted', 'restored', 'refused', name='knowledge_action',
                                native_enum=False, length=16), nullable=False),
    sa.Column('document_id', sa.String(length=32), nullable=True),
    sa.Column('filename', sa.String(length=512), nullable=False),
    sa.Column('actor_channel', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.String(length=255), nullable=False),
    sa.Column('replaced_document_id', sa.String(length=32), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_knowledge_event_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_knowledge_event'))
    )
    with op.batch_alter_table('knowledge_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_knowledge_event_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_knowledge_event_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_knowledge_event_tenant_at', ['tenant_id', 'at'], unique=False)

    op.create_table('uploader_policy',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('mode', sa.Enum('admins', 'listed', 'anyone', 'nobody', name='upload_mode', native_enum=False, length=16),
              nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_uploader_policy_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_uploader_policy')),
    sa.UniqueConstraint('tenant_id', 'channel', name=op.f('uq_uploader_policy_tenant_id_channel'))
    )
    with op.batch_alter_table('uploader_policy', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploader_policy_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('uploader',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('may_replace', sa.Boolean(), nullable=False),
    sa.Column('note', sa.String(length=255), nullable=False),
    sa.Column('added_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_uploader_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_uploader')),
    sa.UniqueConstraint('tenant_id', 'channel', 'user_id', name=op.f('uq_uploader_tenant_id_channel_user_id'))
    )
    with op.batch_alter_table('uploader', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploader_tenant_id'), ['tenant_id'], unique=False)

    with op.batch_alter_table('document', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uploader', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('document', schema=None) as batch_op:
        batch_op.drop_column('uploader')

    with op.batch_alter_table('uploader', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uploader_tenant_id'))

    op.drop_table('uploader')
    with op.batch_alter_table('uploader_policy', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uploader_policy_tenant_id'))

    op.drop_table('uploader_policy')
    with op.batch_alter_table('knowledge_event', schema=None) as batch_op:
        batch_op.drop_index('ix_knowledge_event_tenant_at')
        batch_op.drop_index(batch_op.f('ix_knowledge_event_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_knowledge_event_document_id'))

    op.drop_table('knowledge_event')
