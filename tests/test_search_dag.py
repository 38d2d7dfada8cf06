"""An adaptive search through the orchestrator (embedded supervisor and local worker, real child
processes): ASHA pauses trials at rungs and promotes them by exact resume, ``dag stop`` pauses the
search and ``dag resume`` continues it, no trial trains an epoch twice, and the tasks that depend
on the search get its best trial."""
from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from mlcomp import control
from mlcomp.cli.dag import dag_json
from mlcomp.db import Metric, SearchRung, SearchTrial, Task, TaskStatus, immediate
from mlcomp.supervisor import run_local
from ml_helpers import write_expdir
from supervisor_helpers import wait_for, wait_status

S = TaskStatus

SEARCH_DAG = """\
info: {name: search, project: p, expdir: .}
executors:
  search:
    type: train
    config: [configs/train.yml, configs/slow.yml]
    search:
      space:
        lr: {loguniform: [0.001, 0.1]}
        hidden: {choice: [4, 8]}
      sampler: random
      trials: 4
      parallel: 2
      seed: 3
      scheduler: {type: asha, grace_epochs: 1, max_epochs: 2, reduction_factor: 2}
  after: {type: bash, command: "true", depends: search}
"""


def _in(store, fn):
    with store.begin() as session:
        immediate(session)
        return fn(session)


def test_asha_search_pauses_promotes_survives_stop_and_resume_and_feeds_its_best_trial(settings, store, tmp_path):
    dag_file = write_expdir(tmp_path / "exp", SEARCH_DAG, seconds=0.01)
    dag_id = _in(store, lambda s: control.submit_dag(s, settings, dag_file)[0].id)
    with store() as session:
        search = session.scalar(select(Task).where(Task.dag_id == dag_id, Task.name == "search"))
        after_id = session.scalar(select(Task.id).where(Task.dag_id == dag_id, Task.name == "after"))
    assert search.type == "search" and search.executor_config["search"]["scheduler"]["rungs"] == [1, 2]

    def rung_records():
        with store() as session:
            return session.scalar(select(func.count()).select_from(SearchRung).where(SearchRung.search_id == search.id))

    with run_local(settings, [0, 1], sessionmaker=store, interval=0.2, dag_ids=[dag_id]):
        wait_for(lambda: rung_records() >= 2, timeout=120)
        _in(store, lambda s: control.stop_dag(s, dag_id))
        stopped = wait_status(store, search.id, S.stopped, S.failed, S.success, timeout=60)
        assert stopped.status is S.stopped, stopped.reason
        with store() as session:
            trials_at_stop = session.scalar(select(func.count()).select_from(SearchTrial))
        _in(store, lambda s: control.resume_dag(s, dag_id))
        done = wait_status(store, after_id, S.success, S.failed, S.skipped, timeout=240)
        assert done.status is S.success, done.reason

    with store() as session:
        assert control.dag_status(session, dag_id) is S.success
        search = session.get(Task, search.id)
        trials = session.execute(select(SearchTrial, Task).join(Task, Task.id == SearchTrial.task_id)
                                 .order_by(SearchTrial.number)).all()
        records = session.execute(select(SearchRung.task_id, SearchRung.rung, SearchRung.epoch)).all()
        steps = session.execute(select(Metric.task_id, Metric.step).where(
            Metric.name == "accuracy01", Metric.loader == "valid", Metric.kind == "epoch")).all()
        from mlcomp.worker.lookup import train_source
        source = train_source(session, after_id)
        doc = dag_json(session, dag_id)

    assert search.status is S.success and len(trials) == 4 >= trials_at_stop
    assert [t.number for t, _ in trials] == list(range(4))
    # no trial trained an epoch twice: each trial's epochs 1..n were reported exactly once
    counts = Counter(steps)
    assert set(counts.values()) == {1}
    for trial, task in trials:
        assert task.status in (S.success, S.pruned), (task.name, task.status, task.reason)
        epochs = sorted(step for task_id, step in steps if task_id == task.id)
        assert epochs == list(range(1, task.result["epochs"] + 1)), task.name
        reached = sorted((rung, epoch) for task_id, rung, epoch in records if task_id == task.id)
        assert reached == [(k, [1, 2][k]) for k in range(task.result["rung"] + 1)]
        assert (task.result["rung"] == 1) == (task.status is S.success)
        assert task.grid_cell == trial.params and set(trial.params) == {"lr", "hidden"}
    promoted = [task for _, task in trials if task.result["rung"] > 0]
    assert promoted and all(task.attempt >= task.result["rung"] + 1 for task in promoted)
    assert sum(task.result["epochs"] for _, task in trials) < 4 * 2  # stopped early: less than the full budget
    best = next(row for row in search.result["leaderboard"] if row["best"])
    assert source.id == best["task_id"] == search.result["best_task_id"]
    assert best["rung"] == 1 and best["value"] == max(r["value"] for r in search.result["leaderboard"]
                                                      if r["rung"] == 1)
    shown = {t["name"]: t for t in doc["tasks"]}
    assert all(shown[task.name]["result"]["rung"] == task.result["rung"] for _, task in trials)
