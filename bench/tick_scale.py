"""The supervisor tick's cost with many tasks in the store.

Two cases:

* default: one tick over 10,000 waiting tasks (all ready, two slots, so 9,998 get a waiting
  reason) against one over 100, in the same run. Prints the median milliseconds of the first tick
  (placements and reasons written) and of a second one (nothing changes), and their ratio to the
  100-task store. Target: well under a second.
* ``--computers N --waiting M``: a lab of N computers with ``--gpus`` GPUs each (default 8) and M
  waiting one-GPU tasks, on SQLite and/or PostgreSQL (``--db``). The first tick places a whole
  wave (N × gpus tasks) and writes a waiting reason on the others; it prints the milliseconds of
  that placing tick, of a second tick (nothing changes), and where the placing tick's time goes
  (manual timers around the parts of a tick, nested ones indented; ``--profile`` adds cProfile's
  top entries). A tick's cost should grow with waiting tasks plus free GPUs, not their product.

A tick reads waiting and active tasks as light rows and writes waiting reasons and status changes
in bulk statements, so its time should grow with the rows read, not with ORM objects or
statements per task.

PostgreSQL: a temporary database is created through ``--pg-admin`` (a libpq connection string,
default ``$MLCOMP_TEST_PG`` as the tests use) and dropped afterwards.

Usage: python bench/tick_scale.py [--rounds 3]
       python bench/tick_scale.py --computers 100 --waiting 2400 [--db sqlite,postgresql] [--profile]
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from sqlalchemy import func, insert, select

from mlcomp.db import Computer, Dag, Project, Task, TaskStatus, make_engine, make_sessionmaker, upgrade, utcnow
from mlcomp.settings import Settings
from mlcomp.supervisor import Supervisor

PG_ADMIN = os.environ.get("MLCOMP_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL = os.environ.get("MLCOMP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}")


class QuietBus:
    """Takes the supervisor's messages and drops them: the bench times the tick, not a transport."""

    def publish(self, channel, ids=()) -> None:
        pass

    def subscribe(self, channel, callback):
        raise NotImplementedError("the bench never starts the supervisor")

    dispatch = publish


def store_with(tmp: Path, count: int):
    """A fresh SQLite store holding one computer with two CPUs and ``count`` ready tasks."""
    settings = Settings(root=tmp, db_url=f"sqlite:///{tmp / 'mlcomp.db'}")
    engine = make_engine(settings.db_url)
    upgrade(engine)
    store = make_sessionmaker(engine)
    with store.begin() as session:
        session.add(Computer(name="bench", cpu=2, memory=16.0, gpus=[], heartbeat=utcnow()))
        dag = Dag(name="scale", project=Project(name="bench"), config="")
        session.add(dag)
        session.flush()
        session.execute(insert(Task), [dict(dag_id=dag.id, name=f"t{i}", type="bash") for i in range(count)])
    return settings, store, engine


def tick_ms(count: int) -> tuple[float, float]:
    """Milliseconds of the first and of the second tick over a store of ``count`` ready tasks."""
    with tempfile.TemporaryDirectory() as tmp:
        settings, store, engine = store_with(Path(tmp), count)
        supervisor = Supervisor(settings, store, QuietBus())
        times = []
        for _ in range(2):
            start = time.perf_counter()
            supervisor.tick()
            times.append(1000 * (time.perf_counter() - start))
        engine.dispose()
    return times[0], times[1]


def main(rounds: int) -> None:
    """Interleaves ``rounds`` rounds of the 100- and 10,000-task stores; prints medians."""
    results = {100: ([], []), 10_000: ([], [])}
    for _ in range(rounds):
        for count, (first, second) in results.items():
            a, b = tick_ms(count)
            first.append(a)
            second.append(b)
    small = [statistics.median(v) for v in results[100]]
    print(f"{'tasks':>6} {'first tick ms':>14} {'second tick ms':>15} {'first/100':>10} {'second/100':>11}")
    for count, values in results.items():
        first, second = (statistics.median(v) for v in values)
        print(f"{count:>6} {first:>14.1f} {second:>15.1f} {first / small[0]:>10.1f} {second / small[1]:>11.1f}")
    print(f"(medians of {rounds} interleaved rounds; target: well under 1000 ms with 10,000 tasks)")


