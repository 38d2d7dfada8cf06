"""Helpers shared by the metric functions: activations by name and default top-k arguments.

Names and behaviour follow Catalyst 20.x (``catalyst.utils.metrics.functional``): an activation
is chosen by the strings a config uses (``"none"``, ``"Sigmoid"``, ``"Softmax"``,
``"Softmax2d"``), and ``accuracy01``/``accuracy03``... come from :func:`get_default_topk_args`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from mlcomp.errors import ConfigError

__all__ = ["ACTIVATIONS", "check_topk", "get_activation_fn", "get_default_topk_args", "threshold_outputs"]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=1)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": _identity,
    "sigmoid": torch.sigmoid,
    "softmax": _softmax,
    "softmax2d": _softmax,
}
"""Activation functions by lower-case name (the channel axis of ``Softmax`` is dim 1)."""


def get_activation_fn(activation: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation named ``activation`` (case-insensitive; ``None`` means ``"none"``).

    Args:
        activation: ``"none"``, ``"Sigmoid"``, ``"Softmax"`` or ``"Softmax2d"`` (both softmaxes
            work over dim 1, the class/channel axis), or ``None``.

    Returns:
        A function tensor → tensor of the same shape.

    Raises:
        ConfigError: an unknown name; the message lists the allowed ones.
    """
    name = "none" if activation is None else str(activation).lower()
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation {activation!r} is unknown; allowed: "
                          "'none', 'Sigmoid', 'Softmax', 'Softmax2d' (or null)")
    return ACTIVATIONS[name]


def get_default_topk_args(num_classes: int | None) -> list[int]:
    """The ``k`` values for accuracy@k and mAP@k that make sense for ``num_classes`` classes.

    ``[1]``, plus 3 when there are more than 3 classes, plus 5 when more than 5 (Catalyst 20.x).

    >>> get_default_topk_args(4), get_default_topk_args(10), get_default_topk_args(None)
    ([1, 3], [1, 3, 5], [1])
    """
    result = [1]
    if num_classes is None:
        return result
    if num_classes > 3:
        result.append(3)
    if num_classes > 5:
        result.append(5)
    return result


def threshold_outputs(outputs: torch.Tensor, threshold: float | None,
                      activation: str | None) -> torch.Tensor:
    """``outputs`` after the activation, binarised at ``threshold`` when one is given.

    Args:
        outputs: logits of any shape.
        threshold: ``None`` keeps soft values (e.g. probabilities for a soft Dice).
        activation: see :func:`get_activation_fn`.

    Returns:
        A float tensor of the shape of ``outputs``.
    """
    outputs = get_activation_fn(activation)(outputs.float())
    if threshold is not None:
        outputs = (outputs > threshold).float()
    return outputs


def check_topk(topk: Sequence[int]) -> list[int]:
    """``topk`` as a list of positive ints; ``ValueError`` names the bad value otherwise."""
    values = [topk] if isinstance(topk, int) else list(topk)
    if not values or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in values):
        raise ValueError(f"topk should be a non-empty list of positive ints, got {topk!r}")
    return values
