"""Catalyst 20.x's ``catalyst-dl run`` command line, shared by ``mlcomp run`` and ``mlcomp tune``.

A CI script of Catalyst 20.02–20.12 runs with ``catalyst-dl run`` replaced by ``mlcomp run`` and
the same flags (Catalyst's ``catalyst/dl/scripts/run.py`` and ``utils/parser.py``)::

    mlcomp run --expdir=src --configs configs/train.yml configs/aug.yml --logdir=logs \\
        --stages/state_params/num_epochs=1:int --check --verbose

- ``--config``/``--configs``/``-C`` take one or more files each (argparse's ``nargs="+"``);
- ``--expdir``, ``--logdir``, ``--baselogdir``, ``--resume``, ``--autoresume``, ``--seed`` and the
  switches ``--verbose``, ``--timeit``, ``--check``, ``--overfit``, ``--deterministic``,
  ``--benchmark`` (each with its ``--no-`` form) set the config's ``args``, after the overrides
  and over the files' values, as Catalyst's ``parse_config_args`` did; a flag left out keeps the
  config's value (Catalyst's ``--seed`` defaulted to 42 over the file's: mlcomp keeps the file's);
- ``--distributed`` (``-ddp``, or ``USE_DDP=1``) runs one process per visible GPU, through the
  ``--nproc`` path; with no GPU, or one, it is one process, as Catalyst's ``distributed_cmd_run``
  ran a single worker when its world size was 1;
- ``--apex`` and ``--amp`` (Catalyst's mixed-precision switches) are refused with a hint; their
  ``--no-`` forms are accepted;
- every other ``--key=value`` is an override (:func:`mlcomp.configkit.parse_overrides`).

Catalyst's ``-j``/``-b``/``-e`` (``--num-workers``, ``--batch-size``, ``--num-epochs``) are not
taken: no Catalyst 20.x config API read them.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from mlcomp.errors import ConfigError

__all__ = ["CatalystCommand", "catalyst_options", "overrides_argument", "catalyst_config", "derived_logdir",
           "expand_configs", "process_count", "SWITCHES", "DEFAULT_LOGDIR"]

CONFIG_FLAGS = ("--config", "--configs", "-C")
SWITCHES = ("verbose", "timeit", "check", "overfit", "deterministic", "benchmark")
"""Catalyst's boolean flags that become ``args`` keys (``--name`` / ``--no-name``)."""
DEFAULT_LOGDIR = "runs/{name}"
"""Logdir when neither ``--logdir``, ``--baselogdir`` nor ``args`` gives one: ``runs/<first config's stem>``."""


def expand_configs(argv: Sequence[str]) -> list[str]:
    """``--configs a.yml b.yml`` (argparse's ``nargs="+"``, also ``--config`` and ``-C``) →
    ``--config a.yml --config b.yml``: the tokens after a config flag's value that do not start
    with ``-`` are more config files. Other tokens are kept as they are."""
    out: list[str] = []
    state = None  # "value": the next token is the flag's value; "more": more files may follow
    for token in argv:
        if state == "value":
            out.append(token)
            state = "more"
        elif state == "more" and not token.startswith("-"):
            out += ["--config", token]
        else:
            name, eq, _ = token.partition("=")
            state = None
            if name in CONFIG_FLAGS:
                out.append("--config" + token[len(name):])
                state = "more" if eq else "value"
            else:
                out.append(token)
    return out


class CatalystCommand(click.Command):
    """A click command that reads Catalyst's multi-file ``--configs`` (:func:`expand_configs`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Expand the config flags, then parse as click does."""
        return super().parse_args(ctx, expand_configs(args))


def _switch(name: str, help_text: str) -> Callable:
    return click.option(f"--{name}/--no-{name}", default=None, help=help_text)


