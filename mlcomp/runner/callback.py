"""Callbacks: everything the runner does besides the loop (Catalyst 20.x ``Callback``).

A callback receives the events of :class:`~mlcomp.runner.events.Event` as methods that take the
runner. Callbacks share data only through the runner's documented state (see
:class:`mlcomp.runner.runner.Runner`): ``input``, ``output``, ``batch_metrics``,
``loader_metrics``, ``epoch_metrics``, ``valid_metrics``, counters and flags.

Anything that must survive a stop and resume implements ``state_dict``/``load_state_dict``; the
full checkpoint stores it under the callback's name.
"""
from enum import IntEnum

__all__ = ["Callback", "CallbackOrder", "CallbackNode", "CallbackScope"]


class CallbackOrder(IntEnum):
    """When a callback runs relative to others, lower first (Catalyst 20.x values and names)."""

    Internal = 0  # runner's own bookkeeping (metric accumulation, timers)
    Metric = 20  # batch metrics from input/output (criterion, accuracy, ...)
    MetricAggregation = 40  # metrics made of metrics (criterion aggregation)
    Optimizer = 60  # backward, optimizer step
    Validation = 80  # main metric, best epoch
    Scheduler = 100  # LR / momentum schedules
    Logging = 120  # console, files, progress bars, reporting
    External = 200  # checkpoints, early stopping, user callbacks


class CallbackNode(IntEnum):
    """On which processes of a distributed run a callback runs."""

    All = 0
    Master = 1  # rank 0 only
    Worker = 2  # every rank but 0


class CallbackScope(IntEnum):
    """Whether a callback lives for one stage or for the whole experiment."""

    Stage = 0
    Experiment = 1


class Callback:
    """Base class of the runner's callbacks; every event method is a no-op here.

    Args:
        order: a :class:`CallbackOrder` (or an int); callbacks run sorted by it, stably.
        node: a :class:`CallbackNode`: where it runs in a distributed run.
        scope: a :class:`CallbackScope`: an ``Experiment`` callback keeps its state across stages.

    Raises:
        ValueError: ``order``, ``node`` or ``scope`` is not an int-valued member.

    Attributes:
        metric_names: the names of the metrics this callback may write into ``batch_metrics``
            or ``loader_metrics`` (a superset is fine; ``()``: none), or ``None`` when it cannot
            say (the default). Declare it on each class (a subclass does not inherit the trust:
            it may write more). When every callback of a stage declares its names, a
            ``main_metric`` none of them writes is reported at the stage start instead of at the
            end of the first valid loader.
    """

    metric_names: "tuple[str, ...] | None" = None

    def __init__(self, order: int, node: int = CallbackNode.All, scope: int = CallbackScope.Stage):
        for name, value, kind in (("order", order, None), ("node", node, CallbackNode),
                                  ("scope", scope, CallbackScope)):
            if not isinstance(value, int) or (kind is not None and value not in set(kind)):
                allowed = "an int" if kind is None else ", ".join(f"{m.name}={m.value}" for m in kind)
                raise ValueError(f"{type(self).__name__}: argument {name} should be {allowed}, got {value!r}")
        self.order = int(order)
        self.node = CallbackNode(node)
        self.scope = CallbackScope(scope)

    def on_stage_start(self, runner):
        """A stage starts."""

    def on_stage_end(self, runner):
        """A stage ends."""

    def on_epoch_start(self, runner):
        """An epoch starts."""

    def on_epoch_end(self, runner):
        """An epoch ends."""

    def on_loader_start(self, runner):
        """A loader starts."""

    def on_loader_end(self, runner):
        """A loader ends."""

    def on_batch_start(self, runner):
        """A batch starts."""

    def on_batch_end(self, runner):
        """A batch ends."""

    def on_exception(self, runner):
        """The loop raised ``runner.exception``."""

    def __repr__(self):
        return f"{type(self).__name__}(order={self.order})"
