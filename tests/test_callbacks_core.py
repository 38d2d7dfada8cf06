"""The core callbacks: criterion, optimizer, scheduler, validation, checkpoints, early stopping, loggers."""
from __future__ import annotations

import copy
import csv
import json
from collections import OrderedDict

import pytest
import torch
from runner_utils import callback, make_data, make_model, one_thread  # noqa: F401 (autouse fixture)
from runner_utils import train as train_with_dropout
from torch.utils.data import DataLoader, TensorDataset

from mlcomp.errors import ConfigError
from mlcomp.runner import (Callback, CallbackOrder, CheckpointCallback, CriterionCallback, EarlyStoppingCallback,
                           MetricsFileLogger, OptimizerCallback, SchedulerCallback)


def train(**kwargs):
    """Training without dropout (the equivalence tests compare exact steps)."""
    return train_with_dropout(dropout=0.0, **kwargs)


class ScriptedMetric(Callback):
    """Writes ``values[epoch - 1]`` as the valid metric ``score``."""

    def __init__(self, values):
        super().__init__(CallbackOrder.Metric)
        self.values = values

    def on_batch_end(self, runner):
        runner.batch_metrics["score"] = torch.tensor(self.values[runner.epoch - 1])


@pytest.mark.parametrize("minimize, best_epoch, kept", [(True, 2, {"train.2", "train.4"}),
                                                         (False, 3, {"train.1", "train.3"})])
def test_best_checkpoint_follows_main_metric(tmp_path, minimize, best_epoch, kept):
    values = [0.5, 0.1, 0.9, 0.2]
    runner = train(logdir=tmp_path, num_epochs=4, main_metric="score", minimize_metric=minimize,
                   callbacks={"score": ScriptedMetric(values), "_saver": CheckpointCallback(save_n_best=2)})
    folder = tmp_path / "checkpoints"
    best = torch.load(folder / "best.pth", weights_only=True)
    assert best["epoch"] == best_epoch and best["valid_metrics"]["score"] == pytest.approx(values[best_epoch - 1])
    assert torch.load(folder / "best_full.pth", weights_only=True)["position"]["epoch"] == best_epoch
    assert torch.load(folder / "last.pth", weights_only=True)["epoch"] == 4
    assert {p.name for p in folder.glob("train.*.pth")} == {f"{k}{s}.pth" for k in kept for s in ("", "_full")}
    metrics = json.loads((folder / "_metrics.json").read_text())
    assert metrics["best"]["score"] == pytest.approx(values[best_epoch - 1])
    assert metrics["last"]["score"] == pytest.approx(values[3])
    assert [metrics[f"train.{e}"]["score"] for e in range(1, 5)] == pytest.approx(values)
    assert metrics["epoch_1"] == ["checkpoints/train.2.pth", pytest.approx(0.1), metrics["train.2"]]
    assert runner.best_valid_metrics["score"] == pytest.approx(values[best_epoch - 1])


def test_load_best_on_end_restores_best_weights(tmp_path):
    snapshots = {}
    snapshot = callback(on_epoch_end=lambda runner: snapshots.update({runner.epoch: copy.deepcopy(
        runner.model.state_dict())}))
    runner = train(logdir=tmp_path, num_epochs=3, main_metric="score", load_best_on_end=True,
                   callbacks={"score": ScriptedMetric([0.5, 0.1, 0.9]), "snap": snapshot})
    assert all(torch.equal(v, snapshots[2][k]) for k, v in runner.model.state_dict().items())
    assert not all(torch.equal(v, snapshots[3][k]) for k, v in runner.model.state_dict().items())


def test_checkpoint_needs_a_logdir():
    with pytest.raises(ConfigError, match="CheckpointCallback needs a logdir"):
        train(callbacks=[CheckpointCallback()])


@pytest.mark.parametrize("values, patience, epochs", [([0.5, 0.4, 0.45, 0.41, 0.3, 0.1], 2, 4),
                                                      ([0.5, 0.4, 0.3, 0.2, 0.1, 0.05], 2, 6)])
def test_early_stopping(values, patience, epochs):
    runner = train(num_epochs=6, main_metric="score",
                   callbacks={"score": ScriptedMetric(values),
                              "early": EarlyStoppingCallback(patience=patience, metric="score")})
    assert runner.epoch == epochs and runner.need_early_stop == (epochs < 6)


