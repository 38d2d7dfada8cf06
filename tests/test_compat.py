"""Catalyst 20.x experiment folders and MLComp DAG files run unchanged: the Catalyst import hook,
Catalyst's config names and features, expdir resolution, and MLComp's DAG and executor API.
The folders under tests/compat/ were written for these tests."""
import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mlcomp.cli import cli, main
from mlcomp.errors import ConfigError, DagError
from mlcomp.runner import registry
from mlcomp.runner.callbacks import SchedulerCallback
from mlcomp.runner.compat.catalyst import catalyst_imports
from mlcomp.runner.config import make_experiment, run_config
from mlcomp.runner.config_io import load_config
from mlcomp.runner.expdir import import_expdir, package_name
from mlcomp.runner.samplers import BalanceClassSampler, MiniEpochSampler
from mlcomp.runner.schedulers import OneCycleLRWithWarmup
from mlcomp.runner.trace import load_traced

COMPAT = Path(__file__).resolve().parent / "compat"


@pytest.fixture
def catalyst_dir(tmp_path, monkeypatch):
    """A copy of the Catalyst-style folder; the working folder is its parent (as for catalyst-dl run)."""
    shutil.copytree(COMPAT / "catalyst20", tmp_path / "catalyst20")
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "catalyst20"
    sys.modules.pop("catalyst20", None)
    for name in ("TinyNet", "Chain", "Scale", "FrozenEncoderExperiment"):
        for reg in (registry.Model, registry.Transform, registry.Experiment):
            reg.remove(name)


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# -- the import hook ----------------------------------------------------------------------------


def test_catalyst_imports_resolve_to_mlcomp_only_while_the_hook_is_active():
    for name in [m for m in sys.modules if m == "catalyst" or m.startswith("catalyst.")]:
        del sys.modules[name]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("catalyst.dl")
    with catalyst_imports() as active:
        assert active
        dl = importlib.import_module("catalyst.dl")
        utils = importlib.import_module("catalyst.utils")
        for module in ("catalyst.registry", "catalyst.dl.registry", "catalyst.contrib.registry"):
            assert importlib.import_module(module).MODEL is registry.Model
        assert dl.registry.EXPERIMENT is registry.Experiment
        assert dl.SupervisedRunner.__module__ == "mlcomp.runner.supervised"
        assert utils.any2device({"x": torch.ones(1)}, "cpu")["x"].device.type == "cpu"
        assert importlib.import_module("catalyst.data").MiniEpochSampler is MiniEpochSampler
        assert importlib.import_module("catalyst.contrib.nn").Lamb.__module__.startswith("torch_optimizer")
        with pytest.raises(ImportError, match=r"catalyst.data.ImageReader \(Catalyst 20.02, 20.08, 20.10, 20.12's "
                                              r"name\) is not provided by mlcomp's Catalyst"):
            exec("from catalyst.data import ImageReader", {})
        with pytest.raises(AttributeError, match=r"'catalyst.data' has no attribute 'Nope': it is not a public name"):
            importlib.import_module("catalyst.data").Nope
        with pytest.raises(ModuleNotFoundError, match=r"'catalyst.contrib.nope': catalyst is not installed.*"
                                                      r"under catalyst.contrib: .*catalyst.contrib.datasets"):
            importlib.import_module("catalyst.contrib.nope")
    assert not any(type(f).__name__ == "CatalystFinder" for f in sys.meta_path)


# -- Catalyst 20.x config names and features ----------------------------------------------------


def test_a_catalyst_experiment_folder_runs_unchanged_through_mlcomp_run(catalyst_dir, capsys):
    code, out, err = run(capsys, "run", "--config", catalyst_dir / "configs/train.yml", "--logdir", "logs")
    assert code == 0, err
    metrics = json.loads((catalyst_dir.parent / "logs/checkpoints/_metrics.json").read_text())
    assert {"warmup.1", "warmup.2", "finetune.1"} <= {key for key in metrics if "." in key}, metrics.keys()
    saved = load_config(catalyst_dir.parent / "logs/config.yml")
    assert saved["args"]["expdir"] == str(catalyst_dir)  # made absolute against the working folder


def test_the_catalyst_features_do_what_the_config_says(catalyst_dir):
    config = load_config(catalyst_dir / "configs/train.yml")
    experiment = make_experiment(config)
    assert type(experiment).__name__ == "FrozenEncoderExperiment"  # experiment_params.experiment
    loaders = experiment.get_loaders("warmup")
    assert isinstance(loaders["train"].sampler, MiniEpochSampler) and len(loaders["train"]) == 4  # 32 of 64
    assert (loaders["valid"].batch_size, loaders["valid"].drop_last) == (16, True)  # loaders_params
    assert loaders["train"].dataset[0]["features"].shape == (4,)  # through get_transforms

    runner = run_config(config, logdir="none")
    model, optimizer = runner.model, runner.optimizer
    assert not any(p.requires_grad for p in model.encoder.parameters())  # _postprocess_model_for_stage
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(model.head.parameters())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 8 / 16)  # lr_linear_scaling
    # load_from_previous_stage across different groups: the head's moments carried 2x4 + 4 steps
    assert [optimizer.state[p]["step"] for p in model.head.parameters()] == [12, 12]


