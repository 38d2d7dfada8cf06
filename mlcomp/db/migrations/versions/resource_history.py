"""resource history (the resource_sample table); a DAG's tags and note

Revision ID: resource_history
Revises: search_trials
"""
from alembic import op
import sqlalchemy as sa


revision = 'resource_history'
down_revision = 'search_trials'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('resource_sample',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('computer', sa.String(length=200), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('gpu', sa.Integer(), nullable=True),
    sa.Column('resolution', sa.Integer(), nullable=False),
    sa.Column('time', sa.BigInteger(), nullable=False),
    sa.Column('utilization', sa.Float(), nullable=True),
    sa.Column('memory', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['task.id'], name=op.f('fk_resource_sample_task_id_task')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resource_sample'))
    )
    op.create_index('ix_resource_sample_computer', 'resource_sample', ['computer', 'resolution', 'time'])
    op.create_index('ix_resource_sample_task', 'resource_sample', ['task_id', 'resolution', 'time'])
    with op.batch_alter_table('dag') as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('dag') as batch_op:
        batch_op.drop_column('note')
        batch_op.drop_column('tags')
    op.drop_index('ix_resource_sample_task', table_name='resource_sample')
    op.drop_index('ix_resource_sample_computer', table_name='resource_sample')
    op.drop_table('resource_sample')