# --- the lab case: many computers, a wave of one-GPU tasks ---------------------------------------

TIMED: list[tuple[str, str, str]] = [
    # (module or "module:Class", attribute, label); a missing attribute is skipped, so the list
    # serves the placement code of any version. Nested calls are indented under their caller.
    ("mlcomp.supervisor.supervisor", "alive_computers", "computers (locked)"),
    ("mlcomp.supervisor.supervisor", "active_tasks", "active rows"),
    ("mlcomp.supervisor.supervisor", "find_ready", "find_ready (waiting rows, dependencies, parents)"),
    ("mlcomp.supervisor.ready", "_dependencies", "dependencies"),
    ("mlcomp.supervisor.ready", "set_waiting_reasons", "waiting reasons written"),
    ("mlcomp.supervisor.supervisor:Supervisor", "_place", "_place"),
    ("mlcomp.supervisor.supervisor", "free_resources", "free resources"),
    ("mlcomp.supervisor.supervisor", "place", "allocation (place per task)"),
    ("mlcomp.supervisor.allocate:FreePool", "place", "allocation (FreePool.place)"),
    ("mlcomp.supervisor.supervisor", "FreePool", "allocation: pool built"),
    ("mlcomp.supervisor.allocate", "FreePool", "allocation: pool built"),
    ("mlcomp.supervisor.supervisor", "set_task_status", "status → queued (per task)"),
    ("mlcomp.supervisor.supervisor", "set_status_many", "status → queued (bulk)"),
    ("mlcomp.lifecycle", "set_status_many", "status → queued (bulk, objects)"),
    ("mlcomp.supervisor.supervisor", "queue_many", "status → queued (bulk, rows)"),
    ("mlcomp.lifecycle", "queue_many", "status → queued (bulk, rows)"),
    ("mlcomp.supervisor.supervisor", "set_waiting_reasons", "waiting reasons written"),
    ("sqlalchemy.orm.session:Session", "get", "Session.get"),
    ("sqlalchemy.orm.session:Session", "flush", "Session.flush"),
    ("sqlalchemy.orm.session:SessionTransaction", "commit", "transaction commit"),
    ("mlcomp.supervisor.supervisor:Supervisor", "_publish", "messages to workers"),
]


class Timers:
    """Wraps the :data:`TIMED` callables while active; records seconds and calls per call path
    (the labels of the timed callers, outermost first)."""

    def __init__(self, targets=TIMED):
        self.targets = targets
        self.seconds: dict[tuple[str, ...], float] = {}
        self.calls: dict[tuple[str, ...], int] = defaultdict(int)
        self._stack: list[str] = []
        self._saved = []

    def _wrap(self, fn, label):
        timers = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            timers._stack.append(label)
            key = tuple(timers._stack)
            timers.seconds.setdefault(key, 0.0)  # first seen first: a caller before its callees
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers.seconds[key] += time.perf_counter() - start
                timers.calls[key] += 1
                timers._stack.pop()
        return timed

    def __enter__(self):
        import importlib
        for where, name, label in self.targets:
            module, _, cls = where.partition(":")
            owner = importlib.import_module(module)
            if cls:
                owner = getattr(owner, cls, None)
            if owner is None or name not in vars(owner) or not callable(vars(owner)[name]):
                continue
            original = vars(owner)[name]
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(original, label))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def report(self, total_s: float) -> str:
        """The parts as an indented table in milliseconds, callees under their callers."""
        keys = sorted(self.seconds, key=lambda k: [list(self.seconds).index(k[:i + 1]) for i in range(len(k))])
        lines = [f"    {'part':<58} {'ms':>9} {'calls':>6}"]
        for key in keys:
            lines.append(f"    {'  ' * (len(key) - 1) + key[-1]:<58} {1000 * self.seconds[key]:>9.1f} "
                         f"{self.calls[key]:>6}")
        lines.append(f"    {'tick (all)':<58} {1000 * total_s:>9.1f}")
        return "\n".join(lines)


