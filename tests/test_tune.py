"""``mlcomp tune`` (Catalyst 20.10–20.12 ``catalyst-dl tune``): trials with sampled parameters in
their own logdirs, pruning, ``--n-trials``/``--timeout``, ``study_params`` and the restricted
evaluation of ``trial.suggest_*`` strings."""
from __future__ import annotations

import re

import optuna
import pytest
import yaml

from mlcomp.cli import main
from mlcomp.errors import ConfigError
from mlcomp.runner.config import run_config
from mlcomp.search.trial_strings import evaluate_trial_string, resolve_trial_strings
from mlcomp.search.tune import create_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = """\
model_params:
  model: SimpleNet
  in_features: 8
  hidden: "int(trial.suggest_loguniform('hidden', 4, 64))"
  num_classes: 3
args: {seed: 7}
runner_params: {input_key: features, output_key: logits, input_target_key: targets}
stages:
  data_params:
    dataset: SyntheticDataset
    num_features: 8
    num_classes: 3
    batch_size: 16
    loaders: {train: {num_samples: 48}, valid: {num_samples: 32}}
  stage_params: {main_metric: loss, minimize_metric: true}
  criterion_params: {criterion: CrossEntropyLoss}
  optimizer_params: {optimizer: Adam, lr: "trial.suggest_float('lr', 0.001, 0.1, log=True)"}
  callbacks_params:
    accuracy: {callback: AccuracyCallback, input_key: targets, output_key: logits}
  first: {stage_params: {num_epochs: 1}}
"""
"""Synthetic blobs, 3 train and 2 valid batches per epoch; width and learning rate sampled."""

CATALYST_DIR_NAME = re.compile(r"^\d{6}\.\d{6}\.[A-Za-z0-9_-]{6}$")