def test_a_key_mlcomp_does_not_honour_is_an_error(catalyst_dir):
    config = load_config(catalyst_dir / "configs/train.yml")
    bad_loader = {**config["stages"]["data_params"], "loaders_params": {"valid": {"batch_sise": 4}}}
    with pytest.raises(ConfigError, match=r"loaders_params.valid.batch_sise: unknown key \(did you mean batch_size"):
        make_experiment({**config, "stages": {**config["stages"], "data_params": bad_loader}})
    bad_sampler = {**config["stages"]["data_params"], "samplers_params": {"train": {"sampler": "Nope"}}}
    with pytest.raises(ConfigError, match=r"samplers_params.train.sampler: unknown sampler 'Nope'"):
        make_experiment({**config, "stages": {**config["stages"], "data_params": bad_sampler}})
    with pytest.raises(ConfigError, match=r"transform_params.transform: unknown transform 'Blur'"):
        make_experiment({**config, "stages": {**config["stages"], "transform_params": {"transform": "Blur"}}})
    with pytest.raises(ConfigError, match=r"experiment_params.name: unknown key"):
        make_experiment({**config, "experiment_params": {"name": "x"}})
    with pytest.raises(ConfigError, match=r"stages.warmup.bogus_params: unknown key"):
        make_experiment({**config, "stages": {**config["stages"], "warmup": {"bogus_params": {}}}})


def test_contrib_optimizers_train():
    weights = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    for params in ({"optimizer": "Lamb", "lr": 0.1}, {"optimizer": "RAdam", "lr": 0.1},
                   {"optimizer": "Ralamb", "lr": 0.1, "weight_decay": 0.01},
                   {"optimizer": "Lookahead", "k": 2, "base_optimizer_params": {"optimizer": "Ralamb", "lr": 0.1}}):
        with torch.no_grad():
            weights.copy_(torch.tensor([3.0, -2.0]))
        optimizer = registry.Optimizer.create_from_params(params, "optimizer", "optimizer_params", [weights])
        for _ in range(20):
            optimizer.zero_grad()
            (weights ** 2).sum().backward()
            optimizer.step()
        assert (weights ** 2).sum() < 13.0 * 0.8, params


def test_one_cycle_with_warmup_spreads_its_epochs_over_the_batches():
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1, momentum=0.9)
    scheduler = OneCycleLRWithWarmup(optimizer, num_steps=3, lr_range=(1.0, 0.1, 0.01), warmup_steps=1,
                                     decay_steps=1, momentum_range=(0.8, 0.9))
    scheduler.recalculate(loader_len=2, current_step=0)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="exceed num_steps"):
        OneCycleLRWithWarmup(optimizer, num_steps=1, warmup_steps=1, decay_steps=1)


def test_scheduler_callback_takes_catalyst_20_02s_reduce_metric():
    assert SchedulerCallback(reduce_metric="accuracy01").reduced_metric == "accuracy01"
    with pytest.raises(ValueError, match="not both"):
        SchedulerCallback(reduce_metric="a", reduced_metric="b")


def test_samplers(monkeypatch):
    sampler = MiniEpochSampler(data_len=10, mini_epoch_len=4)
    parts = []
    for epoch in (1, 2, 3, 4):
        sampler.set_epoch(epoch)
        parts.append(list(sampler))
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]
    shuffled = MiniEpochSampler(data_len=10, mini_epoch_len=5, shuffle="per_epoch")
    shuffled.set_epoch(1)
    first = list(shuffled)
    shuffled.set_epoch(2)
    assert sorted(first + list(shuffled)) == list(range(10))  # one permutation per pass
    balanced = BalanceClassSampler([0, 0, 0, 1], mode="upsampling")
    drawn = list(balanced)
    assert len(drawn) == len(balanced) == 6 and sum(i == 3 for i in drawn) == 3
    with pytest.raises(ValueError, match="mode 'both'"):
        BalanceClassSampler([0, 1], mode="both")


# -- expdirs --------------------------------------------------------------------------------------


