"""Faults of the parts mlcomp does not own: PostgreSQL or Redis away for a while under a printing
task and a training task, with real processes started through the CLI.

Each case makes a private PostgreSQL cluster (the store) and a private Redis (the broker) with this
machine's own binaries (``tests/services.py``), starts ``mlcomp server --gpus ""`` and one
``mlcomp worker --name far`` process with a root of its own, and submits a DAG of two tasks pinned
to ``far``:

* ``printer``: a Python process printing ``--lines`` numbered lines, one every 0.1 s;
* ``train``: the digits CNN of ``dags/digits`` for ``--epochs`` epochs (two stages).

Once both run (the printer's first lines and the train's first metrics are in the store), the
case's service is stopped for its number of seconds, then started again. When both tasks have
ended, a second DAG of one ``true`` task is submitted to ``far`` and its hand-over is timed
(``task.queued`` → ``task.started``: the worker hears of it through Redis; its safety-net read
of the store comes every 5 s).

Printed per case: the tasks' statuses and reasons, the printer's lines in the store against the
lines printed (each once, in order), the train's metric rows (none twice) and its epochs with a
valid loss against ``--epochs``, the hand-over after the outage, the "database is unreachable"
lines in the server's and the worker's logs (one per component is the goal), and whether any
computer was swept as silent.

Usage: python bench/faults.py [--cases postgresql:30,postgresql:300,redis:30,redis:300]
       [--lines 600] [--epochs 60]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from services import PrivatePostgres, PrivateRedis  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MLCOMP = str(Path(sys.executable).with_name("mlcomp"))
FINISHED = ("success", "failed", "stopped", "skipped")


def write_dag(folder: Path, lines: int, epochs: int) -> Path:
    """The case's experiment folder: the printer, a digits config of ``epochs`` epochs, the DAG."""
    (folder / "exp").mkdir(parents=True)
    (folder / "exp" / "printer.py").write_text(
        f"import time\nfor i in range({lines}):\n    print(f'line {{i}}', flush=True)\n    time.sleep(0.1)\n")
    config = (ROOT / "dags" / "digits" / "configs" / "train.yml").read_text()
    main = epochs - 2
    (folder / "exp" / "train.yml").write_text(config.replace("num_epochs: 8", f"num_epochs: {main}")
                                              .replace("T_max: 8", f"T_max: {main}"))
    dag = folder / "exp" / "faults.yml"
    dag.write_text("info: {name: faults, project: faults, expdir: .}\nexecutors:\n"
                   "  printer: {type: bash, command: python printer.py, computer: far}\n"
                   "  train: {type: train, config: train.yml, computer: far}\n")
    (folder / "exp" / "after.yml").write_text(
        "info: {name: after, project: faults}\nexecutors:\n  after: {type: bash, command: 'true', computer: far}\n")
    return dag


def rows(engine, sql: str) -> list:
    with engine.connect() as connection:
        return connection.execute(text(sql)).all()


def wait(engine, sql: str, done, timeout: float) -> list:
    """Reads ``sql`` every second until ``done(rows)`` (errors while the store is away are
    retried); the last rows."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = rows(engine, sql)
            if done(result):
                return result
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(sql)
        time.sleep(1)


def run_case(service: str, seconds: float, lines: int, epochs: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="mlcomp-faults-"))
    dag = write_dag(folder, lines, epochs)
    processes = []
    with PrivatePostgres() as pg, PrivateRedis() as redis:
        env = dict(os.environ, MLCOMP_DB_URL=pg.url, MLCOMP_BROKER_URL=redis.url)
        try:
            subprocess.run([MLCOMP, "db", "upgrade"], env=dict(env, MLCOMP_ROOT=str(folder / "server")), check=True,
                           capture_output=True)
            logs = {name: folder / f"{name}.log" for name in ("server", "worker")}
            processes.append(subprocess.Popen([MLCOMP, "server", "--port", "0", "--gpus", ""], stdout=open(
                logs["server"], "w"), stderr=subprocess.STDOUT, env=dict(env, MLCOMP_ROOT=str(folder / "server"))))
            processes.append(subprocess.Popen([MLCOMP, "worker", "--name", "far", "--gpus", ""], stdout=open(
                logs["worker"], "w"), stderr=subprocess.STDOUT, env=dict(env, MLCOMP_ROOT=str(folder / "far"))))
            engine = create_engine(pg.url)
            wait(engine, "select name from computer where name = 'far'", bool, 60)
            submit = dict(env, MLCOMP_ROOT=str(folder / "server"))
            subprocess.run([MLCOMP, "dag", "submit", str(dag)], env=submit, check=True, capture_output=True)
            wait(engine, "select (select count(*) from log_line l join task t on t.id = l.task_id where t.name = "
                 "'printer') > 20 and (select count(*) from metric) > 0", lambda r: r[0][0], 120)
            away = pg if service == "postgresql" else redis
            away.stop()
            time.sleep(seconds)
            away.start()
            tasks = wait(engine, "select name, status, reason from task order by id",
                         lambda r: all(status in FINISHED for _, status, _ in r), seconds + 600)
            printed = [t for (t,) in rows(engine, "select l.text from log_line l join task t on t.id = l.task_id "
                                                  "where t.name = 'printer' order by l.id")]
            metrics = rows(engine, "select name, loader, stage, epoch, step, kind from metric")
            subprocess.run([MLCOMP, "dag", "submit", str(folder / "exp" / "after.yml")], env=submit, check=True,
                           capture_output=True)
            (handover,) = wait(engine, "select extract(epoch from started - queued) from task where name = 'after'",
                               lambda r: r and r[0][0] is not None, 60)[0]
            said = {name: path.read_text().count("the database is unreachable since") for name, path in logs.items()}
            swept = any("silent since" in (reason or "") for _, _, reason in tasks)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    valid = {(stage, epoch) for name, loader, stage, epoch, _, kind in metrics
             if (name, loader, kind) == ("loss", "valid", "epoch")}
    return {"case": f"{service} away {seconds:g} s", "tasks": [(n, s) for n, s, _ in tasks],
            "reasons": [r for _, s, r in tasks if s != "success"],
            "lines": f"{len(printed)}/{lines}, in order: {printed == [f'line {i}' for i in range(lines)]}",
            "metrics twice": len(metrics) - len(set(metrics)), "valid epochs": f"{len(valid)}/{epochs}",
            "hand-over after": f"{handover * 1000:.0f} ms", "unreachable lines": said, "swept silent": swept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="postgresql:30,postgresql:300,redis:30,redis:300")
    parser.add_argument("--lines", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    for case in args.cases.split(","):
        service, seconds = case.split(":")
        started = time.monotonic()
        result = run_case(service, float(seconds), args.lines, args.epochs)
        print(f"{result.pop('case')} ({time.monotonic() - started:.0f} s in all)")
        for key, value in result.items():
            print(f"  {key}: {value}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
