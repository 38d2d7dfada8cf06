"""scoped computers: the DAGs a ``dag submit --wait`` worker serves

Revision ID: scoped_computers
Revises: restart_safe_workers
Create Date: 2026-12-03 19:40:00

``computer.dag_ids`` is None for a worker of every DAG (``mlcomp worker``, ``mlcomp server``) and
the list of DAG ids for the worker of ``mlcomp dag submit --wait``, which claims only their
tasks: supervisors place other DAGs' tasks elsewhere.
"""
from alembic import op
import sqlalchemy as sa


revision = 'scoped_computers'
down_revision = 'restart_safe_workers'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('computer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dag_ids', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('computer', schema=None) as batch_op:
        batch_op.drop_column('dag_ids')
