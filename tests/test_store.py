"""The store's models, migrations and transactions on SQLite and PostgreSQL."""
from sqlalchemy import inspect, select

from mlcomp.db import Base, Dag, Project, Task, TaskStatus, immediate


def test_migrations_create_every_table(any_store):
    tables = set(inspect(any_store.kw["bind"]).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_task_round_trip_keeps_enum_and_json(any_store):
    with any_store.begin() as session:
        immediate(session)
        project = Project(name="p")
        dag = Dag(name="d", project=project, config="info: {}")
        session.add(Task(dag=dag, name="train", type="train", gpus=[0, 2], executor_config={"lr": 0.1}))
    with any_store() as session:
        task = session.scalars(select(Task)).one()
        assert task.status is TaskStatus.not_ran
        assert task.gpus == [0, 2]
        assert task.executor_config == {"lr": 0.1}
        assert task.dag.project.name == "p"
