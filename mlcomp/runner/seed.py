"""Seeding and RNG state capture/restore (python ``random``, numpy, torch, CUDA).

The runner seeds every generator with ``initial_seed`` at the start of a run and with
``initial_seed + global_epoch + 1`` at every epoch start (Catalyst 20.x), so an epoch's randomness
does not depend on how the run got there. ``get_rng_state``/``set_rng_state`` capture and restore
every generator for exact resume.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["set_global_seed", "get_rng_state", "set_rng_state"]


def set_global_seed(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator, torch's CPU and CUDA generators.

    Args:
        seed: an int; numpy requires ``0 <= seed < 2**32`` so it is taken modulo ``2**32``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def get_rng_state() -> dict[str, Any]:
    """The state of every generator: ``{"python", "numpy", "torch", "cuda"}``.

    ``cuda`` is a list of ByteTensors (one per visible device), empty without CUDA or when
    CUDA was not initialised (so capturing never creates a CUDA context).
    """
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a :func:`get_rng_state` result (CUDA states only when CUDA is there)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
