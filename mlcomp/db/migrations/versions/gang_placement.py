"""gang placement: a task's parts on several computers, a computer's rendezvous ports, a
checkpoint's content in the store

Revision ID: gang_placement
Revises: resource_history
"""
from alembic import op
import sqlalchemy as sa


revision = 'gang_placement'
down_revision = 'resource_history'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('task') as batch:
        batch.add_column(sa.Column('placement', sa.JSON(), nullable=True))
    with op.batch_alter_table('computer') as batch:
        batch.add_column(sa.Column('ports', sa.JSON(), nullable=True))
    with op.batch_alter_table('checkpoint') as batch:
        batch.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('checkpoint') as batch:
        batch.drop_column('sha256')
    with op.batch_alter_table('computer') as batch:
        batch.drop_column('ports')
    with op.batch_alter_table('task') as batch:
        batch.drop_column('placement')
