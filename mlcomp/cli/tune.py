"""``mlcomp tune``: an Optuna study over a runner config's ``trial.suggest_*`` strings, in this
process, without the orchestrator (Catalyst 20.10–20.12 ``catalyst-dl tune``; see
:mod:`mlcomp.search.tune`).

The flags are ``mlcomp run``'s (Catalyst's, :mod:`mlcomp.cli.catalyst`) and the study's
``--n-trials``, ``--timeout``, ``--storage`` and ``--study-name``. Each trial runs in its own
logdir, ``BASE/<UTC time>.<hash of the trial's number and config>`` (Catalyst's name of a run under
a ``baselogdir``), where BASE is ``--logdir``/``args.logdir``, else ``--baselogdir``/
``args.baselogdir``, else ``runs/<first config's stem>``; ``none`` writes nothing. Trials run one
after another in this process (``--distributed`` with several GPUs is refused, as Catalyst's tune
script had no distributed mode).

Prints one line per finished trial, then the best one. Exit status: 0 when the study ran (even if
every trial was pruned); 2 with one line for a user error (a bad config, ``study_params`` or trial
string; printed by :func:`mlcomp.cli.main`); 75 (``EXIT_STOPPED``) when a trial's run was stopped.
"""
from __future__ import annotations

from pathlib import Path

import click

from mlcomp.cli.catalyst import (DEFAULT_LOGDIR, CatalystCommand, catalyst_config, catalyst_options,
                                 derived_logdir, overrides_argument, process_count)
from mlcomp.cli.run import RunExit

__all__ = ["tune"]


def _echo_trial(study, trial) -> None:
    """One line for a finished trial: number, state, value, parameters, logdir."""
    state = trial.state.name.lower()
    if trial.state.name == "PRUNED" and trial.intermediate_values:
        step = max(trial.intermediate_values)
        state += f" at epoch {step}, value {trial.intermediate_values[step]:.6g}"
    elif trial.value is not None:
        state += f", value {trial.value:.6g}"
    logdir = trial.user_attrs.get("logdir")
    click.echo(f"trial {trial.number} {state}; params {trial.params}" + (f"; logdir {logdir}" if logdir else ""))


def _echo_best(study) -> None:
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        click.echo("no trial completed")
        return
    best = study.best_trial
    click.echo(f"best trial {best.number}: value {best.value:.6g}; params {best.params}")


def _trial_logdirs(args: dict, first_config: str):
    """Removes ``logdir`` and ``baselogdir`` from ``args``; returns the trials' logdir function."""
    logdir, baselogdir = args.pop("logdir", None), args.pop("baselogdir", None)
    base = str(logdir or baselogdir or DEFAULT_LOGDIR.format(name=Path(first_config).stem))
    if base.lower() == "none":
        return lambda number, config: "none"
    return lambda number, config: derived_logdir(base, {"trial": number, "config": config})


@click.command(cls=CatalystCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@catalyst_options
@click.option("--n-trials", type=click.IntRange(min=1), metavar="N", help="Run N trials (overrides args.n_trials).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Start no trial after this many seconds (overrides args.timeout).")
@click.option("--storage", metavar="URL", help="An Optuna storage (e.g. sqlite:///study.db) to keep the study in.")
@click.option("--study-name", metavar="NAME", help="The study's name in the storage (continued when it exists).")
@overrides_argument
def tune(configs, overrides, n_trials, timeout, storage, study_name, distributed, **flags):
    """Tunes the experiment of the config FILEs (Catalyst 20.x's catalyst-dl tune): each trial
    evaluates the config's "trial.suggest_*(...)" strings, trains in its own logdir
    (BASE/<UTC time>.<hash>, BASE being --logdir, else --baselogdir, else runs/<config stem>) and
    reports the main metric; study_params name the sampler and pruner. Overrides as for `mlcomp run`."""
    import optuna

    from mlcomp.errors import ConfigError
    from mlcomp.outcome import EXIT_STOPPED
    from mlcomp.runner.runner import RunStopped
    from mlcomp.search.tune import tune_config

    if process_count(1, distributed) > 1:
        raise ConfigError("--distributed: mlcomp tune runs its trials one after another in this process")
    optuna.logging.set_verbosity(optuna.logging.INFO if flags.get("verbose") else optuna.logging.ERROR)
    config = catalyst_config(configs, overrides, choose_logdir=False, **flags)
    args = config["args"]
    args.update({key: value for key, value in {"n_trials": n_trials, "timeout": timeout, "storage": storage,
                                                "study_name": study_name}.items() if value is not None})
    try:
        study = tune_config(config, _trial_logdirs(args, configs[0]), on_trial_end=_echo_trial)
    except RunStopped as e:
        raise RunExit(f"stopped at stage {e.stage} epoch {e.epoch} batch {e.batch}", EXIT_STOPPED) from None
    _echo_best(study)
