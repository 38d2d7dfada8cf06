"""Accumulators: running reductions over a loader that stay on the device until ``compute()``.

In the style of torchtraining's accumulators: ``update(value, weight=1)`` folds one value in,
``compute()`` returns the reduction (one device sync, here and only here), ``reset()`` starts
over, and ``state_dict()``/``load_state_dict()`` let a stopped run continue bit for bit.

Values are Python numbers or tensors (0-dim or any shape; shapes must agree across updates).
Tensors are detached and kept on their device (sums in float64), so a loader's mean costs no
``.item()`` per batch.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["Accumulator", "Mean", "Sum", "List"]


def _copy(value):
    """A copy of a state value that later in-place updates cannot reach."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    return list(value) if isinstance(value, list) else value


def _to_python(value):
    """A 0-dim tensor → float; other tensors stay tensors (moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value.cpu()
    return value


class Accumulator:
    """Base class: subclasses implement ``update``, ``compute``, ``reset`` and declare
    ``_state_keys``, the attribute names their ``state_dict`` holds."""

    _state_keys: tuple[str, ...] = ()

    def __init__(self):
        self.reset()

    def update(self, value, weight: float = 1) -> None:
        """Fold ``value`` in with ``weight`` (a number; a batch size for a mean)."""
        raise NotImplementedError

    def compute(self) -> Any:
        """The reduction so far."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every value."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The accumulator's state: tensors cloned (they are updated in place), lists copied, so
        later updates do not change a saved state; tensors stay on their device."""
        return {key: _copy(getattr(self, key)) for key in self._state_keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``.

        Raises:
            KeyError: a required key is missing (the message lists them).
        """
        missing = [key for key in self._state_keys if key not in state]
        if missing:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"required {list(self._state_keys)}")
        for key in self._state_keys:
            setattr(self, key, _copy(state[key]))

    def __repr__(self):
        return f"{type(self).__name__}({self.state_dict()})"


class Sum(Accumulator):
    """Weighted sum ``Σ weight·value``; ``compute()`` is a float (0-dim values) or a CPU tensor.

    ``total`` is a Python float until the first tensor arrives, then a float64 tensor on that
    tensor's device, updated in place (one ``add_`` per update, no device sync).
    """

    _state_keys = ("total",)

    def reset(self) -> None:
        """Back to a zero sum."""
        self.total = 0.0

    def update(self, value, weight: float = 1) -> None:
        """Add ``weight·value`` (no device sync)."""
        if isinstance(self.total, torch.Tensor):
            if isinstance(value, torch.Tensor):
                if value.device != self.total.device:  # a state restored onto the CPU
                    self.total = self.total.to(value.device)
                value = value.detach()
            self.total.add_(value, alpha=weight)
        elif isinstance(value, torch.Tensor):
            self.total = value.detach().to(torch.float64) * weight + self.total
        else:
            self.total = self.total + float(value) * weight

    def compute(self):
        """The sum: a float for scalar values, a CPU float64 tensor otherwise."""
        return _to_python(self.total)


class Mean(Sum):
    """Weighted mean ``Σ weight·value / Σ weight`` (batch-size-weighted loader metrics).

    ``compute()`` before any update raises ``ValueError`` (a mean of nothing is undefined).
    """

    _state_keys = ("total", "weight")

    def reset(self) -> None:
        """Back to no values."""
        super().reset()
        self.weight = 0.0

    def update(self, value, weight: float = 1) -> None:
        """Add ``value`` with ``weight`` (no device sync)."""
        total = self.total
        if type(value) is torch.Tensor and type(total) is torch.Tensor and value.device == total.device:
            total.add_(value.detach(), alpha=weight)  # the per-batch case, as Sum.update does it
        else:
            super().update(value, weight)
        self.weight += weight

    def compute(self):
        """The weighted mean: a float for scalar values, a CPU tensor otherwise.

        Raises:
            ValueError: no value was added since the last ``reset()``.
        """
        if not self.weight:
            raise ValueError("Mean.compute: no value was added (or every weight was 0)")
        return _to_python(self.total / self.weight)


class List(Accumulator):
    """Every value in order (for loader-level metrics such as AUC); ``weight`` is ignored.

    ``compute()`` concatenates tensors along dim 0 (0-dim ones are stacked) into one CPU tensor;
    plain numbers come back as a list.
    """

    _state_keys = ("values",)

    def reset(self) -> None:
        """Back to an empty list."""
        self.values = []

    def update(self, value, weight: float = 1) -> None:
        """Append ``value`` (tensors are detached and stay on their device)."""
        self.values.append(value.detach() if isinstance(value, torch.Tensor) else value)

    def compute(self):
        """The values: one CPU tensor when they are tensors, else a list."""
        if self.values and all(isinstance(v, torch.Tensor) for v in self.values):
            if all(v.dim() == 0 for v in self.values):
                return torch.stack(self.values).cpu()
            return torch.cat(self.values).cpu()
        return list(self.values)
