"""The generic Python child: ``python -m mlcomp.worker.child``.

Started by the worker with ``MLCOMP_TASK_ID``, ``MLCOMP_ATTEMPT``, ``MLCOMP_ROOT`` and
``MLCOMP_DB_URL`` in its environment and the task's code copy as its working folder, it loads the
task, runs its executor's :meth:`~executors.base.Executor.run` in this process with a
:class:`~mlcomp.worker.report.Reporter` (whose journal in the attempt's folder keeps every report
while the store is away), records the result and exits:

* 0 — the run returned (the worker marks the task ``success``);
* 75 — it stopped on request (SIGTERM raised :class:`TaskStopped`, or the executor exited 75);
* 74 — it raised an :class:`OSError` saying the device is full (ENOSPC,
  :data:`~mlcomp.errors.EXIT_NO_SPACE`);
* 1 — it raised: a user error (:class:`~mlcomp.errors.MlcompError`) as one line on stderr, anything
  else with its traceback (stderr goes to the task's log).

SIGTERM raises :class:`TaskStopped` in the main thread unless the executor installs its own
handler (the training runner does: it finishes the batch and saves a full checkpoint first).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import traceback

from mlcomp.pinning import pin_own_packages

# Before executors is imported. The task's code may put its folder (with its own executors/) on
# sys.path, and a process it starts with multiprocessing's spawn (DataLoader workers, a user's pool)
# imports this module as its main with that sys.path: both get mlcomp's packages (mlcomp.pinning).
pin_own_packages()

from executors import get_executor  # noqa: E402
from executors.base import TaskContext  # noqa: E402
from mlcomp import gang  # noqa: E402
from mlcomp.db import Task, make_engine, make_sessionmaker  # noqa: E402
from mlcomp.db.outage import retrying  # noqa: E402
from mlcomp.worker.context import WITH_PROJECT, resolve_inputs, task_context  # noqa: E402
from mlcomp.errors import EXIT_STOPPED, MlcompError  # noqa: E402
from mlcomp.settings import Settings  # noqa: E402
from mlcomp.worker.process import AttemptFiles  # noqa: E402
from mlcomp.worker.report import JOURNAL, Reporter  # noqa: E402

__all__ = ["TaskStopped", "main"]


class TaskStopped(BaseException):
    """Raised in the child's main thread by SIGTERM: the task was asked to stop. A BaseException,
    like KeyboardInterrupt, so that ``except Exception`` in user code does not swallow it."""


def _raise_stopped(signum, frame):
    raise TaskStopped(f"stopped by {signal.Signals(signum).name}")


def main(env=None) -> int:
    """Runs the task named by the environment; returns the exit code (0, 75, 74 or 1)."""
    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _raise_stopped)
    settings = Settings.from_env(env)
    engine = make_engine(settings.db_url, connections=2, idle_release=5.0)  # a lab runs hundreds of children
    sessionmaker = make_sessionmaker(engine)
    task_id, attempt = int(env["MLCOMP_TASK_ID"]), int(env.get("MLCOMP_ATTEMPT", "1"))
    journal = AttemptFiles.of(settings.tasks_dir, task_id, attempt).path(JOURNAL)
    reporter = Reporter.from_env(sessionmaker, env, journal=journal).start()
    try:
        executor, context = retrying(lambda: _load(sessionmaker, settings, reporter, env), reporter.outage)
        result = executor().run(context)
        if context.group is None or context.group["first_rank"] == 0:  # a gang's rank 0 reports
            reporter.result(result)
        return 0
    except TaskStopped as e:
        print(f"mlcomp: {e}", file=sys.stderr)
        return EXIT_STOPPED
    except SystemExit as e:  # sys.exit() in the task: its code (None is 0, a message is 1)
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except MlcompError as e:  # the user's mistake: one line, which also becomes the task's reason
        print(f"mlcomp: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk has its own status: the traceback may not reach a log on that disk
        from mlcomp.errors import EXIT_NO_SPACE
        from mlcomp.worker.disk import is_no_space
        try:
            traceback.print_exc()
        except OSError:
            pass
        return EXIT_NO_SPACE if is_no_space(e) else 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        reporter.close()  # what the store cannot take now stays in the journal, for the worker
        engine.dispose()


def _load(sessionmaker, settings: Settings, reporter: Reporter, env) -> tuple[type, TaskContext]:
    """The executor class of the task and its context, read from the store."""
    with sessionmaker() as session:
        task = session.get(Task, reporter.task_id, options=WITH_PROJECT)
        context = task_context(task, settings, reporter, computer=env.get("MLCOMP_COMPUTER"),
                               group=gang.group_from_env(env))
        executor = get_executor(task.type, expdir=context.code_dir)
        return executor, resolve_inputs(session, context, executor)


if __name__ == "__main__":
    sys.exit(main())
