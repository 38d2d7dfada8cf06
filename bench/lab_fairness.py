"""Shared GPUs: fair share between projects, GPU utilisation, an urgent task's wait and the batches
lost to preemption, under mlcomp's fair scheduler and under plain priority-FIFO, in one run.

Three projects (``a``, ``b``, ``c``, equal shares) share one computer that declares ``--gpus`` GPUs
(default 8; its CPU count is raised to match, so GPUs are the only limit). Each project submits a
grid of ``--cells`` train tasks asking for 1 GPU each, at staggered times (0, ``--stagger``,
2 × ``--stagger`` seconds): the runner trains scikit-learn's digits with the example's small CNN for
``--epochs`` epochs, with a pause of ``--batch-seconds`` after each batch standing in for the GPU's
work (this machine has none). Once every GPU is busy and all three projects wait, an urgent task of
priority 10 (project ``urgent``, the same training) is submitted. The same workload runs with
``scheduler: fair`` (priority, fair share, preemption at a batch boundary) and ``scheduler: fifo``
(priority, then arrival; nothing is preempted). Printed for each:

- Jain's fairness index of the three projects' GPU-seconds while all three are backlogged (from the
  third submission until the first project has no task left waiting): 1 is a perfectly even split,
  1/3 one project holding everything (target ≥ 0.95 for fair);
- GPU utilisation over the same window: the GPU-seconds of running tasks over GPUs × window
  (target ≥ 0.95);
- the urgent task's wait, submission → start, in seconds (target ≤ 10 s plus one batch);
- batches lost to preemption, counted from the store's batch metric rows (every batch reports its
  loss at this size): training steps recorded twice, or missing, across a task's attempts (target 0);
- how many tasks were preempted.

Usage: python bench/lab_fairness.py [--gpus 8] [--cells 16] [--epochs 2] [--batch-seconds 0.12]
                                   [--stagger 4] [--urgent-after 6]
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from sqlalchemy import select, update

from mlcomp import control
from mlcomp.db import Attempt, Computer, Dag, Metric, Preemption, Project, Task, TaskStatus, immediate
from mlcomp.settings import Settings
from mlcomp.supervisor import run_local

__all__ = ["main", "run", "jain"]

PROJECTS = ("a", "b", "c")

TRAIN = """\
model_params: {model: DigitsCNN, width: 8}
args: {seed: 7, expdir: ext}
runner_params: {input_key: features, output_key: logits, input_target_key: targets}
stages:
  data_params:
    dataset: DigitsDataset
    batch_size: 64
    num_workers: 0
    loaders: {train: {split: train}, valid: {split: valid}}
  stage_params: {main_metric: accuracy01, minimize_metric: false, valid_loader: valid}
  criterion_params: {criterion: CrossEntropyLoss}
  optimizer_params: {optimizer: Adam, lr: 0.003}
  callbacks_params:
    accuracy: {callback: AccuracyCallback, input_key: targets, output_key: logits}
    work: {callback: GpuWork, seconds: SECONDS}
  train: {stage_params: {num_epochs: EPOCHS}}
"""

EXT = '''\
import time

from mlcomp.runner import Callback, CallbackOrder, registry


@registry.Callback
class GpuWork(Callback):
    """Sleeps after each batch: the GPU time a real model would take, on a machine without one."""

    def __init__(self, seconds: float = 0.0):
        super().__init__(CallbackOrder.External)
        self.seconds = seconds

    def on_batch_end(self, runner):
        time.sleep(self.seconds)
'''


def write_expdir(root: Path, epochs: int, batch_seconds: float, cells: int) -> dict[str, Path]:
    """The experiment folder and one DAG file per project (a grid of ``cells`` train tasks) and
    for the urgent task; returns the DAG files by project."""
    (root / "configs").mkdir(parents=True)
    (root / "ext").mkdir()
    (root / "configs" / "train.yml").write_text(
        TRAIN.replace("SECONDS", str(batch_seconds)).replace("EPOCHS", str(epochs)))
    (root / "ext" / "__init__.py").write_text(EXT)
    files = {}
    for project in PROJECTS:
        files[project] = root / f"{project}.yml"
        files[project].write_text(textwrap.dedent(f"""\
            info: {{name: grid-{project}, project: {project}, expdir: .}}
            executors:
              train:
                type: train
                config: [configs/train.yml]
                gpu: 1
                grid:
                  - seed: "1-{cells}"
            """))
    files["urgent"] = root / "urgent.yml"
    files["urgent"].write_text(textwrap.dedent("""\
        info: {name: urgent, project: urgent, expdir: ., priority: 10}
        executors:
          train: {type: train, config: [configs/train.yml], gpu: 1}
        """))
    return files


def jain(values: list[float]) -> float:
    """Jain's fairness index (Jain, Chiu and Hawe, 1984): (Σx)² / (n·Σx²), 1 for equal shares;
    NaN when every value is 0 (nothing to share)."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else float("nan")


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _overlap(start: dt.datetime, end: dt.datetime, window: tuple[dt.datetime, dt.datetime]) -> float:
    """Seconds of [start, end] inside ``window``."""
    return max(0.0, (min(end, window[1]) - max(start, window[0])).total_seconds())


def _attempts(session) -> list:
    """(project, started, finished) of every attempt that ran a process on a GPU (one each; a
    grid's parent holds none)."""
    rows = session.execute(
        select(Project.name, Attempt.started, Attempt.finished).join(Task, Task.id == Attempt.task_id)
        .join(Dag, Dag.id == Task.dag_id).join(Project, Project.id == Dag.project_id)
        .where(Attempt.started.is_not(None), Attempt.finished.is_not(None), Task.gpu_min > 0))
    return [(project, _aware(started), _aware(finished)) for project, started, finished in rows]


