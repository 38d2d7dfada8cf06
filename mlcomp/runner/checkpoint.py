"""Checkpoint files: model-only and full (resumable) checkpoints, saved atomically.

A *model* checkpoint (``best.pth``, ``last.pth``, ``{stage}.{epoch}.pth``) holds
``model_state_dict``, ``stage``, ``epoch``, ``valid_metrics`` and ``hparams``. A *full* checkpoint
(``*_full.pth``) adds ``optimizer_state_dict``, ``scheduler_state_dict``,
``criterion_state_dict``, ``callbacks`` (name → ``state_dict()``), ``rng`` (python, numpy, torch,
cuda: the generators at the moment of saving), ``loader_rng`` (the generators at the start of the
current loader, before its iterator drew a permutation), ``position`` and ``runner`` (counters
and metrics, see :meth:`mlcomp.runner.runner.Runner.state_dict`) and ``checkpoint_data``.

Checkpoints hold python and numpy RNG states, so they are read with ``weights_only=False``: load
only files your own runs wrote.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from mlcomp.errors import ConfigError

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_state_checked",
    "model_checkpoint",
    "full_checkpoint",
    "unpack_checkpoint",
    "FULL_KEYS",
]

FULL_KEYS = ("model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "criterion_state_dict",
             "callbacks", "rng", "loader_rng", "position", "runner")
"""Keys every full checkpoint has."""


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike, *more_paths) -> Path:
    """Write ``checkpoint`` to ``path`` (and ``more_paths``: serialised once, written to each)
    atomically (a temporary file, then ``os.replace``), creating folders; returns ``path``."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    for target in (path, *more_paths):
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(buffer.getbuffer())
        os.replace(tmp, target)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint onto the CPU.

    Raises:
        ConfigError: the file does not exist, cannot be read, or is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: the user's input, not a bug
        raise ConfigError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        raise ConfigError(f"checkpoint {path}: not an mlcomp checkpoint (no 'model_state_dict' key)")
    return checkpoint


def load_state_checked(module: torch.nn.Module, state: dict[str, Any], path, what: str = "model") -> None:
    """``module.load_state_dict(state)`` (strict) with a user-facing error on mismatch.

    Raises:
        ConfigError: names ``path``, the missing and unexpected keys and the shape mismatches.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs {what} {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(f"checkpoint {path}: {what} state does not fit: missing keys {missing}, "
                          f"unexpected keys {unexpected}, shape mismatches {shapes}")
    module.load_state_dict(state)


def _state(obj) -> dict | None:
    return None if obj is None else obj.state_dict()


def model_checkpoint(runner) -> dict[str, Any]:
    """The model-only checkpoint of ``runner`` at the current stage and epoch."""
    from mlcomp.runner import distributed

    return {"model_state_dict": distributed.unwrap_model(runner.model).state_dict(),
            "stage": runner.stage_name, "epoch": runner.epoch,
            "valid_metrics": dict(runner.valid_metrics), "hparams": runner.hparams}


def full_checkpoint(runner, epoch_done: bool = False, with_batch: bool = False) -> dict[str, Any]:
    """Everything needed to continue ``runner`` exactly where it is.

    Args:
        epoch_done: True at an epoch end (resume starts the next epoch); False after a batch
            (resume continues with the next batch of the current loader).
        with_batch: taken inside ``on_batch_end``: the loader means include this batch's
            metrics, as the runner will once the handlers are done (``Runner.state_dict``).
    """
    from mlcomp.runner.seed import get_rng_state

    checkpoint = model_checkpoint(runner)
    checkpoint.update(
        optimizer_state_dict=_state(runner.optimizer),
        scheduler_state_dict=_state(runner.scheduler),
        criterion_state_dict=_state(runner.criterion),
        callbacks={name: cb.state_dict() for name, cb in runner.callbacks.items() if hasattr(cb, "state_dict")},
        rng=get_rng_state(), loader_rng=runner.loader_rng_state,
        position=runner.position(epoch_done), runner=runner.state_dict(with_batch=with_batch),
        checkpoint_data=dict(runner.checkpoint_data or {}))
    return checkpoint


def unpack_checkpoint(runner, checkpoint: dict[str, Any], path, components: bool = True,
                      callbacks: bool = False) -> None:
    """Load ``checkpoint`` into ``runner``'s model; with ``components`` also into its optimizer,
    scheduler and criterion (the states present), with ``callbacks`` into its callbacks (by name).

    Raises:
        ConfigError: a state does not fit (the message names ``path`` and what differs).
    """
    from mlcomp.runner import distributed

    load_state_checked(distributed.unwrap_model(runner.model), checkpoint["model_state_dict"], path)
    if components:
        for key, obj in (("optimizer", runner.optimizer), ("scheduler", runner.scheduler),
                         ("criterion", runner.criterion)):
            state = checkpoint.get(f"{key}_state_dict")
            if obj is not None and state is not None:
                try:
                    obj.load_state_dict(state)
                except (KeyError, ValueError, RuntimeError) as e:
                    raise ConfigError(f"checkpoint {path}: {key} state does not fit: {e}") from e
    for name, state in (checkpoint.get("callbacks") or {}).items() if callbacks else ():
        callback = runner.callbacks.get(name)
        if callback is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(state)
