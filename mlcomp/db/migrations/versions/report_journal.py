"""report journal: how far each attempt's report journal reached the store (table report_journal)

Revision ID: report_journal
Revises: ui_sessions

A task's processes write their reports (log lines, metrics, progress, checkpoint records, the
result) to a journal file in the attempt's folder first; ``report_journal.replayed`` is how many
bytes of it are in the store, written in the same transaction as the rows, so a journal replayed
after the database was away reaches it exactly once.
"""
from alembic import op
import sqlalchemy as sa


revision = "report_journal"
down_revision = "ui_sessions"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "report_journal",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("computer", sa.String(length=200), nullable=False),
        sa.Column("replayed", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name=op.f("fk_report_journal_task_id_task")),
        sa.PrimaryKeyConstraint("task_id", "attempt", "computer", name=op.f("pk_report_journal")),
    )


def downgrade():
    op.drop_table("report_journal")
