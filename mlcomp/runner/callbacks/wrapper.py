"""A callback that holds another and passes it the events while it is enabled (Catalyst 20.08+'s
``CallbackWrapper``, the base of ``ControlFlowCallback``)."""
from __future__ import annotations

from typing import Any, Mapping

from mlcomp.runner.callback import Callback

__all__ = ["CallbackWrapper"]


def _forward(event: str):
    def handler(self, runner):
        if self._is_enabled:
            getattr(self.callback, event)(runner)

    handler.__name__ = event
    handler.__doc__ = f"Pass ``{event}`` to the wrapped callback while enabled."
    return handler


class CallbackWrapper(Callback):
    """Runs at the wrapped callback's order, node and scope, passes it every event while
    ``_is_enabled``, declares its metrics and saves its state as its own (so a wrapped callback
    resumes as it would unwrapped).

    Args:
        base_callback: the callback to wrap.
        enable_callback: whether it starts enabled.

    Raises:
        ValueError: ``base_callback`` is not a :class:`~mlcomp.runner.callback.Callback`.
    """

    def __init__(self, base_callback: Callback, enable_callback: bool = True):
        if not isinstance(base_callback, Callback):
            raise ValueError(f"{type(self).__name__}: base_callback should be a Callback, got {base_callback!r}")
        super().__init__(order=base_callback.order, node=base_callback.node, scope=base_callback.scope)
        self.callback = base_callback
        self.metric_names = getattr(base_callback, "metric_names", None)
        self._is_enabled = bool(enable_callback)

    on_stage_start = _forward("on_stage_start")
    on_stage_end = _forward("on_stage_end")
    on_epoch_start = _forward("on_epoch_start")
    on_epoch_end = _forward("on_epoch_end")
    on_loader_start = _forward("on_loader_start")
    on_loader_end = _forward("on_loader_end")
    on_batch_start = _forward("on_batch_start")
    on_batch_end = _forward("on_batch_end")
    on_exception = _forward("on_exception")

    def state_dict(self) -> dict[str, Any]:
        """The wrapped callback's state (empty when it keeps none)."""
        return self.callback.state_dict() if hasattr(self.callback, "state_dict") else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the wrapped callback's :meth:`state_dict`."""
        if hasattr(self.callback, "load_state_dict"):
            self.callback.load_state_dict(state)

    def __repr__(self):
        return f"{type(self).__name__}({self.callback!r})"
