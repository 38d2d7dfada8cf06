"""The supervisor's part of a search: one call per tick moves every running search along.

For a running search task (composite kind :attr:`mlcomp.kinds.TaskKind.SEARCH`; its driver in
:mod:`mlcomp.search.drivers`) :func:`advance_searches`, in the tick's transaction,

1. records a rung for each trial that paused at its target rung or succeeded (the trial's best
   value of the scheduler's metric up to the rung's epoch, from the reported epoch metrics), and
   writes the trial's result (``epochs``, ``best``, ``rung``);
2. ends as ``pruned`` the trials its scheduler stopped (the median rule asks for a stop of a
   running trial whose best is worse than the median of the others' running averages);
3. fills free slots (``parallel`` minus trials waiting or running): ASHA promotes the best paused
   trial in the top 1/η of its rung (``paused → not_ran``, a new attempt that resumes from
   ``last_full.pth`` up to the next rung), else a new trial is sampled through Optuna and added as
   a child train task;
4. ends the search when every trial was sampled and none runs or can be promoted: paused trials
   become ``pruned`` and the search succeeds when a trial reached ``max_epochs`` (its leaderboard
   and best trial in its result), else fails.

A trial paused by a preemption (``preempted_by`` set, :mod:`mlcomp.supervisor.preempt`) is not at a
rung: it counts as running (:func:`mlcomp.lifecycle.counted_status`: it holds its slot, is neither
recorded nor promotable) until the supervisor places it again and it resumes where it paused.

A ``stopping`` search (``dag stop``) starts and promotes nothing and ends ``stopped`` once no trial
runs; ``dag resume`` continues it. All state is in the store, so a restarted server continues.
"""
from __future__ import annotations

import datetime as dt
from typing import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp.db import SearchRung, SearchTrial, Task, TaskStatus
from mlcomp.search.asha import RungRecord, promotion
from mlcomp.search.board import best_so_far, search_result, series
from mlcomp.search.median import median_stop
from mlcomp.search.sampler import PastTrial, sample
from mlcomp.search.space import Dimension
from mlcomp.search.spec import trial_config
from mlcomp.kinds import TaskKind
from mlcomp.lifecycle import ACTIVE, counted_status, set_task_status

__all__ = ["advance_searches"]

S = TaskStatus
_WAITING = ACTIVE | {S.not_ran}
_OPTUNA_STATE = {S.success: "complete", S.paused: "pruned", S.pruned: "pruned", S.failed: "fail",
                 S.stopped: "fail", S.skipped: "fail"}


def _status(task: Task) -> TaskStatus:
    """The trial's status for its search: paused by a preemption, it counts as queued (running)."""
    return counted_status(task.status, task.preempted_by is not None)


class _Search:
    """One search task's state for this tick: config, trials (SearchTrial, Task), rung records."""

    def __init__(self, session: Session, task: Task):
        self.session, self.task = session, task
        self.config = task.executor_config
        self.spec = self.config["search"]
        self.sched = self.spec["scheduler"]
        self.rungs = self.sched["rungs"]
        self.top = len(self.rungs) - 1
        self.minimize = self.sched["mode"] == "min"
        self.trials = session.execute(select(SearchTrial, Task).join(Task, Task.id == SearchTrial.task_id)
                                      .where(SearchTrial.search_id == task.id).order_by(SearchTrial.number)).all()
        self.records = list(session.scalars(select(SearchRung).where(SearchRung.search_id == task.id)))
        self.values = series(session, task, [t.task_id for t, _ in self.trials])

    def recorded(self, task_id: int, rung: int) -> bool:
        return any(r.task_id == task_id and r.rung == rung for r in self.records)


def _record_rungs(s: _Search) -> None:
    for trial, task in s.trials:
        if _status(task) not in (S.paused, S.success) or s.recorded(task.id, trial.target):
            continue
        epoch = s.rungs[trial.target]
        value = best_so_far(s.values.get(task.id, {}), epoch, s.minimize)
        record = SearchRung(search_id=s.task.id, task_id=task.id, rung=trial.target, epoch=epoch, value=value)
        s.session.add(record)
        s.records.append(record)
        task.result = {**(task.result or {}), "epochs": epoch, "rung": trial.target, "search_metric": s.sched["metric"],
                       "search_value": value}
        if task.status is S.paused:
            task.result.update(best=value, main_metric=s.config["template"]["main"]["metric"])


def _median(s: _Search, now: dt.datetime) -> None:
    """Asks a stop of the running trials the median rule stops (they end pruned)."""
    histories = {t.task_id: [curve[e] for e in sorted(curve)] for t, _ in s.trials
                 for curve in [s.values.get(t.task_id, {})]}
    for trial, task in s.trials:
        if task.status is not S.in_progress or trial.prune:
            continue
        others = [h for task_id, h in histories.items() if task_id != task.id]
        if median_stop(histories[task.id], others, s.minimize, s.sched["grace_epochs"]):
            trial.prune = True
            set_task_status(s.session, task, S.stopping, f"median stopping rule after epoch "
                                                         f"{len(histories[task.id])}", now)


