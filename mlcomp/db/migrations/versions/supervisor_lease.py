"""supervisor lease: which supervisor of every DAG is the active one (table supervisor_lease)

Revision ID: supervisor_lease
Revises: pipes_models

One row, ``name`` ``'supervisor'``, created here released (``holder``, ``expires`` and
``process`` NULL): the supervisor of every DAG (``mlcomp server``) that holds it supervises, the
others stand by (:mod:`mlcomp.supervisor.lease`).
"""
from alembic import op
import sqlalchemy as sa


revision = "supervisor_lease"
down_revision = "pipes_models"
branch_labels = None
depends_on = None


def upgrade():
    lease = op.create_table(
        "supervisor_lease",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("process", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_supervisor_lease")),
    )
    op.bulk_insert(lease, [{"name": "supervisor", "holder": None, "expires": None, "process": None}])


def downgrade():
    op.drop_table("supervisor_lease")
