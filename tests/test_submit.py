"""Submission on SQLite and PostgreSQL: rows written, grids expanded, and nothing written for a
rejected file."""
import dataclasses
import re

import pytest
from sqlalchemy import func, select

from mlcomp.dag import generations, materialize, submit, task_graph
from mlcomp.db import Base, Dag, Project, SnapshotBlob, SnapshotFile, Task, TaskDependency
from mlcomp.errors import DagError

USER_EXECUTORS = '''
from executors import Executor


class Echo(Executor):
    type_name = "echo"

    @classmethod
    def validate(cls, spec, ctx):
        if not isinstance(spec.get("text"), str):
            raise ctx.error("text", f"expected a string, got {spec.get('text')!r}")
        return {"text": spec["text"], "cell": dict(ctx.grid_cell or {})}
'''

DAG = """\
info:
  name: demo
  project: examples
  expdir: exp
executors:
  prep:
    type: echo
    text: prep
    env: {A: 1}
  sweep:
    type: echo
    text: t
    depends: prep
    gpu: "1-2"
    cpu: 2
    memory: 3
    retries: 1
    priority: 5
    timeout: 30
    parallel: 2
    grid:
      - text: [a, b]
      - seed: "0-1"
  report:
    type: bash
    command: echo done
    depends: [sweep, prep]
"""


@pytest.fixture
def dag_file(write_file):
    write_file("exp/executors.py", USER_EXECUTORS)
    write_file("exp/main.py", "VERSION = 1\n")
    write_file("exp/data/big.csv", "skipped")
    return write_file("dag.yml", DAG)


def by_name(session, dag):
    tasks = session.scalars(select(Task).where(Task.dag_id == dag.id).order_by(Task.id))
    return {task.name: task for task in tasks}


def depends_on(session, task):
    ids = session.scalars(select(TaskDependency.depend_id).where(TaskDependency.task_id == task.id)).all()
    return sorted(session.get(Task, i).name for i in ids)


def test_submit_writes_dag_tasks_grid_and_dependencies(any_store, settings, dag_file):
    with any_store.begin() as session:
        (dag,) = submit(session, settings, dag_file)
        dag_id = dag.id
    with any_store() as session:
        dag = session.get(Dag, dag_id)
        assert (dag.name, dag.project.name, dag.config, dag.source) == ("demo", "examples", DAG, str(dag_file))
        tasks = by_name(session, dag)
        cells = ["sweep text=a seed=0", "sweep text=a seed=1", "sweep text=b seed=0", "sweep text=b seed=1"]
        assert list(tasks) == ["prep", "sweep", *cells, "report"]
        assert (tasks["prep"].type, tasks["prep"].executor_config, tasks["prep"].env) == (
            "echo", {"text": "prep", "cell": {}}, {"A": "1"})
        parent = tasks["sweep"]
        assert parent.type == "grid_search" and parent.parent_id is None
        assert parent.executor_config == {"template": {"type": "echo", "text": "t"}, "parallel": 2, "cells": 4}
        assert (parent.gpu_min, parent.gpu_max, parent.cpu, parent.memory) == (0, 0, 0, 0.0)
        child = tasks["sweep text=b seed=1"]
        assert (child.type, child.parent_id, child.grid_cell) == ("echo", parent.id, {"text": "b", "seed": 1})
        assert child.executor_config == {"text": "b", "cell": {"text": "b", "seed": 1}}
        assert (child.gpu_min, child.gpu_max, child.cpu, child.memory) == (1, 2, 2, 3.0)
        assert (child.retries, child.priority, child.timeout) == (1, 5, 30.0)
        assert [depends_on(session, tasks[name]) for name in ("prep", "sweep", cells[0], "report")] == [
            [], ["prep"], ["prep"], ["prep", "sweep"]]
        assert tasks["report"].executor_config == {"command": "echo done"}
        paths = session.scalars(select(SnapshotFile.path).where(SnapshotFile.dag_id == dag_id)).all()
        assert sorted(paths) == ["executors.py", "main.py"]
        graph = task_graph(session, dag_id)
        assert [[graph.nodes[n]["name"] for n in g] for g in generations(graph)] == [
            ["prep"], ["sweep", *cells], ["report"]]


def test_dag_level_grid_makes_one_dag_per_cell(any_store, settings, dag_file, write_file):
    text = DAG.replace("executors:\n", "grid:\n  - size: [s, m]\nexecutors:\n", 1)
    path = write_file("grid.yml", text)
    with any_store.begin() as session:
        dags = submit(session, settings, path)
        first = submit(session, settings, dag_file)[0]
        assert [dag.name for dag in dags] == ["demo size=s", "demo size=m"]
        assert [dag.grid_cell for dag in dags] == [{"size": "s"}, {"size": "m"}]
        tasks = by_name(session, dags[1])
        assert tasks["prep"].grid_cell == {"size": "m"}
        assert tasks["sweep text=a seed=0"].grid_cell == {"size": "m", "text": "a", "seed": 0}
        assert len(tasks) == 7 and first.project_id == dags[0].project_id
        assert session.scalar(select(func.count()).select_from(Project)) == 1
        # three DAGs, two files each, one blob per distinct content
        assert session.scalar(select(func.count()).select_from(SnapshotFile)) == 6
        assert session.scalar(select(func.count()).select_from(SnapshotBlob)) == 2


