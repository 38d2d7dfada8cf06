"""Optimizers Catalyst 20.x ships in ``catalyst.contrib.nn.optimizers`` that neither torch nor
``torch_optimizer`` has under that name.

``RAdam`` comes from ``torch.optim`` and ``Lamb`` from the ``torch_optimizer`` package (both found
by the optimizer registry); this module adds ``Ralamb`` and a config-friendly ``Lookahead``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch

from mlcomp.runner import registry

__all__ = ["Ralamb", "Lookahead"]


class Ralamb(torch.optim.Optimizer):
    """RAdam's rectified update scaled layer by layer with LAMB's trust ratio (Catalyst's
    ``Ralamb``, after mgrankin's over9000; Liu et al. 2019 "On the Variance of the Adaptive
    Learning Rate and Beyond", You et al. 2019 "Large Batch Optimization for Deep Learning").

    Each step computes RAdam's update ``u`` of a parameter ``w`` (an SGD-with-momentum step while
    the variance of the adaptive rate is not yet tractable) and applies ``lr * r * u`` with the
    trust ratio ``r = min(||w||, 10) / ||u||`` (1 when either norm is 0).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: coefficients of the running averages of the gradient and its square.
        eps: added to the denominator.
        weight_decay: decoupled weight decay (multiplied by ``lr``).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Ralamb: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns ``closure()`` when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group, beta1, beta2)
        return loss

    def _update(self, param, group: Mapping[str, Any], beta1: float, beta2: float) -> None:
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        grad, avg, avg_sq = param.grad, state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = state["step"]
        avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if group["weight_decay"]:
            param.mul_(1 - group["lr"] * group["weight_decay"])
        beta2_t = beta2 ** step
        sma_max = 2 / (1 - beta2) - 1
        sma = sma_max - 2 * step * beta2_t / (1 - beta2_t)
        if sma >= 5:  # the adaptive rate's variance is tractable: rectified Adam step
            rect = math.sqrt((1 - beta2_t) * (sma - 4) / (sma_max - 4) * (sma - 2) / sma * sma_max / (sma_max - 2))
            update = avg / avg_sq.sqrt().add_(group["eps"]) * (rect / (1 - beta1 ** step))
        else:
            update = avg / (1 - beta1 ** step)
        weight_norm = param.norm().clamp(max=10.0)
        update_norm = update.norm()
        trust = weight_norm / update_norm if weight_norm > 0 and update_norm > 0 else 1.0
        param.add_(update, alpha=-group["lr"] * float(trust))


def Lookahead(params, base_optimizer_params: Mapping[str, Any], k: int = 5, alpha: float = 0.5):
    """``torch_optimizer.Lookahead`` around the optimizer ``base_optimizer_params`` names
    (Zhang et al. 2019 "Lookahead Optimizer: k steps forward, 1 step back"), as Catalyst's
    config writes it::

        optimizer_params: {optimizer: Lookahead, k: 5, alpha: 0.5,
                           base_optimizer_params: {optimizer: RAdam, lr: 0.001}}

    Args:
        params: parameters or parameter groups, given to the base optimizer.
        base_optimizer_params: ``{optimizer: Name, **kwargs}`` of a registered optimizer.
        k: fast steps between two slow-weight updates.
        alpha: slow-weight step size.

    Raises:
        mlcomp.errors.ConfigError: the base optimizer is unknown or rejects its arguments.
    """
    import torch_optimizer

    base = registry.Optimizer.create_from_params(base_optimizer_params, "optimizer",
                                                 "optimizer_params.base_optimizer_params", params)
    return torch_optimizer.Lookahead(base, k=k, alpha=alpha)
