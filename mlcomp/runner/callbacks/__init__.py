"""Every shipped callback of the runner (the registry builds its default entries from ``__all__``)."""
from mlcomp.runner.callbacks.checkpoint import CheckpointCallback
from mlcomp.runner.callbacks.criterion import CriterionCallback
from mlcomp.runner.callbacks.early_stopping import EarlyStoppingCallback
from mlcomp.runner.callbacks.logging import ConsoleLogger, MetricsFileLogger, ProgressBarLogger, TensorboardLogger
from mlcomp.runner.callbacks.optimizer import OptimizerCallback
from mlcomp.runner.callbacks.scheduler import SchedulerCallback
from mlcomp.runner.callbacks.validation import ValidationManagerCallback
from mlcomp.runner.callbacks.aggregation import CriterionAggregatorCallback
from mlcomp.runner.callbacks.batch_overfit import BatchOverfitCallback
from mlcomp.runner.callbacks.inference import InferCallback
from mlcomp.runner.callbacks.iteration_checkpoint import IterationCheckpointCallback
from mlcomp.runner.callbacks.lr_finder import LRFinder
from mlcomp.runner.callbacks.metric import BatchMetricCallback, LoaderMetricCallback, StatisticsMetricCallback
from mlcomp.runner.callbacks.metrics import (
    AccuracyCallback,
    AUCCallback,
    ConfusionMatrixCallback,
    DiceCallback,
    F1ScoreCallback,
    IouCallback,
    JaccardCallback,
    MapKCallback,
    MultiLabelAccuracyCallback,
)
from mlcomp.runner.callbacks.mixup import MixupCallback
from mlcomp.runner.callbacks.mlflow import MLflowLogger
from mlcomp.runner.callbacks.timer import TimerCallback

__all__ = [
    "AccuracyCallback",
    "AUCCallback",
    "BatchMetricCallback",
    "BatchOverfitCallback",
    "ConfusionMatrixCallback",
    "CriterionAggregatorCallback",
    "DiceCallback",
    "F1ScoreCallback",
    "InferCallback",
    "IouCallback",
    "IterationCheckpointCallback",
    "JaccardCallback",
    "LoaderMetricCallback",
    "LRFinder",
    "MapKCallback",
    "MixupCallback",
    "MLflowLogger",
    "MultiLabelAccuracyCallback",
    "StatisticsMetricCallback",
    "TimerCallback",
    "CheckpointCallback",
    "ConsoleLogger",
    "CriterionCallback",
    "EarlyStoppingCallback",
    "MetricsFileLogger",
    "OptimizerCallback",
    "ProgressBarLogger",
    "SchedulerCallback",
    "TensorboardLogger",
    "ValidationManagerCallback",
]
