"""TorchScript export of a trained model (Catalyst 20.x ``catalyst.utils.tracing``, ``catalyst-dl trace``).

:func:`trace_model` turns a module into a ``torch.jit.ScriptModule`` with ``torch.jit.trace``
(recording the operations run on one example batch) or ``torch.jit.script`` (compiling the
Python source, which keeps data-dependent control flow). :func:`trace_logdir` does it for a
finished run: it rebuilds the model from ``LOGDIR/config.yml``, loads a checkpoint's weights,
takes one batch from the config's loaders and writes the file that ``torch.jit.load`` opens
without mlcomp or the model's code.

TorchScript is deprecated from torch 2.10 on in favour of ``torch.export`` (every ``torch.jit``
entry point warns), but it stays the format that ``torch.jit.load`` and libtorch open without the
model's Python code, so mlcomp keeps it (:mod:`mlcomp.runner.torchscript`, whose names this module
re-exports, silences exactly that deprecation warning).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.checkpoint import load_checkpoint, load_state_checked, resolve_checkpoint
from mlcomp.runner.config import make_experiment
from mlcomp.runner.config_io import load_config
from mlcomp.runner.torchscript import (MODES, check_request, example_input, load_traced, save_traced, trace_model,
                                       trace_name)

__all__ = ["MODES", "trace_model", "trace_logdir", "load_traced", "save_traced", "trace_name", "example_input"]

logger = logging.getLogger(__name__)


def _load_experiment(config_path: Path):
    """The config and its experiment (the expdir's ``Experiment`` when it exports one)."""
    config = load_config(config_path)
    return config, make_experiment(config)


def _first_batch(experiment, stage: str, config_path: Path):
    """The first batch of the first loader of ``stage``."""
    loaders = experiment.get_loaders(stage)
    if not loaders:
        raise ConfigError(f"{config_path}: stage {stage!r} has no loaders to take an example batch from")
    name, loader = next(iter(loaders.items()))
    try:
        return next(iter(loader))
    except StopIteration:
        raise ConfigError(f"{config_path}: loader {name!r} of stage {stage!r} is empty") from None


def trace_logdir(logdir: str | os.PathLike, checkpoint: str | os.PathLike = "best", method_name: str = "forward",
                 mode: str = "eval", requires_grad: bool = False, out: str | os.PathLike | None = None,
                 config: str | os.PathLike | None = None, script: bool = False,
                 device: str | torch.device = "cpu") -> Path:
    """Trace the model of the run in ``logdir`` and save it (Catalyst 20.x ``catalyst-dl trace``).

    The model is rebuilt from the run's merged config (``logdir/config.yml``, or ``config``) for
    its last stage, loaded with the checkpoint's ``model_state_dict`` and traced by
    :func:`trace_model` on the first batch of the first loader of the last stage
    (``get_loaders`` of the config's experiment: the expdir's ``Experiment`` or
    ``ConfigExperiment``), whose ``runner_params.input_key`` (default ``"features"``)
    is the input.

    Args:
        logdir: the run's folder.
        checkpoint: ``best``, ``last``, ``best_full``, ``last_full``, a file name in
            ``logdir/checkpoints`` or a path (see :func:`mlcomp.runner.checkpoint.resolve_checkpoint`).
        method_name, mode, requires_grad, script, device: as in :func:`trace_model`.
        out: where to write (atomically: a temporary file, then a rename); default
            ``logdir/trace/`` + :func:`trace_name`.
        config: a config file to use instead of ``logdir/config.yml``.

    Returns:
        The path of the written TorchScript file.

    Raises:
        ConfigError: the logdir, config or checkpoint is missing, the checkpoint does not fit the
            model, the batch lacks the input key, or the model cannot be exported.
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise ConfigError(f"logdir {logdir}: no such folder")
    config_path = Path(config) if config is not None else logdir / "config.yml"
    if not config_path.is_file():
        raise ConfigError(f"config {config_path}: no such file (the runner writes config.yml into the logdir; "
                          f"give --config otherwise)")
    checkpoint_path = resolve_checkpoint(logdir, checkpoint)
    config_dict, experiment = _load_experiment(config_path)
    stage = experiment.stages[-1]
    model = experiment.get_model(stage)
    check_request(model, mode, method_name, where=f"{config_path}: ")
    load_state_checked(model, load_checkpoint(checkpoint_path)["model_state_dict"], checkpoint_path)
    input_key = (config_dict.get("runner_params") or {}).get("input_key", "features")
    batch = example_input(_first_batch(experiment, stage, config_path), input_key, where=str(config_path))
    traced = trace_model(model, batch, method_name=method_name, mode=mode, requires_grad=requires_grad,
                         script=script, device=device)
    name = checkpoint_path.name[:-len(".pth")] if checkpoint_path.name.endswith(".pth") else checkpoint_path.stem
    out = Path(out) if out is not None else logdir / "trace" / trace_name(name, mode, method_name, requires_grad)
    save_traced(traced, out)
    logger.info("traced %s (%s) to %s", checkpoint_path, mode, out)
    return out
