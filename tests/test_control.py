"""Control functions shared by the CLI and the UI: stop, resume, DAG status, wake-ups."""
import pytest

from mlcomp import control
from mlcomp.db import Task, TaskStatus
from mlcomp.errors import NotFoundError, StateError
from mlcomp.bus import SUPERVISOR, Bus
from supervisor_helpers import add_task, make_dag

S = TaskStatus


class Listener:
    def __init__(self):
        self.woken = 0

    def wake(self, _ids=()):
        self.woken += 1


@pytest.fixture
def listener(settings):
    listener = Listener()
    subscription = Bus.of(settings).subscribe(SUPERVISOR, listener.wake)
    yield listener
    subscription.close()


def test_stop_waiting_queued_and_running_tasks(store):
    with store.begin() as session:
        dag = make_dag(session)
        ids = [add_task(session, dag, name, status=status).id for name, status in
               [("w", S.not_ran), ("q", S.queued), ("r", S.in_progress)]]
        for task_id in ids:
            control.stop_task(session, task_id)
    with store.begin() as session:
        assert [session.get(Task, i).status for i in ids] == [S.stopped, S.stopped, S.stopping]
        with pytest.raises(StateError, match=rf"task {ids[2]} \('r'\) is stopping; only a waiting"):
            control.stop_task(session, ids[2])
        with pytest.raises(NotFoundError, match="task 999 does not exist"):
            control.stop_task(session, 999)


def test_resume_starts_a_new_attempt_and_unskips_dependents(store):
    with store.begin() as session:
        dag = make_dag(session)
        bad = add_task(session, dag, "bad", status=S.failed)
        mid = add_task(session, dag, "mid", depends=[bad], status=S.skipped)
        end = add_task(session, dag, "end", depends=[mid], status=S.skipped)
        other = add_task(session, dag, "other", status=S.success)
        control.resume_task(session, bad.id, from_="best")
        assert [(t.status, t.attempt) for t in (bad, mid, end, other)] == [
            (S.not_ran, 2), (S.not_ran, 2), (S.not_ran, 2), (S.success, 1)]
        assert (bad.resume_from, bad.attempts[-1].resume_from, mid.resume_from) == ("best", "best", None)
        with pytest.raises(StateError, match=rf"task {other.id} \('other'\) succeeded"):
            control.resume_task(session, other.id)
        with pytest.raises(StateError, match="is not_ran"):
            control.resume_task(session, bad.id)


def test_grid_search_stop_and_resume_act_on_cells(store):
    with store.begin() as session:
        dag = make_dag(session)
        grid = add_task(session, dag, "g", type="grid_search", status=S.in_progress)
        cells = [add_task(session, dag, f"g x={i}", parent_id=grid.id, status=s)
                 for i, s in enumerate([S.success, S.in_progress, S.not_ran])]
        control.stop_task(session, grid.id)
        assert [c.status for c in [grid, *cells]] == [S.stopping, S.success, S.stopping, S.stopped]
        cells[1].status = S.stopped  # the worker ended it
        grid.status = S.stopped  # the supervisor rolled it up
        control.resume_task(session, grid.id)
        assert [c.status for c in [grid, *cells]] == [S.not_ran, S.success, S.not_ran, S.not_ran]


def test_stop_and_resume_a_dag(store):
    with store.begin() as session:
        dag = make_dag(session)
        done = add_task(session, dag, "done", status=S.success)
        running = add_task(session, dag, "running", status=S.in_progress)
        waiting = add_task(session, dag, "waiting", depends=[running])
        assert control.dag_status(session, dag) is S.in_progress
        assert control.stop_dag(session, dag.id) == [running, waiting]
        with pytest.raises(StateError, match=f"dag {dag.id} has no waiting"):
            control.stop_dag(session, dag.id)
        running.status = S.stopped
        assert control.dag_status(session, dag.id) is S.stopped
        assert control.resume_dag(session, dag.id) == [running, waiting]
        assert [t.status for t in (done, running, waiting)] == [S.success, S.not_ran, S.not_ran]
        with pytest.raises(StateError, match="no failed, stopped or skipped task"):
            control.resume_dag(session, dag.id)
        with pytest.raises(NotFoundError, match="dag 77 does not exist"):
            control.dag_status(session, 77)


def test_wake_reaches_the_supervisors_of_this_process_at_once(settings, listener):
    control.wake(settings)
    assert listener.woken == 1  # in the calling thread, before wake returns


def test_submit_dag_writes_tasks(settings, store, tmp_path):
    (tmp_path / "d.yml").write_text(
        "info: {name: d, project: p}\nexecutors:\n  a: {type: bash, command: 'true'}\n"
        "  b: {type: bash, command: 'echo $x', depends: a, grid: [{x: [1, 2]}]}\n")
    with store.begin() as session:
        (dag,) = control.submit_dag(session, settings, tmp_path / "d.yml")
        names = sorted(t.name for t in dag.tasks)
    assert names == ["a", "b", "b x=1", "b x=2"]
