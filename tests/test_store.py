"""The store's models, migrations and transactions on SQLite and PostgreSQL."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from mlcomp.db import Base, Dag, Project, Task, TaskStatus, immediate, make_engine


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


OPEN_AT = """
import sys, time
from pathlib import Path

import alembic.command  # imported before the start line, so the processes migrate at the same moment
from mlcomp.db import open_store
from mlcomp.settings import Settings

url, start, root = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
open_store(Settings(root=root, db_url=url)).kw["bind"].dispose()
"""


def _open_at_once(url, root, processes: int) -> list:
    """Runs ``processes`` Python processes that each :func:`open_store` ``url`` at the same moment;
    their (return code, stderr) pairs."""
    import subprocess
    import sys
    import time

    start = time.time() + 4.0  # every process has imported everything by then
    children = [subprocess.Popen([sys.executable, "-c", OPEN_AT, url, repr(start), str(root)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for _ in range(processes)]
    errors = [child.communicate(timeout=120)[1] for child in children]
    return [(child.returncode, error) for child, error in zip(children, errors)]


@pytest.mark.slow
@pytest.mark.postgres
def test_processes_opening_a_fresh_postgresql_database_at_once_all_succeed(pg_url, tmp_path):
    from mlcomp.db.session import SCHEMA_REVISION, at_head

    results = _open_at_once(pg_url, tmp_path, 6)
    assert [rc for rc, _ in results] == [0] * 6, "\n".join(err for rc, err in results if rc)[-3000:]
    engine = make_engine(pg_url)
    assert at_head(engine), f"not at {SCHEMA_REVISION}"
    engine.dispose()


@pytest.mark.slow
def test_processes_opening_a_fresh_sqlite_database_at_once_all_succeed(settings):
    results = _open_at_once(settings.db_url, settings.root, 4)
    assert [rc for rc, _ in results] == [0] * 4, "\n".join(err for rc, err in results if rc)[-3000:]


def test_migrations_at_head_match_the_models(any_store):
    """Alembic's autogenerate finds nothing to add, drop or alter between the migrated schema and
    ``Base.metadata`` (tables, columns, types, nullability, indexes, unique constraints, foreign keys)."""
    with any_store.kw["bind"].connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
