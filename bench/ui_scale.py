"""UI at scale: 1,000 DAGs, 10,000 tasks, a DAG of a grid search with 2,399 cells, a 100,000-point
metric series and 7 days of 5 s resource samples of a computer with 8 GPUs (rolled up as the worker
does) in a SQLite store.

Measures the latency (p50/p95 over interleaved rounds, Flask test client, one process) of the DAG
list (plain and filtered by status), a DAG page, the grid DAG's page (its first and its last page
of cells) and API twin, a task page, the metric endpoint of the long
series, the log endpoint, a task's API twin, the computers page and the resource history of the
computer (an hour, a week) and of a task, and prints each against a baseline measured in the
same rounds: the tiny ``/api/`` index (routing, auth guard, JSON rendering, no store query).
Targets: p95 < 100 ms for pages, < 200 ms for the metric endpoint and for a week of resource history.

    python bench/ui_scale.py [--rounds 30]
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from mlcomp.db import (Attempt, Computer, Dag, LogLine, Metric, Project, ResourceSample, Task, TaskDependency, TaskStatus,
                       open_store)
from mlcomp.kinds import TaskKind
from mlcomp.settings import Settings
from mlcomp.worker.resources import compact

DAGS, TASKS_PER_DAG, POINTS, LOG_LINES = 1_000, 10, 100_000, 20_000
GRID_CELLS = 2_399  # with its parent, a DAG of 2,400 tasks
GPUS, SAMPLE_EVERY, HISTORY = 8, 5, 7 * 86_400  # seconds
STATUSES = [s.value for s in TaskStatus]


def fill(store) -> tuple[int, int, int]:
    """Writes the store; returns (a DAG id, the id of the task with the long series, the grid
    DAG's id)."""
    rng = random.Random(0)
    now = dt.datetime.now(dt.timezone.utc)
    with store.begin() as session:
        session.execute(insert(Project), [{"id": p, "name": f"project-{p}"} for p in range(1, 6)])
        session.execute(insert(Dag), [{"id": d, "name": f"dag-{d}", "project_id": 1 + d % 5, "config": "info: {}\n",
                                       "created": now} for d in range(1, DAGS + 1)])
        tasks, deps = [], []
        for d in range(1, DAGS + 1):
            for k in range(TASKS_PER_DAG):
                task_id = (d - 1) * TASKS_PER_DAG + k + 1
                tasks.append({"id": task_id, "dag_id": d, "name": f"task-{k}", "type": "bash",
                              "status": rng.choice(STATUSES), "created": now, "started": now - dt.timedelta(minutes=5),
                              "finished": now, "executor_config": {}, "env": {}, "gpus": []})
                if k:
                    deps.append({"task_id": task_id, "depend_id": task_id - 1})
        grid_dag, parent = DAGS + 1, len(tasks) + 1  # a DAG of a grid search and its cells
        session.execute(insert(Dag), [{"id": grid_dag, "name": "grid", "project_id": 1, "config": "info: {}\n",
                                       "created": now}])
        tasks.append({"id": parent, "dag_id": grid_dag, "name": "search", "type": TaskKind.GRID.value,
                      "status": "success", "created": now, "started": now - dt.timedelta(minutes=5), "finished": now,
                      "executor_config": {"template": {"type": "bash"}, "cells": GRID_CELLS}, "env": {}, "gpus": []})
        for k in range(1, GRID_CELLS + 1):
            tasks.append({"id": parent + k, "dag_id": grid_dag, "parent_id": parent, "name": f"search i={k}",
                          "type": "bash", "status": rng.choice(STATUSES), "created": now,
                          "started": now - dt.timedelta(minutes=5), "finished": now, "executor_config": {},
                          "env": {}, "gpus": [k % GPUS], "grid_cell": {"i": k}})
        session.execute(insert(Task), tasks)
        session.execute(insert(TaskDependency), deps)
        session.execute(insert(Attempt), [{"task_id": t["id"], "number": 1, "status": t["status"], "gpus": []}
                                          for t in tasks])
        big = tasks[DAGS * TASKS_PER_DAG // 2]["id"]  # a task of the chains
        session.execute(insert(Metric), [{"task_id": big, "name": "loss", "loader": "train", "kind": "batch",
                                          "step": i, "epoch": i // 1000, "value": math.exp(-i / 20_000) + rng.random() * .05,
                                          "time": now} for i in range(POINTS)])
        session.execute(insert(Metric), [{"task_id": big, "name": "loss", "loader": loader, "kind": "epoch", "step": e,
                                          "epoch": e, "value": 1 / e, "time": now}
                                         for e in range(1, 101) for loader in ("train", "valid")])
        session.execute(insert(LogLine), [{"task_id": big, "text": f"line {i}", "time": now} for i in range(LOG_LINES)])
        session.add(Computer(name="box", gpus=[{"index": i, "memory": 1 << 34, "name": "gpu"} for i in range(GPUS)],
                             heartbeat=now, cpu=32, memory=256.0))
        task = session.get(Task, big)
        task.computer, task.gpus = "box", [0]
    fill_resources(store, big, int(now.timestamp()), rng)
    return 1 + (big - 1) // TASKS_PER_DAG, big, grid_dag


def fill_resources(store, task_id: int, now: int, rng: random.Random) -> None:
    """A week of raw samples (the computer, its GPUs, GPU 0 held by ``task_id``, the task's
    processes), rolled up day by day as the worker's compaction would have done."""
    start = now - HISTORY
    for day in range(start, now, 86_400):
        rows = []
        for t in range(day, min(day + 86_400, now), SAMPLE_EVERY):
            rows.append({"computer": "box", "time": t, "utilization": rng.random() * 100, "memory": 1e10})
            rows.extend({"computer": "box", "time": t, "gpu": g, "task_id": task_id if g == 0 else None,
                         "utilization": rng.random() * 100, "memory": 1e9 * g} for g in range(GPUS))
            if t >= now - 300:
                rows.append({"computer": "box", "time": t, "task_id": task_id, "utilization": 99.0, "memory": 5e9})
        with store.begin() as session:
            session.execute(insert(ResourceSample), rows)
            compact(session, "box", min(day + 86_400, now))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    from ui import create_app

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(root=root, db_url=f"sqlite:///{root / 'mlcomp.db'}")
        store = open_store(settings)
        started = time.perf_counter()
        dag_id, big, grid_dag = fill(store)
        print(f"filled {DAGS + 1} DAGs, {DAGS * TASKS_PER_DAG + GRID_CELLS + 1} tasks, {POINTS} points, {LOG_LINES} log lines, "
              f"{HISTORY // SAMPLE_EVERY} resource samples of {GPUS} GPUs in {time.perf_counter() - started:.1f} s")
        client = create_app(settings, {"TESTING": True}).test_client()
        urls = {
            "baseline /api/": "/api/",
            "DAG list page": "/dags",
            "DAG list API": "/api/dags",
            "DAG list ?status=failed": "/dags?status=failed",
            "DAG page": f"/dags/{dag_id}",
            "grid DAG page (2,400 tasks)": f"/dags/{grid_dag}",
            "grid DAG, last cells page": f"/dags/{grid_dag}?page={-(-GRID_CELLS // 50)}",
            "grid DAG API": f"/api/dags/{grid_dag}",
            "task page": f"/tasks/{big}",
            "task API": f"/api/tasks/{big}",
            "metrics 100k batch": f"/api/tasks/{big}/metrics?name=loss&kind=batch",
            "metrics all + figures": f"/api/tasks/{big}/metrics?figures=1",
            "logs after cursor": f"/api/tasks/{big}/logs?after={LOG_LINES // 2}",
            "computers page": "/computers",
            "computer resources 1h": "/api/computers/box/resources?window=3600",
            "computer resources 7d": f"/api/computers/box/resources?window={HISTORY}",
            "task resources": f"/api/tasks/{big}/resources",
        }
        times: dict[str, list[float]] = {name: [] for name in urls}
        cpu: dict[str, list[float]] = {name: [] for name in urls}
        for round_ in range(args.rounds + 3):
            for name, url in urls.items():
                t0, c0 = time.perf_counter(), time.process_time()
                response = client.get(url)
                elapsed, used = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
                assert response.status_code == 200, (url, response.status_code)
                if round_ >= 3:  # warm-up rounds are not counted
                    times[name].append(elapsed)
                    cpu[name].append(used)
        base = statistics.median(times["baseline /api/"])
        # CPU time shows what a request costs when other processes share the cores
        print(f"{'endpoint':28} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'p50/baseline':>13}")
        for name, values in times.items():
            p50, p95 = statistics.median(values), percentile(values, 0.95)
            print(f"{name:28} {p50:8.1f} {p95:8.1f} {statistics.median(cpu[name]):8.1f} {p50 / base:12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
