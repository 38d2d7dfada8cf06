"""The status gate: legal and illegal transitions, stamps, attempts, retries and roll-ups."""
import datetime
import itertools

import pytest
from sqlalchemy import select

from mlcomp.db import Attempt, Task, TaskStatus
from mlcomp.errors import StateError
from mlcomp.search.rollup import grid_parent_status
from mlcomp.lifecycle import (
    TRANSITIONS,
    retry_or_fail,
    rollup_status,
    set_task_status,
)
from supervisor_helpers import T0, Clock, add_task, make_dag

S = TaskStatus


@pytest.fixture
def session(store):
    with store.begin() as session:
        yield session
        session.rollback()


def test_transition_table_matches_the_contract():
    assert TRANSITIONS[S.not_ran] == {S.queued, S.skipped, S.stopped}
    assert TRANSITIONS[S.queued] == {S.in_progress, S.not_ran, S.failed, S.stopped}
    assert TRANSITIONS[S.in_progress] == {S.stopping, S.success, S.failed, S.stopped, S.queued, S.paused}
    assert TRANSITIONS[S.stopping] == {S.stopped, S.failed, S.success, S.paused}  # paused: preempted
    for ended in (S.failed, S.skipped):
        assert TRANSITIONS[ended] == {S.not_ran}
    assert TRANSITIONS[S.stopped] == {S.not_ran, S.pruned}  # pruned: a search trial its scheduler stopped
    assert TRANSITIONS[S.paused] == {S.not_ran, S.pruned,  # a search trial promoted, or never
                                     S.queued, S.stopped}  # a preempted task placed again, or stopped
    assert TRANSITIONS[S.success] == TRANSITIONS[S.pruned] == set()


@pytest.mark.parametrize("old,new", [
    (old, new) for old, new in itertools.product(S, S) if new not in TRANSITIONS[old]
])
def test_illegal_transitions_are_refused_with_the_task_named(session, old, new):
    task = add_task(session, make_dag(session), "t", status=old)
    with pytest.raises(StateError, match=rf"task {task.id} \('t'\) cannot go from {old.value} to {new.value}"):
        set_task_status(session, task, new)
    assert task.status is old


def test_a_run_stamps_times_and_keeps_the_attempt_in_step(session):
    clock = Clock()
    task = add_task(session, make_dag(session), "t")
    task.computer, task.gpus = None, [1]
    set_task_status(session, task, S.queued, "placed", clock())
    clock.advance(1)
    set_task_status(session, task, S.in_progress, "running", clock())
    clock.advance(2)
    set_task_status(session, task, S.success, "exit 0", clock())
    assert (task.queued, task.started, task.finished, task.updated) == (
        T0, clock.time.replace(second=1), clock.time, clock.time)
    (attempt,) = session.scalars(select(Attempt).where(Attempt.task_id == task.id)).all()
    assert (attempt.number, attempt.status, attempt.gpus, attempt.reason) == (1, S.success, [1], "exit 0")
    utc = datetime.timezone.utc  # SQLite hands back naive UTC datetimes
    assert (attempt.started.replace(tzinfo=utc), attempt.finished.replace(tzinfo=utc)) == (task.started, task.finished)


def test_resume_starts_a_new_attempt_and_clears_the_placement(session):
    task = add_task(session, make_dag(session), "t", status=S.in_progress, computer=None, gpus=[0])
    set_task_status(session, task, S.failed, "exit 3", T0)
    task.resume_from = "last"
    set_task_status(session, task, S.not_ran, "resume", T0)
    assert (task.attempt, task.gpus, task.started, task.finished) == (2, [], None, None)
    attempts = session.scalars(select(Attempt).where(Attempt.task_id == task.id).order_by(Attempt.number)).all()
    assert [(a.number, a.status, a.resume_from) for a in attempts] == [
        (1, S.failed, None), (2, S.not_ran, "last")]


def test_success_reruns_only_when_asked(session):
    task = add_task(session, make_dag(session), "t", status=S.success)
    with pytest.raises(StateError):
        set_task_status(session, task, S.not_ran)
    set_task_status(session, task, S.not_ran, "rerun", rerun=True)
    assert (task.status, task.attempt) == (S.not_ran, 2)


def test_retry_or_fail_requeues_while_retries_remain(session):
    task = add_task(session, make_dag(session), "t", status=S.in_progress, retries=1)
    assert retry_or_fail(session, task, "exit 1", T0) is True
    assert (task.status, task.attempt, task.reason) == (S.not_ran, 2, "retry 1/1 after: exit 1")
    set_task_status(session, task, S.queued)
    set_task_status(session, task, S.in_progress)
    assert retry_or_fail(session, task, "exit 1", T0) is False
    assert (task.status, task.attempt, task.reason) == (S.failed, 2, "exit 1")


def test_retry_on_the_same_computer_keeps_its_placement(session):
    task = add_task(session, make_dag(session), "t", status=S.in_progress, gpus=[2])
    set_task_status(session, task, S.queued, "retry here")
    assert (task.status, task.attempt, task.gpus) == (S.queued, 2, [2])


@pytest.mark.parametrize("statuses,expected", [
    ([], S.not_ran),
    ([S.not_ran, S.not_ran], S.not_ran),
    ([S.success, S.not_ran], S.in_progress),
    ([S.success, S.queued], S.in_progress),
    ([S.failed, S.stopping], S.in_progress),
    ([S.success, S.success], S.success),
    ([S.success, S.failed, S.skipped], S.failed),
    ([S.stopped, S.skipped], S.stopped),
    ([S.success, S.skipped], S.skipped),
    ([S.success, S.pruned], S.success),  # search trials stopped early do not fail a DAG
    ([S.in_progress, S.paused], S.in_progress),
    ([S.stopped, S.paused, S.success], S.stopped),  # a stopped search with paused trials
    ([S.paused, S.success], S.stopped),
])
def test_rollup_status(statuses, expected):
    assert rollup_status(statuses) is expected


@pytest.mark.parametrize("parent,cells,expected", [
    (S.in_progress, [S.success, S.in_progress], None),
    (S.in_progress, [S.success, S.not_ran], None),
    (S.in_progress, [S.success, S.paused], None),  # a cell paused by preemption resumes
    (S.in_progress, [S.success, S.success], S.success),
    (S.in_progress, [S.success, S.failed], S.failed),
    (S.in_progress, [S.stopped, S.success], S.stopped),
    (S.stopping, [S.stopped, S.stopping], None),
    (S.stopping, [S.stopped, S.success], S.stopped),
])
def test_grid_parent_status(parent, cells, expected):
    assert grid_parent_status(Task(status=parent), [Task(status=c) for c in cells]) is expected


def test_a_placement_taken_back_keeps_the_attempt(session):
    task = add_task(session, make_dag(session), "t", status=S.queued, gpus=[1])
    set_task_status(session, task, S.not_ran, "dispatch failed")
    assert (task.status, task.attempt, task.gpus, task.computer, task.queued) == (S.not_ran, 1, [], None, None)
