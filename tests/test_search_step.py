"""The supervisor's step of a search on a store, with trial outcomes written by hand (no
training): trials sampled into slots, rung records, ASHA promotions by a new attempt, the median
rule's stops ending pruned, and the end of the search with its best trial."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from mlcomp import control
from mlcomp.db import Metric, SearchRung, SearchTrial, Task, TaskStatus, immediate, utcnow
from mlcomp.search.step import advance_searches
from mlcomp.lifecycle import set_task_status
from ml_helpers import write_expdir

S = TaskStatus

DAG = """\
info: {name: step, project: p, expdir: .}
executors:
  search:
    type: train
    config: [configs/train.yml]
    search:
      space: {lr: {loguniform: [0.001, 0.1]}, hidden: {choice: [4, 8, 16]}}
      sampler: random
      trials: TRIALS
      parallel: PARALLEL
      scheduler: SCHEDULER
"""


@pytest.fixture
def search(settings, store, tmp_path):
    """Submits a search (``TRIALS``, ``PARALLEL``, ``SCHEDULER`` filled in) and starts it as the
    tick would; returns its task id."""
    def make(trials, parallel, scheduler):
        text = DAG.replace("TRIALS", str(trials)).replace("PARALLEL", str(parallel)).replace("SCHEDULER", scheduler)
        with store.begin() as session:
            immediate(session)
            task, = control.submit_dag(session, settings, write_expdir(tmp_path / "exp", text))[0].tasks
            set_task_status(session, task, S.queued)
            set_task_status(session, task, S.in_progress)
            return task.id
    return make


def step(store) -> None:
    with store.begin() as session:
        immediate(session)
        advance_searches(session, utcnow())


def trials(store, search_id) -> list[tuple[SearchTrial, Task]]:
    with store() as session:
        return session.execute(select(SearchTrial, Task).join(Task, Task.id == SearchTrial.task_id)
                               .where(SearchTrial.search_id == search_id).order_by(SearchTrial.number)).all()


def run_trial(store, task_id, values, end=S.paused, first_epoch=1):
    """The trial runs (queued → in_progress), reports ``values`` from ``first_epoch`` and ends
    with ``end`` (None: keeps running)."""
    with store.begin() as session:
        task = session.get(Task, task_id)
        if task.status is S.not_ran:
            set_task_status(session, task, S.queued)
            set_task_status(session, task, S.in_progress)
        session.add_all([Metric(task_id=task_id, attempt=task.attempt, name="accuracy01", loader="valid",
                                kind="epoch", step=epoch, epoch=epoch, value=value)
                         for epoch, value in enumerate(values, first_epoch)])
        if end is not None:
            set_task_status(session, task, end)
            if end is S.success:
                task.result = {"best": max(values), "epochs": first_epoch + len(values) - 1}


def status(store, task_id) -> Task:
    with store() as session:
        return session.get(Task, task_id)


def test_asha_step_fills_slots_records_rungs_promotes_and_ends(store, search):
    asha_search(store, search)


def asha_search(store, search) -> Task:
    """Drives an ASHA search of 4 trials (rungs at 1 and 2 epochs) to its end, checking each
    step; returns the ended search task."""
    search_id = search(4, 2, "{type: asha, grace_epochs: 1, max_epochs: 2, reduction_factor: 2}")
    step(store)
    (t0, task0), (t1, task1) = trials(store, search_id)
    assert (task0.status, task0.executor_config["pause_at"], task0.parent_id) == (S.not_ran, 1, search_id)
    assert task0.executor_config["config"]["stages"]["optimizer_params"]["lr"] == t0.params["lr"]
    assert task0.executor_config["config"]["model_params"]["hidden"] == t0.params["hidden"] == task0.grid_cell["hidden"]
    assert "two" not in task0.executor_config["config"]["stages"]  # cut at max_epochs 2
    assert t0.params != t1.params

    run_trial(store, task0.id, [0.5])  # paused at rung 0; rung 0 has 1 record: nothing to promote
    step(store)
    assert len(trials(store, search_id)) == 3
    run_trial(store, task1.id, [0.7])  # rung 0: [0.7, 0.5] → the top 1 (trial 1) is promoted
    step(store)
    promoted = status(store, task1.id)
    assert (promoted.status, promoted.attempt, promoted.executor_config["pause_at"]) == (S.not_ran, 2, None)
    assert len(trials(store, search_id)) == 3  # the promotion took the free slot

    run_trial(store, promoted.id, [0.8], end=S.success, first_epoch=2)
    step(store)  # a slot frees: rung 0 still promotes nobody new (trial 1 is up) → trial 3 starts
    (_, _), (_, _), (_, task2), (_, task3) = trials(store, search_id)
    run_trial(store, task2.id, [0.2])
    run_trial(store, task3.id, [0.6])  # rung 0: [0.7, 0.6, 0.5, 0.2] → top 2: trials 1 and 3
    step(store)
    assert status(store, task3.id).status is S.not_ran  # promoted
    run_trial(store, task3.id, [0.75], end=S.success, first_epoch=2)
    step(store)

    with store() as session:
        search_task = session.get(Task, search_id)
        records = sorted(session.execute(select(SearchRung.task_id, SearchRung.rung, SearchRung.epoch,
                                                SearchRung.value)).all())
    assert search_task.status is S.success and search_task.result["best_task_id"] == task1.id
    assert status(store, task0.id).status is status(store, task2.id).status is S.pruned
    assert status(store, task0.id).result == {"epochs": 1, "rung": 0, "search_metric": "accuracy01",
                                              "search_value": 0.5, "best": 0.5, "main_metric": "accuracy01"}
    assert records == sorted([(task0.id, 0, 1, 0.5), (task1.id, 0, 1, 0.7), (task1.id, 1, 2, 0.8),
                              (task2.id, 0, 1, 0.2), (task3.id, 0, 1, 0.6), (task3.id, 1, 2, 0.75)])
    assert search_task.result["epochs"] == 6
    return search_task


def test_dag_show_lists_the_trials_with_rung_status_and_metric(store, search, settings, monkeypatch):
    from click.testing import CliRunner

    from mlcomp.cli import cli

    search_task = asha_search(store, search)
    monkeypatch.setenv("MLCOMP_ROOT", str(settings.root))
    monkeypatch.setenv("MLCOMP_DB_URL", settings.db_url)
    result = CliRunner().invoke(cli, ["dag", "show", str(search_task.dag_id)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines.index("search 'search': 4 trials, best first")
    assert lines[header + 1].split() == ["trial", "task", "status", "rung", "epochs", "accuracy01", "params", "best"]
    first = lines[header + 2].split()
    assert first[:6] == ["1", str(search_task.result["best_task_id"]), "success", "1", "2", "0.8000"]
    assert first[-1] == "*" and [line.split()[2] for line in lines[header + 2:header + 6]] == [
        "success", "success", "pruned", "pruned"]


def test_median_step_stops_a_trial_below_the_median_and_it_ends_pruned(store, search):
    search_id = search(3, 3, "{type: median, grace_epochs: 2}")
    step(store)
    rows = trials(store, search_id)
    assert [task.executor_config["pause_at"] for _, task in rows] == [None] * 3  # no rungs to pause at
    ids = [task.id for _, task in rows]
    run_trial(store, ids[0], [0.9, 0.9], end=None)
    run_trial(store, ids[1], [0.8, 0.85], end=None)
    run_trial(store, ids[2], [0.1, 0.2], end=None)
    step(store)  # at epoch 2: the others' averages 0.9 and 0.825, median 0.8625 > 0.2; 0.85 > median(0.9, 0.15)
    assert [status(store, i).status for i in ids] == [S.in_progress, S.in_progress, S.stopping]
    with store.begin() as session:
        set_task_status(session, session.get(Task, ids[2]), S.stopped)
    step(store)
    assert status(store, ids[2]).status is S.pruned
    run_trial(store, ids[0], [0.95], end=S.success, first_epoch=3)
    run_trial(store, ids[1], [0.9], end=S.success, first_epoch=3)
    step(store)
    search_task = status(store, search_id)
    assert search_task.status is S.success and search_task.result["best_task_id"] == ids[0]


def test_a_stopped_search_starts_nothing_and_ends_stopped(store, search):
    search_id = search(4, 2, "{type: asha, grace_epochs: 1, max_epochs: 2, reduction_factor: 2}")
    step(store)
    first = [task.id for _, task in trials(store, search_id)]
    run_trial(store, first[0], [0.5])
    with store.begin() as session:
        immediate(session)
        control.stop_dag(session, session.get(Task, search_id).dag_id)
    step(store)
    assert status(store, search_id).status is S.stopped
    assert len(trials(store, search_id)) == 2 and status(store, first[0]).status is S.paused
