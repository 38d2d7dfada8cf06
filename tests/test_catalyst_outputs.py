"""The logdir a Catalyst 20.x config leaves behind: the files in ``checkpoints/`` and the keys of
``_metrics.json`` that Catalyst's own CI scripts (``bin/tests/check_dl_core_callbacks.sh`` and
the ``_metrics.json`` one-liners of its other checks, 20.05–20.12) assert, on small configs of our
own written the way those configs are (a ``saver`` CheckpointCallback per stage, or none)."""
from __future__ import annotations

import json
import re

import pytest
import torch
from runner_utils import StopAt, callback, one_thread  # noqa: F401 (autouse fixture)

from mlcomp.runner import CallbackOrder, RunStopped
from mlcomp.runner.checkpoint import load_checkpoint
from mlcomp.runner.config import run_config


def catalyst_config(stages: dict[str, int], save_n_best: int | None = 1) -> dict:
    """A Catalyst 20.x style config: an MLP on synthetic blobs, ``stages`` (name → epochs), loss,
    optimizer and accuracy callbacks per stage and, unless ``save_n_best`` is None, a ``saver``
    CheckpointCallback with it (None: the runner's default checkpoint callback)."""
    def callbacks():
        params = {"loss": {"callback": "CriterionCallback"}, "optimizer": {"callback": "OptimizerCallback"},
                  "accuracy": {"callback": "AccuracyCallback", "accuracy_args": [1]}}
        if save_n_best is not None:
            params["saver"] = {"callback": "CheckpointCallback", "save_n_best": save_n_best}
        return params

    return {
        "args": {"seed": 5},
        "model_params": {"model": "SimpleNet", "in_features": 4, "hidden": 8, "num_classes": 3},
        "stages": {
            "data_params": {"dataset": "SyntheticDataset", "num_features": 4, "num_classes": 3, "batch_size": 16,
                            "loaders": {"train": {"seed": 1, "num_samples": 64},
                                        "valid": {"seed": 1, "num_samples": 32}}},
            "stage_params": {"main_metric": "loss", "minimize_metric": True},
            "criterion_params": {"criterion": "CrossEntropyLoss"},
            "optimizer_params": {"optimizer": "Adam", "lr": 0.01},
            **{name: {"stage_params": {"num_epochs": epochs}, "callbacks_params": callbacks()}
               for name, epochs in stages.items()},
        },
    }


def files(logdir, pattern: str = r".*") -> list[str]:
    """Names in ``logdir/checkpoints`` matching ``pattern`` whole (hidden ones too: none may be left)."""
    return sorted(p.name for p in (logdir / "checkpoints").iterdir() if re.fullmatch(pattern, p.name))


def assert_pairs(logdir, stem: str, count: int):
    """Catalyst's ``check_checkpoints STEM COUNT``: ``count`` files ``STEM.pth`` and ``STEM_full.pth``."""
    assert len(files(logdir, stem + r"\.pth")) == count, files(logdir)
    assert len(files(logdir, stem + r"_full\.pth")) == count, files(logdir)


def read_metrics(logdir) -> dict:
    return json.loads((logdir / "checkpoints" / "_metrics.json").read_text())


@pytest.mark.parametrize("stages, save_n_best, per_stage, total", [
    ({"stage1": 3}, None, 1, 7),  # the default checkpoint callback, one stage: 3x2 checkpoints + metrics
    ({"stage1": 3}, 1, 1, 7),
    ({"stage1": 4}, 3, 3, 11),
    ({"stage1": 3}, 0, 0, 5),  # best and last pairs only
    ({"stage1": 3, "stage2": 3}, 1, 1, 9),
    ({"stage1": 3, "stage2": 3}, 3, 3, 17),  # the n best are kept per stage
])
def test_checkpoint_files_match_catalysts_ci_counts(tmp_path, stages, save_n_best, per_stage, total):
    run_config(catalyst_config(stages, save_n_best), logdir=tmp_path)
    for stem in ("best", "last"):
        assert_pairs(tmp_path, stem, 1)
    for stage in stages:
        assert_pairs(tmp_path, rf"{stage}\.\d", per_stage)
    assert len(files(tmp_path)) == total and "_metrics.json" in files(tmp_path)


