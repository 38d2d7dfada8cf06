"""``mlcomp run``: train from runner configs, without the orchestrator (Catalyst 20.x ``catalyst-dl run``).

Exit status: 0 on success; 2 with one line for a user error (a bad config, an unknown name, a
missing checkpoint...; printed by :func:`mlcomp.cli.main`); 75 (``EXIT_STOPPED``) when the run
was stopped and can be resumed. With ``--nproc N`` the config is validated here, then run by N
processes forming one ``torch.distributed`` group; the first failing process's code is returned.
"""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["run"]

DEFAULT_LOGDIR = "runs/{name}"
"""Logdir when neither ``--logdir`` nor ``args.logdir`` gives one: ``runs/<first config's stem>``."""


class RunExit(click.ClickException):
    """Ends the command with ``message`` on stderr (as is, no "Error:" prefix) and ``exit_code``:
    ``EXIT_STOPPED`` with a resume hint for a stopped run, or a distributed process's failure."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        """Print the message to stderr as it is (``file`` is ignored, as click passes None)."""
        click.echo(self.format_message(), err=True)


def _overrides(ctx, param, value):
    """Turns the extra ``--dotted.key=value`` tokens into (key, value) pairs (YAML scalars)."""
    from mlcomp.runner.config import parse_overrides

    return parse_overrides(value)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.option("--config", "configs", multiple=True, required=True, metavar="FILE",
              type=click.Path(dir_okay=False), help="A YAML runner config; repeat to deep-merge several, in order.")
@click.option("--logdir", metavar="DIR", help="Where checkpoints and logs go (overrides args.logdir).")
@click.option("--resume", metavar="PATH", help="Continue from this full checkpoint (*_full.pth).")
@click.option("--autoresume", type=click.Choice(["last", "best"]),
              help="Continue from LOGDIR/checkpoints/{last,best}_full.pth when it exists.")
@click.option("--check", is_flag=True, help="Run a few batches per loader and at most 2 epochs per stage.")
@click.option("--overfit", is_flag=True, help="Run the same first batch of every loader each epoch.")
@click.option("--seed", type=int, metavar="N", help="Initial seed (overrides args.seed).")
@click.option("--verbose", is_flag=True, help="Show progress bars.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, metavar="N",
              help="Run N processes of one distributed run on this machine (one per GPU; gloo on CPU).")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED, callback=_overrides, metavar="[--KEY=VALUE]...")
def run(configs, logdir, resume, autoresume, check, overfit, seed, verbose, nproc, overrides):
    """Trains the experiment of the config FILEs, with --a.b.c=VALUE overrides (a dotted path
    or a unique key suffix, e.g. --stages.main.stage_params.num_epochs=5 or --lr=0.01)."""
    from mlcomp.runner.config import load_config

    config = load_config(*configs, overrides=overrides)
    args = config["args"] = dict(config.get("args") or {})
    flags = {"logdir": logdir, "resume": resume, "autoresume": autoresume, "seed": seed,
             "check": check or None, "overfit": overfit or None, "verbose": verbose or None}
    args.update({key: value for key, value in flags.items() if value is not None})
    if not args.get("logdir"):
        args["logdir"] = DEFAULT_LOGDIR.format(name=Path(configs[0]).stem)
    if nproc > 1:
        _run_distributed(config, nproc)
        return
    _run_here(config)


def _run_here(config: dict) -> None:
    from mlcomp.runner.config import run_config
    from mlcomp.runner.runner import EXIT_STOPPED, RunStopped

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

    from mlcomp.runner.checkpoint import resume_checkpoint
    from mlcomp.runner.config import make_experiment, save_config
    from mlcomp.runner.distributed import spawn_processes
    from mlcomp.runner.runner import EXIT_STOPPED

    experiment = make_experiment(config)
    resume_checkpoint(config["args"], experiment.logdir)
    with tempfile.TemporaryDirectory(prefix="mlcomp-run-") as folder:
        path = save_config(config, Path(folder) / "config.yml")
        code = spawn_processes([sys.executable, "-c", "from mlcomp.cli import main; main()", "run",
                                "--config", str(path)], nproc)
    if code == EXIT_STOPPED:
        last = Path(experiment.logdir) / "checkpoints" / "last_full.pth" if experiment.logdir else None
        hint = f"; resume with --resume {last}" if last else ""
        raise RunExit(f"stopped{hint}", EXIT_STOPPED)
    if code != 0:
        raise RunExit(f"Error: a process of the distributed run exited with code {code}", code if code > 0 else 1)
