"""The Catalyst 20.x callbacks and callback arguments that Catalyst's own CI configs use: the
OptimizerCallback's and CriterionCallback's 20.x arguments, PeriodicLoaderCallback,
ControlFlowCallback (and the config's ``_wrapper`` key), MetricAggregationCallback,
CMCScoreCallback with TripletLoss, and TracingCallback, on small synthetic configs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from runner_utils import StopAt, callback, one_thread  # noqa: F401 (autouse fixture)
from test_catalyst_outputs import catalyst_config, files

from mlcomp.errors import ConfigError
from mlcomp.runner import RunStopped, registry
from mlcomp.runner.callbacks import (CMCScoreCallback, ControlFlowCallback, CriterionCallback,
                                     MetricAggregationCallback, OptimizerCallback, PeriodicLoaderCallback)
from mlcomp.runner.config import run_config
from mlcomp.runner.config_experiment import ConfigExperiment
from mlcomp.runner.trace import load_traced


def loaders_by_epoch(extra: dict | None = None, epochs: int = 5, **stage_callbacks) -> tuple[dict, list, dict]:
    """A one-stage Catalyst-style config of ``epochs`` epochs with ``stage_callbacks`` added (name
    → params), a list, and the extra callbacks to run it with: ``extra`` and one that appends
    ``(epoch, loader)`` to the list at each loader start."""
    config = catalyst_config({"stage1": epochs})
    config["stages"]["stage1"]["callbacks_params"].update(stage_callbacks)
    seen: list = []
    recorder = callback(on_loader_start=lambda runner: seen.append((runner.epoch, runner.loader_name)))
    return config, seen, {"record": recorder, **(extra or {})}


# -- OptimizerCallback ------------------------------------------------------------------------------


def fake_runner(optimizer: torch.optim.Optimizer, loss: torch.Tensor):
    """The part of a runner OptimizerCallback reads, on the CPU, in a train loader."""
    return SimpleNamespace(optimizer=optimizer, device=torch.device("cpu"), stage_name="s", experiment=None,
                           need_backward_pass=True, batch_metrics={"loss": loss})


def one_step(callback_: OptimizerCallback, optimizer, loss) -> None:
    """One train batch of ``callback_`` (backward, step, zero_grad) on ``loss``."""
    runner = fake_runner(optimizer, loss)
    for event in ("on_stage_start", "on_loader_start", "on_batch_start", "on_batch_end"):
        getattr(callback_, event)(runner)


@pytest.mark.parametrize("fast", [True, False])
def test_use_fast_zero_grad_leaves_no_gradient_after_the_step(fast):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    callback_ = registry.Callback.create_from_params(
        {"callback": "OptimizerCallback", "use_fast_zero_grad": fast}, "callback", "optimizer")
    one_step(callback_, optimizer, model(torch.ones(2, 3)).sum())
    assert all(p.grad is None for p in model.parameters())


def test_every_catalyst_20_argument_is_accepted_and_apex_is_refused():
    optimizer = OptimizerCallback(metric_key="total", optimizer_key="main", accumulation_steps=2,
                                  grad_clip_params={"func": "clip_grad_value_", "clip_value": 1.0},
                                  decouple_weight_decay=True, use_fast_zero_grad=True, xla_barrier=False,
                                  use_amp=None, use_apex=False, save_model_grads=False)
    assert (optimizer.loss_key, optimizer.accumulation_steps) == ("total", 2)
    assert OptimizerCallback(loss_key="l2").loss_key == "l2"
    for argument in ("use_apex", "save_model_grads"):
        with pytest.raises(ValueError, match=f"{argument}=True is not supported by mlcomp"):
            OptimizerCallback(**{argument: True})
    with pytest.raises(ValueError, match="not both"):
        OptimizerCallback(loss_key="a", metric_key="b")


def test_decoupled_weight_decay_shrinks_the_weights_and_keeps_the_groups_value():
    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.5)
    zero_loss = sum((p * 0).sum() for p in model.parameters())  # zero gradients: Adam moves nothing
    one_step(OptimizerCallback(decouple_weight_decay=True), optimizer, zero_loss)
    for old, new in zip(before, model.parameters()):
        assert torch.allclose(new, old * (1 - 0.1 * 0.5))
    assert optimizer.param_groups[0]["weight_decay"] == 0.5
    coupled = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(coupled.parameters(), lr=0.1, weight_decay=0.5)
    weight = coupled.weight.detach().clone()
    one_step(OptimizerCallback(), optimizer, sum((p * 0).sum() for p in coupled.parameters()))
    assert not torch.allclose(coupled.weight, weight * (1 - 0.1 * 0.5))  # Adam's own decay differs


# -- CriterionCallback -------------------------------------------------------------------------------


def test_criterion_key_picks_one_of_several_criteria_with_keyword_keys_and_extra_arguments():
    def scaled(input, target, scale):
        return ((input - target) * scale).abs().mean()

    runner = SimpleNamespace(criterion={"l1": torch.nn.L1Loss(), "scaled": scaled}, stage_name="s",
                             is_infer_loader=False, batch_metrics={}, input={"y": torch.zeros(2)},
                             output={"logits": torch.ones(2)})
    criterion = CriterionCallback(input_key={"y": "target"}, output_key={"logits": "input"}, criterion_key="scaled",
                                  scale=3.0)
    criterion.on_stage_start(runner)
    criterion.on_batch_end(runner)
    assert runner.batch_metrics["loss"].item() == 3.0
    with pytest.raises(ConfigError, match=r"criterion_key 'dice'; the stage's criteria are \['l1', 'scaled'\]"):
        CriterionCallback(criterion_key="dice").on_stage_start(runner)
    with pytest.raises(ConfigError, match=r"the criterion of CriterionCallback 'loss' does not accept the arguments "
                                          r"\['sacle'\]"):  # a misspelt argument fails at the stage start
        CriterionCallback(criterion_key="scaled", sacle=3.0).on_stage_start(runner)


# -- PeriodicLoaderCallback -------------------------------------------------------------------------


def test_periodic_valid_runs_on_epochs_2_and_4_and_only_those_can_be_best(tmp_path):
    config, seen, extra = loaders_by_epoch(loaders={"callback": "PeriodicLoaderCallback", "valid": 2})
    runner = run_config(config, logdir=tmp_path, extra_callbacks=extra)
    assert [epoch for epoch, loader in seen if loader == "valid"] == [2, 4]
    assert [epoch for epoch, loader in seen if loader == "train"] == [1, 2, 3, 4, 5]
    assert files(tmp_path, r"stage1\.\d\.pth") in (["stage1.2.pth"], ["stage1.4.pth"])
    assert runner.best_valid_metrics and list(runner.loaders) == ["train", "valid"]


def test_periodic_loaders_ignore_unknown_names_and_refuse_a_never_valid_or_an_empty_epoch(tmp_path):
    config, seen, extra = loaders_by_epoch(epochs=3, loaders={"callback": "PeriodicLoaderCallback", "train": 3,
                                                              "not_a_loader": 2})
    run_config(config, logdir=tmp_path / "a", extra_callbacks=extra)
    assert seen == [(1, "valid"), (2, "valid"), (3, "train"), (3, "valid")]
    config, _, extra = loaders_by_epoch(loaders={"callback": "PeriodicLoaderCallback", "valid": 0})
    with pytest.raises(ConfigError, match="period of the valid loader 'valid' should be > 0"):
        run_config(config, logdir=tmp_path / "b", extra_callbacks=extra)
    config, _, extra = loaders_by_epoch(loaders={"callback": "PeriodicLoaderCallback", "train": 2, "valid": 3})
    with pytest.raises(ConfigError, match="no loader would run in epoch 1"):
        run_config(config, logdir=tmp_path / "c", extra_callbacks=extra)
    with pytest.raises(ValueError, match="should be a number >= 0"):
        PeriodicLoaderCallback(valid=-1)


@pytest.mark.parametrize("stop_at", [6, 9, 13])  # epoch 2's train loader, its valid loader, epoch 3's train
def test_a_run_with_periodic_loaders_resumes_exactly(tmp_path, stop_at):
    config, _, _ = loaders_by_epoch(epochs=4, loaders={"callback": "PeriodicLoaderCallback", "valid": 2})
    whole = run_config(config, logdir=tmp_path / "whole")
    with pytest.raises(RunStopped):  # 4 train batches an epoch, 2 valid ones every second epoch
        run_config(config, logdir=tmp_path / "parts", extra_callbacks={"stop": StopAt(stop_at)})
    parts = run_config(config, logdir=tmp_path / "parts", resume=tmp_path / "parts" / "checkpoints" / "last_full.pth")
    assert files(tmp_path / "parts") == files(tmp_path / "whole")
    assert parts.best_valid_metrics == whole.best_valid_metrics
    assert all(torch.equal(a, b) for a, b in zip(parts.model.state_dict().values(), whole.model.state_dict().values()))


# -- ControlFlowCallback and _wrapper ---------------------------------------------------------------


def wrapped_recorder(**conditions) -> tuple[ControlFlowCallback, list]:
    """A ControlFlowCallback with ``conditions`` around a callback listing ``(epoch, loader)`` per batch."""
    seen: list = []
    base = callback(on_batch_end=lambda runner: seen.append((runner.epoch, runner.loader_name)))
    return ControlFlowCallback(base, **conditions), seen


@pytest.mark.parametrize("conditions, expected", [
    ({"loaders": "train"}, {(1, "train"), (2, "train"), (3, "train")}),
    ({"ignore_loaders": ["train"]}, {(1, "valid"), (2, "valid"), (3, "valid")}),
    ({"epochs": [2]}, {(2, "train"), (2, "valid")}),
    ({"ignore_epochs": 2}, {(1, "train"), (1, "valid"), (3, "train"), (3, "valid")}),
    ({"loaders": {"valid": [1, 3]}}, {(1, "valid"), (3, "valid")}),
    ({"filter_fn": "lambda stage, epoch, loader: loader == 'valid' and epoch > 1"}, {(2, "valid"), (3, "valid")}),
])
def test_control_flow_runs_the_wrapped_callback_only_where_asked(tmp_path, conditions, expected):
    wrapper, seen = wrapped_recorder(**conditions)
    config, _, extra = loaders_by_epoch({"wrapped": wrapper}, epochs=3)
    run_config(config, logdir=tmp_path, extra_callbacks=extra)
    assert set(seen) == expected


def test_control_flow_needs_exactly_one_condition_of_a_known_form():
    base = callback()
    for conditions in ({}, {"loaders": "train", "epochs": 2}):
        with pytest.raises(ValueError, match="exactly one of"):
            ControlFlowCallback(base, **conditions)
    with pytest.raises(ValueError, match="three arguments"):
        ControlFlowCallback(base, filter_fn="lambda epoch, loader: True")
    with pytest.raises(ValueError, match="should be a lambda"):
        ControlFlowCallback(base, filter_fn="print('hi')")


def test_a_config_wrapper_key_wraps_the_callback_it_is_in(tmp_path):
    config = catalyst_config({"stage1": 1})
    accuracy = config["stages"]["stage1"]["callbacks_params"]["accuracy"]
    accuracy["_wrapper"] = {"callback": "ControlFlowCallback", "loaders": "train"}
    run_config(config, logdir=tmp_path)
    metrics = (tmp_path / "checkpoints" / "_metrics.json").read_text()
    assert "accuracy01" not in metrics  # the valid loader's metrics lack it, the train loader had it
    built = ConfigExperiment(config).get_callbacks("stage1")["accuracy"]
    assert type(built) is ControlFlowCallback and type(built.callback).__name__ == "AccuracyCallback"
    accuracy["_wrapper"] = {"callback": "ControlFlowCallback", "loader": "train"}
    with pytest.raises(ConfigError, match=r"callbacks_params\.accuracy\._wrapper: callback ControlFlowCallback "
                                          r"does not accept the arguments \['loader'\]"):
        ConfigExperiment(config)


# -- MetricAggregationCallback ----------------------------------------------------------------------


def test_metric_aggregation_makes_the_loss_from_weighted_parts_and_loader_means():
    runner = SimpleNamespace(batch_metrics={"a": torch.tensor(2.0), "b": torch.tensor(4.0)},
                             loader_metrics={"a": 1.0, "b": 3.0}, epoch_metrics={})
    MetricAggregationCallback("loss", {"a": 1.0, "b": 0.5}, mode="weighted_sum").on_batch_end(runner)
    assert runner.batch_metrics["loss"].item() == 4.0
    MetricAggregationCallback("avg", ["a", "b"], scope="loader").on_loader_end(runner)
    assert runner.loader_metrics["avg"] == 2.0
    MetricAggregationCallback("wm", {"a": 3.0, "b": 1.0}, mode="weighted_mean", scope="loader").on_loader_end(runner)
    assert runner.loader_metrics["wm"] == (3.0 + 3.0) / 4.0
    with pytest.raises(ConfigError, match=r"metrics \['c'\] are not in the batch metrics"):
        MetricAggregationCallback("x", "c", mode="sum").on_batch_end(runner)
    with pytest.raises(ValueError, match="takes metrics as a dict"):
        MetricAggregationCallback("x", ["a"], mode="weighted_sum")


# -- metric learning: CMCScoreCallback and TripletLoss -----------------------------------------------


def test_cmc_counts_queries_with_a_same_label_gallery_sample_among_the_k_nearest():
    embeddings = torch.tensor([[0.0], [10.0], [1.0], [2.0], [9.0], [20.0]])
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    is_query = torch.tensor([1, 1, 0, 0, 0, 0])  # gallery: 1.0 (1), 2.0 (0), 9.0 (1), 20.0 (0)
    cmc = CMCScoreCallback(topk_args=[1, 2])
    runner = SimpleNamespace(loader_metrics={}, loader_name="valid_query_gallery")
    for rows in (slice(0, 3), slice(3, 6)):  # two batches
        runner.output, runner.input = {"logits": embeddings[rows]}, {"targets": labels[rows],
                                                                     "is_query": is_query[rows]}
        cmc.on_batch_end(runner)
    cmc.on_loader_end(runner)
    # query 0.0 (label 0): nearest 1.0 (1), then 2.0 (0); query 10.0 (label 1): nearest 9.0 (1)
    assert runner.loader_metrics == {"cmc01": 0.5, "cmc02": 1.0}
    assert CMCScoreCallback(num_classes=10).metric_names == ("cmc01", "cmc03", "cmc05")


def test_triplet_loss_is_the_batch_hard_hinge_on_squared_distances():
    embeddings = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    targets = torch.tensor([0, 0, 1, 1])
    loss = registry.Criterion.create_from_params({"criterion": "TripletLoss", "margin": 0.5}, "criterion", "c")
    value = loss(embeddings, targets)  # per anchor: 9-1, 9-4, 10-1, 10-9, each + 0.5
    assert value.item() == pytest.approx((8.5 + 5.5 + 9.5 + 1.5) / 4)
    value.backward()
    assert torch.isfinite(embeddings.grad).all()
    far_apart = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]])
    assert loss(far_apart, targets).item() == 0.0


# -- TracingCallback --------------------------------------------------------------------------------


def test_tracing_writes_the_best_model_at_the_stage_end(tmp_path):
    config = catalyst_config({"stage1": 3})
    config["stages"]["stage_params"]["minimize_metric"] = False  # the best epoch is the first: best != last
    config["stages"]["stage1"]["callbacks_params"]["tracer"] = {"callback": "TracingCallback", "mode": "best"}
    runner = run_config(config, logdir=tmp_path)
    assert all(p.requires_grad for p in runner.model.parameters())  # the training model is left as it was
    traced = load_traced(tmp_path / "trace" / "traced-best-eval.pth")
    features = torch.randn(5, 4)
    model = runner.model.eval()
    last = model(features)
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "best.pth", weights_only=True)["model_state_dict"])
    assert torch.allclose(traced(features), model(features)) and not torch.allclose(last, model(features))


def test_an_exact_resume_prints_catalysts_loaded_state_line(tmp_path, capsys):
    config = catalyst_config({"stage1": 2})
    run_config(config, logdir=tmp_path)
    capsys.readouterr()
    config["stages"]["stage1"]["stage_params"]["num_epochs"] = 3
    run_config(config, logdir=tmp_path, resume=tmp_path / "checkpoints" / "last_full.pth")
    assert (f"loaded state checkpoint {tmp_path / 'checkpoints' / 'last_full.pth'} (global epoch 2, epoch 2, "
            f"stage stage1)") in capsys.readouterr().out.splitlines()

