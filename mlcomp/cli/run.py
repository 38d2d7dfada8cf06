"""``mlcomp run``: train from runner configs, without the orchestrator (Catalyst 20.x ``catalyst-dl run``).

Exit status: 0 on success; 2 with one line for a user error (a bad config, an unknown name, a
missing checkpoint...; printed by :func:`mlcomp.cli.main`); 75 (``EXIT_STOPPED`` of
:mod:`mlcomp.outcome`'s exit table) when the run was stopped and can be resumed. With ``--nproc N``
(or ``--distributed`` on a machine with several GPUs) the config is validated here, then run by
N processes forming one ``torch.distributed`` group; the first failing process's code is
returned. The flags are Catalyst's (:mod:`mlcomp.cli.catalyst`).
"""
from __future__ import annotations

from pathlib import Path

import click

from mlcomp.cli.catalyst import (DEFAULT_LOGDIR, CatalystCommand, catalyst_config, catalyst_options,
                                 overrides_argument, process_count)

__all__ = ["run", "RunExit", "DEFAULT_LOGDIR"]


class RunExit(click.ClickException):
    """Ends the command with ``message`` on stderr (as is, no "Error:" prefix) and ``exit_code``:
    ``EXIT_STOPPED`` with a resume hint for a stopped run, or a distributed process's failure."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        """Print the message to stderr as it is (``file`` is ignored, as click passes None)."""
        click.echo(self.format_message(), err=True)


@click.command(cls=CatalystCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@catalyst_options
@click.option("--nproc", type=click.IntRange(min=1), default=1, metavar="N",
              help="Run N processes of one distributed run on this machine (one per GPU; gloo on CPU).")
@overrides_argument
def run(configs, nproc, distributed, overrides, **flags):
    """Trains the experiment of the config FILEs (Catalyst 20.x's catalyst-dl run, same flags),
    with overrides: --a.b.c=VALUE (a dotted path or a unique key suffix, VALUE read as YAML, e.g.
    --stages.main.stage_params.num_epochs=5 or --lr=0.01) or Catalyst's --a/b/c=VALUE:TYPE
    (TYPE int, float, bool, str, list, tuple or dict; without a / the key is an args key, e.g.
    --out_dir=preds:str)."""
    config = catalyst_config(configs, overrides, **flags)
    processes = process_count(nproc, distributed)
    if processes > 1:
        _run_distributed(config, processes)
        return
    _run_here(config)


def _run_here(config: dict) -> None:
    from mlcomp.outcome import EXIT_STOPPED
    from mlcomp.runner.config import run_config
    from mlcomp.runner.runner import RunStopped

    try:
        runner = run_config(config)
    except RunStopped as e:
        hint = f"; resume with --resume {e.checkpoint}" if e.checkpoint else ""
        raise RunExit(f"stopped at stage {e.stage} epoch {e.epoch} batch {e.batch}{hint}", EXIT_STOPPED) from None
    if not runner.is_master:
        return
    where = f" in {runner.logdir}" if runner.logdir else ""
    best = ", ".join(f"{k}={v:.4g}" for k, v in sorted(runner.best_valid_metrics.items())
                     if isinstance(v, (int, float)))
    click.echo(f"done{where}" + (f"; best valid: {best}" if best else ""))


def _run_distributed(config: dict, nproc: int) -> None:
    """Validates ``config`` here, then runs it in ``nproc`` processes forming one group
    (:func:`mlcomp.runner.distributed.spawn_processes`); each prints its own errors."""
    import sys
    import tempfile

    from mlcomp.outcome import EXIT_STOPPED, Kind, kind_of_exit
    from mlcomp.runner.checkpoint import LAST_FULL, checkpoint_path, resume_checkpoint
    from mlcomp.runner.config import make_experiment
    from mlcomp.runner.config_io import save_config
    from mlcomp.runner.distributed import spawn_processes

    experiment = make_experiment(config)
    resume_checkpoint(config["args"], experiment.logdir)
    with tempfile.TemporaryDirectory(prefix="mlcomp-run-") as folder:
        path = save_config(config, Path(folder) / "config.yml")
        code = spawn_processes([sys.executable, "-P", "-c", "from mlcomp.cli import main; main()", "run",
                                "--config", str(path)], nproc)
    if kind_of_exit(code) is Kind.stopped:
        last = checkpoint_path(experiment.logdir, LAST_FULL) if experiment.logdir else None
        hint = f"; resume with --resume {last}" if last else ""
        raise RunExit(f"stopped{hint}", EXIT_STOPPED)
    if code != 0:
        raise RunExit(f"Error: a process of the distributed run exited with code {code}", code if code > 0 else 1)
