"""A lab of N computers against one server: the idle cost of the fleet, its memory, the database
connections it holds, how fast a grid of 8 × N GPU tasks per wave gets going, and the UI with a
large store, all with real processes started through the CLI.

The run makes a PostgreSQL database of its own (dropped at the end unless ``--keep``) and, unless
``--no-broker``, uses one Redis database (``--redis-db``; the keys it adds are deleted at the end).
It brings the schema up with ``mlcomp db upgrade``, then starts ``mlcomp server --gpus ""`` (UI,
supervisor and a local worker that holds no GPU, so every GPU task goes to the fleet) and N
``mlcomp worker --name labNNN-RUN --gpus 0,…,G-1 --cpus G --address 127.0.0.X`` processes, each
with its own ``MLCOMP_ROOT``, in batches of ``--batch``; a batch counts as started when every one
of its computers has a ``computer.heartbeat`` newer than its start. Each declares G CPUs (a lab
machine with 8 GPUs has at least 8 cores; a task asks for one CPU at least, and a 2-core test
machine's own count would run two cells per computer at a time).

Printed, in order:

(a) idle cost over ``--idle`` seconds with the fleet registered and nothing to run:
    transactions/s of the run's database (``xact_commit + xact_rollback`` of
    ``pg_stat_database``, the delta over the window; read from a connection to the ``postgres``
    database, so the harness's own queries are not counted; PostgreSQL 15+ flushes a backend's
    counters within ~1-10 s, so short windows are approximate) and CPU of the server and the
    workers (psutil ``cpu_times`` deltas of each process, plus its live descendants and reaped
    children) as % of one core, total and per computer;
(b) RSS (psutil, each process with its descendants) of the workers (median and max, MiB) and of
    the server;
(c) connections to the run's database (``pg_stat_activity``, the harness's own excluded) at
    idle (the median of one sample a second) and their peak, sampled every 0.2 s while the
    grid runs;
(d) a grid DAG of ``--waves`` × 8N cells (``type: bash``, ``command: sleep SLEEP``, ``gpu: 1``,
    ``grid: [{i: "1-CELLS"}]``) submitted with ``mlcomp dag submit``; from the ``task`` rows:
    makespan from the DAG's creation (and from the submit command's start) to the last cell's
    end against the ideal waves × sleep, cells started per second in the first wave (8N over
    the time from the DAG's creation to the 8N-th start), p50/p95 of created→started and
    queued→started, cells per computer, the CPU the server, the workers and PostgreSQL spent
    per cell, and the failed cells with their reasons (must be 0);
(e) unless ``--ui-tasks 0``: that many finished tasks bulk-inserted into the store (one DAG of a
    2,400-cell grid, the rest in DAGs of 10 tasks), then p50/p95 of ``--ui-rounds`` HTTP GETs each (after 3
    warm-up rounds, interleaved) of the DAG list page, the big DAG's page and the computers
    page against the running server, each against the ``/api/`` index measured in the same
    rounds (routing and JSON, no store query).

If the fleet cannot start (a worker or the server exits, or does not register in time, e.g.
PostgreSQL answers "too many clients"), the run says so with the end of the process's log and
exits 2. Everything it started is stopped at the end, also on failure or Ctrl-C/SIGTERM: SIGTERM,
then SIGKILL after ``--grace`` seconds, to the server and the workers, then SIGKILL to the
process groups of the tasks they left (those seen as their descendants, and those of the
attempt pid files under the computers' roots).

Usage: python bench/lab_scale.py [--computers 20] [--gpus 8] [--sleep 5] [--waves 3] [--idle 30]
       [--ui-tasks 100000] [--ui-rounds 20] [--batch 10] [--register-timeout 120] [--no-broker]
       [--redis-db 11] [--keep] [--grace 20] [--grid-timeout SECONDS]
       [--pg "host=127.0.0.1 port=5432 user=postgres dbname=postgres"]
       [--pg-url "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"] [--redis "redis://127.0.0.1:6379"]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import free_port, start  # noqa: E402  (the multi-computer harness of the tests)
from ui_scale import percentile  # noqa: E402

from mlcomp.cli.worker import sigterm_interrupts  # noqa: E402
from mlcomp.kinds import TaskKind  # noqa: E402

BIG_DAG = 2_400  # tasks of the big DAG of part (e): a 3-wave grid of 100 computers with 8 GPUs
DAG = """\
info: {{name: lab-grid, project: lab, expdir: .}}
executors:
  sleep:
    type: bash
    command: sleep {sleep}
    gpu: 1
    grid:
      - i: "1-{cells}"
