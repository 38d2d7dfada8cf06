"""shared GPUs: preemptible tasks, the task a preempted one pauses for, and every preemption's times

Revision ID: shared_gpus
Revises: report_journal

``task.preemptible`` says whether the supervisor may pause a task for one of higher priority;
``task.preempted_by`` names the task it pauses for while it stops and while it waits paused; the
``preemption`` table keeps each preemption (asked, paused, placed again) for the task page and
for ``preempt_min_run``.
"""
from alembic import op
import sqlalchemy as sa


revision = "shared_gpus"
down_revision = "report_journal"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("preempted_by", sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f("fk_task_preempted_by_task"), "task", ["preempted_by"], ["id"])
    op.create_table(
        "preemption",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("by_task_id", sa.Integer(), nullable=False),
        sa.Column("requested", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumed", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name=op.f("fk_preemption_task_id_task")),
        sa.ForeignKeyConstraint(["by_task_id"], ["task.id"], name=op.f("fk_preemption_by_task_id_task")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preemption")),
    )
    with op.batch_alter_table("preemption") as batch:
        batch.create_index(batch.f("ix_preemption_task_id"), ["task_id"], unique=False)


def downgrade():
    op.drop_table("preemption")
    with op.batch_alter_table("task") as batch:
        batch.drop_constraint(batch.f("fk_task_preempted_by_task"), type_="foreignkey")
        batch.drop_column("preempted_by")
        batch.drop_column("preemptible")
