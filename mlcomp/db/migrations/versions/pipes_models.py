"""pipes and models: MLComp's pipe templates (tables pipe, pipe_file), named models (model) and
the DAGs started from them (model_run)

Revision ID: pipes_models
Revises: gang_placement
"""
from alembic import op
import sqlalchemy as sa


revision = "pipes_models"
down_revision = "gang_placement"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "pipe",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_pipe_project_id_project")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipe")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_pipe_project_id")),
    )
    op.create_table(
        "pipe_file",
        sa.Column("pipe_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["pipe_id"], ["pipe.id"], name=op.f("fk_pipe_file_pipe_id_pipe")),
        sa.ForeignKeyConstraint(["sha256"], ["snapshot_blob.sha256"],
                                name=op.f("fk_pipe_file_sha256_snapshot_blob")),
        sa.PrimaryKeyConstraint("pipe_id", "path", name=op.f("pk_pipe_file")),
    )
    op.create_index(op.f("ix_pipe_file_sha256"), "pipe_file", ["sha256"], unique=False)
    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("which", sa.String(length=1000), nullable=False),
        sa.Column("checkpoint", sa.String(length=1000), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_model_project_id_project")),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name=op.f("fk_model_task_id_task")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_model_project_id")),
    )
    op.create_index(op.f("ix_model_task_id"), "model", ["task_id"], unique=False)
    op.create_table(
        "model_run",
        sa.Column("dag_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("pipe_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["dag_id"], ["dag.id"], name=op.f("fk_model_run_dag_id_dag")),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], name=op.f("fk_model_run_model_id_model")),
        sa.ForeignKeyConstraint(["pipe_id"], ["pipe.id"], name=op.f("fk_model_run_pipe_id_pipe")),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_model_run")),
    )
    op.create_index(op.f("ix_model_run_model_id"), "model_run", ["model_id"], unique=False)
    op.create_index(op.f("ix_model_run_pipe_id"), "model_run", ["pipe_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_model_run_pipe_id"), table_name="model_run")
    op.drop_index(op.f("ix_model_run_model_id"), table_name="model_run")
    op.drop_table("model_run")
    op.drop_index(op.f("ix_model_task_id"), table_name="model")
    op.drop_table("model")
    op.drop_index(op.f("ix_pipe_file_sha256"), table_name="pipe_file")
    op.drop_table("pipe_file")
    op.drop_table("pipe")
