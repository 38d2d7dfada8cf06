"""Orchestration overhead: no-op Python processes through mlcomp and through Luigi against a
plain subprocess loop, in the same run.

Two DAGs of ``python -c pass`` tasks go through the code path of ``mlcomp dag submit --wait``
(submit, wake, an embedded supervisor and local worker, follow until done; every state change
written to a SQLite store):

- a chain of 20 tasks;
- a fan-out 1 → 50 → 1 with two slots (each task asks for 1 CPU on a computer with 2 CPUs).

Their tasks use the bash type's list form (``command: [python, -c, pass]``: that argv, no shell),
so mlcomp, Luigi and the loop start the same process. A third row, ``shell``, runs the chain with
the command as a string, as most DAG files write it: ``bash -c 'python -c pass'`` per task, against
the same loop, so its overhead includes bash's start.

The same DAGs run through Luigi's local scheduler (``luigi.build(..., local_scheduler=True)``,
one worker for the chain, two for the fan-out; each task runs the command and touches its
output file, Luigi's way of knowing a task is done). The baseline runs the same commands with
``subprocess.run`` in a plain Python loop (the fan-out's middle with two threads, the same two
slots). Rounds are interleaved; medians are printed: the overhead per task in ms beyond the
baseline (mlcomp's submission itself excluded), and mlcomp's time to the first task's start, from
the submit call (parsing, snapshot, rows, commit) and from its commit. Targets: ≤ 5 ms per task
and below Luigi's, ≤ 50 ms to the first start. Two CPU figures per task say where mlcomp's time
goes, and vary less with the machine's load than wall times: the CPU of this process (supervisor,
worker, following; the submission excluded) and the CPU its task processes used beyond the loop's
(the recorder shell around each ``python -c pass``, and bash in the ``shell`` row).

Then, once, the cold path: ``mlcomp dag submit chain.yml --wait`` as a new process with no
server running, which starts its supervisor and worker after the submission (imports, store,
GPU detection): its wall time against the baseline loop, and the time from the DAG row's
creation to the first task's start.

Usage: python bench/dag_overhead.py [--rounds 5] [--no-cli]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from mlcomp import control
from mlcomp.cli.common import follow_dags
from mlcomp.db import Computer, Dag, Task, immediate
from mlcomp.settings import Settings
from mlcomp.supervisor import run_local

COMMAND = [sys.executable, "-c", "pass"]
EXEC_FORM = json.dumps(COMMAND)  # a bash task's list form: this argv, no shell, as the loop and Luigi run it
SHAPES = {"chain": 20, "fan": 52, "shell": 20}
"""The DAGs and their task counts: ``shell`` is the chain with each command a string (``bash -c``)."""


def chain_yaml(n: int = 20, command: str = EXEC_FORM) -> str:
    """A DAG file: ``n`` no-op bash tasks running ``command`` (YAML), each depending on the previous one."""
    lines = ["info: {name: chain, project: bench, expdir: code}", "executors:"]
    for i in range(n):
        depends = f", depends: t{i - 1}" if i else ""
        lines.append(f"  t{i}: {{type: bash, command: {command}{depends}}}")
    return "\n".join(lines) + "\n"


def fan_yaml(width: int = 50) -> str:
    """A DAG file: one task, ``width`` tasks depending on it, one task depending on them all."""
    lines = ["info: {name: fan, project: bench, expdir: code}", "executors:",
             f"  src: {{type: bash, command: {EXEC_FORM}}}"]
    lines += [f"  m{i}: {{type: bash, command: {EXEC_FORM}, depends: src}}" for i in range(width)]
    lines.append(f"  sink: {{type: bash, command: {EXEC_FORM}, "
                 f"depends: [{', '.join(f'm{i}' for i in range(width))}]}}")
    return "\n".join(lines) + "\n"


def baseline_chain(n: int = 20) -> float:
    """Seconds to run the chain's ``n`` commands one after the other with ``subprocess.run``."""
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(COMMAND, check=True)
    return time.perf_counter() - start


