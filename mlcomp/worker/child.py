"""The generic Python child: ``python -m mlcomp.worker.child``.

Started by the worker with ``MLCOMP_TASK_ID``, ``MLCOMP_ATTEMPT``, ``MLCOMP_ROOT`` and
``MLCOMP_DB_URL`` in its environment and the task's code copy as its working folder, it loads the
task, runs its executor's :meth:`~executors.base.Executor.run` in this process with a
:class:`~mlcomp.worker.report.Reporter` (whose journal in the attempt's folder keeps every report
while the store is away), records the result and exits with the code of the run's typed outcome
(:func:`mlcomp.outcome.exit_code`):

* 0 — :class:`~mlcomp.outcome.Success`: the run returned it or a plain result (the worker marks
  the task ``success``);
* 75 — :class:`~mlcomp.outcome.Stopped`: returned by the executor, or SIGTERM raised
  :class:`TaskStopped`;
* 76 — :class:`~mlcomp.outcome.Paused`: a search trial at a rung;
* 74 — :class:`~mlcomp.outcome.Failed` on a full device: the run raised an :class:`OSError` saying
  so (ENOSPC, :data:`~mlcomp.outcome.EXIT_NO_SPACE`);
* 1 — :class:`~mlcomp.outcome.Failed`: returned, or the run raised: a user error
  (:class:`~mlcomp.errors.MlcompError`) as one line on stderr, anything else with its traceback
  (stderr goes to the task's log).

``sys.exit(code)`` in the task exits with its code as it is.

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
from mlcomp.errors import MlcompError  # noqa: E402
from mlcomp.outcome import Failed, Paused, Stopped, Success, TaskOutcome, as_outcome, exit_code  # noqa: E402
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
    """Runs the task named by the environment; returns the exit code of its outcome (0, 75, 76,
    74 or 1), or the code the task gave ``sys.exit``."""
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
        return exit_code(_run(sessionmaker, settings, reporter, env))
    except SystemExit as e:  # sys.exit() in the task: its code (None is 0, a message is 1)
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        reporter.close()  # what the store cannot take now stays in the journal, for the worker
        engine.dispose()


def _run(sessionmaker, settings: Settings, reporter: Reporter, env) -> TaskOutcome:
    """Runs the task's executor; its outcome (:func:`mlcomp.outcome.as_outcome` of what ``run``
    returned, :class:`Stopped` on SIGTERM, :class:`Failed` when it raised), recorded: a success's
    result reported (by a gang's rank 0), anything else said (:func:`_say`; a raised error's
    traceback printed instead)."""
    try:
        executor, context = retrying(lambda: _load(sessionmaker, settings, reporter, env), reporter.outage)
        outcome = as_outcome(executor().run(context))
        if not isinstance(outcome, Success):
            _say(outcome)
        elif context.group is None or context.group["first_rank"] == 0:  # a gang's rank 0 reports
            reporter.result(outcome.result)
        return outcome
    except TaskStopped as e:
        print(f"mlcomp: {e}", file=sys.stderr)
        return Stopped(str(e))
    except MlcompError as e:  # the user's mistake: one line, which also becomes the task's reason
        failed = Failed(f"{type(e).__name__}: {e}")
        _say(failed)
        return failed
    except OSError as e:  # a full disk has its own status: the traceback may not reach a log on that disk
        from mlcomp.worker.disk import is_no_space
        try:
            traceback.print_exc()
        except OSError:
            pass
        return Failed(f"{type(e).__name__}: {e}", no_space=is_no_space(e))
    except Exception as e:
        traceback.print_exc()
        return Failed(f"{type(e).__name__}: {e}")


def _say(outcome: Stopped | Paused | Failed) -> None:
    """Prints ``outcome`` as one ``mlcomp: …`` line: a failure's reason on stderr (where the worker
    takes a task's reason from, :mod:`mlcomp.worker.reason`), a stop's or pause's message on stdout."""
    if isinstance(outcome, Failed):
        print(f"mlcomp: {outcome.reason}", file=sys.stderr, flush=True)
    else:
        print(f"mlcomp: {outcome.message}", flush=True)


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
