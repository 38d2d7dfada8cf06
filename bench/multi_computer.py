"""One distributed train task on two computers against the same two ranks on one computer, in the
same run.

Three ``mlcomp worker`` processes with their own root folders and loopback addresses share a
store on PostgreSQL, as computers do (a database made for the run and dropped after it; the test
harness ``tests/cluster.py``; no broker: workers take their tasks from the store): ``solo``
declares GPUs 0 and 1, ``a`` and ``b`` one each. Rounds alternate, one task at a
time:

- **one computer**: a ``distr: true`` train task with ``gpu: 2`` pinned to ``solo``: two gloo
  ranks on one computer;
- **two computers**: the same task with ``single_node: false`` while a bash task holds both of
  solo's GPUs (a ``sleep`` loop), so the gang is placed on ``a`` (rank 0) and ``b``.

On a machine without CUDA the declared GPUs are not used: the ranks run on gloo, one torch thread
each. The task is an MLP (64 → 256 → 10) on 4,096 synthetic samples, batch 32 per rank, 4 epochs.
Printed: the median time from the task's start (rank 0's launch) to its end in the store, and
from submission to the end, for each, and the ratio two/one. Target: ≤ 1.10×.

Usage: python bench/multi_computer.py [--rounds 5] [--pg "host=127.0.0.1 port=5432 user=postgres dbname=test"]
       [--pg-url "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from mlcomp import control, gang
from mlcomp.db import Task, TaskStatus, immediate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster import Cluster  # noqa: E402  (the multi-computer harness of the tests)
from supervisor_helpers import wait_status  # noqa: E402

CONFIG = """\
model_params: {model: SimpleNet, in_features: 64, hidden: 256, num_classes: 10}
args: {seed: 7}
runner_params: {input_key: features, output_key: logits, input_target_key: targets}
stages:
  data_params:
    dataset: SyntheticDataset
    num_features: 64
    num_classes: 10
    batch_size: 32
    loaders: {train: {num_samples: 4096}, valid: {num_samples: 512}}
  stage_params: {main_metric: loss, minimize_metric: true}
  criterion_params: {criterion: CrossEntropyLoss}
  optimizer_params: {optimizer: Adam, lr: 0.001}
  main: {stage_params: {num_epochs: 4}}
"""

DAG = """\
info: {{name: {name}, project: bench, expdir: .}}
executors:
{tasks}
"""
ONE = "  train: {{type: train, config: train.yml, gpu: 2, distr: true, cpu: 2, computer: {solo}}}"
TWO = ("  hold: {{type: bash, gpu: 2, computer: {solo}, command: 'while [ ! -e {go} ]; do sleep 0.2; done'}}\n"
       "  train: {{type: train, config: train.yml, gpu: 2, distr: true, single_node: false, cpu: 1}}")


def run(cluster: Cluster, folder: Path, name: str, tasks: str) -> tuple[float, float, list]:
    """Submits a DAG of ``tasks`` (its expdir ``folder``) and waits for its train task; returns
    (seconds from its start to its end, seconds from the submission to its end, its computers)."""
    folder.mkdir(exist_ok=True)
    (folder / "train.yml").write_text(CONFIG)
    (folder / f"{name}.yml").write_text(DAG.format(name=name, tasks=tasks))
    submitted = time.time()
    with cluster.store.begin() as session:
        immediate(session)
        (dag,) = control.submit_dag(session, cluster.settings, folder / f"{name}.yml")
        train_id = next(t.id for t in dag.tasks if t.name == "train")
    done: Task = wait_status(cluster.store, train_id, TaskStatus.success, TaskStatus.failed, timeout=900)
    if done.status is not TaskStatus.success:
        raise SystemExit(f"{name}: {done.reason}")
    parts = gang.computers_of(done.computer, done.placement)
    return (done.finished - done.started).total_seconds(), done.finished.timestamp() - submitted, parts


@contextlib.contextmanager
def database(admin: str, url: str):
    """A new PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    name = f"mlcomp_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.format(db=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=test",
                        help="libpq connection string of a PostgreSQL role that may create databases")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                        help="SQLAlchemy URL of the new database, {db} its name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlcomp-bench-") as tmp, database(args.pg, args.pg_url) as url:
        folder = Path(tmp)
        cluster = Cluster(folder / "computers", url, None)
        try:
            solo, a, b = cluster.add("solo", gpus="0,1"), cluster.add("a"), cluster.add("b")
            cluster.supervise()
            times = {"one": [], "two": []}
            for i in range(args.rounds):
                for kind in ("one", "two") if i % 2 == 0 else ("two", "one"):
                    go = folder / f"go-{kind}-{i}"
                    tasks = (ONE if kind == "one" else TWO).format(solo=solo, go=go)
                    work, total, parts = run(cluster, folder / "exp", f"{kind}-{i}", tasks)
                    go.write_text("")  # the holder of solo's GPUs ends
                    times[kind].append((work, total))
                    print(f"round {i + 1} {kind}: {work:.2f} s running, {total:.2f} s from submission on "
                          f"{', '.join(parts)}", flush=True)
                    time.sleep(1.0)  # the holder ends and its GPUs are free again
        finally:
            cluster.close()
    one = [statistics.median(t[k] for t in times["one"]) for k in (0, 1)]
    two = [statistics.median(t[k] for t in times["two"]) for k in (0, 1)]
    print(f"median running time: one computer {one[0]:.2f} s, two computers {two[0]:.2f} s, "
          f"ratio {two[0] / one[0]:.3f} (target <= 1.10)")
    print(f"median from submission: one computer {one[1]:.2f} s, two computers {two[1]:.2f} s, "
          f"ratio {two[1] / one[1]:.3f}")


if __name__ == "__main__":
    main()