def baseline_fan(width: int = 50) -> float:
    """Seconds to run the fan-out's commands: one, ``width`` on two threads, one."""
    start = time.perf_counter()
    subprocess.run(COMMAND, check=True)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: subprocess.run(COMMAND, check=True), range(width)))
    subprocess.run(COMMAND, check=True)
    return time.perf_counter() - start


def luigi_dag(shape: str, folder: Path):
    """The Luigi task at the end of the chain (``shape="chain"``) or fan-out, with its outputs
    in ``folder`` (which must be empty for a run to do the work)."""
    import luigi

    class Command(luigi.Task):
        """Runs COMMAND, then touches its output file."""
        name = luigi.Parameter()
        after = luigi.ListParameter(default=())

        def requires(self):
            return [Command(name=n, after=a) for n, a in self.after]

        def output(self):
            return luigi.LocalTarget(str(folder / self.name))

        def run(self):
            subprocess.run(COMMAND, check=True)
            with self.output().open("w"):
                pass

    if shape == "chain":
        task = Command(name="t0")
        for i in range(1, 20):
            task = Command(name=f"t{i}", after=[(task.name, task.after)])
        return task
    src = ("src", ())
    return Command(name="sink", after=[(f"m{i}", (src,)) for i in range(50)])


def run_luigi(shape: str, folder: Path) -> float:
    """Seconds Luigi's local scheduler takes for the DAG (one worker for the chain, two for the
    fan-out: the same slots as mlcomp and the baseline)."""
    import luigi

    folder.mkdir(parents=True)
    start = time.perf_counter()
    ok = luigi.build([luigi_dag(shape, folder)], local_scheduler=True, workers=1 if shape == "chain" else 2,
                     log_level="ERROR")
    total = time.perf_counter() - start
    assert ok, f"luigi's {shape} failed"
    return total


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended and reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dag(local, settings: Settings, path: Path,
            changed: threading.Event) -> tuple[float, float, float, int, float, float]:
    """Submits ``path`` as ``dag submit --wait`` does. Returns the seconds from the start of the
    submission to the DAG's end, the seconds the submission itself took (parse, snapshot, rows,
    commit), the seconds from its commit to the first task's start, the task count, and the CPU
    seconds of this process and of its children from the commit to the end."""
    start = time.perf_counter()
    with local.sessionmaker.begin() as session:
        immediate(session)
        (dag,) = control.submit_dag(session, settings, path)
        dag_id = dag.id
    committed_wall, committed = time.time(), time.perf_counter()
    cpu, child_cpu = time.process_time(), children_cpu()
    control.wake(settings)
    ok = follow_dags(local.sessionmaker, [dag_id], lambda line: None, changed, poll=0.05)
    total = time.perf_counter() - start
    cpu, child_cpu = time.process_time() - cpu, children_cpu() - child_cpu
    assert ok, f"dag {dag_id} did not succeed"
    with local.sessionmaker.begin() as session:
        first = session.scalar(select(func.min(Task.started)).where(Task.dag_id == dag_id))
        count = session.scalar(select(func.count()).select_from(Task).where(Task.dag_id == dag_id))
    return total, committed - start, _aware(first).timestamp() - committed_wall, count, cpu, child_cpu


def run_cli(tmp: Path) -> tuple[float, float, float]:
    """Runs ``mlcomp dag submit chain.yml --wait`` in a new process on a fresh root, with the
    baseline loop just before. Returns the seconds of the process, of the baseline, and from the
    DAG row's creation to its first task's start."""
    root = tmp / "cold"
    env = dict(os.environ, MLCOMP_ROOT=str(root), MLCOMP_DB_URL=f"sqlite:///{root / 'mlcomp.db'}")
    env.pop("MLCOMP_BROKER_URL", None)
    base = baseline_chain()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from mlcomp.cli import main; main()", "dag", "submit",
                    str(tmp / "chain.yml"), "--wait"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    total = time.perf_counter() - start
    settings = Settings(root=root, db_url=env["MLCOMP_DB_URL"])
    from mlcomp.db import open_store

    with open_store(settings).begin() as session:
        created = session.scalar(select(Dag.created))
        first = session.scalar(select(func.min(Task.started)))
    return total, base, (_aware(first) - _aware(created)).total_seconds()


