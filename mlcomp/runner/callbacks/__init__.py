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
from mlcomp.runner.callbacks.batch_transform import BatchTransformCallback
from mlcomp.runner.callbacks.check_run import CheckRunCallback
from mlcomp.runner.callbacks.cmc_score import CMCScoreCallback
from mlcomp.runner.callbacks.control_flow import ControlFlowCallback
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
from mlcomp.runner.callbacks.metric_aggregation import MetricAggregationCallback
from mlcomp.runner.callbacks.mixup import MixupCallback
from mlcomp.runner.callbacks.mlflow import MLflowLogger
from mlcomp.runner.callbacks.optuna import OptunaCallback, OptunaPruningCallback
from mlcomp.runner.callbacks.periodic_loader import PeriodicLoaderCallback
from mlcomp.runner.callbacks.timer import TimerCallback
from mlcomp.runner.callbacks.tracing import TracerCallback, TracingCallback
from mlcomp.runner.callbacks.wrapper import CallbackWrapper

__all__ = [
    "AccuracyCallback",
    "AUCCallback",
    "BatchMetricCallback",
    "BatchOverfitCallback",
    "BatchTransformCallback",
    "CallbackWrapper",
    "CheckRunCallback",
    "CMCScoreCallback",
    "ConfusionMatrixCallback",
    "ControlFlowCallback",
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
    "MetricAggregationCallback",
    "MixupCallback",
    "MLflowLogger",
    "MultiLabelAccuracyCallback",
    "OptunaCallback",
    "OptunaPruningCallback",
    "PeriodicLoaderCallback",
    "StatisticsMetricCallback",
    "TimerCallback",
    "TracerCallback",
    "TracingCallback",
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
