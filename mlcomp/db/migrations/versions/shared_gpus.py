"""shared GPUs: preemptible tasks, the task a preempted one pauses for, and every preemption's times

Revision ID: shared_gpus
Revises: report_journal

``task.preemptible`` says whether the supervisor may pause a task for one of higher priority;
``task.preempted_by`` names the task it pauses for while it stops and while it waits paused; the
``preemption`` table keeps each preemption (asked, paused, placed again) for the task page and
for ``preempt_min_run``.

An attempt that ended ``paused`` gets its end (``attempt.finished``), as :mod:`mlcomp.lifecycle`
stamps it from this version on: before, only a search trial paused at a rung ended paused (the
``preemption`` table is new here), so its end is when its task last changed (``task.updated``)
while it is the task's current attempt, else when the next attempt started (it was promoted);
one promoted whose next attempt has not started keeps no end. The downgrade keeps the ends.
"""
from alembic import op
import sqlalchemy as sa


revision = "shared_gpus"
down_revision = "report_journal"
branch_labels = None
depends_on = None


PAUSED_ENDS = sa.text("""
UPDATE attempt SET finished = COALESCE(
    (SELECT task.updated FROM task WHERE task.id = attempt.task_id AND task.attempt = attempt.number),
    (SELECT later.started FROM attempt AS later
     WHERE later.task_id = attempt.task_id AND later.number = attempt.number + 1))
WHERE status = 'paused' AND finished IS NULL
""")
"""The end of each attempt that ended paused (a search trial at a rung), on SQLite and PostgreSQL."""


def upgrade():
    op.add_column("task", sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.false()))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite has no ALTER of constraints, and a batch would copy task and drop the old table,
        # which the rows of other tables reference: refused inside the migration's transaction
        op.add_column("task", sa.Column("preempted_by", sa.Integer(), sa.ForeignKey("task.id"), nullable=True),
                      inline_references=True)
    else:
        op.add_column("task", sa.Column("preempted_by", sa.Integer(), nullable=True))
        op.create_foreign_key(op.f("fk_task_preempted_by_task"), "task", "task", ["preempted_by"], ["id"])
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
    op.execute(PAUSED_ENDS)


def downgrade():
    op.drop_table("preemption")
    with op.batch_alter_table("task") as batch:  # the foreign key goes with its column
        batch.drop_column("preempted_by")
        batch.drop_column("preemptible")
