"""Real ``mlcomp`` processes for tests, and a harness of several computers.

:func:`start` runs an ``mlcomp`` subcommand as a process; :func:`registered` says whether a
computer's worker has registered or beaten since a moment. :class:`Cluster` (the ``cluster``
fixture of ``conftest.py``) runs ``mlcomp worker`` processes that share nothing but the store:
each has its own root folder (no shared filesystem), its own loopback address (127.0.0.2,
127.0.0.3, …, the ``MASTER_ADDR`` of gangs whose rank 0 it runs) and declared GPUs, on
PostgreSQL with Redis as the broker; the test process runs the supervisor.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select

from mlcomp.db import Computer, make_engine, make_sessionmaker, upgrade
from mlcomp.settings import Settings
from supervisor_helpers import wait_for

__all__ = ["free_port", "start", "registered", "Cluster"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(env: dict, *args, log: Path | None = None) -> subprocess.Popen:
    """Starts ``mlcomp ARGS`` with ``env``; its output goes to ``log`` (default: nowhere)."""
    out = subprocess.DEVNULL if log is None else open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-c", "from mlcomp.cli import main; main()", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL)
    finally:
        if log is not None:
            out.close()


def registered(store, name: str, after: float) -> bool:
    """Whether computer ``name`` registered (or beat) after ``after`` (epoch seconds)."""
    with store() as session:
        beat = session.scalar(select(Computer.heartbeat).where(Computer.name == name))
    if beat is None:
        return False
    if beat.tzinfo is None:  # SQLite gives back naive UTC
        beat = beat.replace(tzinfo=dt.timezone.utc)
    return beat.timestamp() >= after


class Cluster:
    """Computers for one test: ``mlcomp worker`` processes on a shared store.

    Args:
        folder: where each computer's root folder is made (``folder/NAME``).
        db_url: the store (a fresh PostgreSQL database; a SQLite file works on one machine).
        broker_url: Redis, the bus's backend (:mod:`mlcomp.bus`); None: PostgreSQL's
            LISTEN/NOTIFY.
        heartbeat_ttl: seconds after which a silent computer is dead (short, so a killed worker's
            tasks are swept quickly).
    """

    def __init__(self, folder: Path, db_url: str, broker_url: str | None, heartbeat_ttl: float = 10.0):
        self.folder = folder
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self.store = make_sessionmaker(self.engine)
        self.settings = Settings(root=folder / "supervisor", db_url=db_url, broker_url=broker_url,
                                 heartbeat_ttl=heartbeat_ttl, stop_grace=10.0)
        self.run = uuid.uuid4().hex[:8]  # computer names are unique per test: Redis queues are by name
        self.workers: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, str] = {}
        self._supervisor = None

    def root(self, name: str) -> Path:
        """Computer ``name``'s own root folder."""
        return self.folder / name

    def tasks_dir(self, name: str) -> Path:
        """Where computer ``name`` keeps its task folders."""
        return Settings(root=self.root(name), db_url=self.settings.db_url).tasks_dir

    def add(self, name: str, gpus: str = "0", address: str | None = None, ports: str | None = None,
            cpus: int | None = None) -> str:
        """Starts ``mlcomp worker --name NAME-RUN --gpus GPUS --address ADDRESS`` (the next
        loopback address by default; a name seen before keeps its address; ``--ports PORTS`` and
        ``--cpus CPUS`` when given) with its own root, waits until it has registered, and returns
        the computer's name (``NAME-RUN``)."""
        name = name if name.endswith(self.run) else f"{name}-{self.run}"
        address = address or self.addresses.get(name) or f"127.0.0.{len(self.addresses) + 2}"
        self.addresses[name] = address
        env = {**os.environ, "MLCOMP_ROOT": str(self.root(name)), "MLCOMP_DB_URL": self.settings.db_url,
               "MLCOMP_STOP_GRACE": str(self.settings.stop_grace), "MLCOMP_HEARTBEAT_TTL": str(self.settings.heartbeat_ttl)}
        env.pop("MLCOMP_BROKER_URL", None)
        if self.settings.broker_url:
            env["MLCOMP_BROKER_URL"] = self.settings.broker_url
        self.root(name).mkdir(parents=True, exist_ok=True)
        began = dt.datetime.now(dt.timezone.utc).timestamp()
        self.workers[name] = start(env, "worker", "--name", name, "--gpus", gpus, "--address", address,
                                   *(("--ports", ports) if ports else ()), *(("--cpus", str(cpus)) if cpus else ()),
                                   log=self.root(name) / "worker.log")
        wait_for(lambda: registered(self.store, name, began), timeout=60)
        return name

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to computer ``name``'s worker process (not to its tasks) and waits for it."""
        process = self.workers.pop(name)
        process.send_signal(sig)
        process.wait(60)

    def supervise(self, interval: float = 0.2):
        """Starts the supervisor in this process (placements reach the workers through the bus)."""
        from mlcomp.supervisor import Supervisor

        self._supervisor = Supervisor(self.settings, self.store, interval=interval).start()
        return self._supervisor

    def close(self) -> None:
        """Stops the supervisor and the workers, then kills every task process group they left
        running (a worker stopped with SIGTERM leaves its children to the next one)."""
        from mlcomp.worker.process import ATTEMPTS, AttemptFiles, signal_group

        if self._supervisor is not None:
            self._supervisor.shutdown()
        for name in list(self.workers):
            self.kill(name, signal.SIGTERM)
        for pid_file in self.folder.glob(f"*/**/{ATTEMPTS}/*/pid"):
            pid = AttemptFiles(pid_file.parent).live_pid()
            if pid is not None:
                signal_group(pid, signal.SIGKILL)
        self.engine.dispose()
