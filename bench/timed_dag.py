"""What the benchmarks share: one DAG file run through the code path of ``mlcomp dag submit
--wait`` (an embedded supervisor and local worker), timed from submission to the last task's end."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.orm import Session

from mlcomp import control
from mlcomp.cli.common import follow_dags
from mlcomp.db import immediate
from mlcomp.settings import Settings
from mlcomp.supervisor import run_local

__all__ = ["timed_dag"]


def timed_dag(root: Path, dag_file: Path, gpus: list[int], *, setup: Callable[[Session], None] | None = None,
              inspect: Callable[[Session, list[int]], Any] = lambda session, ids: None) -> tuple[float, Any]:
    """Submits ``dag_file`` to a fresh store under ``root`` and waits for its end.

    Args:
        gpus: GPU indices the local worker declares.
        setup: called in a transaction once the worker registered, before the clock starts.
        inspect: called with a session and the DAG ids after the end; its value is returned.

    Returns:
        (seconds from submission to the end, ``inspect``'s value).

    Raises:
        RuntimeError: a task did not succeed.
    """
    settings = Settings.from_env({}, root=str(root))
    changed = threading.Event()
    with run_local(settings, gpus, name="bench", on_change=changed.set, interval=0.5) as local:
        if setup is not None:
            with local.sessionmaker.begin() as session:
                setup(session)
        start = time.perf_counter()
        with local.sessionmaker.begin() as session:
            immediate(session)
            ids = [dag.id for dag in control.submit_dag(session, settings, dag_file)]
        local.supervisor.wake()
        ok = follow_dags(local.sessionmaker, ids, lambda line: None, changed)
        elapsed = time.perf_counter() - start
        with local.sessionmaker() as session:
            value = inspect(session, ids)
    if not ok:
        raise RuntimeError(f"a task of {dag_file} failed; see the store in {root}")
    return elapsed, value