def catalyst_options(command: Callable) -> Callable:
    """Adds Catalyst's ``catalyst-dl run`` options to a click command (use with
    :class:`CatalystCommand`); the command receives ``configs``, ``expdir``, ``logdir``,
    ``baselogdir``, ``resume``, ``autoresume``, ``seed``, the :data:`SWITCHES`, ``distributed``,
    ``apex`` and ``amp``, to hand to :func:`catalyst_config` and :func:`process_count`."""
    options = [
        click.option("--config", "--configs", "-C", "configs", multiple=True, required=True, metavar="FILE...",
                     type=click.Path(dir_okay=False),
                     help="YAML runner configs, deep-merged in order (several after one flag, or the flag repeated)."),
        click.option("--expdir", metavar="DIR", help="The experiment folder (overrides args.expdir)."),
        click.option("--logdir", metavar="DIR", help="Where checkpoints and logs go (overrides args.logdir)."),
        click.option("--baselogdir", metavar="DIR",
                     help="Without a logdir: log to DIR/<UTC time>.<config hash> (Catalyst's)."),
        click.option("--resume", metavar="PATH", help="A full checkpoint (*_full.pth) continues exactly; a "
                                                       "model-only one (best.pth) gives its weights to a new run."),
        click.option("--autoresume", type=click.Choice(["last", "best"]),
                     help="Continue from LOGDIR/checkpoints/{last,best}_full.pth when it exists."),
        click.option("--seed", type=int, metavar="N", help="Initial seed (overrides args.seed)."),
        _switch("verbose", "Show progress bars."),
        _switch("timeit", "Time batches and data loading."),
        _switch("check", "A quick trial: a few batches and epochs (Catalyst 20.02's or 20.05's counts, "
                         "by the config's era)."),
        _switch("overfit", "Run the same first batch of every loader each epoch."),
        _switch("deterministic", "Deterministic cuDNN."),
        _switch("benchmark", "cuDNN benchmark mode."),
        click.option("--distributed/--no-distributed", "-ddp", default=False, envvar="USE_DDP",
                     help="One process per visible GPU (one process without GPUs); also USE_DDP=1."),
        click.option("--apex/--no-apex", default=False, help="Refused: NVIDIA apex is not supported."),
        click.option("--amp/--no-amp", default=False, help="Refused: see OptimizerCallback's use_amp."),
        click.option("--hydra", is_flag=True, expose_value=False, callback=_refuse_hydra,
                     help="Refused: Catalyst 20.12's Hydra configs are not supported."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _refuse_hydra(ctx, param, value):
    """Refuses ``--hydra`` before the Hydra-style arguments after it are read as overrides.

    Raises:
        ConfigError: ``--hydra`` given.
    """
    if value:
        raise ConfigError("--hydra: Catalyst 20.12's Hydra configs (--config-dir, --config-name, key=value "
                          "overrides) are not supported by mlcomp; write the config as one YAML file and pass it "
                          "with --config")


def _parse_overrides(ctx, param, value):
    from mlcomp.configkit import parse_overrides

    return parse_overrides(value)


overrides_argument = click.argument("overrides", nargs=-1, type=click.UNPROCESSED, callback=_parse_overrides,
                                    metavar="[--KEY=VALUE | --A/B/C=VALUE:TYPE]...")
"""The extra ``--key=value`` tokens of a command as ``overrides``: (key, value) pairs
(:func:`mlcomp.configkit.parse_overrides`); the command needs ``ignore_unknown_options``."""


def catalyst_config(configs: Sequence[str], overrides: Sequence[tuple[str, Any]], *, expdir=None, logdir=None,
                    baselogdir=None, resume=None, autoresume=None, seed=None, apex=False, amp=False,
                    choose_logdir: bool = True, **switches) -> dict:
    """The config of a ``catalyst-dl run`` command line: ``configs`` merged, ``overrides``
    applied, then the flags given set in ``args`` (Catalyst's order), and a logdir chosen:
    ``args.logdir``, else one derived under ``args.baselogdir`` (:func:`derived_logdir`), else
    ``runs/<first config's stem>``.

    Args:
        choose_logdir: False leaves ``args.logdir`` and ``args.baselogdir`` as given (``mlcomp
            tune`` makes one logdir per trial from them).
        switches: the :data:`SWITCHES` (None: not given).

    Raises:
        ConfigError: ``--apex`` or ``--amp``, or anything :func:`mlcomp.runner.config_io.load_config`
            raises.
    """
    from mlcomp.runner.config_io import load_config

    if apex or amp:
        raise ConfigError(f"--{'apex' if apex else 'amp'}: mixed precision is not a flag of mlcomp run; set "
                          f"use_amp: true on the stage's OptimizerCallback (torch.autocast; NVIDIA apex is not "
                          f"supported)")
    flags = {"expdir": expdir, "logdir": logdir, "baselogdir": baselogdir, "resume": resume,
             "autoresume": autoresume, "seed": seed, **{name: switches.get(name) for name in SWITCHES}}
    config = load_config(*configs, overrides=[*overrides, *((f"args.{key}", value) for key, value in flags.items()
                                                           if value is not None)])
    args = config["args"] = dict(config.get("args") or {})
    if choose_logdir and not args.get("logdir"):
        base = args.get("baselogdir")
        args["logdir"] = derived_logdir(base, config) if base else DEFAULT_LOGDIR.format(name=Path(configs[0]).stem)
    return config


def derived_logdir(baselogdir: str | os.PathLike, config: dict) -> str:
    """``{baselogdir}/{UTC time %y%m%d.%H%M%S}.{6 characters of the config's hash}``: Catalyst 20.x
    ``ConfigExperiment``'s logdir under ``args.baselogdir`` (its ``_get_logdir``). The hash is the
    URL-safe base64 of the SHA-256 of the config as sorted JSON."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).digest()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%y%m%d.%H%M%S")
    return f"{baselogdir}/{stamp}.{base64.urlsafe_b64encode(digest).decode()[:6]}"


def process_count(nproc: int, distributed: bool) -> int:
    """How many processes run: ``nproc`` when above 1, else with ``distributed`` one per visible
    CUDA device (at least one), else 1."""
    if nproc > 1 or not distributed:
        return nproc
    import torch

    return max(1, torch.cuda.device_count())
