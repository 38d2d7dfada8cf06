"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks",
WACV 2017, https://arxiv.org/abs/1506.01186), as Catalyst 20.x's ``LRFinder``.

Over ``num_steps`` training batches the learning rate grows from ``init_lr`` to ``final_lr``,
exponentially (``scale="log"``) or linearly; the loss of each batch is recorded with its learning
rate. Plot ``history`` (or read the ``lr`` batch metric): a good learning rate lies a little
below the one where the loss falls fastest, well before it blows up.

When the last step is done the run ends: the callback raises :class:`LRFinderFinished` from
``on_batch_end`` and, in ``on_exception``, tells the runner not to re-raise it, so
``run_experiment`` returns normally (Catalyst ends the run with an exception as well). Later
stages do not run, and no end-of-epoch checkpoint is written.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlcomp.errors import ConfigError
from mlcomp.runner.accumulators import List
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder

__all__ = ["LRFinder", "LRFinderFinished"]


class LRFinderFinished(Exception):
    """Raised by :class:`LRFinder` after its last step to end the run (and swallowed by it)."""


class LRFinder(Callback):
    """Learning-rate range test (see the module docstring).

    Args:
        final_lr: learning rate of the last step.
        scale: ``"log"`` (geometric growth) or ``"linear"``.
        num_steps: training batches in the test; default: the length of the first train loader.
        optimizer_key: the optimizer to drive when ``runner.optimizer`` is a mapping of several.
        init_lr: learning rate of the first step; default: the optimizer's current one.
        loss_key: the batch metric recorded with each learning rate.

    Attributes:
        history: ``{"lr": [...], "loss": [...]}`` of the steps done, as floats.

    Raises:
        ConfigError: ``final_lr`` not positive, unknown ``scale``, ``num_steps`` < 1 (at
            construction); no optimizer (at stage start).
    """

    def __init__(self, final_lr: float, scale: str = "log", num_steps: int | None = None,
                 optimizer_key: str | None = None, init_lr: float | None = None, loss_key: str = "loss"):
        super().__init__(order=CallbackOrder.Scheduler, node=CallbackNode.All)
        if not isinstance(final_lr, (int, float)) or final_lr <= 0:
            raise ConfigError(f"LRFinder: final_lr should be a positive number, got {final_lr!r}")
        if scale not in ("log", "linear"):
            raise ConfigError(f"LRFinder: scale={scale!r}; allowed: 'log', 'linear'")
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ConfigError(f"LRFinder: num_steps should be an int >= 1 or null, got {num_steps!r}")
        self.final_lr, self.scale, self.num_steps = float(final_lr), scale, num_steps
        self.optimizer_key, self.init_lr, self.loss_key = optimizer_key, init_lr, loss_key
        self.step = 0
        self._lrs, self._losses = List(), List()

    def _optimizer(self, runner):
        optimizer = runner.optimizer
        if isinstance(optimizer, Mapping):
            optimizer = optimizer.get(self.optimizer_key)
        if optimizer is None:
            raise ConfigError(f"stage {runner.stage_name!r}: LRFinder needs an optimizer "
                              f"(optimizer_key={self.optimizer_key!r}), the stage has none")
        return optimizer

    @property
    def history(self) -> dict[str, list[float]]:
        """``{"lr": [...], "loss": [...]}`` of the steps so far (floats; one sync per loss, here)."""
        return {"lr": list(self._lrs.values), "loss": [float(v) for v in self._losses.values]}

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based ``step`` (``init_lr`` at 0, ``final_lr`` at ``num_steps − 1``)."""
        share = step / (self.num_steps - 1) if self.num_steps > 1 else 1.0
        if self.scale == "log":
            return self.init_lr * (self.final_lr / self.init_lr) ** share
        return self.init_lr + (self.final_lr - self.init_lr) * share

    def on_stage_start(self, runner) -> None:
        """Check the optimizer; take ``init_lr`` from it unless given."""
        optimizer = self._optimizer(runner)
        if self.init_lr is None:
            self.init_lr = float(optimizer.param_groups[0]["lr"])

    def on_loader_start(self, runner) -> None:
        """Default ``num_steps``: the first train loader's length."""
        if runner.is_train_loader and self.num_steps is None:
            self.num_steps = max(1, runner.loader_len)

    def on_batch_start(self, runner) -> None:
        """Set this step's learning rate on every parameter group."""
        if runner.is_train_loader:
            lr = self.lr_at(self.step)
            for group in self._optimizer(runner).param_groups:
                group["lr"] = lr

    def on_batch_end(self, runner) -> None:
        """Record the step; after the last one, end the run."""
        if not runner.is_train_loader:
            return
        lr = self.lr_at(self.step)
        runner.batch_metrics["lr"] = lr
        self._lrs.update(lr)
        if self.loss_key in runner.batch_metrics:
            self._losses.update(runner.batch_metrics[self.loss_key])
        self.step += 1
        if self.step >= self.num_steps:
            raise LRFinderFinished(f"LRFinder: {self.num_steps} steps done, lr {self.init_lr:g} -> {self.final_lr:g}")

    def on_exception(self, runner) -> None:
        """Let the run end normally after the test."""
        if isinstance(runner.exception, LRFinderFinished):
            runner.need_exception_reraise = False

    def state_dict(self) -> dict[str, Any]:
        """Step, resolved ``init_lr``/``num_steps`` and the records so far."""
        return {"step": self.step, "init_lr": self.init_lr, "num_steps": self.num_steps,
                "lrs": self._lrs.state_dict(), "losses": self._losses.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: a key of :meth:`state_dict` is missing.
        """
        self.step, self.init_lr, self.num_steps = int(state["step"]), state["init_lr"], state["num_steps"]
        self._lrs.load_state_dict(state["lrs"])
        self._losses.load_state_dict(state["losses"])
