"""Orchestration and reporting overhead of a real training task: the digits train task through
mlcomp against ``mlcomp run`` of the same config.

The data is prepared once (``dags/digits/prepare.py``) into a temporary data folder. Each round
runs, interleaved:

- the baseline: ``mlcomp run --config train.yml --config pipeline.yml --logdir …`` in a
  subprocess (Python start, torch import, training, checkpoints; no store) with one torch
  thread (``OMP_NUM_THREADS=1``), as the train task sets for its 1 CPU;
- the orchestrated run: a DAG with the same train task submitted to an embedded supervisor and
  local worker (the code path of ``mlcomp dag submit --wait``): snapshot, child process, the
  reporting callback writing metrics, progress and checkpoints to a SQLite store.

Both measure submission (or start) to the end of the process; the task's own process time
(start to end in the store: child start, torch import, training with reporting) is printed too.
Medians are printed with their ratios to the baseline, and the number of metric rows written.

Usage: python bench/reporting_overhead.py [--rounds 3] [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from mlcomp.db import Metric, Task
from mlcomp.settings import Settings
from timed_dag import timed_dag

__all__ = ["make_expdir", "baseline", "orchestrated", "main"]

REPO = Path(__file__).resolve().parents[1]
EXPDIR = REPO / "dags" / "digits"
CONFIGS = ["configs/train.yml", "configs/pipeline.yml"]


def _epochs_yaml(epochs: int | None) -> str:
    if epochs is None:
        return ""
    return (f"stages: {{warmup: {{stage_params: {{num_epochs: 1}}}}, "
            f"main: {{stage_params: {{num_epochs: {max(1, epochs - 1)}}}}}}}\n")


def make_expdir(tmp: Path, epochs: int | None) -> Path:
    """A copy of the digits expdir whose ``configs/epochs.yml`` optionally shortens the run."""
    expdir = tmp / "digits"
    shutil.copytree(EXPDIR, expdir, ignore=shutil.ignore_patterns("__pycache__"))
    (expdir / "configs" / "epochs.yml").write_text(_epochs_yaml(epochs) or "{}\n")
    files = ", ".join([*CONFIGS, "configs/epochs.yml"])
    (tmp / "train.yml").write_text(f"info: {{name: train, project: bench, expdir: digits}}\n"
                                   f"executors:\n  train: {{type: train, config: [{files}]}}\n")
    return expdir


def baseline(expdir: Path, logdir: Path, data: Path) -> float:
    """Seconds of ``mlcomp run`` of the train task's configs, with ``MLCOMP_DATA_DIR`` set to
    ``data`` as the worker sets it (the runner expands ``${MLCOMP_DATA_DIR}`` in both)."""
    argv = [sys.executable, "-c", "from mlcomp.cli import main; main()", "run", "--logdir", str(logdir)]
    for name in (*CONFIGS, "configs/epochs.yml"):
        argv += ["--config", str(expdir / name)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLCOMP_DATA_DIR": str(data)}
    start = time.perf_counter()  # one torch thread, as the task gets for its 1 CPU
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def orchestrated(tmp: Path, root: Path) -> tuple[float, float, int]:
    """Seconds from submission to the train task's end, seconds its process ran (start to end
    as the store records them), and the metric rows it wrote."""
    def inspect(session, ids):
        """(the task's start-to-end seconds, the metric rows in the store)."""
        started, finished = session.execute(select(Task.started, Task.finished).where(Task.dag_id.in_(ids))).one()
        return (finished - started).total_seconds(), session.scalar(select(func.count()).select_from(Metric))

    elapsed, (ran, rows) = timed_dag(root, tmp / "train.yml", [], inspect=inspect)
    return elapsed, ran, rows


def main() -> None:
    """Parses the options, runs the interleaved rounds and prints the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="epochs in all (default: the config's 10)")
    args = parser.parse_args()
    sys.path.insert(0, str(EXPDIR))
    from prepare import prepare

    plain, orch, ran = [], [], []
    with tempfile.TemporaryDirectory(prefix="mlcomp-bench-") as name:
        tmp = Path(name)
        expdir = make_expdir(tmp, args.epochs)
        for i in range(args.rounds):
            root = tmp / f"root{i}"
            data = Settings.from_env({}, root=str(root)).data_dir / "bench"
            prepare(str(data))
            plain.append(baseline(expdir, tmp / f"plain{i}", data))
            seconds, process, rows = orchestrated(tmp, root)
            orch.append(seconds)
            ran.append(process)
            print(f"round {i + 1}: mlcomp run {plain[-1]:.2f} s, orchestrated {orch[-1]:.2f} s, of which the "
                  f"task's process {ran[-1]:.2f} s ({rows} metric rows)")
    print(f"digits train task, medians of {args.rounds} rounds:")
    print(f"  mlcomp run    {statistics.median(plain):.2f} s")
    print(f"  orchestrated  {statistics.median(orch):.2f} s (submission to end)")
    print(f"  task process  {statistics.median(ran):.2f} s (start to end)")
    print(f"  ratio orchestrated / mlcomp run   {statistics.median(orch) / statistics.median(plain):.3f}")
    print(f"  ratio task process / mlcomp run   {statistics.median(ran) / statistics.median(plain):.3f}")


if __name__ == "__main__":
    main()
