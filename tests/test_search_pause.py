"""A trial paused at rungs and promoted by exact resume ends bitwise like an uninterrupted run."""
from __future__ import annotations

import json

import pytest
import torch

from mlcomp.runner import Callback, CallbackOrder
from mlcomp.runner.config import run_config
from executors.pause import PauseCallback, TrialPaused

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def config(tiny_config):
    """Two stages, 3 + 6 epochs: the rung at epoch 3 is the end of the first stage; the second
    runs Adam with a step schedule, so a wrong optimizer or scheduler state would show."""
    made = tiny_config(num_epochs=3, dropout=0.2)
    made["stages"]["stage2"] = {"stage_params": {"num_epochs": 6},
                                "optimizer_params": {"optimizer": "Adam", "lr": 0.01},
                                "scheduler_params": {"scheduler": "StepLR", "step_size": 2, "gamma": 0.5}}
    return made


class EpochLog(Callback):
    """Records the global epochs this process trains."""

    metric_names = ()

    def __init__(self, epochs: list):
        super().__init__(CallbackOrder.Internal)
        self.epochs = epochs

    def on_epoch_start(self, runner):
        self.epochs.append(runner.global_epoch)


def _run(config, logdir, trained, pause_at=None, resume=None):
    callbacks = {"log": EpochLog(trained)}
    if pause_at:
        callbacks["pause"] = PauseCallback(pause_at)
    return run_config(config, logdir=str(logdir), resume=resume, extra_callbacks=callbacks)


def test_paused_at_rungs_1_and_3_then_promoted_to_9_is_bitwise_identical(tmp_path, config):
    whole = _run(config, tmp_path / "whole", [])
    last_full = tmp_path / "paused" / "checkpoints" / "last_full.pth"
    resume, attempts = None, []
    for rung in (1, 3):
        attempts.append([])
        with pytest.raises(TrialPaused) as info:
            _run(config, tmp_path / "paused", attempts[-1], pause_at=rung, resume=resume)
        assert info.value.checkpoint == last_full and last_full.is_file()
        resume = str(last_full)
    attempts.append([])
    paused = _run(config, tmp_path / "paused", attempts[-1], resume=resume)

    assert attempts == [[1], [2, 3], [4, 5, 6, 7, 8, 9]]  # each epoch trained once, none twice

    assert paused.global_epoch == whole.global_epoch == 9
    whole_weights = whole.model.state_dict()
    for name, value in paused.model.state_dict().items():
        assert torch.equal(value, whole_weights[name]), name
    assert paused.epoch_metrics == whole.epoch_metrics
    read = lambda run: json.loads((tmp_path / run / "checkpoints" / "_metrics.json").read_text())  # noqa: E731
    assert read("paused") == read("whole")


def test_a_trial_resumed_past_its_rung_pauses_before_training(tmp_path, config):
    """Resumed from the rung's checkpoint (it reached the rung as a preemption stopped it), a trial
    still paused at that rung trains nothing more, and its checkpoint is left as it was."""
    with pytest.raises(TrialPaused):
        _run(config, tmp_path, [], pause_at=2)
    last_full = tmp_path / "checkpoints" / "last_full.pth"
    before = last_full.read_bytes()
    trained = []
    with pytest.raises(TrialPaused) as info:
        _run(config, tmp_path, trained, pause_at=2, resume=str(last_full))
    assert trained == [3] and info.value.checkpoint == last_full  # epoch 3 started, no batch of it ran
    assert last_full.read_bytes() == before


def test_pause_callback_rejects_a_rung_below_one():
    with pytest.raises(ValueError, match="pause_at must be >= 1"):
        PauseCallback(0)
