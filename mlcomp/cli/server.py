"""``mlcomp server``: the web UI, the supervisor and a local worker in one process."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import sys
import threading

import click

from mlcomp.cli.worker import gpus_option, interruptible
from mlcomp.errors import StateError
from mlcomp.settings import Settings

__all__ = ["server"]


@click.command("server")
@click.option("--host", metavar="HOST", help="Address to listen on (default 127.0.0.1, MLCOMP_HOST).")
@click.option("--port", type=int, metavar="PORT", help="Port to listen on (default 4201, MLCOMP_PORT).")
@click.option("--name", metavar="NAME", help="The local worker's computer name (default: the host name).")
@gpus_option
def server(host, port, name, gpus):
    """Serves the UI (waitress) and runs the supervisor and a local worker until SIGINT/SIGTERM.

    Running tasks go on when the server ends; the next server on this computer takes them back
    (stop them first with `mlcomp task stop` or `dag stop` if they should end too).

    Tasks placed on other computers reach their `mlcomp worker` as a message (Redis with
    MLCOMP_BROKER_URL, else PostgreSQL's LISTEN/NOTIFY), which then claims them in the database.
    """
    from mlcomp.supervisor import run_local

    settings = Settings.from_env(host=host, port=port)
    _check_bind(settings)  # before anything starts: a refused host must not leave a worker behind
    guard = _serve_root(settings)
    listener = _listen(settings)  # binds now: a taken port fails before the worker starts
    with interruptible(), run_local(settings, gpus=gpus, name=name, keep_tasks=True) as local:
        where = f"http://{settings.host}:{settings.port}" if listener else "no web UI (ui is not installed)"
        click.echo(f"mlcomp server: {where}; root {settings.root}; worker {local.worker.name} "
                   f"with {len(local.worker.gpus)} GPU(s)")
        if listener is None:
            threading.Event().wait()
        else:
            listener.run()
    guard.close()
    click.echo("mlcomp server: stopped")


def _serve_root(settings: Settings) -> socket.socket:
    """Binds the root's guard address (a datagram socket in Linux's abstract namespace, else a
    file in the root), so that one server serves a root on this machine; the address is freed
    when the process ends, however it ends.

    Raises:
        StateError: another server of this root runs on this machine.
    """
    digest = hashlib.sha1(os.fsencode(os.path.abspath(settings.root))).hexdigest()[:20]
    linux = sys.platform.startswith("linux")
    address = f"\0mlcomp-server-{digest}" if linux else os.path.join(settings.root, "server.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise StateError(f"a server already serves {settings.root}; stop it first") from None
    return sock


def _check_bind(settings: Settings) -> None:
    """Refuses a host reachable from other machines without a token, as the UI would
    (:func:`ui.security.check_bind`), but before the supervisor and the worker start.

    Raises:
        ConfigError: ``settings.host`` is not loopback and ``settings.token`` is empty.
    """
    if importlib.util.find_spec("ui") is not None:
        from ui.security import check_bind

        check_bind(settings.host, settings.token)


def _listen(settings: Settings):
    """A waitress server of the Flask app, bound to ``settings.host:port`` (8 threads), or None
    when the ``ui`` package is not installed.

    Raises:
        StateError: the address cannot be bound (the port is taken, the host is not this machine's).
    """
    if importlib.util.find_spec("ui") is None:
        return None
    from waitress import create_server

    from ui import create_app

    try:
        return create_server(create_app(settings), host=settings.host, port=settings.port, threads=8)
    except OSError as e:
        raise StateError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None
