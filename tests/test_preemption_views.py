"""A task paused by a preemption waits to resume, it has not ended: ``dag submit --wait`` keeps
following it, its DAG is in progress (in Python and in the UI's SQL), and a preempted search trial
keeps its slot, is not recorded at a rung and resumes."""
from __future__ import annotations

from sqlalchemy import select

from mlcomp import control
from mlcomp.cli import common
from mlcomp.cli.dag import dag_json
from mlcomp.db import SearchRung, SearchTrial, Task, TaskStatus, immediate
from mlcomp.lifecycle import counted_status, rollup_status, set_task_status
from ml_helpers import write_expdir
from supervisor_helpers import T0, Clock, add_computer, add_task, make_dag
from test_preemption import busy, end_as_worker, get, start, supervisor  # noqa: F401 (busy: a fixture)
from test_search_step import run_trial

S = TaskStatus


def test_a_task_paused_by_a_preemption_counts_as_queued_one_at_a_rung_as_paused():
    assert counted_status(S.paused, True) is S.queued and counted_status(S.paused, False) is S.paused
    assert counted_status(S.stopping, True) is S.stopping
    assert rollup_status([S.success, counted_status(S.paused, True)]) is S.in_progress
    assert rollup_status([S.success, counted_status(S.paused, False)]) is S.stopped


def urgent_runs_and_succeeds(sup, store, low, urgent):
    """The tick pauses ``low`` for ``urgent`` (its worker played by hand), which runs and succeeds."""
    sup.tick()
    end_as_worker(store, low, 75)
    assert sup.tick() == [(urgent, "a")]
    start(store, urgent)
    with store.begin() as session:
        set_task_status(session, session.get(Task, urgent), S.success)


class Steps:
    """:func:`common.follow_dags`' ``changed`` event: each wait for a change runs the next step; a
    wait with none left raises IndexError (the follower would have waited for ever)."""

    def __init__(self, *steps):
        self.steps = list(steps)

    def clear(self):
        pass

    def wait(self, timeout):
        self.steps.pop(0)()


def test_dag_submit_wait_follows_a_preempted_task_until_it_resumes_and_ends(store, busy, monkeypatch):
    sup, clock, low, urgent = busy
    urgent_runs_and_succeeds(sup, store, low, urgent)  # the DAG: urgent succeeded, low paused

    def resume():
        assert sup.tick() == [(low, "a")]
        start(store, low)
        with store.begin() as session:
            set_task_status(session, session.get(Task, low), S.success)

    monkeypatch.setattr(common, "FULL_READ_EVERY", 0)  # every read is full: the end may be decided on any
    lines = []
    dag_id = get(store, low).dag_id
    assert common.follow_dags(store, [dag_id], lines.append, changed=Steps(resume)) is True
    assert f"task {low} 'low': paused (preempted by task {urgent}; resumes once placed again)" in lines
    assert lines[-1] == f"task {low} 'low': success"


def test_a_dag_with_a_preempted_task_is_in_progress_in_the_dag_list(store, busy):
    from ui.queries import list_dags

    sup, clock, low, urgent = busy
    urgent_runs_and_succeeds(sup, store, low, urgent)
    dag_id = get(store, low).dag_id
    with store() as session:
        (row,) = list_dags(session)["dags"]
        assert (row["id"], row["status"], row["counts"]) == (dag_id, "in_progress", {"paused": 1, "success": 1})
        assert [d["id"] for d in list_dags(session, status="in_progress")["dags"]] == [dag_id]
        assert list_dags(session, status="stopped")["dags"] == []
        assert control.dag_status(session, dag_id) is S.in_progress
        assert dag_json(session, dag_id)["status"] == "in_progress"


SEARCH_DAG = """\
info: {name: search, project: p, expdir: .}
executors:
  search:
    type: train
    config: [configs/train.yml]
    gpu: 1
    search:
      space: {lr: {loguniform: [0.001, 0.1]}}
      sampler: random
      trials: 2
      parallel: 1
      scheduler: {type: asha, grace_epochs: 1, max_epochs: 2, reduction_factor: 2}
"""


def trial_tasks(store, search_id) -> list[Task]:
    with store() as session:
        return list(session.scalars(select(Task).join(SearchTrial, SearchTrial.task_id == Task.id)
                                    .where(SearchTrial.search_id == search_id).order_by(SearchTrial.number)))


def rungs(store) -> list[tuple[int, int, float]]:
    with store() as session:
        return session.execute(select(SearchRung.task_id, SearchRung.rung, SearchRung.value)).all()


def test_a_preempted_search_trial_keeps_its_slot_is_not_at_a_rung_and_resumes(settings, store, tmp_path):
    with store.begin() as session:
        immediate(session)
        add_computer(session, "a", gpus=1)
        (search,) = control.submit_dag(session, settings, write_expdir(tmp_path / "exp", SEARCH_DAG))[0].tasks
        search_id = search.id
    sup = supervisor(settings, store, Clock(T0))
    sup.tick()  # the search starts
    sup.tick()  # it samples its first trial, placed at once
    (trial,) = trial_tasks(store, search_id)
    assert (trial.status, trial.computer, trial.preemptible) == (S.queued, "a", True)
    start(store, trial.id)
    with store.begin() as session:
        urgent = add_task(session, make_dag(session, "urgent"), "urgent", gpu_min=1, gpu_max=1, priority=10).id

    sup.tick()  # the trial is asked to pause for the urgent task, and pauses
    assert (get(store, trial.id).status, get(store, trial.id).preempted_by) == (S.stopping, urgent)
    end_as_worker(store, trial.id, 75)
    assert sup.tick() == [(urgent, "a")]
    paused = get(store, trial.id)
    assert (paused.status, paused.preempted_by) == (S.paused, urgent)
    assert rungs(store) == [] and len(trial_tasks(store, search_id)) == 1  # not at a rung; its slot held
    assert get(store, search_id).status is S.in_progress

    start(store, urgent)
    with store.begin() as session:
        set_task_status(session, session.get(Task, urgent), S.success)
    assert sup.tick() == [(trial.id, "a")]  # it resumes: a new attempt on the GPU freed
    resumed = get(store, trial.id)
    assert (resumed.status, resumed.attempt, resumed.preempted_by) == (S.queued, 2, None)
    start(store, trial.id)
    run_trial(store, trial.id, [0.5])  # it reaches its rung and pauses there
    sup.tick()
    assert rungs(store) == [(trial.id, 0, 0.5)]
    first, second = trial_tasks(store, search_id)  # its slot free again, the next trial is sampled
    assert first.id == trial.id and second.status is S.queued
