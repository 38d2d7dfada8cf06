"""A small, varied store for the UI tests (API, pages, browser): two projects, a DAG with a
running training task (metrics, logs, checkpoints on disk, progress), a grid search, a failed DAG
with a skipped dependent, a computer with GPUs and usage, and a code snapshot.

Imported by the ``tests/test_ui_*.py`` modules and ``tests/e2e`` (``tests/`` is on ``sys.path``
through its conftest). Rows are written directly (a fixture may set any status); every later
change goes through :mod:`mlcomp.control`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field

import pytest

from mlcomp.db import (
    Attempt, Checkpoint, Computer, Dag, LogLine, Metric, Project, SearchRung, SearchTrial, SnapshotBlob,
    SnapshotFile, Task, TaskDependency, TaskStatus,
)
from mlcomp.kinds import TaskKind

__all__ = ["Filled", "fill", "fill_search", "shared_app", "filled", "app", "client", "ro_shared", "ro_filled", "ro_app", "ro_client", "csrf_post", "dispose",
           "BATCH_POINTS", "EVIL"]

BATCH_POINTS = 3000
EVIL = "<script>alert('x')</script>"
T0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=20)
S = TaskStatus


@dataclass
class Filled:
    """Ids of what :func:`fill` wrote."""

    dag: int = 0
    failed_dag: int = 0
    prepare: int = 0
    train: int = 0
    infer: int = 0
    grid: int = 0
    cells: list[int] = field(default_factory=list)
    search: int = 0
    trials: list[int] = field(default_factory=list)
    broken: int = 0
    skipped: int = 0
    checkpoint: int = 0


def _task(session, dag, name, status, type_="python", **kwargs) -> Task:
    task = Task(dag=dag, name=name, type=type_, status=status, **kwargs)
    session.add(task)
    session.flush()
    session.add(Attempt(task_id=task.id, number=task.attempt, status=status, computer=task.computer,
                        gpus=list(task.gpus or []), started=task.started, finished=task.finished,
                        reason=task.reason))
    return task


def _depends(session, task, *on):
    for other in on:
        session.add(TaskDependency(task_id=task.id, depend_id=other.id))


def _snapshot(session, dag):
    files = {"train.py": b"import torch\n\ndef main():\n    return '<b>not html</b>'\n",
             "configs/train.yml": b"stages:\n  main:\n    num_epochs: 3\n", "weights.bin": b"\x00\xff\xfe"}
    for path, content in files.items():
        sha = hashlib.sha256(content).hexdigest()
        if session.get(SnapshotBlob, sha) is None:
            session.add(SnapshotBlob(sha256=sha, size=len(content), content=content))
        session.add(SnapshotFile(dag=dag, path=path, sha256=sha))


def _metrics(session, task_id, loss_offset=0.0, batches=0):
    rows = []
    for epoch in range(1, 4):
        for loader, shift in (("train", 0.0), ("valid", 0.1)):
            rows.append(dict(task_id=task_id, name="loss", loader=loader, stage="main", epoch=epoch, step=epoch,
                             kind="epoch", value=1.0 / epoch + shift + loss_offset, time=T0))
            rows.append(dict(task_id=task_id, name="accuracy01", loader=loader, stage="main", epoch=epoch,
                             step=epoch, kind="epoch", value=0.5 + 0.1 * epoch - shift - loss_offset, time=T0))
    for step in range(batches):
        rows.append(dict(task_id=task_id, name="loss", loader="train", stage="main", epoch=1 + step // 1000,
                         step=step, kind="batch", value=math.exp(-step / 800) + 0.05 * math.sin(step), time=T0))
    session.execute(Metric.__table__.insert(), rows)


SEARCH_CONFIG = {
    "template": {"type": "train", "main": {"metric": "accuracy01", "minimize": False, "loader": "valid"}},
    "search": {"space": {"lr": {"kind": "loguniform", "values": [0.001, 0.1], "path": "stages.optimizer_params.lr"},
                         "width": {"kind": "choice", "values": [8, 16], "path": "model_params.width"}},
               "sampler": "tpe", "trials": 4, "parallel": 2, "seed": 0,
               "scheduler": {"type": "asha", "metric": "accuracy01", "loader": "valid", "mode": "max",
                             "grace_epochs": 1, "max_epochs": 3, "reduction_factor": 3, "rungs": [1, 3]}},
    "resources": {}}


def fill_search(session, ids: Filled) -> None:
    """Adds to :func:`fill`'s DAG an ASHA search (rungs at 1 and 3 epochs) with a trial that
    reached 3 epochs, one pruned at rung 0 and one paused there; sets ``ids.search`` and
    ``ids.trials``. Does not commit."""
    dag = session.get(Dag, ids.dag)
    search = _task(session, dag, "asha", S.in_progress, TaskKind.SEARCH.value, executor_config=SEARCH_CONFIG)
    _depends(session, search, session.get(Task, ids.prepare))
    for number, (status, epochs, lr) in enumerate(((S.success, 3, 0.01), (S.pruned, 1, 0.09), (S.paused, 1, 0.002))):
        trial = _task(session, dag, f"asha trial {number}", status, "train", parent_id=search.id,
                      grid_cell={"lr": lr, "width": 8}, started=T0)
        session.add(SearchTrial(task_id=trial.id, search_id=search.id, number=number, params={"lr": lr, "width": 8},
                                system_attrs={}, target=1 if epochs == 3 else 0))
        values = [0.5 + 0.1 * epoch - 0.05 * number for epoch in range(1, epochs + 1)]
        session.execute(Metric.__table__.insert(), [
            dict(task_id=trial.id, name="accuracy01", loader="valid", stage="main", epoch=epoch, step=epoch,
                 kind="epoch", value=value, time=T0) for epoch, value in enumerate(values, 1)])
        session.add_all([SearchRung(search_id=search.id, task_id=trial.id, rung=rung, epoch=epoch,
                                    value=max(values[:epoch])) for rung, epoch in enumerate((1, 3)) if epoch <= epochs])
        ids.trials.append(trial.id)
    ids.search = search.id


def fill(session, settings) -> Filled:
    """Writes the store described in the module docstring; returns the ids. Does not commit."""
    ids = Filled()
    demo, other = Project(name="demo"), Project(name="other <b>")
    session.add_all([demo, other])
    session.add(Computer(name="box", address="127.0.0.1", cpu=8, memory=32.0, heartbeat=dt.datetime.now(dt.timezone.utc),
                         gpus=[{"index": 0, "memory": 8 << 30, "name": "Fake GPU"},
                               {"index": 1, "memory": 8 << 30, "name": "Fake GPU"}],
                         usage={"cpu": 37.5, "memory": 41.0,
                                "gpus": [{"index": 0, "utilization": 88, "memory_used": 3 << 30}]}))
    dag = Dag(name="digits", project=demo, config="info:\n  name: digits  # <i>yaml</i>\n", source="dags/digits.yml")
    session.add(dag)
    session.flush()
    _snapshot(session, dag)
    prepare = _task(session, dag, "prepare", S.success, started=T0, finished=T0 + dt.timedelta(seconds=5),
                    result={"rows": 1797})
    train = _task(session, dag, "train", S.in_progress, "train", computer="box", gpus=[0], gpu_min=1, gpu_max=1,
                  started=T0 + dt.timedelta(seconds=6), pid=None,
                  progress={"stage": "main", "epoch": 2, "epochs": 3, "batch": 10, "batches": 40, "eta": 95.0},
                  executor_config={"config": "configs/train.yml"})
    _depends(session, train, prepare)
    infer = _task(session, dag, "infer", S.not_ran, "infer", waiting_reason="waits for train")
    _depends(session, infer, train)
    grid = _task(session, dag, "search", S.in_progress, TaskKind.GRID.value,
                 executor_config={"template": {"type": "train", "main": {  # as the train executor stores it
                     "metric": "accuracy01", "minimize": False, "loader": "valid"}}, "parallel": None, "cells": 3})
    _depends(session, grid, prepare)
    for i, (lr, status) in enumerate(((0.1, S.success), (0.01, S.failed), (0.001, S.success))):
        cell = _task(session, dag, f"search lr={lr} model=m{i}", status, "train", parent_id=grid.id,
                     grid_cell={"lr": lr, "model": f"m{i}"}, started=T0, finished=T0 + dt.timedelta(minutes=1))
        _metrics(session, cell.id, loss_offset=0.05 * i)
        ids.cells.append(cell.id)
    _metrics(session, train.id, batches=BATCH_POINTS)
    session.add_all([LogLine(task_id=train.id, text=f"epoch line {i}", time=T0) for i in range(300)])
    session.add(LogLine(task_id=train.id, text=EVIL, level="error", stream="stderr", time=T0))
    folder = settings.tasks_dir / str(train.id) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.pth").write_bytes(b"weights" * 10)
    session.add(Checkpoint(task_id=train.id, path="checkpoints/best.pth", stage="main", epoch=1, metric=0.9, size=70))
    session.flush()  # the file is rewritten, and recorded again, at a better epoch
    checkpoint = Checkpoint(task_id=train.id, path="checkpoints/best.pth", stage="main", epoch=2, metric=0.93, size=70)
    session.add(checkpoint)

    failed_dag = Dag(name="bash " + EVIL, project=other, config="info: {}\n")
    session.add(failed_dag)
    session.flush()
    broken = _task(session, failed_dag, "broken", S.failed, "bash", reason="exit code 1", started=T0,
                   finished=T0 + dt.timedelta(seconds=3))
    skipped = _task(session, failed_dag, "after", S.skipped, "bash", reason="dependency broken failed")
    _depends(session, skipped, broken)
    session.flush()
    ids.dag, ids.failed_dag, ids.prepare, ids.train, ids.infer, ids.grid = dag.id, failed_dag.id, prepare.id, train.id, infer.id, grid.id
    ids.broken, ids.skipped, ids.checkpoint = broken.id, skipped.id, checkpoint.id
    return ids


def shared_app(tmp_path_factory, *more):
    """Yields ``(app, ids)``: a store filled by :func:`fill`, then by each of ``more`` (called
    with the session and the ids), and its app; disposes of the app at the end."""
    from mlcomp.db import open_store
    from mlcomp.settings import Settings
    from ui import create_app

    root = tmp_path_factory.mktemp("ui") / "mlcomp"
    settings = Settings(root=root, db_url=f"sqlite:///{root / 'mlcomp.db'}")
    with open_store(settings).begin() as session:
        ids = fill(session, settings)
        for add in more:
            add(session, ids)
    app = create_app(settings, {"TESTING": True})
    yield app, ids
    dispose(app)


@pytest.fixture(scope="module")
def ro_shared(tmp_path_factory):
    """One filled store and app per test module, for tests that only read: ``(app, ids)``."""
    yield from shared_app(tmp_path_factory)


@pytest.fixture
def ro_filled(ro_shared) -> Filled:
    """The ids of the module's shared store (read-only tests)."""
    return ro_shared[1]


@pytest.fixture
def ro_app(ro_shared):
    """The module's shared app (read-only tests)."""
    return ro_shared[0]


@pytest.fixture
def ro_client(ro_app):
    """A test client (its own cookies) of the module's shared app (read-only tests)."""
    return ro_app.test_client()


@pytest.fixture
def filled(store, settings) -> Filled:
    """The store filled by :func:`fill`, committed."""
    with store.begin() as session:
        return fill(session, settings)


@pytest.fixture
def app(settings, filled):
    """The UI over the filled store (no token)."""
    from ui import create_app

    app = create_app(settings, {"TESTING": True})
    yield app
    dispose(app)


@pytest.fixture
def client(app):
    """A test client of :func:`app`."""
    return app.test_client()


def dispose(app) -> None:
    """Closes the connections of the store an app opened."""
    app.extensions["mlcomp_store"].kw["bind"].dispose()


def csrf_post(client, url: str, **kwargs):
    """POSTs like the UI's JavaScript: a page first (the session gets its CSRF token), then the
    request with the ``X-CSRF-Token`` header."""
    client.get("/dags")
    with client.session_transaction() as session:
        token = session["csrf"]
    return client.post(url, headers={"X-CSRF-Token": token}, **kwargs)
