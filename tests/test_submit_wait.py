"""``dag submit --wait`` on a shared store: it follows a server's supervisor running on any machine
(seen through its heartbeat row), and otherwise places its tasks on every live computer."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mlcomp.cli import cli
from mlcomp.db import Computer, LogLine, Supervisor, Task, TaskStatus, make_engine, make_sessionmaker, upgrade
from supervisor_helpers import wait_for

pytestmark = pytest.mark.postgres

DAG = """info: {name: gpu, project: shared, expdir: code}
executors:
  train: {type: bash, command: 'echo "gpu $CUDA_VISIBLE_DEVICES"', gpu: 1}
"""


@pytest.fixture
def shared(pg_url, tmp_path):
    """A migrated PostgreSQL store, a DAG file asking for one GPU, and the environment of a
    process on "this" machine (its own root)."""
    engine = make_engine(pg_url)
    upgrade(engine)
    (tmp_path / "code").mkdir()
    (tmp_path / "gpu.yml").write_text(DAG)
    env = {**os.environ, "MLCOMP_DB_URL": pg_url, "MLCOMP_ROOT": str(tmp_path / "here")}
    env.pop("MLCOMP_BROKER_URL", None)
    yield make_sessionmaker(engine), env, tmp_path / "gpu.yml"
    engine.dispose()


def start(env: dict, root, *args) -> subprocess.Popen:
    """``mlcomp ARGS…`` as another machine would run it: its own MLCOMP_ROOT, the same store."""
    return subprocess.Popen([sys.executable, "-c", "from mlcomp.cli import main; main()", *args],
                            env={**env, "MLCOMP_ROOT": str(root)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def supervising(store) -> bool:
    """Whether a supervisor of every DAG has written its heartbeat row."""
    with store() as session:
        return session.scalar(select(Supervisor.id).limit(1)) is not None


def live(store, name: str) -> bool:
    with store() as session:
        return session.get(Computer, name) is not None


def submit_wait(env: dict, path) -> str:
    result = CliRunner().invoke(cli, ["dag", "submit", str(path), "--wait"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def the_task(store) -> tuple[Task, list[str]]:
    with store() as session:
        task = session.scalars(select(Task)).one()
        return task, list(session.scalars(select(LogLine.text).where(LogLine.task_id == task.id)))


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def test_without_a_server_the_wait_places_its_task_on_another_live_worker(shared, tmp_path):
    store, env, path = shared
    worker = start(env, tmp_path / "elsewhere", "worker", "--name", "gpubox", "--gpus", "0,1")
    try:
        wait_for(lambda: live(store, "gpubox"), timeout=60)
        submit_wait(env, path)  # this machine declares no GPU
    finally:
        stop(worker)
    task, log = the_task(store)
    assert (task.status, task.computer, task.gpus, log) == (TaskStatus.success, "gpubox", [0], ["gpu 0"])


def test_the_wait_follows_a_server_running_on_another_machine(shared, tmp_path):
    store, env, path = shared
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start(env, tmp_path / "elsewhere", "server", "--name", "srv", "--gpus", "0", "--port", str(port))
    try:
        # its worker registers before its supervisor's first heartbeat row: wait for both
        wait_for(lambda: live(store, "srv") and supervising(store), timeout=60)
        submit_wait(env, path)
    finally:
        stop(server)
    task, log = the_task(store)
    assert (task.status, task.computer, log) == (TaskStatus.success, "srv", ["gpu 0"])
    with store() as session:  # no worker started here: the server's supervisor placed the task
        assert session.scalars(select(Computer.name)).all() == ["srv"]