def _prune_stopped(s: _Search, now: dt.datetime) -> None:
    for trial, task in s.trials:
        if trial.prune and task.status is S.stopped:
            set_task_status(s.session, task, S.pruned, "stopped by the median stopping rule", now)


def _promote(s: _Search, now: dt.datetime) -> bool:
    if s.sched["type"] != "asha":
        return False
    paused = {t.task_id for t, task in s.trials if _status(task) is S.paused}
    chosen = promotion([RungRecord(r.task_id, r.rung, float("nan") if r.value is None else r.value)
                        for r in s.records], paused, s.sched["reduction_factor"], s.top, s.minimize)
    if chosen is None:
        return False
    task_id, rung = chosen
    trial, task = next((t, task) for t, task in s.trials if t.task_id == task_id)
    trial.target = rung
    task.executor_config = {**task.executor_config, "pause_at": s.rungs[rung] if rung < s.top else None}
    set_task_status(s.session, task, S.not_ran, f"promoted to rung {rung} ({s.rungs[rung]} epochs)", now)
    return True


def _past(s: _Search) -> list[PastTrial]:
    past = []
    for trial, task in s.trials:
        curve = {r.epoch: r.value for r in s.records if r.task_id == task.id and r.value is not None}
        state = _OPTUNA_STATE.get(_status(task), "running")
        value = curve.get(s.rungs[-1])
        past.append(PastTrial(trial.params, trial.system_attrs, curve,
                              "pruned" if state == "complete" and value is None else state, value))
    return past


def _new_trial(s: _Search) -> None:
    space = {name: Dimension(d["kind"], tuple(d["values"])) for name, d in s.spec["space"].items()}
    params, attrs = sample(space, s.spec["sampler"], s.spec["seed"], s.minimize, _past(s))
    number = len(s.trials)
    template = {k: v for k, v in s.config["template"].items() if k != "type"}
    template["config"] = trial_config(template["config"], s.spec, params)
    template["pause_at"] = s.rungs[0] if s.top > 0 else None
    res = s.config["resources"]
    task = Task(dag_id=s.task.dag_id, name=f"{s.task.name} trial {number}", type=s.config["template"]["type"],
                parent_id=s.task.id, executor_config=template, grid_cell=params, gpu_min=res["gpu_min"],
                gpu_max=res["gpu_max"], cpu=res["cpu"], memory=res["memory"], distr=res["distr"],
                single_node=res["single_node"], computer_pin=res["computer"], env=dict(res["env"]),
                retries=res["retries"], priority=s.task.priority, timeout=res["timeout"],
                preemptible=res.get("preemptible", True), status=S.not_ran)
    s.session.add(task)
    s.session.flush()
    trial = SearchTrial(task_id=task.id, search_id=s.task.id, number=number, params=params, system_attrs=attrs,
                        target=0)
    s.session.add(trial)
    s.trials.append((trial, task))


def _fill_slots(s: _Search, now: dt.datetime) -> bool:
    """Promotes or starts trials while slots are free; True when anything changed."""
    changed = False
    while s.spec["parallel"] - sum(_status(task) in _WAITING for _, task in s.trials) > 0:
        if _promote(s, now):
            changed = True
        elif len(s.trials) < s.spec["trials"]:
            _new_trial(s)
            changed = True
        else:
            break
    return changed


def _end(s: _Search, now: dt.datetime) -> None:
    for _, task in s.trials:
        if _status(task) is S.paused:
            set_task_status(s.session, task, S.pruned, "not promoted before the search ended", now)
    s.task.result = search_result(s.session, s.task)
    done = sum(task.status is S.success for _, task in s.trials)
    status = S.success if s.task.result["best_task_id"] is not None else S.failed
    set_task_status(s.session, s.task, status, f"{done} of {len(s.trials)} trials reached "
                                               f"{s.rungs[-1]} epochs", now)


def advance(session: Session, task: Task, now: dt.datetime) -> bool:
    """One step of search ``task`` (running or stopping); True when it changed anything."""
    s = _Search(session, task)
    _record_rungs(s)
    _prune_stopped(s, now)
    running = any(_status(t) in _WAITING for _, t in s.trials)
    if task.status is S.stopping:
        if not running:
            set_task_status(session, task, S.stopped, "search stopped; dag resume continues it", now)
            return True
        return False
    if s.sched["type"] == "median":
        _median(s, now)
    if _fill_slots(s, now):
        return True
    if not any(_status(t) in _WAITING for _, t in s.trials):
        _end(s, now)
        return True
    return False


def advance_searches(session: Session, now: dt.datetime, search_ids: Collection[int] | None = None) -> int:
    """Advances the running and stopping searches (``search_ids``: the active ones the tick read;
    None reads them here). Does not commit. Returns how many changed."""
    if search_ids is not None and not search_ids:
        return 0
    stmt = select(Task).where(Task.type == TaskKind.SEARCH.value, Task.status.in_([S.in_progress, S.stopping]))
    if search_ids is not None:
        stmt = stmt.where(Task.id.in_(list(search_ids)))
    return sum(advance(session, task, now) for task in session.scalars(stmt).all())
