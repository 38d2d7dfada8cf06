"""The callbacks a stage gets when it does not bring its own (Catalyst 20.x SupervisedRunner defaults).

A default is added only when no callback of its class (or a subclass) is there already.
"""
from __future__ import annotations

import importlib.util
from collections import OrderedDict

from mlcomp.runner import callbacks as cb

__all__ = ["default_callbacks"]


def default_callbacks(runner, input_key="targets", output_key="logits") -> OrderedDict:
    """Defaults for ``runner``'s current stage, by Catalyst's names.

    ``_validation`` (main metric, best epoch) always; ``_criterion``/``_optimizer``/``_scheduler``
    when the stage has that component and is not an ``infer*`` stage (the criterion reads
    ``input_key`` from the batch and ``output_key`` from the output); ``_saver``
    (CheckpointCallback) and ``_metrics_file`` with a logdir; ``_console`` and ``_progress``
    always; ``_tensorboard`` with a logdir when ``tensorboard`` is installed.
    """
    defaults = OrderedDict(_validation=cb.ValidationManagerCallback())
    if not runner.is_infer_stage:
        if runner.criterion is not None:
            defaults["_criterion"] = cb.CriterionCallback(input_key=input_key, output_key=output_key)
        if runner.optimizer is not None:
            defaults["_optimizer"] = cb.OptimizerCallback()
        if runner.scheduler is not None:
            defaults["_scheduler"] = cb.SchedulerCallback()
    if runner.logdir is not None:
        defaults["_saver"] = cb.CheckpointCallback()
        defaults["_metrics_file"] = cb.MetricsFileLogger()
    defaults["_console"] = cb.ConsoleLogger()
    defaults["_progress"] = cb.ProgressBarLogger()
    if runner.logdir is not None and importlib.util.find_spec("tensorboard") is not None:
        defaults["_tensorboard"] = cb.TensorboardLogger()
    return defaults