def test_expdir_names_need_not_be_identifiers_and_never_shadow_mlcomp(tmp_path):
    for folder in ("digit-recognizer", "executors"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("from .inner import VALUE\n")
        (tmp_path / folder / "inner.py").write_text(f"VALUE = {folder!r}\n")
    assert package_name(tmp_path / "digit-recognizer") == "digit_recognizer"
    assert import_expdir(tmp_path / "digit-recognizer").VALUE == "digit-recognizer"
    module = import_expdir(tmp_path / "executors")
    assert module.__name__ == "mlcomp_expdir_executors" and module.VALUE == "executors"
    assert importlib.import_module("executors").__file__.startswith(str(Path(__file__).parents[1]))
    for name in ("digit_recognizer", "mlcomp_expdir_executors"):
        sys.modules.pop(name, None)


def test_unknown_model_says_where_mlcomp_looked(tmp_path, capsys):
    config = tmp_path / "mine.yml"
    config.write_text("model_params: {model: MyMLP}\nstages: {train: {}}\n")
    code, _, err = run(capsys, "run", "--config", config)
    assert code == 2
    assert "unknown model 'MyMLP'; looked in the defaults (mlcomp.runner.models, torch.nn) and" in err
    assert "set args.expdir to that folder" in err


def test_nproc_ranks_get_the_absolute_expdir(catalyst_dir, capsys):
    code, _, err = run(capsys, "run", "--config", catalyst_dir / "configs/train.yml", "--logdir", "ddp",
                       "--nproc", "2", "--check")
    assert code == 0, err
    assert (catalyst_dir.parent / "ddp/checkpoints/last_full.pth").is_file()


# -- MLComp DAG files -------------------------------------------------------------------------------


def test_an_mlcomp_dag_runs_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    shutil.copytree(COMPAT / "digit-recognizer", tmp_path / "digit-recognizer")
    result = CliRunner().invoke(cli, ["dag", "submit", str(tmp_path / "digit-recognizer/dag.yml"), "--wait"])
    assert result.exit_code == 0, result.output
    dag_id = re.search(r"\d+", result.output.splitlines()[0]).group()
    shown = json.loads(CliRunner().invoke(cli, ["dag", "show", dag_id, "--json"]).output)
    tasks = {task["name"]: task for task in shown["tasks"]}
    assert tasks["preprocess"]["result"] == {"rows": 96}
    train = tasks["train"]["result"]
    assert train["epochs"] == 1  # params applied
    traced = tmp_path / "root/models/compat/digits.pth"  # trace: models/... through the models/ link
    assert train["paths"]["traced model"].endswith("code/models/digits.pth") and traced.is_file()
    assert load_traced(traced)(torch.zeros(2, 4)).shape == (2, 2)
    assert (tmp_path / "root/data/compat/train.npz").is_file()


def test_grid_cells_of_a_catalyst_task_trace_into_their_own_task_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    shutil.copytree(COMPAT / "digit-recognizer", tmp_path / "digit-recognizer")
    dag = tmp_path / "digit-recognizer/dag.yml"
    dag.write_text(dag.read_text() + "    grid:\n      - lr: [0.01, 0.003]\n")
    result = CliRunner().invoke(cli, ["dag", "submit", str(dag), "--wait"])
    assert result.exit_code == 0, result.output
    dag_id = re.search(r"\d+", result.output.splitlines()[0]).group()
    shown = json.loads(CliRunner().invoke(cli, ["dag", "show", dag_id, "--json"]).output)
    traced = {task["id"]: Path(task["result"]["paths"]["traced model"]) for task in shown["tasks"]
              if (task.get("result") or {}).get("paths", {}).get("traced model")}
    assert len(traced) == 2  # one file per cell, each in its own task folder, none in the project's models
    assert {path.resolve() for path in traced.values()} == {
        (tmp_path / f"root/tasks/{task_id}/models/digits.pth").resolve() for task_id in traced}
    assert not (tmp_path / "root/models/compat/digits.pth").exists()
    for path in traced.values():
        assert load_traced(path)(torch.zeros(2, 4)).shape == (2, 2)
        assert [p.name for p in path.parent.iterdir()] == ["digits.pth"]  # no temporary file left


@pytest.mark.parametrize("trace", ["../../escape.pth", "models/../../x.pth", "", 3])
def test_a_trace_path_that_climbs_out_of_the_task_folder_is_refused_at_submission(tmp_path, monkeypatch, trace):
    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    shutil.copytree(COMPAT / "digit-recognizer", tmp_path / "digit-recognizer")
    dag = tmp_path / "digit-recognizer/dag.yml"
    text = dag.read_text()
    assert "trace: models/digits.pth" in text
    dag.write_text(text.replace("trace: models/digits.pth", f"trace: {json.dumps(trace)}"))
    result = CliRunner().invoke(cli, ["dag", "submit", str(dag)])
    assert isinstance(result.exception, DagError), result.output
    line = next(n for n, row in enumerate(dag.read_text().splitlines(), 1) if "trace:" in row)
    assert f"dag.yml:{line}: task 'train', key 'trace': got {trace!r}" in str(result.exception)
    assert not (tmp_path / "root/tasks").exists()  # nothing written