"""


class FleetError(Exception):
    """The server or a worker could not start."""


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a process's log, and PostgreSQL's refusal first when the log holds one."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    refused = "PostgreSQL refused the connection: too many clients\n" if "too many clients" in text else ""
    return refused + ("\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)")


class Lab:
    """The server, the workers and the run's database; :meth:`close` stops them all."""

    def __init__(self, args, folder: Path, db_url: str, db_name: str, broker: str | None):
        self.args, self.folder, self.db_url, self.db_name, self.broker = args, folder, db_url, db_name, broker
        self.run = uuid.uuid4().hex[:6]
        self.port = free_port()
        self.server: subprocess.Popen | None = None
        self.server_name = f"labserver-{self.run}"
        self.workers: dict[str, subprocess.Popen] = {}
        self.seen_tasks: set[psutil.Process] = set()
        # the harness's connections: one to ``postgres`` (its counters), one to the run's database
        self.admin = psycopg.connect(args.pg, autocommit=True)
        self.conn = psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
        self.own_pid = self.conn.info.backend_pid

    # -- processes -------------------------------------------------------------------------------
    def env(self, root: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCOMP_")}
        env.update(MLCOMP_ROOT=str(root), MLCOMP_DB_URL=self.db_url)
        if self.broker:
            env["MLCOMP_BROKER_URL"] = self.broker
        root.mkdir(parents=True, exist_ok=True)
        return env

    def heartbeats(self) -> dict[str, float]:
        rows = self.conn.execute("SELECT name, heartbeat FROM computer WHERE heartbeat IS NOT NULL").fetchall()
        return {name: beat.timestamp() for name, beat in rows}

    def _wait(self, processes: dict[str, tuple[subprocess.Popen, Path]], began: float, timeout: float) -> None:
        """Waits until every computer of ``processes`` (name → (process, log)) has beaten after
        ``began``; raises FleetError when one exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            beats = self.heartbeats()
            missing = [n for n in processes if beats.get(n, 0) < began]
            if not missing:
                return
            for name in missing:
                process, log = processes[name]
                if process.poll() is not None:
                    raise FleetError(f"{name} exited with code {process.returncode} before registering; "
                                     f"the end of its log:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                name = missing[0]
                raise FleetError(f"{len(missing)} computer(s) did not register within {timeout:.0f} s "
                                 f"({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}); the end of "
                                 f"{name}'s log:\n{log_tail(processes[name][1])}")
            time.sleep(0.3)

    def start_server(self) -> float:
        root = self.folder / "server"
        env = self.env(root)
        upgrade = subprocess.run([sys.executable, "-c", "from mlcomp.cli import main; main()", "db", "upgrade"],
                                 env=env, capture_output=True, text=True)
        if upgrade.returncode:
            raise FleetError(f"mlcomp db upgrade failed:\n{upgrade.stdout}{upgrade.stderr}")
        began = time.time()
        log = root / "server.log"
        self.server = start(env, "server", "--name", self.server_name, "--gpus", "", "--port", str(self.port), log=log)
        self._wait({self.server_name: (self.server, log)}, began, 120)
        deadline = time.monotonic() + 60
        while True:  # the UI answers
            try:
                if requests.get(f"{self.url}/api/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise FleetError(f"the server's UI does not answer on {self.url}; the end of its log:\n{log_tail(log)}")
            time.sleep(0.3)
        return time.time() - began

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_workers(self) -> float:
        args = self.args
        gpus = ",".join(str(g) for g in range(args.gpus))
        began_all = time.time()
        for first in range(0, args.computers, args.batch):
            batch = {}
            began = time.time()
            for i in range(first, min(first + args.batch, args.computers)):
                name = f"lab{i:03d}-{self.run}"
                root = self.folder / name
                log = root / "worker.log"
                # 127.0.0.2 … 127.0.0.254, then 127.0.1.x: each computer its own loopback address
                address = f"127.0.{(i + 2) // 256}.{(i + 2) % 256}"
                self.workers[name] = start(self.env(root), "worker", "--name", name, "--gpus", gpus,
                                           "--cpus", str(args.gpus), "--address", address, log=log)
                batch[name] = (self.workers[name], log)
            self._wait(batch, began, args.register_timeout)
            print(f"  {len(self.workers)}/{args.computers} computers registered after {time.time() - began_all:.1f} s",
                  flush=True)
        return time.time() - began_all

    def processes(self) -> tuple[psutil.Process | None, dict[str, psutil.Process]]:
        def proc(p):
            try:
                return psutil.Process(p.pid) if p.poll() is None else None
            except psutil.NoSuchProcess:
                return None

        return proc(self.server), {n: q for n, p in self.workers.items() if (q := proc(p)) is not None}

    def remember_tasks(self) -> None:
        """Notes the live descendants of the server and the workers (their tasks), to be killed at
        the end whatever becomes of their parents."""
        server, workers = self.processes()
        for p in [server, *workers.values()]:
            with contextlib.suppress(psutil.Error, AttributeError):
                self.seen_tasks.update(p.children(recursive=True))

    # -- the database ----------------------------------------------------------------------------
    def xacts(self) -> int:
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        return self.admin.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                  (self.db_name,)).fetchone()[0]

    def connections(self) -> int:
        return self.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                                  (self.db_name, self.own_pid)).fetchone()[0]

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.remember_tasks()
        everyone = [p for p in [self.server, *self.workers.values()] if p is not None]
        for p in everyone:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.args.grace
        for p in everyone:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)
        own = os.getpgrp()
        for task in self.seen_tasks:  # task process groups left behind (a stopped worker leaves its tasks)
            with contextlib.suppress(psutil.Error, OSError):
                if task.is_running():
                    group = os.getpgid(task.pid)
                    if group == task.pid and group != own:
                        os.killpg(group, signal.SIGKILL)
                    else:
                        task.kill()
        try:  # as tests/cluster.py's Cluster.close: the attempts' pid files
            from mlcomp.worker.process import ATTEMPTS, AttemptFiles, signal_group

            for pid_file in self.folder.glob(f"*/**/{ATTEMPTS}/*/pid"):
                pid = AttemptFiles(pid_file.parent).live_pid()
                if pid is not None:
                    signal_group(pid, signal.SIGKILL)
        except ImportError:
            pass
        for conn in (self.conn, self.admin):
            with contextlib.suppress(Exception):
                conn.close()


def cpu_seconds(process: psutil.Process | None) -> float:
    """CPU seconds of ``process``, its reaped children and its live descendants."""
    if process is None:
        return 0.0
    try:
        t = process.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    except psutil.Error:
        return 0.0


def postgres_cpu() -> float:
    """CPU seconds of the local PostgreSQL so far: its postmaster, its live processes and the
    backends it reaped (0 when it cannot be seen from here)."""
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "postgres" and process.parent().name() != "postgres":
                return cpu_seconds(process)
    return 0.0


def cpu_split(lab: "Lab") -> dict[str, float]:
    """CPU seconds so far of the server, the workers (with their tasks) and PostgreSQL."""
    server, workers = lab.processes()
    return {"server": cpu_seconds(server), "workers": sum(cpu_seconds(p) for p in workers.values()),
            "PostgreSQL": postgres_cpu()}


def rss_mib(process: psutil.Process | None) -> float:
    if process is None:
        return float("nan")
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values):.2f} s, p95 {percentile(values, 0.95):.2f} s, max {max(values):.2f} s"


# -- the parts -------------------------------------------------------------------------------------
def idle(lab: Lab, args) -> int:
    """Part (a), (b) and the idle connections of (c); returns the idle connection count."""
    n = args.computers
    server, workers = lab.processes()
    print(f"\n(a) idle cost over {args.idle:g} s: {n} computers registered, nothing to run", flush=True)
    conns = []
    x0, t0 = lab.xacts(), time.monotonic()
    c0 = {name: cpu_seconds(p) for name, p in workers.items()}
    s0 = cpu_seconds(server)
    while time.monotonic() - t0 < args.idle:
        conns.append(lab.connections())
        time.sleep(min(1.0, max(0.0, args.idle - (time.monotonic() - t0))))
    x1, elapsed = lab.xacts(), time.monotonic() - t0
    per_worker = {name: 100 * (cpu_seconds(p) - c0[name]) / elapsed for name, p in workers.items()}
    server_cpu = 100 * (cpu_seconds(server) - s0) / elapsed
    tps = (x1 - x0) / elapsed
    workers_cpu = sum(per_worker.values())
    print(f"  PostgreSQL transactions: {tps:.1f}/s in all, {tps / n:.2f}/s per computer "
          f"({x1 - x0} in {elapsed:.1f} s; the harness's queries go to another database)")
    print(f"  CPU: {server_cpu + workers_cpu:.1f}% of a core in all ({(server_cpu + workers_cpu) / n:.2f}% per computer); "
          f"server {server_cpu:.1f}%, workers {workers_cpu:.1f}% "
          f"(per worker: median {statistics.median(per_worker.values()):.2f}%, max {max(per_worker.values()):.2f}%)")
    print(f"  load average: {os.getloadavg()[0]:.2f}")
    rss = [rss_mib(p) for p in workers.values()]
    print(f"\n(b) RSS: workers median {statistics.median(rss):.1f} MiB, max {max(rss):.1f} MiB "
          f"({sum(rss):.0f} MiB for {len(rss)}); server {rss_mib(server):.1f} MiB")
    idle_conns = round(statistics.median(conns))
    print(f"\n(c) connections to the run's database at idle: {idle_conns} "
          f"({idle_conns / (n + 1):.2f} per process of {n + 1}; the median of {len(conns)} samples, "
          f"min {min(conns)}, max {max(conns)}; "
          f"max_connections {lab.admin.execute('SHOW max_connections').fetchone()[0]})", flush=True)
    return idle_conns


def grid(lab: Lab, args, idle_conns: int) -> bool:
    """Part (d) and the grid's peak of (c); returns whether every cell succeeded."""
    n, per_wave = args.computers, args.gpus * args.computers
    cells = args.waves * per_wave
    ideal = args.waves * args.sleep
    expdir = lab.folder / "exp"
    expdir.mkdir(exist_ok=True)
    path = expdir / "lab.yml"
    path.write_text(DAG.format(sleep=args.sleep, cells=cells))
    print(f"\n(d) grid: {args.waves} waves x {per_wave} cells (sleep {args.sleep:g} s, 1 GPU each) = {cells} cells",
          flush=True)
    peak, stop = [0], threading.Event()

    def sample():
        with psycopg.connect(args.pg, autocommit=True) as conn:
            while not stop.is_set():
                count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                                     (lab.db_name, lab.own_pid)).fetchone()[0]
                peak[0] = max(peak[0], count)
                stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = cpu_split(lab)
    try:
        command_start = time.time()
        submit = subprocess.run([sys.executable, "-c", "from mlcomp.cli import main; main()", "dag", "submit", str(path)],
                                env=lab.env(lab.folder / "server"), capture_output=True, text=True, timeout=600)
        submit_took = time.time() - command_start
        if submit.returncode:
            raise FleetError(f"mlcomp dag submit failed ({submit.returncode}):\n{submit.stdout}{submit.stderr}")
        dag_id = int(submit.stdout.split()[0])
        print(f"  mlcomp dag submit: DAG {dag_id} in {submit_took:.2f} s (command start to exit)", flush=True)
        timeout = args.grid_timeout or 300 + 10 * ideal
        deadline, last_note = time.monotonic() + timeout, time.monotonic()
        while True:
            rows = lab.conn.execute("SELECT status, count(*) FROM task WHERE dag_id = %s AND parent_id IS NOT NULL "
                                    "GROUP BY status", (dag_id,)).fetchall()
            counts = dict(rows)
            ended = sum(v for k, v in counts.items() if k in ("success", "failed", "stopped", "skipped", "pruned"))
            if ended >= cells:
                break
            lab.remember_tasks()
            if time.monotonic() - last_note > 15:
                print(f"  … {time.time() - command_start:.0f} s: {dict(sorted(counts.items()))}", flush=True)
                last_note = time.monotonic()
            if lab.server.poll() is not None:
                raise FleetError(f"the server exited during the grid; the end of its log:\n"
                                 f"{log_tail(lab.folder / 'server' / 'server.log')}")
            if time.monotonic() > deadline:
                print(f"  the grid did not end within {timeout:.0f} s: {dict(sorted(counts.items()))}")
                break
            time.sleep(0.5)
    finally:
        stop.set()
        sampler.join(5)
    spent = {part: seconds - cpu_before[part] for part, seconds in cpu_split(lab).items()}
    created = lab.conn.execute("SELECT created FROM dag WHERE id = %s", (dag_id,)).fetchone()[0]
    tasks = lab.conn.execute("SELECT name, status, computer, created, queued, started, finished, reason FROM task "
                             "WHERE dag_id = %s AND parent_id IS NOT NULL", (dag_id,)).fetchall()
    finished = [t[6] for t in tasks if t[6] is not None]
    starts = sorted(t[5] for t in tasks if t[5] is not None)
    if finished:
        makespan = (max(finished) - created).total_seconds()
        from_command = max(finished).timestamp() - command_start
        print(f"  makespan: {makespan:.2f} s from the DAG's creation (ideal {ideal:g} s, ratio {makespan / ideal:.2f}); "
              f"{from_command:.2f} s from the submit command's start (ratio {from_command / ideal:.2f})")
    k = min(per_wave, len(starts))
    if k:
        first = (starts[k - 1] - created).total_seconds()
        print(f"  first wave: {k} cells started {first:.2f} s after the DAG's creation: {k / first:.1f} starts/s "
              f"(the first start after {(starts[0] - created).total_seconds():.2f} s)")
    if len(starts) >= cells:
        ends = [(starts[(w + 1) * per_wave - 1] - created).total_seconds() for w in range(args.waves)]
        print(f"  the last start of each wave after the DAG's creation: "
              f"{', '.join(f'{e:.2f} s' for e in ends)} (ideal {', '.join(f'{w * args.sleep:g}' for w in range(args.waves))} s "
              f"+ the first wave's)")
    print(f"  created → started: {quantiles([s for t in tasks if (s := seconds(t[3], t[5])) is not None])}")
    print(f"  queued → started: {quantiles([s for t in tasks if (s := seconds(t[4], t[5])) is not None])}")
    per_computer = collections.Counter(t[2] for t in tasks if t[5] is not None)
    if per_computer:
        print(f"  cells per computer: min {min(per_computer.values())}, max {max(per_computer.values())} "
              f"over {len(per_computer)} computers (even: {cells / n:g})")
    statuses = collections.Counter(t[1] for t in tasks)
    bad = [t for t in tasks if t[1] != "success"]
    print(f"  cells: {dict(statuses)}; not successful: {len(bad)} (must be 0)")
    for reason, count in collections.Counter((t[1], t[7]) for t in bad).most_common(10):
        print(f"    {count} x {reason[0]}: {reason[1]}")
    print("  CPU from the submission to the last end: " + ", ".join(
        f"{part} {seconds:.1f} s ({1000 * seconds / cells:.1f} ms a cell)" for part, seconds in spent.items()))
    print(f"  load average after the grid: {os.getloadavg()[0]:.2f}")
    print(f"\n(c) connections to the run's database: idle {idle_conns}, peak during the grid {peak[0]} "
          f"(ratio {peak[0] / max(idle_conns, 1):.2f})", flush=True)
    return not bad and len(tasks) == cells


