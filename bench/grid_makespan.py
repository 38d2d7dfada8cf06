"""Grid-search scheduling: the makespan of a 16-cell grid on 4 GPUs against the ideal.

A DAG holds one grid search of ``--cells`` cells (default 16), each a bash ``sleep SECONDS``
task asking for 1 GPU, on one computer declaring 4 GPUs (``--gpus``) through the code path of
``mlcomp dag submit --wait`` (an embedded supervisor and local worker, a SQLite store). The
computer's CPU count is raised to the number of GPUs, so GPUs are the only constraint. The ideal
makespan is ``ceil(cells / gpus)`` rounds × SECONDS; the baseline, measured in the same run, is
the same ``sleep`` commands started by a plain thread pool of ``gpus`` workers. Rounds are
interleaved; medians are printed:

- ``makespan/ideal``: submission to the last cell's end, divided by the ideal (target ≤ 1.05);
- ``makespan/baseline``: the same, divided by the thread pool's time;
- ``busy/ideal``: first cell start to last cell end (store timestamps), divided by the ideal.

Usage: python bench/grid_makespan.py [--rounds 3] [--cells 16] [--gpus 4] [--seconds 1.0]
"""
from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select, update

from mlcomp.db import Computer, Task
from timed_dag import timed_dag

__all__ = ["grid_yaml", "orchestrated", "baseline", "main"]


def grid_yaml(cells: int, seconds: float) -> str:
    """A DAG file: a grid search of ``cells`` bash sleeps, each asking for 1 GPU, all at once."""
    return (f"info: {{name: grid, project: bench, expdir: .}}\n"
            f"executors:\n"
            f"  sleep:\n"
            f"    type: bash\n"
            f"    command: sleep {seconds} && echo $i\n"
            f"    gpu: 1\n"
            f"    grid:\n"
            f"      - i: \"1-{cells}\"\n")


def orchestrated(root: Path, cells: int, gpus: int, seconds: float) -> tuple[float, float]:
    """(submission → last end, first start → last end) of one grid run, in seconds."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dag.yml").write_text(grid_yaml(cells, seconds))

    def gpus_only(session):
        """Raises the computer's CPU count to its GPUs: GPUs, not the host's CPUs, limit the grid."""
        session.execute(update(Computer).where(Computer.name == "bench").values(cpu=gpus))

    def busy(session, ids):
        """Seconds from the first cell's start to the last cell's end (store timestamps)."""
        first, last = session.execute(select(func.min(Task.started), func.max(Task.finished))
                                      .where(Task.dag_id.in_(ids), Task.parent_id.is_not(None))).one()
        return (last - first).total_seconds()

    return timed_dag(root, root / "dag.yml", list(range(gpus)), setup=gpus_only, inspect=busy)


def baseline(cells: int, gpus: int, seconds: float) -> float:
    """The same sleeps, ``gpus`` at a time, from a plain thread pool."""
    start = time.perf_counter()
    with ThreadPoolExecutor(gpus) as pool:
        list(pool.map(lambda i: subprocess.run(["bash", "-c", f"sleep {seconds} && echo {i}"], check=True,
                                               stdout=subprocess.DEVNULL), range(cells)))
    return time.perf_counter() - start


def main() -> None:
    """Parses the options, runs the interleaved rounds and prints the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    ideal = math.ceil(args.cells / args.gpus) * args.seconds
    makespans, busy, base = [], [], []
    with tempfile.TemporaryDirectory(prefix="mlcomp-bench-") as tmp:
        for i in range(args.rounds):
            base.append(baseline(args.cells, args.gpus, args.seconds))
            total, active = orchestrated(Path(tmp) / f"round{i}", args.cells, args.gpus, args.seconds)
            makespans.append(total)
            busy.append(active)
            print(f"round {i + 1}: makespan {total:.3f} s, busy {active:.3f} s, baseline {base[-1]:.3f} s, "
                  f"ideal {ideal:.3f} s")
    makespan, baseline_time = statistics.median(makespans), statistics.median(base)
    print(f"{args.cells} cells x {args.seconds:g} s on {args.gpus} GPUs, medians of {args.rounds} rounds:")
    print(f"  makespan/ideal    {makespan / ideal:.3f}   (target <= 1.05)")
    print(f"  makespan/baseline {makespan / baseline_time:.3f}")
    print(f"  busy/ideal        {statistics.median(busy) / ideal:.3f}")


if __name__ == "__main__":
    main()
