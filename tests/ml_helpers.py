"""A tiny training config and experiment folder shared by the ML executor tests."""
from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["TINY_CONFIG", "SLOW_CONFIG", "EXT", "write_expdir"]

TINY_CONFIG = """\
model_params: {model: SimpleNet, in_features: 8, hidden: 8, num_classes: 3}
args: {seed: 7}
runner_params: {input_key: features, output_key: logits, input_target_key: targets}
stages:
  data_params:
    dataset: SyntheticDataset
    num_features: 8
    num_classes: 3
    batch_size: 16
    loaders: {train: {num_samples: 160}, valid: {num_samples: 48}}
  stage_params: {main_metric: accuracy01, minimize_metric: false}
  criterion_params: {criterion: CrossEntropyLoss}
  optimizer_params: {optimizer: Adam, lr: 0.01}
  callbacks_params:
    accuracy: {callback: AccuracyCallback, input_key: targets, output_key: logits}
  one: {stage_params: {num_epochs: 2}}
  two: {stage_params: {num_epochs: 2}, optimizer_params: {load_from_previous_stage: true}}
"""
"""Two stages of two epochs on synthetic blobs: 10 train and 3 valid batches per epoch."""

SLOW_CONFIG = """\
args: {expdir: ext}   # relative to the working folder, the DAG's expdir for a task
stages:
  callbacks_params:
    slow: {callback: SlowCallback, seconds: SECONDS}
"""
"""Merged after :data:`TINY_CONFIG`: the ``ext`` package's callback sleeps after each batch."""

EXT = """\
import time

from mlcomp.runner import Callback, CallbackOrder, registry


@registry.Callback
class SlowCallback(Callback):
    '''Sleeps after each batch, so a test can stop a run in the middle of an epoch.'''

    def __init__(self, seconds: float = 0.0):
        super().__init__(CallbackOrder.External)
        self.seconds = seconds

    def on_batch_end(self, runner):
        time.sleep(self.seconds)
"""


def write_expdir(root: Path, dag: str = "", seconds: float = 0.0) -> Path:
    """An expdir with ``configs/train.yml`` (:data:`TINY_CONFIG`), ``configs/slow.yml``
    (:data:`SLOW_CONFIG` sleeping ``seconds`` per batch), the ``ext`` package and ``dag.yml``
    (``dag``, dedented); returns the DAG file's path."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "ext").mkdir(exist_ok=True)
    (root / "configs" / "train.yml").write_text(TINY_CONFIG)
    (root / "configs" / "slow.yml").write_text(SLOW_CONFIG.replace("SECONDS", str(seconds)))
    (root / "ext" / "__init__.py").write_text(EXT)
    (root / "dag.yml").write_text(textwrap.dedent(dag))
    return root / "dag.yml"
