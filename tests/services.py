"""Private services for fault tests: a PostgreSQL cluster and a Redis server that a test can stop
and start again.

The cluster is made with this machine's own PostgreSQL binaries (``initdb``, ``pg_ctl``) in a
temporary folder, listens on a free port of 127.0.0.1 only, trusts local connections, and is
removed with the folder. PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` user (``runuser``), which owns the folder.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from cluster import free_port

__all__ = ["PrivatePostgres", "PrivateRedis"]


def _bin(name: str) -> str:
    """The path of a PostgreSQL server program (Debian keeps them out of PATH)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    assert found, f"{name} (PostgreSQL's server programs) is not installed"
    return found


class PrivatePostgres:
    """One PostgreSQL cluster of a test's own: ``url`` names its database ``mlcomp``.

    :meth:`stop` and :meth:`start` take it away and bring it back (``pg_ctl -m fast``: the
    server closes every connection, as in a restart or a fail-over); :meth:`remove` stops it for
    good. Use it as a context manager.
    """

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="mlcomp-postgres-"))  # pytest's are closed to other users
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/mlcomp"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.start()
        self._run(_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c",
                  "CREATE DATABASE mlcomp")

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", self._user, "--"] if self._user else []
        subprocess.run([*prefix, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        """Starts the server and waits until it accepts connections."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off", "start")

    def stop(self) -> None:
        """Stops the server, closing every client's connection."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stops the server if it runs and deletes its files."""
        subprocess.run([*(["runuser", "-u", self._user, "--"] if self._user else []), _bin("pg_ctl"), "-D",
                        str(self.data), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PrivatePostgres":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class PrivateRedis:
    """A Redis server of a test's own on a free port of 127.0.0.1, keeping nothing on disk:
    ``url`` reaches it; :meth:`stop` and :meth:`start` take it away and bring it back."""

    def __init__(self):
        self.server = shutil.which("redis-server")
        assert self.server, "redis-server (the Redis the tests use) is not on PATH"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Starts the server (it accepts connections a moment later)."""
        self.process = subprocess.Popen([self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """Stops the server, closing every client's connection."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> "PrivateRedis":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