def main(rounds: int, cli: bool) -> None:
    """Runs ``rounds`` interleaved rounds of baseline, mlcomp and Luigi for both DAGs; prints
    medians; with ``cli``, then times one cold ``mlcomp dag submit --wait``."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "code").mkdir()
        (tmp / "chain.yml").write_text(chain_yaml())
        (tmp / "fan.yml").write_text(fan_yaml())
        (tmp / "shell.yml").write_text(chain_yaml(command=json.dumps(shlex.join(COMMAND))))
        settings = Settings(root=tmp / "root", db_url=f"sqlite:///{tmp / 'root' / 'mlcomp.db'}")
        changed = threading.Event()
        started = time.perf_counter()
        with run_local(settings, [], name="bench", on_change=changed.set) as local:
            print(f"embedded supervisor + worker started in {1000 * (time.perf_counter() - started):.0f} ms")
            with local.sessionmaker.begin() as session:
                immediate(session)
                session.get(Computer, "bench").cpu = 2  # two slots for the fan-out
            results = {name: ([], [], [], [], [], [], [], []) for name in SHAPES}
            for round_ in range(rounds):
                for name, baseline in (("chain", baseline_chain), ("fan", baseline_fan), ("shell", baseline_chain)):
                    base_cpu = children_cpu()
                    base = baseline()
                    base_cpu = children_cpu() - base_cpu
                    total, submit, first, count, cpu, child_cpu = run_dag(local, settings, tmp / f"{name}.yml",
                                                                          changed)
                    luigi_base = baseline()  # each peer against a loop run just before it
                    luigi = run_luigi(name, tmp / "luigi" / f"{name}{round_}") if name != "shell" else math.nan
                    for values, value in zip(results[name], (1000 * (total - submit - base) / count,
                                                             1000 * (luigi - luigi_base) / count,
                                                             1000 * (submit + first), 1000 * first,
                                                             1000 * submit, total / base, 1000 * cpu / count,
                                                             1000 * (child_cpu - base_cpu) / count)):
                        values.append(value)
        cold = run_cli(tmp) if cli else None
    print(f"{'dag':<6} {'tasks':>5} {'mlcomp ms/task':>15} {'luigi ms/task':>14} {'first start ms':>15} "
          f"{'(after commit)':>15} {'submit ms':>10} {'ratio to loop':>14} {'cpu ms/task':>12} "
          f"{'child cpu+':>11}")
    for name, count in SHAPES.items():
        per_task, luigi, first, after_commit, submit, ratio, cpu, child = (statistics.median(v) for v in results[name])
        print(f"{name:<6} {count:>5} {per_task:>15.1f} {luigi:>14.1f} {first:>15.1f} {after_commit:>15.1f} "
              f"{submit:>10.1f} {ratio:>14.2f} {cpu:>12.1f} {child:>11.1f}")
    print(f"(medians of {rounds} interleaved rounds; overhead per task over the plain loop, mlcomp's excluding the "
          f"submission itself; first start is measured from the submit call, and from its commit; targets: "
          f"<= 5 ms/task and below Luigi's, <= 50 ms; cpu: this process's CPU per task after the commit, child "
          f"cpu+: its task processes' CPU per task beyond the loop's; shell: the chain with each command a string, "
          f"run by bash -c)")
    if cold is not None:
        total, base, first = cold
        print(f"cold `mlcomp dag submit chain.yml --wait` (new process, no server): {1000 * total:.0f} ms against "
              f"{1000 * base:.0f} ms for the loop; first task started {1000 * first:.0f} ms after the DAG row was "
              f"written")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="skip the cold CLI run")
    args = parser.parse_args()
    main(args.rounds, args.cli)
