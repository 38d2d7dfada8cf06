"""The names of a run's checkpoints and their files in ``logdir/checkpoints``: mlcomp's one table.

The runner writes them (:class:`mlcomp.runner.callbacks.checkpoint.CheckpointCallback`, the stop
path of :class:`mlcomp.runner.runner.Runner`), :func:`mlcomp.runner.checkpoint.resolve_checkpoint`
reads a name into its file, and the worker carries some between attempts
(:data:`mlcomp.worker.carry.CARRIED`). This module imports only the standard library, so the
worker, which must not import torch, reads it too; :mod:`mlcomp.runner.checkpoint` re-exports it
for the runner and the executors.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BEST", "LAST", "BEST_FULL", "LAST_FULL", "NAMED", "FILES", "FOLDER", "full_name", "checkpoint_path"]

BEST, LAST, BEST_FULL, LAST_FULL = "best", "last", "best_full", "last_full"
"""The checkpoint names. ``best``: model-only checkpoint (model state, stage, epoch, valid
metrics, hparams) of the stage's best epoch by the main metric; ``last``: model-only checkpoint of
the last finished epoch; ``best_full`` and ``last_full``: the full (resumable) checkpoints of those
epochs (plus optimizer, scheduler, criterion and callback states, RNG states, position and
counters). A stopped run's ``last_full`` holds the batch it stopped after instead."""
NAMED = (BEST, LAST, BEST_FULL, LAST_FULL)
"""Checkpoint names that stand for ``logdir/checkpoints/{name}.pth``."""
FILES = {name: f"{name}.pth" for name in NAMED}
"""Checkpoint name → its file name in :data:`FOLDER` (e.g. ``last_full`` → ``last_full.pth``)."""
FOLDER = "checkpoints"
"""The folder of a run's logdir that holds its checkpoints."""


def full_name(name: str) -> str:
    """The full (resumable) checkpoint of a name: ``best`` → ``best_full``, ``last`` →
    ``last_full``; a ``*_full`` name stays as it is.

    Raises:
        ValueError: ``name`` is not one of :data:`NAMED`.
    """
    if name not in NAMED:
        raise ValueError(f"checkpoint {name!r}: not one of {', '.join(NAMED)}")
    return name if name.endswith("_full") else f"{name}_full"


def checkpoint_path(logdir: str | os.PathLike, name: str, *, full: bool = False) -> Path:
    """``logdir/checkpoints/{file}`` of the checkpoint ``name`` (one of :data:`NAMED`; with
    ``full``, its full checkpoint: :func:`full_name`). The file need not exist.

    Raises:
        ValueError: ``name`` is not one of :data:`NAMED`.
    """
    if name not in NAMED:
        raise ValueError(f"checkpoint {name!r}: not one of {', '.join(NAMED)}")
    return Path(logdir) / FOLDER / FILES[full_name(name) if full else name]
