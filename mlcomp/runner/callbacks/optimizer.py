"""OptimizerCallback: backward, gradient accumulation and clipping, optimizer step, AMP on CUDA
(Catalyst 20.x ``OptimizerCallback``)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["OptimizerCallback"]

CLIP_FUNCTIONS = ("clip_grad_norm_", "clip_grad_value_")


class OptimizerCallback(Callback):
    """Back-propagates ``batch_metrics[loss_key] / accumulation_steps`` on every batch that needs a
    backward pass and steps the optimizer every ``accumulation_steps`` batches (and at the end of
    a train loader when gradients are pending), then zeroes the gradients.

    Args:
        loss_key: the batch metric to minimise (``metric_key`` is an alias, as in later Catalyst).
        accumulation_steps: batches per optimizer step; batch 32 × 2 steps ≈ batch 64.
        grad_clip_params: ``{"func": "clip_grad_norm_" | "clip_grad_value_", **kwargs}`` for
            ``torch.nn.utils``, applied (after unscaling under AMP) before each step.
        optimizer_key: ignored (one optimizer per stage), kept for Catalyst configs.
        use_amp: mixed precision with ``torch.autocast`` and a ``GradScaler``; only on CUDA
            (ignored on other devices). The forward pass runs under autocast from
            ``on_batch_start`` to this callback's ``on_batch_end``.

    Raises:
        ValueError: ``accumulation_steps`` < 1 or an unknown clipping function.
        ConfigError: at stage start, the stage has no optimizer; during a batch, the loss is missing.
    """

    metric_names = ()  # writes no metric

    def __init__(self, loss_key: str = "loss", accumulation_steps: int = 1,
                 grad_clip_params: Mapping[str, Any] | None = None, optimizer_key=None,
                 use_amp: bool = False, metric_key: str | None = None, decouple_weight_decay: bool = False):
        super().__init__(CallbackOrder.Optimizer)
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"OptimizerCallback: argument accumulation_steps should be an int >= 1, "
                             f"got {accumulation_steps!r}")
        clip = dict(grad_clip_params or {})
        func = clip.pop("func", "clip_grad_norm_") if clip else None
        if func is not None and func not in CLIP_FUNCTIONS:
            raise ValueError(f"OptimizerCallback: grad_clip_params.func should be one of {CLIP_FUNCTIONS}, got {func!r}")
        self._clip = None if func is None else (getattr(torch.nn.utils, func), clip)
        self.loss_key = metric_key or loss_key
        self.accumulation_steps, self.optimizer_key, self.use_amp = accumulation_steps, optimizer_key, use_amp
        self._optimizer, self._scaler, self._autocast, self._pending = None, None, None, 0

    def on_stage_start(self, runner):
        """Check that there is an optimizer; create the grad scaler for AMP on CUDA."""
        if runner.optimizer is None:
            raise ConfigError(f"stage {runner.stage_name!r}: OptimizerCallback needs an optimizer, the stage has none")
        self._optimizer = runner.optimizer
        amp = self.use_amp and runner.device.type == "cuda"
        self._scaler = torch.amp.GradScaler("cuda") if amp else None

    def on_loader_start(self, runner):
        """Start counting the loader's batches."""
        self._pending = 0

    def on_batch_start(self, runner):
        """Enter autocast for the forward pass (AMP on CUDA only)."""
        if self._scaler is not None:
            self._autocast = torch.autocast("cuda")
            self._autocast.__enter__()

    def on_batch_end(self, runner):
        """Backward, and a step every ``accumulation_steps`` batches."""
        self._exit_autocast()
        if not runner.need_backward_pass:
            return
        loss = runner.batch_metrics.get(self.loss_key)
        if loss is None:
            raise ConfigError(f"OptimizerCallback: batch metric {self.loss_key!r} not found; "
                              f"batch metrics {list(runner.batch_metrics)}")
        if self.accumulation_steps > 1:
            loss = loss / self.accumulation_steps
        (self._scaler.scale(loss) if self._scaler is not None else loss).backward()
        self._pending += 1
        if self._pending % self.accumulation_steps == 0:
            self._step()

    def on_loader_end(self, runner):
        """Apply gradients still pending at the end of a train loader."""
        if runner.need_backward_pass and self._pending % self.accumulation_steps:
            self._step()

    def on_exception(self, runner):
        """Leave autocast if the batch failed inside it."""
        self._exit_autocast()

    def _exit_autocast(self):
        if self._autocast is not None:
            self._autocast.__exit__(None, None, None)
            self._autocast = None

    def _step(self):
        optimizer, scaler = self._optimizer, self._scaler
        if self._clip is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            func, kwargs = self._clip
            func([p for group in optimizer.param_groups for p in group["params"]], **kwargs)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._pending = 0

    def state_dict(self) -> dict[str, Any]:
        """Batches accumulated since the last step, their gradients, and the grad scaler."""
        grads = None
        if self._pending and self._optimizer is not None:
            grads = [None if p.grad is None else p.grad.detach().clone()
                     for group in self._optimizer.param_groups for p in group["params"]]
        return {"pending": self._pending, "grads": grads,
                "scaler": None if self._scaler is None else self._scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (call after ``on_stage_start``: gradients go to the optimizer's
        parameters)."""
        self._pending = state["pending"]
        if state["grads"] is not None:
            params = [p for group in self._optimizer.param_groups for p in group["params"]]
            for param, grad in zip(params, state["grads"], strict=True):
                param.grad = None if grad is None else grad.to(param.device).clone()
        if state["scaler"] is not None and self._scaler is not None:
            self._scaler.load_state_dict(state["scaler"])
