"""The supervisor tick's cost with many tasks in the store: one tick over 10,000 waiting tasks
(all ready, two slots, so 9,998 get a waiting reason) against one over 100, in the same run.

A tick reads waiting and active tasks as light rows and writes waiting reasons in one bulk
UPDATE, so its time should grow with the rows read, not with ORM objects or statements per task.
Prints the median milliseconds of the first tick (placements and reasons written) and of a
second one (nothing changes), and their ratio to the 100-task store. Target: well under a second.

Usage: python bench/tick_scale.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from mlcomp.db import Computer, Dag, Project, Task, make_engine, make_sessionmaker, upgrade, utcnow
from mlcomp.settings import Settings
from mlcomp.supervisor import RecordingDispatcher, Supervisor


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
        supervisor = Supervisor(settings, store, RecordingDispatcher())
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args().rounds)