def test_sets_apply_before_validation(store, settings, dag_file):
    with store.begin() as session:
        (dag,) = submit(session, settings, dag_file, ["executors.prep.gpu=3", "executors.prep.text=hi"])
        prep = by_name(session, dag)["prep"]
        assert (prep.gpu_min, prep.executor_config["text"]) == (3, "hi")
        assert dag.config.endswith("# --set executors.prep.gpu=3\n# --set executors.prep.text=hi")


def test_a_bash_command_may_use_the_tasks_env_names(store, settings, dag_file):
    sets = ["executors.report.command=echo $mode", "executors.report.env.mode=fast"]
    with store.begin() as session:
        (dag,) = submit(session, settings, dag_file, sets)
        assert by_name(session, dag)["report"].executor_config == {"command": "echo $mode"}
    with pytest.raises(DagError, match=r"\$mode is not a grid name"), store.begin() as session:
        submit(session, settings, dag_file, sets[:1])


def test_a_snapshot_leaves_out_mlcomps_own_files_when_its_root_is_in_the_expdir(store, settings):
    """The settings' root (with its SQLite database, task and data folders) inside the expdir."""
    (settings.tasks_dir / "1").mkdir(parents=True)
    (settings.tasks_dir / "1" / "out.txt").write_text("a task's output")
    (settings.data_dir / "p").mkdir(parents=True)
    (settings.data_dir / "p" / "x.npz").write_bytes(b"0")
    dag_file = settings.root / "dag.yml"
    dag_file.write_text("info: {name: d, project: p}\nexecutors:\n  a: {type: bash, command: 'true'}\n")
    with store.begin() as session:
        (dag,) = submit(session, settings, dag_file)
        paths = set(session.scalars(select(SnapshotFile.path).where(SnapshotFile.dag_id == dag.id)))
    assert paths == {"dag.yml"}  # not mlcomp.db, its -wal/-shm, tasks/ or data/


def test_code_edited_after_submission_does_not_change_the_dag(store, settings, dag_file, tmp_path):
    with store.begin() as session:
        (dag,) = submit(session, settings, dag_file)
    (tmp_path / "exp" / "main.py").write_text("VERSION = 2\n")
    with store() as session:
        materialize(session, dag.id, tmp_path / "task" / "code")
    assert (tmp_path / "task" / "code" / "main.py").read_text() == "VERSION = 1\n"


def count_rows(sessionmaker):
    with sessionmaker() as session:
        return {table.name: session.scalar(select(func.count()).select_from(table))
                for table in Base.metadata.sorted_tables}


REJECTED = [  # (text replaced in DAG, replacement, line of the error, part of the message)
    ("type: echo\n    text: prep", "type: nope\n    text: prep", 7,
     "task 'prep', key 'type': unknown executor type 'nope'; known types: bash, catalyst, click, download, echo, grid_search, infer"),
    ("text: prep", "text: 3", 8, "task 'prep', key 'text': expected a string, got 3"),
    ("command: echo done", "command: echo $oops", 26, "task 'report', key 'command': $oops"),
    ("- text: [a, b]", "- text: []", 22, "task 'sweep', key 'grid': text: the list of values is empty"),
    ("- text: [a, b]", "- seed: [7]", 23, "rows 1 and 2 both set 'seed'"),
    ("depends: prep\n", "depends: report\n", 13, "dependency cycle sweep → report → sweep"),
    ("gpu: \"1-2\"", "gpu: \"2-1\"", 14, "task 'sweep', key 'gpu'"),
    ("info:\n", "info:\n  - 1\n", 3, "YAML syntax error"),
    ("expdir: exp", "expdir: exp/data/..", 4, "over the limit of 1e-06 MB"),
]


def test_rejected_files_write_nothing(any_store, settings, dag_file, write_file):
    with any_store.begin() as session:
        submit(session, settings, dag_file)  # something already there
    before = count_rows(any_store)
    for old, new, line, fragment in REJECTED:
        path = write_file("bad.yml", DAG.replace(old, new, 1))
        tight = dataclasses.replace(settings, snapshot_max_mb=1e-6) if "limit" in fragment else settings
        with any_store.begin() as session:  # commits: a rejected file must not have written anything
            with pytest.raises(DagError) as info:
                submit(session, tight, path)
        assert re.match(rf"{re.escape(str(path))}:{line}:", str(info.value)), str(info.value)
        assert fragment in str(info.value)
        assert count_rows(any_store) == before, fragment


def test_grid_cell_name_must_not_collide_with_a_task(store, settings, dag_file, write_file):
    path = write_file("bad.yml", DAG.replace("  report:", "  sweep text=a seed=0:\n    type: bash\n"
                                                           "    command: x\n  report:", 1))
    with store.begin() as session, pytest.raises(DagError, match="'sweep text=a seed=0' is used twice"):
        submit(session, settings, path)
