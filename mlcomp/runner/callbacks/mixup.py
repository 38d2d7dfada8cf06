"""Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018,
https://arxiv.org/abs/1710.09412), as Catalyst 20.x's ``MixupCallback``.

Each batch is replaced by convex combinations of pairs of its samples: with ``λ ~ Beta(α, α)``
and a random permutation ``π`` of the batch, ``x ← λ·x + (1 − λ)·x[π]`` for every field, and the
loss is ``λ·L(ŷ, y) + (1 − λ)·L(ŷ, y[π])``. The callback is a :class:`CriterionCallback` (it
computes the loss); do not add another criterion callback with the same prefix.

Randomness comes from the callback's own generators (numpy for ``λ``, torch for ``π``), seeded
from ``seed`` or the run's seed and the stage index, and saved in ``state_dict``: a run stopped
and resumed mixes the same pairs with the same ``λ``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callbacks.criterion import CriterionCallback
from mlcomp.runner.callbacks.metric import get_batch_value

__all__ = ["MixupCallback"]


class MixupCallback(CriterionCallback):
    """Mixup of ``fields`` of the batch and the matching mixed loss.

    Args:
        input_key: the targets (one key).
        output_key: the predictions (one key).
        fields: batch keys to mix (the model's inputs), at least one.
        alpha: the Beta distribution's parameter, ≥ 0; 0 turns mixup off (``λ = 1``).
        on_train_only: mix only in ``train*`` loaders; other loaders get the plain loss.
        seed: seed of the callback's generators; default: ``torch.initial_seed()`` at stage start
            (the run's seed) plus the stage index.
        **kwargs: ``prefix``, ``criterion_key``, ``multiplier`` of :class:`CriterionCallback`.

    Raises:
        ConfigError: ``alpha`` < 0, no ``fields``, or a field missing from a batch.
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The loss it writes: ``(prefix,)``."""
        return (self.prefix,)

    def __init__(self, input_key: str = "targets", output_key: str = "logits", fields: Sequence[str] = ("features",),
                 alpha: float = 1.0, on_train_only: bool = True, seed: int | None = None, **kwargs):
        if not isinstance(input_key, str) or not isinstance(output_key, str):
            raise ConfigError(f"MixupCallback: input_key and output_key should be single keys, "
                              f"got {input_key!r} and {output_key!r}")
        fields = [fields] if isinstance(fields, str) else list(fields)
        if not fields:
            raise ConfigError("MixupCallback: fields should name at least one batch key to mix")
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ConfigError(f"MixupCallback: alpha should be a number >= 0, got {alpha!r}")
        super().__init__(input_key=input_key, output_key=output_key, **kwargs)
        self.fields, self.alpha, self.on_train_only, self.seed = fields, float(alpha), on_train_only, seed
        self.lam, self.index, self.is_needed = 1.0, None, True
        self._numpy = np.random.default_rng(0)
        self._torch = torch.Generator().manual_seed(0)

    def on_stage_start(self, runner) -> None:
        """Check the criterion; seed the generators."""
        super().on_stage_start(runner)
        seed = (torch.initial_seed() if self.seed is None else self.seed) + runner.stage_index
        self._numpy = np.random.default_rng(seed)
        self._torch = torch.Generator().manual_seed(seed)

    def on_loader_start(self, runner) -> None:
        """Decide whether this loader is mixed."""
        self.is_needed = (not self.on_train_only or runner.is_train_loader) and not runner.is_infer_loader

    def on_batch_start(self, runner) -> None:
        """Draw ``λ`` and ``π`` and mix the fields in ``runner.input``."""
        if not self.is_needed:
            return
        missing = [field for field in self.fields if field not in runner.input]
        if missing:
            raise ConfigError(f"MixupCallback: fields {missing} are not in the batch (keys {sorted(runner.input)})")
        self.lam = float(self._numpy.beta(self.alpha, self.alpha)) if self.alpha > 0 else 1.0
        size = runner.input[self.fields[0]].shape[0]
        self.index = torch.randperm(size, generator=self._torch).to(runner.device)
        for field in self.fields:
            value = runner.input[field]
            runner.input[field] = self.lam * value + (1 - self.lam) * value[self.index]

    def on_batch_end(self, runner) -> None:
        """The mixed loss ``λ·L(ŷ, y) + (1 − λ)·L(ŷ, y[π])`` (the plain loss when not mixing)."""
        if not self.is_needed:
            super().on_batch_end(runner)
            return
        outputs = get_batch_value(runner.output, self.output_keys[0], "runner.output", self)
        targets = get_batch_value(runner.input, self.input_keys[0], "runner.input", self)
        loss = (self.lam * runner.criterion(outputs, targets)
                + (1 - self.lam) * runner.criterion(outputs, targets[self.index]))
        runner.batch_metrics[self.prefix] = loss * self.multiplier if self.multiplier != 1.0 else loss

    def state_dict(self) -> dict[str, Any]:
        """The generators' states."""
        return {"numpy": self._numpy.bit_generator.state, "torch": self._torch.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: ``numpy`` or ``torch`` is missing.
        """
        self._numpy.bit_generator.state = state["numpy"]
        self._torch.set_state(state["torch"])
