"""ui sessions: the browsers logged in to the UI (table ui_session)

Revision ID: ui_sessions
Revises: supervisor_lease

A login stores a random session id here and in its signed cookie; a logout deletes the row, so a
copy of the cookie taken before is refused (:mod:`ui.auth`).
"""
from alembic import op
import sqlalchemy as sa


revision = "ui_sessions"
down_revision = "supervisor_lease"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ui_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ui_session")),
    )


def downgrade():
    op.drop_table("ui_session")
