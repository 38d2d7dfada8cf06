"""adaptive search: trials and rung records (tables search_trial, search_rung)

The task statuses ``paused`` and ``pruned`` need no change: the status column is a plain
string of up to 20 characters without a check constraint.

Revision ID: search_trials
Revises: scoped_computers
"""
from alembic import op
import sqlalchemy as sa


revision = "search_trials"
down_revision = "scoped_computers"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "search_trial",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("system_attrs", sa.JSON(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("prune", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["task.id"], name=op.f("fk_search_trial_search_id_task")),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name=op.f("fk_search_trial_task_id_task")),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_search_trial")),
        sa.UniqueConstraint("search_id", "number", name=op.f("uq_search_trial_search_id")),
    )
    op.create_index(op.f("ix_search_trial_search_id"), "search_trial", ["search_id"], unique=False)
    op.create_table(
        "search_rung",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["task.id"], name=op.f("fk_search_rung_search_id_task")),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name=op.f("fk_search_rung_task_id_task")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_rung")),
        sa.UniqueConstraint("task_id", "rung", name=op.f("uq_search_rung_task_id")),
    )
    op.create_index(op.f("ix_search_rung_search_id"), "search_rung", ["search_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_search_rung_search_id"), table_name="search_rung")
    op.drop_table("search_rung")
    op.drop_index(op.f("ix_search_trial_search_id"), table_name="search_trial")
    op.drop_table("search_trial")
