"""OptimizerCallback: backward, gradient accumulation and clipping, optimizer step, AMP on CUDA
(Catalyst 20.x ``OptimizerCallback``)."""
from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["OptimizerCallback"]

CLIP_FUNCTIONS = ("clip_grad_norm_", "clip_grad_value_")


@contextlib.contextmanager
def _decoupled_weight_decay(optimizer: torch.optim.Optimizer, enabled: bool):
    """Around one optimizer step: with ``enabled``, shrink each parameter by ``1 - weight_decay ·
    lr`` of its group and step with ``weight_decay`` 0, then put the groups' values back."""
    if not enabled:
        yield
        return
    saved = [group.get("weight_decay", 0.0) for group in optimizer.param_groups]
    with torch.no_grad():
        for group, decay in zip(optimizer.param_groups, saved):
            if decay:
                for param in group["params"]:
                    param.mul_(1.0 - decay * group["lr"])
            group["weight_decay"] = 0.0
    try:
        yield
    finally:
        for group, decay in zip(optimizer.param_groups, saved):
            group["weight_decay"] = decay


class OptimizerCallback(Callback):
    """Back-propagates ``batch_metrics[loss_key] / accumulation_steps`` on every batch that needs a
    backward pass and steps the optimizer every ``accumulation_steps`` batches (and at the end of
    a train loader when gradients are pending), then zeroes the gradients.

    Takes every argument of Catalyst 20.02–20.12's ``OptimizerCallback`` with its meaning, or
    refuses it with a clear error where mlcomp cannot honour it (apex, gradient snapshots).

    Args:
        loss_key: the batch metric to minimise (``metric_key`` is its 20.05+ name).
        accumulation_steps: batches per optimizer step; batch 32 × 2 steps ≈ batch 64.
        grad_clip_params: ``{"func": "clip_grad_norm_" | "clip_grad_value_", **kwargs}`` for
            ``torch.nn.utils``, applied (after unscaling under AMP) before each step.
        optimizer_key: ignored (one optimizer per stage), kept for Catalyst configs.
        use_amp: mixed precision with ``torch.autocast`` and a ``GradScaler``; only on CUDA
            (ignored on other devices). The forward pass runs under autocast from
            ``on_batch_start`` to this callback's ``on_batch_end``. ``None`` (Catalyst 20.12):
            ``distributed_params.amp`` of the experiment.
        metric_key: Catalyst 20.05+'s name of ``loss_key``.
        decouple_weight_decay: decoupled weight decay (Loshchilov & Hutter, as Catalyst did it):
            before each step every parameter is multiplied by ``1 - weight_decay · lr`` of its
            group, and the optimizer steps with ``weight_decay`` 0 (restored right after, so
            checkpoints keep the configured value). Catalyst 20.02–20.10 defaulted to True and
            20.12 to False; mlcomp keeps 20.12's default.
        use_fast_zero_grad: Catalyst 20.10+'s "set ``grad`` to None instead of zeroing it"; the
            gradients are always set to None here (what ``optimizer.zero_grad()`` does in
            torch ≥ 2), so both values behave the same.
        xla_barrier: Catalyst 20.08+'s TPU barrier flag; ignored (mlcomp runs no XLA devices).
        use_apex: Catalyst 20.12's NVIDIA apex switch: only false is accepted.
        save_model_grads: Catalyst 20.02's gradient snapshots for loggers: only false is accepted.

    Raises:
        ValueError: ``accumulation_steps`` < 1, an unknown clipping function, both ``loss_key``
            and ``metric_key`` given differently, or ``use_apex``/``save_model_grads`` true.
        ConfigError: at stage start, the stage has no optimizer; during a batch, the loss is missing.
    """

    metric_names = ()  # writes no metric

    def __init__(self, loss_key: str | None = None, accumulation_steps: int = 1,
                 grad_clip_params: Mapping[str, Any] | None = None, optimizer_key=None,
                 use_amp: bool | None = False, metric_key: str | None = None, decouple_weight_decay: bool = False,
                 use_fast_zero_grad: bool = False, xla_barrier: bool = True, use_apex: bool | None = None,
                 save_model_grads: bool = False):
        super().__init__(CallbackOrder.Optimizer)
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"OptimizerCallback: argument accumulation_steps should be an int >= 1, "
                             f"got {accumulation_steps!r}")
        if loss_key is not None and metric_key is not None and loss_key != metric_key:
            raise ValueError(f"OptimizerCallback: give metric_key or its older name loss_key, not both "
                             f"({metric_key!r}, {loss_key!r})")
        for name, value, hint in (("use_apex", use_apex, "use use_amp: true (torch's native AMP)"),
                                  ("save_model_grads", save_model_grads, "log gradients in a callback of yours")):
            if value:
                raise ValueError(f"OptimizerCallback: {name}=True is not supported by mlcomp; {hint}")
        clip = dict(grad_clip_params or {})
        func = clip.pop("func", "clip_grad_norm_") if clip else None
        if func is not None and func not in CLIP_FUNCTIONS:
            raise ValueError(f"OptimizerCallback: grad_clip_params.func should be one of {CLIP_FUNCTIONS}, "
                             f"got {func!r}")
        self._clip = None if func is None else (getattr(torch.nn.utils, func), clip)
        self.loss_key = metric_key or loss_key or "loss"
        self.accumulation_steps, self.optimizer_key, self.use_amp = accumulation_steps, optimizer_key, use_amp
        self.decouple_weight_decay, self.use_fast_zero_grad = bool(decouple_weight_decay), bool(use_fast_zero_grad)
        self._optimizer, self._scaler, self._autocast, self._pending = None, None, None, 0

    def on_stage_start(self, runner):
        """Check that there is an optimizer; create the grad scaler for AMP on CUDA."""
        if runner.optimizer is None:
            raise ConfigError(f"stage {runner.stage_name!r}: OptimizerCallback needs an optimizer, the stage has none")
        self._optimizer = runner.optimizer
        use_amp = self.use_amp
        if use_amp is None:
            use_amp = bool(dict(getattr(runner.experiment, "distributed_params", None) or {}).get("amp", False))
        amp = use_amp and runner.device.type == "cuda"
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
        if self._autocast is not None:
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
        if scaler is None and not self.decouple_weight_decay:
            optimizer.step()  # the common case, without a context manager per step
        else:
            with _decoupled_weight_decay(optimizer, self.decouple_weight_decay):
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
