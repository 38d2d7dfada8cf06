"""restart-safe workers: log offsets per attempt, supervisor heartbeats

Revision ID: restart_safe_workers
Revises: 0001
Create Date: 2026-12-03 19:40:00

``attempt.log_offsets`` is how far a worker has read the attempt's ``stdout`` and ``stderr``
files into ``log_line`` rows (bytes), written in the same transaction as the rows, so a restarted
worker follows the files from there. ``supervisor`` holds one row per running supervisor with a
heartbeat, so any process sharing the store can tell whether one serves it.
"""
from alembic import op
import sqlalchemy as sa


revision = 'restart_safe_workers'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('attempt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('log_offsets', sa.JSON(), nullable=True))
    op.create_table('supervisor',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('heartbeat', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_supervisor'))
    )


def downgrade():
    op.drop_table('supervisor')
    with op.batch_alter_table('attempt', schema=None) as batch_op:
        batch_op.drop_column('log_offsets')