def test_early_stopping_validates_arguments_and_metric():
    with pytest.raises(ValueError, match="patience should be a positive int, got 0"):
        EarlyStoppingCallback(patience=0)
    with pytest.raises(ConfigError, match=r"metric 'nope' is not a valid metric; valid metrics: \['loss'\]"):
        train(callbacks=[EarlyStoppingCallback(patience=1, metric="nope")])


def test_gradient_accumulation_matches_a_double_batch():
    x, y = make_data(128)
    data = TensorDataset(x, y)
    results = []
    for batch_size, steps in ((64, 1), (32, 2)):
        model = make_model(dropout=0.0)
        loaders = OrderedDict(train=DataLoader(data, batch_size=batch_size), valid=DataLoader(data, batch_size=64))
        train(model=model, loaders=loaders, num_epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
              callbacks={"_optimizer": OptimizerCallback(accumulation_steps=steps)})
        results.append(model.state_dict())
    for name, value in results[0].items():
        assert torch.allclose(value, results[1][name], atol=1e-6), name


def test_pending_gradients_are_applied_at_loader_end():
    model = make_model(dropout=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = make_data(16)
    loaders = OrderedDict(train=DataLoader(TensorDataset(x, y), batch_size=16),
                          valid=DataLoader(TensorDataset(x, y), batch_size=16))
    train(model=model, loaders=loaders, callbacks=[OptimizerCallback(accumulation_steps=4)])
    assert all(p.grad is None for p in model.parameters())
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_gradient_clipping_bounds_each_update():
    class UpdateNorm(Callback):
        """Norm of every optimizer step's parameter change (SGD: lr × the clipped gradient)."""

        def __init__(self):
            super().__init__(CallbackOrder.Optimizer + 1)
            self.norms, self.before = [], None

        def on_batch_end(self, runner):
            params = torch.cat([p.detach().flatten() for p in runner.model.parameters()])
            if self.before is not None and runner.need_backward_pass:
                self.norms.append(float(torch.linalg.vector_norm(params - self.before)))
            self.before = params

    clipped, free = UpdateNorm(), UpdateNorm()
    train(callbacks={"_optimizer": OptimizerCallback(grad_clip_params={"func": "clip_grad_norm_", "max_norm": 0.01}),
                     "norm": clipped})
    train(callbacks={"norm": free})
    assert max(clipped.norms) <= 0.1 * 0.01 * 1.001 < max(free.norms)
    with pytest.raises(ValueError, match="grad_clip_params.func should be one of"):
        OptimizerCallback(grad_clip_params={"func": "clip_everything"})


def test_optimizer_callback_state_round_trip():
    callback = OptimizerCallback(accumulation_steps=3)
    with pytest.raises(ValueError, match="accumulation_steps should be an int >= 1, got 0"):
        OptimizerCallback(accumulation_steps=0)
    train(callbacks={"_optimizer": callback})
    assert callback.state_dict() == {"pending": 0, "grads": None, "scaler": None}


@pytest.mark.parametrize("mode, expected_lr", [("epoch", 0.1 * 0.5 ** 3), ("batch", 0.1 * 0.5 ** 12)])
def test_scheduler_modes(mode, expected_lr):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    runner = train(model=model, optimizer=optimizer, num_epochs=3,
                   scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5),
                   callbacks={"_scheduler": SchedulerCallback(mode=mode)})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)
    assert runner.epoch_metrics["train_lr"] == pytest.approx(expected_lr * (2 if mode == "epoch" else 1))


def test_reduce_on_plateau_reads_the_valid_metric():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    train(model=model, optimizer=optimizer, scheduler=plateau, num_epochs=3, main_metric="score",
          callbacks={"score": ScriptedMetric([0.5, 0.6, 0.7])})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="mode should be one of"):
        SchedulerCallback(mode="step")


def test_criterion_callback_names_missing_keys():
    with pytest.raises(ConfigError, match=r"key 'labels' not found; output keys \['logits'\], batch keys"):
        train(callbacks={"_criterion": CriterionCallback(input_key="labels")})
    with pytest.raises(ConfigError, match="CriterionCallback needs a criterion"):
        train(criterion=None, callbacks=[CriterionCallback()])