def fill(lab: Lab, count: int) -> int:
    """Bulk-inserts ``count`` finished tasks (with one attempt each): a DAG of a grid parent and
    :data:`BIG_DAG` - 1 cells, then DAGs of 10 tasks in a chain; returns the big DAG's id."""
    from sqlalchemy import insert

    from mlcomp.db import Attempt, Dag, Project, Task, TaskDependency, make_engine

    now = dt.datetime.now(dt.timezone.utc)
    names = list(lab.workers)
    statuses = ["success"] * 7 + ["failed", "stopped", "skipped"]
    engine = make_engine(lab.db_url)
    try:
        with engine.begin() as conn:
            project = conn.execute(insert(Project).returning(Project.id), {"name": f"lab-fill-{lab.run}"}).scalar_one()
            big = min(count, BIG_DAG)
            rest = max(0, count - big)
            dags = [{"name": "lab-big-grid", "project_id": project, "config": "info: {}\n", "created": now}]
            dags += [{"name": f"lab-fill-{d}", "project_id": project, "config": "info: {}\n", "created": now}
                     for d in range((rest + 9) // 10)]
            dag_ids = conn.execute(insert(Dag).returning(Dag.id, sort_by_parameter_order=True), dags).scalars().all()

            def task(dag_id, name, k, **more):
                start_ = now - dt.timedelta(minutes=30, seconds=k % 600)
                row = {"dag_id": dag_id, "name": name, "type": "bash", "status": statuses[k % 10],
                       "created": start_ - dt.timedelta(seconds=5), "queued": start_, "started": start_,
                       "finished": start_ + dt.timedelta(seconds=60), "executor_config": {"command": "sleep 60"},
                       "env": {}, "gpus": [k % 8], "gpu_min": 1, "gpu_max": 1, "cpu": 1,
                       "computer": names[k % len(names)] if names else None, "parent_id": None, "grid_cell": None}
                row.update(more)
                return row

            parent = conn.execute(insert(Task).returning(Task.id), task(
                dag_ids[0], "sleep", 0, type=TaskKind.GRID.value, status="success", gpus=[], gpu_min=0, gpu_max=0,
                cpu=0, computer=None, executor_config={"template": {"type": "bash"}, "cells": big - 1})).scalar_one()
            rows = [task(dag_ids[0], f"sleep i={k}", k, parent_id=parent, grid_cell={"i": k}) for k in range(1, big)]
            for d, dag_id in enumerate(dag_ids[1:]):
                rows += [task(dag_id, f"step-{j}", d * 10 + j) for j in range(min(10, rest - d * 10))]
            ids = []
            for first in range(0, len(rows), 5000):
                ids += conn.execute(insert(Task).returning(Task.id, sort_by_parameter_order=True),
                                    rows[first:first + 5000]).scalars().all()
            ids = [parent, *ids]
            rows = [{"status": "success"}, *rows]
            conn.execute(insert(Attempt), [{"task_id": i, "number": 1, "status": r["status"], "gpus": r.get("gpus", []),
                                            "computer": r.get("computer"), "started": r.get("started"),
                                            "finished": r.get("finished")} for i, r in zip(ids, rows)])
            deps = [{"task_id": ids[k], "depend_id": ids[k - 1]} for k in range(big + 1, len(ids))
                    if rows[k]["name"] != "step-0"]
            if deps:
                conn.execute(insert(TaskDependency), deps)
    finally:
        engine.dispose()
    return dag_ids[0]


def ui(lab: Lab, args) -> None:
    """Part (e)."""
    print(f"\n(e) UI with {args.ui_tasks} more finished tasks in the store", flush=True)
    began = time.time()
    big = fill(lab, args.ui_tasks)
    total = lab.conn.execute("SELECT count(*) FROM task").fetchone()[0]
    print(f"  filled in {time.time() - began:.1f} s: {total} tasks in the store; big DAG {big} "
          f"({min(args.ui_tasks, BIG_DAG)} tasks)", flush=True)
    urls = {"baseline /api/": "/api/", "DAG list page": "/dags", f"DAG page ({min(args.ui_tasks, BIG_DAG)} tasks)": f"/dags/{big}",
            "computers page": "/computers"}
    times: dict[str, list[float]] = {name: [] for name in urls}
    with requests.Session() as session:
        for round_ in range(3 + args.ui_rounds):
            for name, url in urls.items():
                t0 = time.perf_counter()
                response = session.get(lab.url + url, timeout=120)
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"GET {url}: HTTP {response.status_code}: {response.text[:300]}")
                if round_ >= 3:
                    times[name].append(elapsed)
    base = percentile(times["baseline /api/"], 0.95)
    print(f"  {'page':28} {'p50 ms':>8} {'p95 ms':>8} {'p95/baseline':>13}  ({args.ui_rounds} requests each, "
          f"{args.computers} computers registered)")
    for name, values in times.items():
        p95 = percentile(values, 0.95)
        print(f"  {name:28} {statistics.median(values):8.1f} {p95:8.1f} {p95 / base:12.1f}x")


# -- the run ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def run_database(admin: str, url: str, keep: bool):
    """A new PostgreSQL database: (its SQLAlchemy URL, its name); dropped afterwards unless ``keep``."""
    name = f"mlcomp_lab_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.format(db=name), name
    finally:
        if keep:
            print(f"kept the database {name}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_db(base: str | None, number: int):
    """The broker URL of Redis database ``number`` (None without a broker); the keys added to it
    during the run are deleted afterwards."""
    if base is None:
        yield None
        return
    import redis

    url = f"{base.rstrip('/')}/{number}"
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    before = set(client.scan_iter())
    if before:
        print(f"note: Redis database {number} holds {len(before)} keys already; only the run's are deleted")
    try:
        yield url
    finally:
        for key in client.scan_iter():
            if key not in before:
                client.delete(key)
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage=__doc__.split("Usage: ")[1])
    parser.add_argument("--computers", type=int, default=20)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs each worker declares")
    parser.add_argument("--sleep", type=float, default=5, help="seconds each grid cell sleeps")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle measurement")
    parser.add_argument("--ui-tasks", type=int, default=100_000, help="finished tasks filled in for part (e); 0 skips it")
    parser.add_argument("--ui-rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10, help="workers started at a time")
    parser.add_argument("--register-timeout", type=float, default=120, help="seconds a batch has to register")
    parser.add_argument("--grid-timeout", type=float, default=None, help="default 300 + 10 x waves x sleep")
    parser.add_argument("--grace", type=float, default=20, help="seconds between SIGTERM and SIGKILL at the end")
    parser.add_argument("--no-broker", action="store_true", help="no Redis: workers take their tasks from the store")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the database (for debugging)")
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                        help="libpq connection string of a PostgreSQL role that may create databases")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                        help="SQLAlchemy URL of the new database, {db} its name")
    args = parser.parse_args(argv)
    print(f"lab: {args.computers} computers x {args.gpus} GPUs, one server; broker: "
          f"{'none' if args.no_broker else f'{args.redis}/{args.redis_db}'}; {os.cpu_count()} CPU cores here, "
          f"load average {os.getloadavg()[0]:.2f} (others' load skews the latencies)", flush=True)
    ok = False
    lab = None
    try:
        with sigterm_interrupts(), contextlib.ExitStack() as stack:
            try:
                db_url, db_name = stack.enter_context(run_database(args.pg, args.pg_url, args.keep))
            except psycopg.OperationalError as e:
                print(f"FLEET DID NOT START: PostgreSQL refuses: {str(e).strip()}")
                return 2
            broker = stack.enter_context(redis_db(None if args.no_broker else args.redis, args.redis_db))
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlcomp-lab-")))
            lab = Lab(args, folder, db_url, db_name, broker)
            stack.callback(lab.close)
            try:
                took = lab.start_server()
                print(f"server up in {took:.1f} s (UI {lab.url})", flush=True)
                took = lab.start_workers()
                print(f"{args.computers} workers registered in {took:.1f} s "
                      f"({args.computers / took:.1f}/s, batches of {args.batch})", flush=True)
            except (FleetError, psycopg.OperationalError) as e:
                print(f"FLEET DID NOT START: {e}")
                with contextlib.suppress(psycopg.Error):
                    mine, everyone, most = lab.admin.execute(
                        "SELECT count(*) FILTER (WHERE datname = %s), count(*) FILTER (WHERE datname IS NOT NULL), "
                        "current_setting('max_connections') FROM pg_stat_activity", (db_name,)).fetchone()
                    print(f"connections: {mine} to the run's database, {everyone} to all databases "
                          f"(max_connections {most}); {len(lab.workers)} workers started")
                return 2
            time.sleep(2.0)  # the last batch's first beats settle
            idle_conns = idle(lab, args)
            try:
                ok = grid(lab, args, idle_conns)
            except FleetError as e:
                print(f"FLEET FAILED: {e}")
                return 2
            if args.ui_tasks:
                ui(lab, args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped")
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
