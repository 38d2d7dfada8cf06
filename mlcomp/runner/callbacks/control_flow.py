"""Running a callback only on some loaders or epochs (Catalyst 20.08+'s ``ControlFlowCallback``;
in a config, a callback's ``_wrapper: {callback: ControlFlowCallback, loaders: train}``)."""
from __future__ import annotations

import ast
from typing import Callable, Mapping, Sequence

from mlcomp.runner.callback import Callback
from mlcomp.runner.callbacks.wrapper import CallbackWrapper

__all__ = ["ControlFlowCallback"]

Filter = Callable[[str, int, str], bool]
"""``(stage, epoch, loader) -> bool``: whether the wrapped callback runs on that loader."""


def _epochs_filter(epochs, enable: bool) -> Filter:
    """A period (``epoch % n == 0``) or a list of epochs."""
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool):
        period = int(epochs)
        if period < 1:
            raise ValueError(f"ControlFlowCallback: an epoch period should be >= 1, got {epochs!r}")
        return lambda stage, epoch, loader: (epoch % period == 0) == enable
    if isinstance(epochs, (list, tuple)) and all(isinstance(e, int) for e in epochs):
        chosen = frozenset(epochs)
        return lambda stage, epoch, loader: (epoch in chosen) == enable
    raise ValueError(f"ControlFlowCallback: epochs should be an int or a list of ints, got {epochs!r}")


def _loaders_filter(loaders, enable: bool) -> Filter:
    """A loader name, a list of them, or ``{loader: epoch or [epochs]}``."""
    if isinstance(loaders, str):
        loaders = [loaders]
    if isinstance(loaders, (list, tuple)) and all(isinstance(name, str) for name in loaders):
        chosen = frozenset(loaders)
        return lambda stage, epoch, loader: (loader in chosen) == enable
    if isinstance(loaders, Mapping):
        epochs = {}
        for name, value in loaders.items():
            values = [value] if isinstance(value, (int, float)) else value
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"ControlFlowCallback: the epochs of loader {name!r} should be an int or a list "
                                 f"of ints, got {value!r}")
            epochs[name] = frozenset(int(v) for v in values)
        return lambda stage, epoch, loader: (epoch in epochs.get(loader, ())) == enable
    raise ValueError(f"ControlFlowCallback: loaders should be a name, a list of names or a mapping of names to "
                     f"epochs, got {loaders!r}")


def _function_filter(filter_fn) -> Filter:
    """A callable of three arguments, or the text of a ``lambda stage, epoch, loader: ...``
    (evaluated as Catalyst did: it is code of the config's author, like the expdir)."""
    if isinstance(filter_fn, str):
        try:
            tree = ast.parse(filter_fn.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"ControlFlowCallback: filter_fn is not a Python expression: {e}") from None
        if not isinstance(tree.body, ast.Lambda):
            raise ValueError(f"ControlFlowCallback: filter_fn should be a lambda, got {filter_fn!r}")
        filter_fn = eval(compile(tree, "<filter_fn>", "eval"))  # noqa: S307 (the user's own lambda)
    if not callable(filter_fn):
        raise ValueError(f"ControlFlowCallback: filter_fn should be callable, got {filter_fn!r}")
    code = getattr(filter_fn, "__code__", None)
    if code is not None and code.co_argcount != 3:
        raise ValueError("ControlFlowCallback: filter_fn should take three arguments: stage, epoch and loader")
    return filter_fn


class ControlFlowCallback(CallbackWrapper):
    """Passes the wrapped callback the events of a loader (its start, batches and end) only where
    a condition holds; stage and epoch events always reach it. Exactly one condition:

    Args:
        base_callback: the callback to wrap (in a config, the callback the ``_wrapper`` key is in).
        epochs: run only in these epochs: a period ``n`` (epochs divisible by ``n``) or a list.
        ignore_epochs: run in every epoch but these (a period or a list).
        loaders: run only on these loaders: a name, a list, or ``{loader: epoch or [epochs]}``
            (that loader, in those epochs).
        ignore_loaders: run on every loader but these (the same forms).
        filter_fn: ``(stage, epoch, loader) -> bool``, or its text (``"lambda s, e, l: l ==
            'train'"``).
        use_global_epochs: count epochs over the whole run instead of within the stage.

    Raises:
        ValueError: no condition or more than one (Catalyst silently took the first), or a
            condition of the wrong form.
    """

    def __init__(self, base_callback: Callback, epochs: int | Sequence[int] | None = None,
                 ignore_epochs: int | Sequence[int] | None = None, loaders=None, ignore_loaders=None,
                 filter_fn: str | Filter | None = None, use_global_epochs: bool = False):
        given = {name: value for name, value in (("epochs", epochs), ("ignore_epochs", ignore_epochs),
                                                 ("loaders", loaders), ("ignore_loaders", ignore_loaders),
                                                 ("filter_fn", filter_fn)) if value is not None}
        if len(given) != 1:
            raise ValueError(f"ControlFlowCallback: give exactly one of epochs, ignore_epochs, loaders, "
                             f"ignore_loaders and filter_fn, got {sorted(given) or 'none'}")
        super().__init__(base_callback)
        self.use_global_epochs = bool(use_global_epochs)
        (name, value), = given.items()
        if name.endswith("epochs"):
            self.filter_fn = _epochs_filter(value, enable=name == "epochs")
        elif name.endswith("loaders"):
            self.filter_fn = _loaders_filter(value, enable=name == "loaders")
        else:
            self.filter_fn = _function_filter(value)

    def on_loader_start(self, runner) -> None:
        """Decide for this loader, and pass the event on when enabled."""
        epoch = runner.global_epoch if self.use_global_epochs else runner.epoch
        self._is_enabled = bool(self.filter_fn(runner.stage_name, epoch, runner.loader_name))
        super().on_loader_start(runner)

    def on_loader_end(self, runner) -> None:
        """Pass the event on when enabled; enable again for the epoch and stage events."""
        super().on_loader_end(runner)
        self._is_enabled = True
