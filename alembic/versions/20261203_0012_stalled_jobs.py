"""stalled jobs: job.last_progress_at, job.stalled_at, job.stall_reason, job.stall_detail (issue 19.4)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 20:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_progress_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('stalled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('stall_reason', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('stall_detail', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('stall_detail')
        batch_op.drop_column('stall_reason')
        batch_op.drop_column('stalled_at')
        batch_op.drop_column('last_progress_at')