def test_criterion_multiplier_and_prefix():
    model = make_model(dropout=0.0)
    runner = train(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), main_metric="ce",
                   callbacks={"_criterion": CriterionCallback(prefix="ce", multiplier=2.0),
                              "_optimizer": OptimizerCallback(loss_key="ce")})
    plain = train()  # twice the loss with half the learning rate: the same steps
    assert runner.epoch_metrics["valid_ce"] == pytest.approx(2 * plain.epoch_metrics["valid_loss"], rel=1e-5)


def test_loggers_write_log_and_metrics_files(tmp_path, capsys):
    train(logdir=tmp_path, num_epochs=2)
    train(logdir=tmp_path / "csv", num_epochs=2, callbacks={"csv": MetricsFileLogger("metrics.csv")})
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert log[0] == "stage train (2 epochs)"
    assert [line.partition(": ")[0] for line in log[1:5]] == [  # Catalyst's lines: a loader each
        "1/2 * Epoch 1 (train)", "1/2 * Epoch 1 (valid)", "2/2 * Epoch 2 (train)", "2/2 * Epoch 2 (valid)"]
    assert log[2].startswith("1/2 * Epoch 1 (valid): loss=") and log[2] in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["global_batch_step"]) for row in lines] == [(1, 6), (2, 12)]
    assert not (tmp_path / "csv" / "metrics.jsonl").exists()  # a given MetricsFileLogger replaces the default
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").read_text().splitlines()))
    assert {(r["epoch"], r["loader"], r["metric"]) for r in rows} == {
        (e, loader, "loss") for e in ("1", "2") for loader in ("train", "valid")}
    assert float(rows[0]["value"]) == pytest.approx(lines[0]["train_loss"])
    with pytest.raises(ValueError, match="filename should end in one of"):
        MetricsFileLogger("metrics.txt")



def test_console_logger_writes_a_failure_to_log_txt_but_leaves_showing_it_to_the_caller(tmp_path, capsys):
    def fail(runner):
        if runner.epoch == 2:
            raise ConfigError("bad value at epoch 2")

    with pytest.raises(ConfigError, match="bad value at epoch 2"):
        train(logdir=tmp_path, num_epochs=3, callbacks=[callback(on_epoch_start=fail)])
    out = capsys.readouterr().out
    assert "1/3 * Epoch 1 (valid)" in out and "bad value" not in out  # mlcomp run prints it once, as "Error: ..."
    assert (tmp_path / "log.txt").read_text().splitlines()[-1] == "ConfigError: bad value at epoch 2"

def test_tensorboard_logger_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    from mlcomp.runner import TensorboardLogger

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runner = train(logdir=tmp_path, callbacks=[TensorboardLogger()], num_epochs=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss/train", "loss/valid"} <= set(events.Tags()["scalars"])
    valid = events.Scalars("loss/valid")
    assert [e.step for e in valid] == [1, 2]
    assert valid[-1].value == pytest.approx(runner.epoch_metrics["valid_loss"], rel=1e-6)


MLFLOW_WARNINGS = "ignore::DeprecationWarning"  # mlflow's store uses SQLAlchemy APIs deprecated in 2.1


@pytest.mark.filterwarnings(MLFLOW_WARNINGS)
def test_mlflow_logger_records_each_epoch_and_the_end(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from mlcomp.runner import MLflowLogger

    runner = train(logdir=tmp_path, callbacks=[MLflowLogger(tags={"owner": "me"})], num_epochs=2)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("mlcomp").experiment_id])
    assert (run.info.status, run.info.run_name, run.data.tags["owner"]) == ("FINISHED", tmp_path.name, "me")
    valid = client.get_metric_history(run.info.run_id, "loss/valid")
    assert [m.step for m in valid] == [1, 2]
    assert valid[-1].value == pytest.approx(runner.epoch_metrics["valid_loss"], rel=1e-6)

    def fail(runner):
        raise ConfigError("broken at epoch 1")

    with pytest.raises(ConfigError):
        train(logdir=tmp_path, num_epochs=2, callbacks=[MLflowLogger(run_name="broken"),
                                                        callback(on_epoch_end=fail)])
    [broken] = client.search_runs([client.get_experiment_by_name("mlcomp").experiment_id],
                                  filter_string="attributes.run_name = 'broken'")
    assert broken.info.status == "FAILED"


