"""A search survives ``kill -9`` of ``mlcomp server`` and a restart: it ends with the same number
of trials, every rung recorded once, and no trial trains an epoch twice."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

from sqlalchemy import func, select

from mlcomp import control
from mlcomp.db import Metric, SearchRung, SearchTrial, Task, TaskStatus, immediate
from ml_helpers import write_expdir
from supervisor_helpers import wait_for
from test_restart import free_port, start, wait_dag
from test_search_dag import SEARCH_DAG

S = TaskStatus


def test_a_search_continues_after_kill_9_of_the_server(settings, store, tmp_path):
    dag_file = write_expdir(tmp_path / "exp", SEARCH_DAG, seconds=0.02)
    with store.begin() as session:
        immediate(session)
        dag_id = control.submit_dag(session, settings, dag_file)[0].id
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": settings.db_url}
    env.pop("MLCOMP_BROKER_URL", None)

    def count(table):
        with store() as session:
            return session.scalar(select(func.count()).select_from(table))

    server = start(env, "server", "--port", str(free_port()), "--name", "box")
    try:
        wait_for(lambda: count(SearchRung) >= 2, timeout=180)  # mid-search: trials paused and running
        time.sleep(0.3)
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = start(env, "server", "--port", str(free_port()), "--name", "box")
        wait_dag(store, dag_id, timeout=300)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    with store() as session:
        tasks = {t.name: t for t in session.scalars(select(Task).where(Task.dag_id == dag_id))}
        trials = session.execute(select(SearchTrial.number, SearchTrial.task_id)).all()
        records = session.execute(select(SearchRung.task_id, SearchRung.rung)).all()
        steps = session.execute(select(Metric.task_id, Metric.step).where(
            Metric.name == "accuracy01", Metric.loader == "valid", Metric.kind == "epoch")).all()
        assert control.dag_status(session, dag_id) is S.success, [(t.name, t.status, t.reason) for t in tasks.values()]
    assert sorted(number for number, _ in trials) == [0, 1, 2, 3]  # the same trials, none sampled twice
    assert len([t for t in tasks.values() if t.parent_id == tasks["search"].id]) == 4
    assert set(Counter(records).values()) == {1}
    assert set(Counter(steps).values()) == {1}  # no trial trained an epoch twice
    for _, task_id in trials:
        task = next(t for t in tasks.values() if t.id == task_id)
        assert task.status in (S.success, S.pruned), (task.name, task.status, task.reason)
        assert sorted(step for t, step in steps if t == task_id) == list(range(1, task.result["epochs"] + 1))