@contextlib.contextmanager
def lab_store(db: str, computers: int, gpus: int, waiting: int):
    """A store with ``computers`` alive computers of ``gpus`` GPUs, 64 CPUs and 512 GB each and
    ``waiting`` ready one-GPU tasks; yields ``(settings, sessionmaker)``."""
    with tempfile.TemporaryDirectory() as tmp:
        if db == "sqlite":
            url, drop = f"sqlite:///{Path(tmp) / 'mlcomp.db'}", None
        else:
            import psycopg
            name = f"mlcomp_bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url, drop = PG_URL.format(db=name), name
        engine = make_engine(url)
        try:
            upgrade(engine)
            store = make_sessionmaker(engine)
            with store.begin() as session:
                session.execute(insert(Computer), [
                    dict(name=f"node{c:04d}", address=f"10.0.{c // 250}.{c % 250 + 1}",
                         gpus=[{"index": i, "memory": 80, "name": "bench"} for i in range(gpus)],
                         cpu=64, memory=512.0, heartbeat=utcnow()) for c in range(computers)])
                dag = Dag(name="lab", project=Project(name="bench"), config="")
                session.add(dag)
                session.flush()
                session.execute(insert(Task), [dict(dag_id=dag.id, name=f"t{i}", type="bash", gpu_min=1, gpu_max=1)
                                               for i in range(waiting)])
            yield Settings(root=Path(tmp), db_url=url), store
        finally:
            engine.dispose()
            if drop:
                import psycopg
                with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')


def wave(db: str, computers: int, gpus: int, waiting: int, profile: bool = False, targets=TIMED) -> dict:
    """One lab store: times its placing tick (with :class:`Timers`) and a second tick, checks the
    wave was placed whole, and returns ``{"first_ms", "second_ms", "report", "profile"}``."""
    with lab_store(db, computers, gpus, waiting) as (settings, store):
        supervisor = Supervisor(settings, store, QuietBus())
        profiler = cProfile.Profile() if profile else None
        with Timers(targets) as timers:
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            placed = supervisor.tick()
            if profiler:
                profiler.disable()
            first = time.perf_counter() - start
        start = time.perf_counter()
        again = supervisor.tick()
        second = time.perf_counter() - start
        expected = min(waiting, computers * gpus)
        with store.begin() as session:
            queued = session.scalar(select(func.count()).where(Task.status == TaskStatus.queued))
            holders = session.execute(select(Task.computer, Task.gpus).where(Task.status == TaskStatus.queued)).all()
        held = {(c, int(g)) for c, gs in holders for g in gs}
        assert len(placed) == queued == expected == len(held), (len(placed), queued, expected, len(held))
        assert not again, "a second tick placed more tasks"
        text = None
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            text = out.getvalue()
        return {"first_ms": 1000 * first, "second_ms": 1000 * second, "report": timers.report(first),
                "profile": text}


def lab(dbs: list[str], computers: int, gpus: int, waiting: int, rounds: int, profile: bool) -> None:
    """Prints the placing tick's median time per database and the breakdown of its last round."""
    for db in dbs:
        runs = [wave(db, computers, gpus, waiting) for _ in range(rounds)]
        first = statistics.median(r["first_ms"] for r in runs)
        second = statistics.median(r["second_ms"] for r in runs)
        print(f"{db}: {computers} computers x {gpus} GPUs, {waiting} waiting one-GPU tasks: placing tick "
              f"{first:.1f} ms ({min(waiting, computers * gpus)} placed), next tick {second:.1f} ms "
              f"(medians of {rounds})")
        print(runs[-1]["report"])
        if profile:
            print(wave(db, computers, gpus, waiting, profile=True)["profile"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--computers", type=int, help="run the lab case with this many computers")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per computer in the lab case")
    parser.add_argument("--waiting", type=int, default=2400, help="waiting one-GPU tasks in the lab case")
    parser.add_argument("--db", default="sqlite,postgresql", help="lab case stores: sqlite, postgresql or both")
    parser.add_argument("--profile", action="store_true", help="lab case: also print cProfile's top entries")
    args = parser.parse_args()
    if args.computers:
        lab(args.db.split(","), args.computers, args.gpus, args.waiting, args.rounds, args.profile)
    else:
        main(args.rounds)
