"""``--resume`` with a model-only checkpoint: load its weights and run the config from its start.

Catalyst 20.x's ``CheckpointCallback`` loaded at stage start whatever its ``resume`` file held, so
``catalyst-dl run --config infer.yml --resume logdir/checkpoints/best.pth`` ran an inference config
on trained weights (``best.pth`` holds the model only). mlcomp continues a *full* checkpoint
(``*_full.pth``) exactly where it stopped (``Runner.run_experiment(resume=...)``); a model-only one
is loaded by :class:`LoadWeightsCallback` at the first stage's start instead, with fresh counters,
optimizer and scheduler.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from mlcomp.runner import distributed
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.checkpoint import FULL_KEYS, load_checkpoint, load_state_checked

__all__ = ["LoadWeightsCallback", "is_full_checkpoint"]


def is_full_checkpoint(path: str | os.PathLike) -> bool:
    """Whether the checkpoint at ``path`` has every key of a full (resumable) one. Only the keys are
    read (``torch.load(mmap=True)`` leaves the tensors on disk); a file that cannot be read that way
    counts as full, so that the runner's own reading reports what is wrong with it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a foreign, truncated or pickled file: the runner's load explains
        return True
    return isinstance(checkpoint, dict) and all(key in checkpoint for key in FULL_KEYS)


class LoadWeightsCallback(Callback):
    """Loads a checkpoint's ``model_state_dict`` into the runner's model at the first stage start,
    on every rank (Catalyst 20.x's ``CheckpointCallback(resume=...)`` with a model-only file).

    Args:
        path: the checkpoint file.

    Raises:
        ConfigError: at the first stage start, the file cannot be read or does not fit the model.
    """

    metric_names = ()  # writes no metric

    def __init__(self, path: str | os.PathLike):
        super().__init__(CallbackOrder.Internal, node=CallbackNode.All)
        self.path = Path(path)
        self._loaded = False

    def on_stage_start(self, runner) -> None:
        """Load the weights, once."""
        if not self._loaded:
            load_state_checked(distributed.unwrap_model(runner.model), load_checkpoint(self.path)["model_state_dict"],
                               self.path)
            self._loaded = True