def _backlogged(session, submitted: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """From the last project's submission until the first project's last task started (its
    queue ran empty)."""
    last_starts = session.execute(
        select(Project.name, Task.started).join(Dag, Dag.id == Task.dag_id).join(Project, Project.id == Dag.project_id)
        .where(Project.name.in_(PROJECTS), Task.parent_id.is_not(None))).all()
    first_empty = min(max(_aware(s) for p, s in last_starts if p == project) for project in PROJECTS)
    return submitted, first_empty


def _batches_lost(session) -> int:
    """Batch steps recorded twice or missing across each task's attempts (the batch loss rows of
    every loader: the runner's global batch step counts train and valid batches alike)."""
    steps: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for task_id, step in session.execute(select(Metric.task_id, Metric.step).where(
            Metric.kind == "batch", Metric.name == "loss")):
        steps[task_id][step] += 1
    lost = 0
    for counts in steps.values():
        expected = range(min(counts), max(counts) + 1)
        lost += sum(n - 1 for n in counts.values()) + sum(1 for step in expected if step not in counts)
    return lost


def run(root: Path, scheduler: str, args) -> dict:
    """One run of the workload under ``scheduler``; returns its figures."""
    files = write_expdir(root / "exp", args.epochs, args.batch_seconds, args.cells)
    settings = Settings.from_env({}, root=str(root / "store"), scheduler=scheduler, preempt_min_run=args.min_run)
    changed = threading.Event()
    gpus = list(range(args.gpus))
    with run_local(settings, gpus, name="lab", on_change=changed.set, interval=0.5) as local:
        store = local.sessionmaker
        with store.begin() as session:
            session.execute(update(Computer).where(Computer.name == "lab").values(cpu=args.gpus))

        def submit(name: str) -> dt.datetime:
            with store.begin() as session:
                immediate(session)
                control.submit_dag(session, settings, files[name])
            local.supervisor.wake()
            return dt.datetime.now(dt.timezone.utc)

        for i, project in enumerate(PROJECTS):
            if i:
                time.sleep(args.stagger)
            third = submit(project)
        time.sleep(args.urgent_after)
        urgent_submitted = submit("urgent")
        _wait_all(store, timeout=args.timeout)
        with store() as session:
            statuses = collections.Counter(s.value for s in session.scalars(select(Task.status)
                                                                              .where(Task.parent_id.is_not(None))))
            urgent = session.execute(select(Task.started).join(Dag).join(Project)
                                     .where(Project.name == "urgent")).scalar_one()
            window = _backlogged(session, third)
            attempts = _attempts(session)
            lost = _batches_lost(session)
            preempted = len(session.scalars(select(Preemption.id)).all())
    seconds = {p: sum(_overlap(s, f, window) for q, s, f in attempts if q == p) for p in PROJECTS}
    busy = sum(_overlap(s, f, window) for _, s, f in attempts)
    span = (window[1] - window[0]).total_seconds()
    return {"jain": jain(list(seconds.values())), "utilisation": busy / (args.gpus * span) if span > 0 else float("nan"),
            "urgent_wait": (_aware(urgent) - urgent_submitted).total_seconds(), "lost": lost, "preempted": preempted,
            "window": span, "gpu_seconds": seconds, "statuses": dict(statuses)}


def _wait_all(store, timeout: float) -> None:
    """Waits until no task is waiting, placed or running.

    Raises:
        RuntimeError: after ``timeout`` seconds, or a task that did not succeed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store() as session:
            rows = session.execute(select(Task.id, Task.name, Task.status, Task.reason)).all()
        if all(row.status is TaskStatus.success for row in rows):
            return
        ended = [f"task {row.id} ({row.name}) {row.status.value}: {row.reason}" for row in rows
                 if row.status in (TaskStatus.failed, TaskStatus.stopped, TaskStatus.skipped)]
        if ended:
            raise RuntimeError("a task did not succeed: " + "; ".join(ended))
        time.sleep(0.5)
    raise RuntimeError(f"the workload did not end within {timeout:g} s")


def main() -> None:
    """Parses the options, runs the workload under both schedulers and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-seconds", type=float, default=0.12)
    parser.add_argument("--stagger", type=float, default=4.0)
    parser.add_argument("--urgent-after", type=float, default=6.0)
    parser.add_argument("--min-run", type=float, default=60.0, help="preempt_min_run, seconds")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlcomp-bench-") as tmp:
        for scheduler in ("fair", "fifo"):
            results[scheduler] = run(Path(tmp) / scheduler, scheduler, args)
            r = results[scheduler]
            print(f"{scheduler}: GPU-seconds while backlogged {r['gpu_seconds']}, window {r['window']:.1f} s, "
                  f"statuses {r['statuses']}")
    print(f"3 projects x {args.cells} train tasks on {args.gpus} GPUs, an urgent priority-10 task:")
    print(f"  {'':28}{'fair':>10}{'fifo':>10}")
    rows = [("Jain's index (>= 0.95)", "jain", "{:.3f}"), ("GPU utilisation (>= 0.95)", "utilisation", "{:.3f}"),
            ("urgent wait, s (<= 10)", "urgent_wait", "{:.1f}"), ("batches lost (0)", "lost", "{:d}"),
            ("tasks preempted", "preempted", "{:d}")]
    for label, key, form in rows:
        print(f"  {label:28}{form.format(results['fair'][key]):>10}{form.format(results['fifo'][key]):>10}")


if __name__ == "__main__":
    main()
