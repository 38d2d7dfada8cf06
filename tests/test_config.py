"""Config loading, merging, overrides, validation, ConfigExperiment parts, expdirs, datasets and models."""
from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner import registry
from mlcomp.configkit import deep_merge, expand_env, parse_overrides, set_by_path
from mlcomp.runner.config import make_experiment
from mlcomp.runner.config_experiment import ConfigExperiment
from mlcomp.runner.config_io import load_config, save_config
from mlcomp.runner.config_schema import validate_config
from mlcomp.runner.datasets import DigitsDataset, NpzDataset, SyntheticDataset, split_indices
from mlcomp.runner.expdir import import_expdir
from mlcomp.runner.models import DigitsCNN, SimpleNet

DIGITS = Path(__file__).resolve().parents[1] / "dags" / "digits" / "configs" / "train.yml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def minimal(**stage) -> dict:
    """A small valid config: an MLP on synthetic data, one stage."""
    return {
        "model_params": {"model": "SimpleNet", "in_features": 4, "hidden": 8, "num_classes": 2},
        "stages": {
            "data_params": {"dataset": "SyntheticDataset", "num_features": 4, "batch_size": 16,
                            "loaders": {"train": {"seed": 1}, "valid": {"seed": 2, "num_samples": 64}}},
            "criterion_params": {"criterion": "CrossEntropyLoss"},
            "optimizer_params": {"optimizer": "SGD", "lr": 0.1},
            "train": stage or {"stage_params": {"num_epochs": 1}},
        },
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- merging, files, overrides ---------------------------------------------------------------

def test_deep_merge_overrides_recursively_without_mutating():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3], "e": None}, "f": 2})
    assert merged == {"a": {"b": 1, "c": [3], "e": None}, "d": 1, "f": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_load_config_merges_files_in_order_and_resolves_expdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative expdir is taken from the working folder, as in Catalyst
    a = write(tmp_path / "conf" / "a.yml", """
        model_params: {model: SimpleNet, hidden: 8}
        args: {expdir: code, seed: 1}
        stages: {train: {stage_params: {num_epochs: 1}}}
    """)
    b = write(tmp_path / "b.yml", """
        model_params: {hidden: 16}
        args: {seed: 2}
    """)
    config = load_config(a, b, overrides=[("stages.train.stage_params.num_epochs", 3)])
    assert config["model_params"] == {"model": "SimpleNet", "hidden": 16}
    assert config["args"] == {"expdir": str((tmp_path / "code").resolve()), "seed": 2}
    assert config["stages"]["train"]["stage_params"]["num_epochs"] == 3
    assert load_config(a, base=tmp_path / "conf")["args"]["expdir"] == str((tmp_path / "conf" / "code").resolve())


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yml", """
        model_params:
          model: SimpleNet
        stages: [oops
    """)
    with pytest.raises(ConfigError, match=r"bad.yml:5:1: YAML syntax error"):
        load_config(bad)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "the top level must be a mapping"),
])
def test_load_config_rejects_non_mappings(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "c.yml", text))


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yml: no such file"):
        load_config(tmp_path / "nope.yml")


def test_save_config_roundtrip(tmp_path):
    config = minimal()
    path = save_config(config, tmp_path / "logdir" / "config.yml")
    assert load_config(path) == config


def test_parse_overrides_reads_yaml_scalars():
    assert parse_overrides(["--a.b=5", "--lr", "0.1", "--flag=true", "--x=null", "--l=[1, 2]", "--s=abc"]) == [
        ("a.b", 5), ("lr", 0.1), ("flag", True), ("x", None), ("l", [1, 2]), ("s", "abc")]
    with pytest.raises(ConfigError, match="expected --dotted.key=value"):
        parse_overrides(["lr=1"])
    with pytest.raises(ConfigError, match="no value"):
        parse_overrides(["--lr"])


def test_parse_overrides_reads_catalyst_typed_values():
    tokens = ["--stages/state_params/num_epochs=3:int", "--a/lr=1e-3:float", "--a/on=True:bool", "--a/off=0:bool",
              "--a/ids=[1, 2]:list", "--a/size=(2, 3):tuple", "--a/kw={'k': 1}:dict", "--a/zero=:int",
              "--a/name=none:str", "--a/text=1:str", "--out_dir=none:str", "--out_prefix", "/preds/:str",
              "--url=http://host:8080", "--pair=a:b"]
    assert parse_overrides(tokens) == [
        ("stages/state_params/num_epochs", 3), ("a/lr", 0.001), ("a/on", True), ("a/off", False),
        ("a/ids", [1, 2]), ("a/size", (2, 3)), ("a/kw", {"k": 1}), ("a/zero", 0), ("a/name", None), ("a/text", "1"),
        ("args/out_dir", "none"), ("args/out_prefix", "/preds/"),  # a key without / is an args key (Catalyst)
        ("url", "http://host:8080"), ("pair", "a:b")]  # no type suffix: mlcomp's YAML values


@pytest.mark.parametrize("token, message", [
    ("--a/b=abc:int", "'abc' is not a Python literal of type int"),
    ("--a/b=[1:list", r"'\[1' is not a Python literal of type list"),
    ("--a/b=__import__('os'):str", None),  # str is taken as text, never evaluated
    ("--a/b=__import__('os'):int", "is not a Python literal of type int"),
])
def test_typed_values_are_literals_never_code(token, message):
    if message is None:
        assert parse_overrides([token]) == [("a/b", "__import__('os')")]
        return
    with pytest.raises(ConfigError, match=message):
        parse_overrides([token])


def test_set_by_path_slash_paths_and_args_keys():
    config = minimal()
    assert set_by_path(config, "stages/state_params/num_epochs", 2) == "stages.state_params.num_epochs"
    assert set_by_path(config, "/stages/train/callbacks_params/", {}) == "stages.train.callbacks_params"
    assert set_by_path(config, "out_dir", "preds") == "args.out_dir"  # in no path, but an args key
    assert set_by_path(config, "lr", 0.5) == "stages.optimizer_params.lr"  # a unique suffix, as before
    assert config["stages"]["state_params"] == {"num_epochs": 2} and config["args"] == {"out_dir": "preds"}
    with pytest.raises(ConfigError, match="override 'out_dri' matches no key"):
        set_by_path(config, "out_dri", "x")
    with pytest.raises(ConfigError, match="empty part"):
        set_by_path(config, "stages//lr", 1)


def test_relative_out_dir_is_taken_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = write(tmp_path / "c.yml", "model_params: {model: SimpleNet}\nstages: {train: {}}\n")
    config = load_config(conf, overrides=[("args/out_dir", "logs/"), ("args/out_prefix", "/predictions/")])
    assert config["args"] == {"out_dir": str(tmp_path / "logs"), "out_prefix": "/predictions/"}


def test_set_by_path_full_path_creates_missing_mappings():
    config = minimal()
    assert set_by_path(config, "args.seed", 7) == "args.seed"
    assert set_by_path(config, "stages.train.stage_params.num_epochs", 4) == "stages.train.stage_params.num_epochs"
    assert config["args"]["seed"] == 7 and config["stages"]["train"]["stage_params"]["num_epochs"] == 4
    with pytest.raises(ConfigError, match=r"cannot set 'x' inside float 0.1 \(at stages.optimizer_params.lr\)"):
        set_by_path(config, "stages.optimizer_params.lr.x", 1)
    set_by_path(config, "stages.optimizer_params", {"weight_decay": 0.1})  # a mapping merges into a mapping
    assert config["stages"]["optimizer_params"]["lr"] == 0.1 and config["stages"]["optimizer_params"]["weight_decay"] == 0.1


def test_set_by_path_unique_suffix():
    config = load_config(DIGITS)
    assert set_by_path(config, "lr", 0.01) == "stages.optimizer_params.lr"
    assert set_by_path(config, "width", 32) == "model_params.width"
    assert set_by_path(config, "main.stage_params.num_epochs", 3) == "stages.main.stage_params.num_epochs"
    assert config["stages"]["optimizer_params"]["lr"] == 0.01 and config["model_params"]["width"] == 32


def test_set_by_path_ambiguous_and_unknown_keys_list_candidates():
    config = load_config(DIGITS)
    with pytest.raises(ConfigError) as e:
        set_by_path(config, "num_epochs", 3)
    assert "ambiguous" in str(e.value)
    assert "stages.warmup.stage_params.num_epochs, stages.main.stage_params.num_epochs" in str(e.value)
    with pytest.raises(ConfigError, match=r"'widht' matches no key of the config; close matches: width"):
        set_by_path(config, "widht", 3)


# -- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.pop("model_params"), r"missing required key 'model_params'"),
    (lambda c: c.pop("stages"), r"missing required key 'stages'"),
    (lambda c: c.update(stagse={}), r"stagse: unknown key \(did you mean stages\?\); allowed: model_params"),
    (lambda c: c.update(args={"sead": 1}), r"args.sead: unknown key \(did you mean seed\?\)"),
    (lambda c: c.update(args={"autoresume": "first"}), r"args.autoresume: 'first'; allowed: last, best"),
    (lambda c: c.update(runner_params={"inputkey": "x"}), r"runner_params.inputkey: unknown key"),
    (lambda c: c["stages"]["train"].update(optimiser_params={}),
     r"stages.train.optimiser_params: unknown key \(did you mean optimizer_params\?\)"),
    (lambda c: c["stages"]["train"].update(stage_params={"num_epoch": 2}),
     r"stages.train.stage_params.num_epoch: unknown key \(did you mean num_epochs\?\)"),
    (lambda c: c["stages"]["train"].update(stage_params={"num_epochs": 0}),
     r"stages.train.stage_params.num_epochs: 0 is not a positive int"),
    (lambda c: c.update(stages={"data_params": {}}), r"stages: no stage defined"),
    (lambda c: c["stages"].update(train=[1]), r"stages.train: expected a mapping"),
])
def test_structural_errors(mutate, message):
    config = minimal()
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["model_params"].update(model="SimpleNett"),
     r"model_params.model: unknown model 'SimpleNett'; did you mean SimpleNet"),
    (lambda c: c["stages"]["optimizer_params"].update(optimizer="Adamm"),
     r"stages.train.optimizer_params.optimizer: unknown optimizer 'Adamm'; did you mean Adam"),
    (lambda c: c["stages"].update(scheduler_params={"scheduler": "StepLRR", "step_size": 1}),
     r"stages.train.scheduler_params.scheduler: unknown scheduler 'StepLRR'; did you mean StepLR"),
    (lambda c: c["stages"].update(callbacks_params={"acc": {"callback": "CriterionCallbak"}}),
     r"stages.train.callbacks_params.acc.callback: unknown callback 'CriterionCallbak'; "
     r"did you mean CriterionCallback"),
    (lambda c: c["stages"]["criterion_params"].update(criterion="CrossEntropy"),
     r"stages.train.criterion_params.criterion: unknown criterion 'CrossEntropy'; did you mean CrossEntropyLoss"),
    (lambda c: c["stages"]["data_params"].update(dataset="Digits"),
     r"stages.train.data_params.dataset: unknown dataset 'Digits'; did you mean"),
    (lambda c: c["model_params"].update(widht=3),
     r"model_params: model SimpleNet does not accept the arguments .*signature SimpleNet\(in_features"),
    (lambda c: c["stages"]["optimizer_params"].update(lr_rate=3),
     r"stages.train.optimizer_params: optimizer SGD does not accept"),
    (lambda c: c["stages"]["data_params"]["loaders"].pop("valid"),
     r"stages.train: no valid loader 'valid' \(stage_params.valid_loader\) among the loaders train"),
])
def test_name_errors_name_the_key_path(mutate, message):
    config = minimal()
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        ConfigExperiment(config)


def test_state_params_alias_and_stage_defaults():
    config = minimal(state_params={"num_epochs": 2, "main_metric": "accuracy01"},
                     stage_params={"minimize_metric": False})
    config["stages"]["state_params"] = {"main_metric": "loss", "valid_loader": "valid"}
    params = ConfigExperiment(config).get_stage_params("train")
    assert params == {"num_epochs": 2, "main_metric": "accuracy01", "minimize_metric": False,
                      "valid_loader": "valid", "checkpoint_data": {}}


def test_null_stages_are_skipped_and_order_is_kept():
    config = minimal()
    config["stages"].update(b={"stage_params": {"num_epochs": 1}}, a=None, c={})
    assert ConfigExperiment(config).stages == ["train", "b", "c"]


# -- experiment parts ------------------------------------------------------------------------

def test_experiment_is_cheap_and_builds_parts_on_demand():
    experiment = ConfigExperiment(load_config(DIGITS))
    assert experiment.stages == ["warmup", "main"]
    assert experiment.initial_seed == 42 and experiment.logdir == "runs/digits"
    model = experiment.get_model("warmup")
    assert isinstance(model, DigitsCNN) and experiment.get_model("main") is model
    loaders = experiment.get_loaders("main")
    assert list(loaders) == ["train", "valid"]
    batch = next(iter(loaders["valid"]))
    assert batch["features"].shape == (64, 1, 8, 8) and batch["features"].dtype == torch.float32
    assert batch["targets"].dtype == torch.int64
    assert isinstance(experiment.get_criterion("main"), torch.nn.CrossEntropyLoss)
    assert list(experiment.get_callbacks("warmup")) == ["accuracy"]
    main = experiment.get_callbacks("main")  # a later stage starts from the best model, as in Catalyst
    assert list(main) == ["accuracy", "_saver"] and main["_saver"].load_on_stage_start == "best"


def test_loader_options_per_loader_and_shuffle_default():
    config = minimal()
    config["stages"]["data_params"]["loaders"]["valid"]["batch_size"] = 5
    loaders = ConfigExperiment(config).get_loaders("train")
    assert loaders["train"].batch_size == 16 and loaders["valid"].batch_size == 5
    assert isinstance(loaders["train"].sampler, torch.utils.data.RandomSampler)
    assert isinstance(loaders["valid"].sampler, torch.utils.data.SequentialSampler)
    assert len(loaders["valid"].dataset) == 64


def test_optimizer_groups_layerwise_and_no_bias_decay():
    config = minimal()
    config["stages"]["optimizer_params"].update(weight_decay=0.1, layerwise_params={r"net\.1\.": {"lr": 0.5}})
    experiment = ConfigExperiment(config)
    model = experiment.get_model("train")
    optimizer = experiment.get_optimizer("train", model)
    by_name = {name: group for name, p in model.named_parameters()
               for group in optimizer.param_groups if any(p is q for q in group["params"])}
    assert by_name["net.1.weight"]["lr"] == 0.5 and by_name["net.1.weight"]["weight_decay"] == 0.1
    assert by_name["net.1.bias"]["lr"] == 0.5 and by_name["net.1.bias"]["weight_decay"] == 0.0
    assert by_name["net.3.weight"]["lr"] == 0.1 and by_name["net.3.bias"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 4


def test_load_from_previous_stage_carries_state_but_keeps_new_hyperparameters():
    config = minimal()
    config["stages"]["optimizer_params"] = {"optimizer": "Adam", "lr": 0.01}
    config["stages"]["second"] = {"optimizer_params": {"lr": 0.001, "load_from_previous_stage": True}}
    config["stages"]["third"] = {"optimizer_params": {"lr": 0.002}}
    experiment = ConfigExperiment(config)
    model = experiment.get_model("train")
    first = experiment.get_optimizer("train", model)
    model(torch.randn(3, 4)).sum().backward()
    first.step()
    second = experiment.get_optimizer("second", model)
    state = second.state_dict()["state"]
    assert state and torch.equal(state[0]["exp_avg"], first.state_dict()["state"][0]["exp_avg"])
    assert all(group["lr"] == 0.001 for group in second.param_groups)
    assert experiment.get_optimizer("third", model).state_dict()["state"] == {}


def test_scheduler_and_missing_optimizer():
    config = minimal()
    config["stages"]["scheduler_params"] = {"scheduler": "StepLR", "step_size": 2}
    experiment = ConfigExperiment(config)
    optimizer = experiment.get_optimizer("train", experiment.get_model("train"))
    assert isinstance(experiment.get_scheduler("train", optimizer), torch.optim.lr_scheduler.StepLR)
    assert experiment.get_scheduler("train", None) is None
    del config["stages"]["optimizer_params"], config["stages"]["scheduler_params"]
    assert ConfigExperiment(config).get_optimizer("train", torch.nn.Linear(1, 1)) is None


def test_several_models_make_a_module_dict():
    config = minimal()
    config["model_params"] = {"a": {"model": "Linear", "in_features": 2, "out_features": 3},
                              "b": {"model": "SimpleNet", "in_features": 3}}
    config["stages"]["optimizer_params"]["_model"] = "a"
    experiment = ConfigExperiment(config)
    model = experiment.get_model("train")
    assert isinstance(model, torch.nn.ModuleDict) and set(model) == {"a", "b"}
    optimizer = experiment.get_optimizer("train", model)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


# -- expdir ----------------------------------------------------------------------------------

EXPDIR_INIT = """
    from mlcomp.runner import registry
    from mlcomp.runner.config_experiment import ConfigExperiment
    from mlcomp.runner.datasets import SyntheticDataset

    from .model import {model}

    registry.Model({model})


    class Experiment(ConfigExperiment):
        def get_datasets(self, stage, epoch=None, num_features=4, **kwargs):
            return {{"train": SyntheticDataset(32, num_features), "valid": SyntheticDataset(16, num_features)}}
"""
EXPDIR_MODEL = """
    import torch


    class {model}(torch.nn.Linear):
        def __init__(self, size=4):
            super().__init__(size, 2)
"""


def make_expdir(root: Path, name: str, model: str) -> Path:
    write(root / name / "__init__.py", EXPDIR_INIT.format(model=model))
    write(root / name / "model.py", EXPDIR_MODEL.format(model=model))
    return root / name


@pytest.fixture
def expdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = make_expdir(tmp_path, "myexp", "ExpNet")
    yield path
    registry.Model.remove("ExpNet")


def test_expdir_registers_and_exports_an_experiment(expdir, tmp_path):
    conf = write(tmp_path / "conf.yml", """
        model_params: {model: ExpNet, size: 4}
        args: {expdir: myexp}
        stages:
          data_params: {batch_size: 8}
          train: {}
    """)
    experiment = make_experiment(load_config(conf))
    assert type(experiment).__name__ == "Experiment" and type(experiment).__module__ == "myexp"
    assert type(experiment.get_model("train")).__name__ == "ExpNet"
    loaders = experiment.get_loaders("train")
    assert [len(loader.dataset) for loader in loaders.values()] == [32, 16]
    assert import_expdir(expdir) is import_expdir(str(expdir))  # imported once


def test_expdir_errors(tmp_path):
    (tmp_path / "nopkg").mkdir()
    with pytest.raises(ConfigError, match=r"args.expdir: .*nopkg has no __init__.py"):
        import_expdir(tmp_path / "nopkg")
    with pytest.raises(ConfigError, match=r"args.expdir: .*missing is not a folder"):
        import_expdir(tmp_path / "missing")
    write(tmp_path / "broken" / "__init__.py", "import no_such_module_here\n")
    with pytest.raises(ConfigError, match=r"importing .*broken failed: ModuleNotFoundError"):
        import_expdir(tmp_path / "broken")


# -- datasets and models ---------------------------------------------------------------------

def test_split_indices_are_disjoint_and_cover():
    parts = [split_indices(100, s, seed=3) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [70, 20, 10]
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert np.array_equal(parts[1], split_indices(100, "valid", seed=3))
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        split_indices(100, "dev")


def test_digits_dataset_samples():
    train, valid = DigitsDataset("train"), DigitsDataset("valid")
    sample = train[0]
    assert sample["features"].shape == (1, 8, 8) and sample["features"].dtype == torch.float32
    assert 0.0 <= float(sample["features"].min()) and float(sample["features"].max()) <= 1.0
    assert sample["targets"].dtype == torch.int64
    assert len(train) + len(valid) + len(DigitsDataset("test")) == 1797


def test_npz_dataset(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(20, dtype=np.float64).reshape(10, 2), y=np.arange(10))
    data = NpzDataset(path, keys={"x": "features", "y": "targets"})
    assert len(data) == 10 and data[3]["features"].dtype == torch.float32 and data[3]["targets"].item() == 3
    assert len(NpzDataset(path, split="valid")) == 2
    with pytest.raises(ConfigError, match=r"no arrays \['z'\]; the file has \['x', 'y'\]"):
        NpzDataset(path, keys=["z"])
    with pytest.raises(ConfigError, match="no such .npz file"):
        NpzDataset(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros(3), y=np.zeros(4))
    with pytest.raises(ConfigError, match="arrays differ in length"):
        NpzDataset(tmp_path / "bad.npz")


def test_synthetic_dataset_is_deterministic():
    a, b = SyntheticDataset(seed=5), SyntheticDataset(seed=5)
    assert torch.equal(a.tensors["features"], b.tensors["features"])


def test_models_shapes():
    assert DigitsCNN(width=4)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert SimpleNet(hidden=[8, 4])(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="width=0"):
        DigitsCNN(width=0)


def test_config_is_deep_copied():
    config = minimal()
    snapshot = copy.deepcopy(config)
    ConfigExperiment(config).get_optimizer("train", torch.nn.Linear(4, 2))
    assert config == snapshot


def test_expand_env_expands_strings_everywhere_and_names_unset_variables(monkeypatch):
    monkeypatch.setenv("MLCOMP_TEST_DATA", "/data")
    monkeypatch.delenv("MLCOMP_TEST_UNSET", raising=False)
    config = {"stages": {"data_params": {"path": "${MLCOMP_TEST_DATA}/train.npz", "keys": ["$MLCOMP_TEST_DATA"],
                                         "pattern": "^head$", "batch_size": 8}}}
    expanded = expand_env(config)
    assert expanded["stages"]["data_params"] == {"path": "/data/train.npz", "keys": ["/data"],
                                                 "pattern": "^head$", "batch_size": 8}
    assert config["stages"]["data_params"]["path"] == "${MLCOMP_TEST_DATA}/train.npz"  # not mutated
    assert expand_env("$MLCOMP_TEST_UNSET/x") == "$MLCOMP_TEST_UNSET/x"
    with pytest.raises(ConfigError, match=r"stages\.data_params\.loaders\.train\.path: .*MLCOMP_TEST_UNSET, "
                                          r"which is not set"):
        expand_env({"stages": {"data_params": {"loaders": {"train": {"path": "${MLCOMP_TEST_UNSET}/a"}}}}})
