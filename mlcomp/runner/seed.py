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
    CUDA was not initialised (so capturing never creates a CUDA context). Every part is a tensor
    or a plain type, so checkpoints holding it load with ``torch.load(weights_only=True)``: numpy's
    is ``{"key": [624 ints], "pos", "has_gauss", "gauss"}`` (its MT19937 state without the array).
    """
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    _, key, pos, has_gauss, gauss = np.random.get_state()
    numpy = {"key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a :func:`get_rng_state` result (CUDA states only when CUDA is there)."""
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", np.array(numpy["key"], dtype=np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
