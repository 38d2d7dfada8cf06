"""Learning-rate schedulers Catalyst 20.x ships that torch has no equivalent of."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["OneCycleLRWithWarmup"]


def _linspace(start: float, stop: float, steps: int) -> list[float]:
    if steps <= 1:
        return [float(start)] * steps
    return [start + (stop - start) * i / (steps - 1) for i in range(steps)]


def _split(values: Sequence[float], name: str) -> tuple[float, float, float]:
    if len(values) not in (2, 3):
        raise ValueError(f"OneCycleLRWithWarmup: {name} takes 2 or 3 values, got {list(values)}")
    return values[0], values[1], values[-1]


class OneCycleLRWithWarmup(torch.optim.lr_scheduler.LRScheduler):
    """Catalyst 20.x's one-cycle schedule in three linear phases: warm-up from ``init_lr`` to
    ``max_lr``, annealing from ``max_lr`` to ``min_lr``, decay from ``min_lr`` to ``final_lr``;
    the momentum (``momentum``, or Adam's ``beta1``) moves the opposite way (Smith 2018, "A
    disciplined approach to neural network hyper-parameters").

    Phase lengths are given in epochs: the :class:`~mlcomp.runner.callbacks.SchedulerCallback`
    steps it per batch and, at each train loader start, calls :meth:`recalculate` with the
    loader's length so the phases cover ``num_steps`` epochs of batches (as Catalyst does).

    Args:
        optimizer: the wrapped optimizer.
        num_steps: length of the whole schedule, in epochs.
        lr_range: ``(max_lr, min_lr)`` or ``(max_lr, min_lr, final_lr)``.
        init_lr: learning rate at the start (default: the optimizer's ``lr``).
        warmup_steps / warmup_fraction: warm-up length, in epochs or as a fraction of ``num_steps``.
        decay_steps / decay_fraction: decay length, in epochs or as a fraction of ``num_steps``.
        momentum_range: ``(min, max)`` or ``(min, max, final)`` momentum.
        init_momentum: momentum at the start (default: the optimizer's).

    Raises:
        ValueError: a range of the wrong length, or phases longer than ``num_steps``.
    """

    def __init__(self, optimizer, num_steps: int, lr_range: Sequence[float] = (1.0, 0.005),
                 init_lr: float | None = None, warmup_steps: int = 0, warmup_fraction: float | None = None,
                 decay_steps: int = 0, decay_fraction: float | None = None,
                 momentum_range: Sequence[float] = (0.8, 0.99, 0.999), init_momentum: float | None = None):
        max_lr, min_lr, final_lr = _split(lr_range, "lr_range")
        min_m, max_m, final_m = _split(momentum_range, "momentum_range")
        group = optimizer.param_groups[0]
        init_lr = group["lr"] if init_lr is None else init_lr
        self._momentum_key = "betas" if "betas" in group else "momentum" if "momentum" in group else None
        if init_momentum is None and self._momentum_key is not None:
            init_momentum = group["betas"][0] if self._momentum_key == "betas" else group["momentum"]
        warmup = int(num_steps * warmup_fraction) if warmup_fraction is not None else int(warmup_steps)
        decay = int(num_steps * decay_fraction) if decay_fraction is not None else int(decay_steps)
        if warmup + decay > num_steps:
            raise ValueError(f"OneCycleLRWithWarmup: warm-up ({warmup}) and decay ({decay}) exceed num_steps "
                             f"({num_steps})")
        self.phases = [warmup, num_steps - warmup - decay, decay]
        self.lr_points = [init_lr, max_lr, min_lr, final_lr]
        self.momentum_points = [init_momentum, min_m, max_m, final_m]
        self._build(1)
        super().__init__(optimizer)

    def _build(self, scale: int) -> None:
        steps = [phase * scale for phase in self.phases]
        self.learning_rates = [lr for i, n in enumerate(steps)
                               for lr in _linspace(self.lr_points[i], self.lr_points[i + 1], n)]
        self.momentums = [] if self.momentum_points[0] is None else [
            m for i, n in enumerate(steps) for m in _linspace(self.momentum_points[i], self.momentum_points[i + 1], n)]

    def recalculate(self, loader_len: int, current_step: int) -> None:
        """Spreads the phases over ``loader_len`` batches per epoch and moves to the first batch
        of epoch ``current_step`` (0-based), setting that batch's learning rate."""
        self._build(max(1, int(loader_len)))
        self.last_epoch = current_step * max(1, int(loader_len))
        self._apply(self.last_epoch)

    def get_lr(self) -> list[float]:
        """The learning rate of every group at the current step (the final one past the end)."""
        index = self.last_epoch
        lr = self.learning_rates[index] if index < len(self.learning_rates) else self.lr_points[-1]
        return [lr] * len(self.optimizer.param_groups)

    def step(self, epoch=None):
        """Moves one batch on: sets the learning rate and the momentum."""
        super().step() if epoch is None else super().step(epoch)
        self._set_momentum(self.last_epoch)

    def _apply(self, index: int) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self._set_momentum(index)

    def _set_momentum(self, index: int) -> None:
        if self._momentum_key is None or not self.momentums:
            return
        momentum = self.momentums[index] if index < len(self.momentums) else self.momentum_points[-1]
        for group in self.optimizer.param_groups:
            if self._momentum_key == "betas":
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