def test_metrics_json_has_catalysts_keys_and_values(tmp_path):
    runner = run_config(catalyst_config({"stage1": 3, "stage2": 2}, save_n_best=3), logdir=tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["stage2.2"]["loss"] < metrics["stage1.1"]["loss"]  # the forms Catalyst's CI checks read
    assert {"loss", "accuracy01"} <= set(metrics["last"]) and not any("valid_" in k for k in metrics["last"])
    assert metrics["last"] == metrics["stage2.2"] == pytest.approx(runner.valid_metrics)
    assert metrics["best"] == min((metrics["stage2.1"], metrics["stage2.2"]), key=lambda m: m["loss"])
    assert {key for key in metrics if key.startswith("epoch_")} == {"epoch_0", "epoch_1"}  # the last stage's
    path, value, valid = metrics["epoch_1"]
    assert (path, value, valid) == ("checkpoints/stage2.2.pth", metrics["stage2.2"]["loss"], metrics["stage2.2"])
    assert {f"stage1.{e}" for e in (1, 2, 3)} <= set(metrics)  # every epoch of every stage stays listed


def test_an_epoch_leaving_the_n_best_loses_both_files_and_a_resume_keeps_the_counts(tmp_path):
    config = catalyst_config({"stage1": 4, "stage2": 3}, save_n_best=2)
    whole = tmp_path / "whole"
    run_config(config, logdir=whole)
    with pytest.raises(RunStopped):  # 6 batches an epoch: stopped in stage2's first epoch
        run_config(config, logdir=tmp_path / "parts", extra_callbacks={"stop": StopAt(27)})
    run_config(config, logdir=tmp_path / "parts", resume=tmp_path / "parts" / "checkpoints" / "last_full.pth")
    assert files(tmp_path / "parts") == files(whole) and len(files(whole)) == 13
    assert read_metrics(tmp_path / "parts") == read_metrics(whole)
    metrics = read_metrics(whole)
    for stage in ("stage1", "stage2"):
        epochs = [key for key in metrics if re.fullmatch(rf"{stage}\.\d", key)]
        ranked = sorted(epochs, key=lambda key: metrics[key]["loss"])
        assert files(whole, rf"{stage}\.\d\.pth") == sorted(f"{key}.pth" for key in ranked[:2])


def test_load_on_stage_start_by_part_reads_the_files_catalyst_reads(tmp_path, capsys):
    config = catalyst_config({"stage1": 2, "stage2": 2, "stage3": 1})
    config["stages"]["scheduler_params"] = {"scheduler": "StepLR", "step_size": 1, "gamma": 0.5}
    config["stages"]["stage_params"]["minimize_metric"] = False  # the best epoch is the first: best != last
    savers = {stage: config["stages"][stage]["callbacks_params"]["saver"] for stage in ("stage2", "stage3")}
    savers["stage2"]["load_on_stage_start"] = {"model": "best", "optimizer": "last"}
    savers["stage3"]["load_on_stage_start"] = {"model": "last_full", "optimizer": "best", "scheduler": "last_full",
                                               "random_key": "ignored, as Catalyst ignores it"}
    expected = {"stage2": ("best_full", "last_full"), "stage3": ("last_full", "best_full")}  # model, optimizer
    loaded = {}

    def compare(runner):  # the states at the stage start against the files named, as they are now
        if runner.stage_name in expected:
            model, optimizer = (load_checkpoint(tmp_path / "checkpoints" / f"{name}.pth")
                                for name in expected[runner.stage_name])
            loaded[runner.stage_name] = (
                all(torch.equal(v, model["model_state_dict"][k]) for k, v in runner.model.state_dict().items()),
                torch.equal(runner.optimizer.state_dict()["state"][0]["exp_avg"],
                            optimizer["optimizer_state_dict"]["state"][0]["exp_avg"]))

    capsys.readouterr()
    run_config(config, logdir=tmp_path, extra_callbacks={"grab": callback(CallbackOrder.External + 1,
                                                                          on_stage_start=compare)})
    folder = tmp_path / "checkpoints"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("=> Loading")]
    assert lines == [f"=> Loading model from {folder / 'best_full.pth'}",
                     f"=> Loading optimizer from {folder / 'last_full.pth'}",
                     f"=> Loading model, scheduler from {folder / 'last_full.pth'}",
                     f"=> Loading optimizer from {folder / 'best_full.pth'}"]
    assert loaded == {"stage2": (True, True), "stage3": (True, True)}


@pytest.mark.parametrize("save_n_best", [None, 1])  # the runner's default saver, or the config's own
def test_a_stage_after_the_first_starts_from_the_best_model_as_catalysts_config_api(tmp_path, capsys, save_n_best):
    config = catalyst_config({"stage1": 3, "stage2": 1}, save_n_best)
    config["stages"]["stage_params"]["minimize_metric"] = False  # the best epoch is the first: best != last
    at_start = {}

    def grab(runner):
        at_start[runner.stage_name] = {k: v.clone() for k, v in runner.model.state_dict().items()}

    capsys.readouterr()
    run_config(config, logdir=tmp_path, extra_callbacks={"grab": callback(CallbackOrder.External + 1,
                                                                          on_stage_start=grab)})
    best = load_checkpoint(tmp_path / "checkpoints" / "stage1.1.pth")["model_state_dict"]
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pth")
    assert all(torch.equal(v, best[k]) for k, v in at_start["stage2"].items())
    assert not all(torch.equal(v, best[k]) for k, v in last["model_state_dict"].items())
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("=> Loading")] == [
        f"=> Loading checkpoint {tmp_path / 'checkpoints' / 'best.pth'}"]
    top = out.index("Top best models:")  # stage1's kept epochs, as Catalyst printed them at the stage end
    assert out[top + 1].startswith(f"{tmp_path / 'checkpoints' / 'stage1.1.pth'}\t")


def test_an_error_leaves_catalysts_exception_checkpoint_and_its_metrics(tmp_path):
    def fail(runner):
        if runner.epoch == 2:
            raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        run_config(catalyst_config({"stage1": 3}), logdir=tmp_path,
                   extra_callbacks={"fail": callback(CallbackOrder.External, on_epoch_start=fail)})
    saved = load_checkpoint(tmp_path / "checkpoints" / "checkpoint.exception_ValueError.pth")
    assert (saved["stage"], saved["epoch"]) == ("stage1", 2)
    metrics = read_metrics(tmp_path)
    assert metrics["checkpoint.exception_ValueError"] == metrics["stage1.1"]  # the last valid metrics


def test_a_stop_leaves_no_exception_checkpoint(tmp_path):
    with pytest.raises(RunStopped):
        run_config(catalyst_config({"stage1": 3}), logdir=tmp_path, extra_callbacks={"stop": StopAt(5)})
    assert not files(tmp_path, r"checkpoint\.exception.*") and "last_full.pth" in files(tmp_path)