def mlcomp(capsys, *argv) -> tuple[int, str, str]:
    """Runs ``mlcomp ARGV`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def write_config(folder, extra: str = "") -> str:
    """:data:`CONFIG` deep-merged with ``extra`` (YAML) into ``folder/tune.yml``; its path."""
    from mlcomp.configkit import deep_merge

    config = deep_merge(yaml.safe_load(CONFIG), yaml.safe_load(extra) or {})
    path = folder / "tune.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def load_study(tmp_path):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_trials_sample_their_params_report_each_epoch_and_write_their_own_logdirs(tmp_path, capsys):
    config = write_config(tmp_path, """
        study_params: {sampler_params: {sampler: RandomSampler}}
        stages:
          callbacks_params: {pruning: {callback: OptunaPruningCallback}}
          second: {stage_params: {num_epochs: 1}}
    """)
    code, out, err = mlcomp(capsys, "tune", "--config", config, "--baselogdir", tmp_path / "logs", "--n-trials", 3,
                            "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "t")
    assert code == 0, err
    folders = sorted((tmp_path / "logs").iterdir())
    assert len(folders) == 3 and all(CATALYST_DIR_NAME.match(f.name) for f in folders)
    saved = [yaml.safe_load((f / "config.yml").read_text()) for f in folders]
    sampled = {(c["model_params"]["hidden"], c["stages"]["optimizer_params"]["lr"]) for c in saved}
    assert len(sampled) == 3
    assert all(isinstance(h, int) and 4 <= h <= 64 and 0.001 <= lr <= 0.1 for h, lr in sampled)
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)  # one step per epoch, across stages
    assert {t.user_attrs["logdir"] for t in trials} == {str(f) for f in folders}
    assert "best trial" in out and out.count("complete") == 3


def test_a_threshold_pruner_prunes_the_trial_that_does_not_learn(tmp_path, capsys):
    config = write_config(tmp_path, """
        study_params:
          sampler_params: {sampler: GridSampler, search_space: {lr: [0.0, 0.05]}}
          pruner_params: {pruner: ThresholdPruner, upper: 0.9}
        model_params: {hidden: 16}
        stages:
          optimizer_params: {lr: "trial.suggest_categorical('lr', [0.0, 0.05])"}
          first: {stage_params: {num_epochs: 2}}
    """)
    code, out, err = mlcomp(capsys, "tune", "--config", config, "--logdir", tmp_path / "logs",
                            "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "t")
    assert code == 0, err
    by_lr = {t.params["lr"]: t for t in load_study(tmp_path).trials}
    assert by_lr[0.0].state == optuna.trial.TrialState.PRUNED  # the pruning callback was added for the pruner
    assert list(by_lr[0.0].intermediate_values) == [1]
    assert by_lr[0.05].state == optuna.trial.TrialState.COMPLETE and by_lr[0.05].value < 0.9
    assert len(list((tmp_path / "logs").iterdir())) == 2
    assert "pruned at epoch 1" in out


def test_timeout_ends_a_study_that_has_no_trial_count(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    code, out, err = mlcomp(capsys, "tune", "--config", config, "--logdir", "none", "--timeout", 0.5)
    assert code == 0, err
    assert out.count("complete") >= 1 and "best trial" in out
    assert [p.name for p in tmp_path.iterdir()] == ["tune.yml"]  # logdir none: nothing written


def test_args_of_the_config_give_the_trial_count_and_base_logdir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, "args: {n_trials: 2, baselogdir: base}")
    code, out, err = mlcomp(capsys, "tune", "--config", config, "--check")
    assert code == 0, err
    folders = list((tmp_path / "base").iterdir())
    assert len(folders) == 2 and out.count("complete") == 2
    saved = yaml.safe_load((folders[0] / "config.yml").read_text())["args"]
    assert saved["check"] is True and not {"n_trials", "baselogdir"} & set(saved)


def test_expdir_and_typed_overrides_reach_every_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myexp").mkdir()
    (tmp_path / "myexp" / "__init__.py").write_text(
        "from mlcomp.runner import registry\nfrom mlcomp.runner.models import SimpleNet\n"
        "registry.Model(SimpleNet, name='TunedNet')\n")
    config = write_config(tmp_path, "model_params: {model: TunedNet}")
    code, out, err = mlcomp(capsys, "tune", "--expdir", "myexp", "--config", config, "--n-trials", 2,
                            "--model_params/hidden=5:int")
    assert code == 0, err
    saved = [yaml.safe_load((f / "config.yml").read_text()) for f in (tmp_path / "runs" / "tune").iterdir()]
    assert len(saved) == 2
    assert {c["model_params"]["hidden"] for c in saved} == {5}
    assert {c["args"]["expdir"] for c in saved} == {str(tmp_path / "myexp")}
    assert "'hidden'" not in out  # a fixed value is not a trial parameter


@pytest.mark.parametrize("text", ["__import__('os')", "trial.__class__", "open('x')",
                                  "trial.suggest_int('a', 1, 2) + 1", "[x for x in (1, 2)]", "trial.suggest_int"])
def test_trial_strings_refuse_anything_but_suggestions_before_evaluating(text):
    trial = optuna.trial.FixedTrial({"a": 1})
    with pytest.raises(ConfigError) as error:
        evaluate_trial_string(text, trial, "model_params.hidden")
    assert "model_params.hidden" in str(error.value) and repr(text) in str(error.value)
    assert trial.params == {}  # nothing was evaluated


def test_trial_strings_resolve_with_catalyst_names_and_leave_other_strings():
    trial = optuna.trial.FixedTrial({"hidden": 12.7, "act": "relu", "drop": 0.25, "n": -1})
    config = {"model_params": {"hidden": "int(trial.suggest_loguniform('hidden', 4, 32))",
                               "layers": ["trial.suggest_categorical('act', ['relu', 'tanh'])", "runs/trial.1"],
                               "dropout": "trial.suggest_discrete_uniform('drop', 0.0, 0.5, 0.25)",
                               "scale": "float(trial.suggest_int('n', -2, -1, step=1))", "plain": "float(-1)"}}
    assert resolve_trial_strings(config, trial) == {"model_params": {
        "hidden": 12, "layers": ["relu", "runs/trial.1"], "dropout": 0.25, "scale": -1.0, "plain": "float(-1)"}}


def test_a_refused_trial_string_ends_the_command_naming_its_key(tmp_path, capsys):
    config = write_config(tmp_path, """model_params: {hidden: "trial.__class__"}""")
    code, _, err = mlcomp(capsys, "tune", "--config", config, "--n-trials", 1, "--logdir", "none")
    assert code == 2
    assert "model_params.hidden" in err and "'trial.__class__'" in err and "Traceback" not in err


@pytest.mark.parametrize("study_params, message", [
    ({"sampler_params": {"sampler": "TPESamplr"}}, "did you mean TPESampler"),
    ({"pruner_params": {"pruner": "MedianPruner", "patience": 3}}, "study_params.pruner_params"),
    ({"samplers": {}}, "study_params.samplers: unknown key"),
])
def test_study_params_are_checked_before_any_trial(study_params, message):
    with pytest.raises(ConfigError, match=message):
        create_study(study_params, minimize=True, seed=1)


def test_the_sampler_is_seeded_and_the_direction_follows_minimize_metric():
    study = create_study({"sampler_params": {"sampler": "RandomSampler"}}, minimize=False, seed=5)
    again = create_study({"sampler_params": {"sampler": "RandomSampler"}}, minimize=False, seed=5)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    draws = [s.ask().suggest_float("x", 0, 1) for s in (study, again)]
    assert draws[0] == draws[1]


def test_the_pruning_callback_outside_tune_says_how_to_run_it(tmp_path):
    config = yaml.safe_load(CONFIG)
    config["model_params"]["hidden"], config["stages"]["optimizer_params"]["lr"] = 8, 0.01
    config["stages"]["callbacks_params"]["pruning"] = {"callback": "OptunaPruningCallback"}
    with pytest.raises(ConfigError, match="mlcomp tune"):
        run_config(config, logdir="none")


def test_the_pruning_callback_with_a_trial_in_code_prunes_a_notebook_run():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mlcomp.runner import OptunaPruningCallback, SupervisedRunner

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=-1.0))  # any loss is too high
    trial = study.ask()
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    model = torch.nn.Linear(4, 2)
    loaders = {"train": DataLoader(data, 16), "valid": DataLoader(data, 16)}
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        SupervisedRunner().train(model=model, loaders=loaders, criterion=torch.nn.CrossEntropyLoss(),
                                 optimizer=torch.optim.SGD(model.parameters(), 0.1), num_epochs=3,
                                 callbacks=[OptunaPruningCallback(trial)])
    assert list(study.trials[0].intermediate_values) == [1]