def test_flatten_params_gives_dotted_text_values():
    from mlcomp.runner.callbacks.mlflow import MAX_PARAM, flatten_params

    assert flatten_params({"stages": {"train": {"lr": 0.1, "sizes": [1, 2]}}, "note": "x" * 7000}) == {
        "stages.train.lr": "0.1", "stages.train.sizes": "[1, 2]", "note": "x" * MAX_PARAM}


def test_checkpoint_resume_and_load_on_stage_start_load_weights(tmp_path):
    first = train(logdir=tmp_path / "a")
    saved = torch.load(tmp_path / "a" / "checkpoints" / "last.pth", weights_only=True)["model_state_dict"]
    loaded = {}
    grab = callback(CallbackOrder.External + 1, on_stage_start=lambda runner: loaded.update(
        {k: v.clone() for k, v in runner.model.state_dict().items()}))
    train(logdir=tmp_path / "b", num_epochs=1, callbacks={
        "_saver": CheckpointCallback(resume=str(tmp_path / "a" / "checkpoints" / "last.pth")), "grab": grab})
    assert all(torch.equal(loaded[k], v) for k, v in saved.items()) and first.epoch == 1
    best = torch.load(tmp_path / "a" / "checkpoints" / "best_full.pth", weights_only=True)
    train(logdir=tmp_path / "a", num_epochs=1, callbacks={
        "_saver": CheckpointCallback(load_on_stage_start="best_full"), "grab": grab})
    assert all(torch.equal(loaded[k], v) for k, v in best["model_state_dict"].items())
    with pytest.raises(ConfigError, match="nope.pth: no such file"):
        train(logdir=tmp_path / "c", callbacks={"_saver": CheckpointCallback(resume=str(tmp_path / "nope.pth"))})


def test_load_on_stage_specs_by_part_need_their_paths_and_skip_last_at_the_end(tmp_path, capsys):
    with pytest.raises(ValueError, match="load_on_stage_start should be a checkpoint name, a path or a dict"):
        CheckpointCallback(load_on_stage_start=["best"])
    with pytest.raises(ConfigError, match="nope.pth: no such file"):
        train(logdir=tmp_path, callbacks={"_saver": CheckpointCallback(
            load_on_stage_start={"optimizer": str(tmp_path / "nope.pth")})})
    train(logdir=tmp_path, num_epochs=1)
    capsys.readouterr()
    train(logdir=tmp_path, num_epochs=1, callbacks={"_saver": CheckpointCallback(
        load_on_stage_start={"model": "best"}, load_on_stage_end={"model": "last", "optimizer": "best"})})
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("=> Loading")] == [
        f"=> Loading model from {tmp_path / 'checkpoints' / 'best.pth'}",  # the last run's, at the start
        f"=> Loading optimizer from {tmp_path / 'checkpoints' / 'best_full.pth'}"]  # the last one is current


@pytest.mark.parametrize("flag", ["amp", "fp16"])
def test_amp_falls_back_to_full_precision_off_cuda(flag):
    """AMP needs CUDA; on the CPU ``amp``/``fp16`` runs exactly the float32 steps, without a scaler."""
    plain = train(num_epochs=2)
    mixed = train(num_epochs=2, **{flag: True})
    optimizer = mixed.callbacks["_optimizer"]
    assert optimizer.use_amp and optimizer._scaler is None and optimizer._autocast is None
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                 mixed.model.state_dict().values()))
    assert mixed.epoch_metrics == plain.epoch_metrics


def test_console_lines_split_metrics_by_the_longest_loader_name():
    from mlcomp.runner.callbacks.logging import _by_loader

    metrics = {"train_loss": 1.0, "train_additional_loss": 2.0, "valid_accuracy01": 0.5, "lr": 0.1}
    assert _by_loader(metrics, ["train", "train_additional", "valid", "valid_additional"]) == {
        "train": {"loss": 1.0}, "train_additional": {"loss": 2.0}, "valid": {"accuracy01": 0.5}, "_base": {"lr": 0.1}}
