"""``mlcomp run`` end to end: the digits example, overrides, exit codes and one-line user errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mlcomp.cli import main
from mlcomp.runner.config import run_config
from mlcomp.runner.config_io import load_config

DIGITS = str(Path(__file__).resolve().parents[1] / "dags" / "digits" / "configs" / "train.yml")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlcomp(capsys, *argv) -> tuple[int, str, str]:
    """Runs ``mlcomp ARGV`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_digits_example_reaches_95_percent_valid_accuracy(tmp_path, capsys):
    logdir = tmp_path / "digits"
    code, out, err = mlcomp(capsys, "run", "--config", DIGITS, "--logdir", logdir)
    assert code == 0, err
    best = torch.load(logdir / "checkpoints" / "best.pth", weights_only=True)
    assert best["valid_metrics"]["accuracy01"] >= 0.95
    assert best["stage"] in ("warmup", "main")
    saved = yaml.safe_load((logdir / "config.yml").read_text())
    assert saved["args"]["logdir"] == str(logdir)
    assert saved["model_params"] == {"model": "DigitsCNN", "width": 16, "dropout": 0.0}
    assert (logdir / "checkpoints" / "last_full.pth").is_file()
    assert "best valid: " in out


def test_check_mode_with_overrides_and_several_configs(tmp_path, capsys):
    extra = tmp_path / "extra.yml"
    extra.write_text("stages:\n  main:\n    stage_params:\n      num_epochs: 1\n")
    logdir = tmp_path / "check"
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--config", extra, "--logdir", logdir, "--check",
                          "--seed", 3, "--width=4", "--lr", "0.01", "--stages.warmup.stage_params.num_epochs=1")
    assert code == 0, err
    saved = yaml.safe_load((logdir / "config.yml").read_text())
    assert saved["model_params"]["width"] == 4 and saved["stages"]["optimizer_params"]["lr"] == 0.01
    assert saved["args"]["seed"] == 3 and saved["args"]["check"] is True
    assert saved["stages"]["main"]["stage_params"]["num_epochs"] == 1
    assert torch.load(logdir / "checkpoints" / "last.pth", weights_only=True)["model_state_dict"][
        "head.1.weight"].shape == (10, 4 * 2 * 2 * 2)


def test_run_config_api_overfit_and_extra_callbacks(tmp_path):
    from mlcomp.runner.callback import Callback, CallbackOrder

    class CountBatches(Callback):
        def __init__(self):
            super().__init__(CallbackOrder.External)
            self.batches = 0

        def on_batch_end(self, runner):
            self.batches += 1

    counter = CountBatches()
    config = load_config(DIGITS, overrides=[("stages.main.stage_params.num_epochs", 1),
                                            ("stages.warmup.stage_params.num_epochs", 1)])
    runner = run_config(config, logdir="none", overfit=True, extra_callbacks=[counter])
    assert counter.batches == 4  # one batch per loader, two loaders, two stages
    assert runner.logdir is None and "valid_accuracy01" in runner.epoch_metrics


RUNNER_EXPDIR = '''
from mlcomp.runner.supervised import SupervisedRunner


class Runner(SupervisedRunner):
    """Counts the batches it handles."""

    handled = 0

    def handle_batch(self, batch):
        type(self).handled += 1
        super().handle_batch(batch)
'''


def test_expdir_runner_and_timeit(tmp_path):
    (tmp_path / "withrunner").mkdir()
    (tmp_path / "withrunner" / "__init__.py").write_text(RUNNER_EXPDIR)
    config = load_config(DIGITS, overrides=[("args.expdir", str(tmp_path / "withrunner")), ("args.timeit", True),
                                            ("stages.warmup", None)])
    runner = run_config(config, logdir="none", check=True)
    assert type(runner).__module__ == "withrunner" and type(runner).handled == 2 * (3 + 3)
    assert "valid__timer/batch_time" in runner.epoch_metrics


STOP_EXPDIR = '''
from mlcomp.runner import registry
from mlcomp.runner.callback import Callback, CallbackOrder


@registry.Callback
class StopAtBatch(Callback):
    """Requests a stop after global batch ``at``."""

    def __init__(self, at: int):
        super().__init__(CallbackOrder.External)
        self.at = at

    def on_batch_end(self, runner):
        if runner.global_batch_step == self.at:
            runner.request_stop()
'''


def _stop_config(tmp_path, at: int) -> Path:
    (tmp_path / "stopper").mkdir(exist_ok=True)
    (tmp_path / "stopper" / "__init__.py").write_text(STOP_EXPDIR)
    conf = tmp_path / f"stop{at}.yml"
    conf.write_text(textwrap.dedent(f"""
        args: {{expdir: {tmp_path / "stopper"}}}
        stages:
          callbacks_params:
            stop: {{callback: StopAtBatch, at: {at}}}
    """))
    return conf


def _weights(logdir: Path) -> dict:
    return torch.load(logdir / "checkpoints" / "last.pth", weights_only=True)["model_state_dict"]


@pytest.mark.parametrize("at, where", [(5, "stage warmup epoch 1 batch 2"), (14, "stage main epoch 1 batch 2")])
def test_stop_exits_75_and_resume_ends_like_an_uninterrupted_run(tmp_path, capsys, at, where):
    whole = tmp_path / "whole"
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--config", _stop_config(tmp_path, 0),
                          "--logdir", whole, "--check")
    assert code == 0, err
    conf, logdir = _stop_config(tmp_path, at), tmp_path / "run"
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--config", conf, "--logdir", logdir, "--check")
    checkpoint = logdir / "checkpoints" / "last_full.pth"
    assert code == 75, err
    assert err.strip().splitlines()[-1] == f"stopped at {where}; resume with --resume {checkpoint}"
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--config", conf, "--logdir", logdir, "--check",
                          "--resume", checkpoint)
    assert code == 0, err
    resumed, expected = _weights(logdir), _weights(whole)
    assert all(torch.equal(resumed[key], expected[key]) for key in expected)


def _tiny_run(tmp_path, capsys, name: str, *extra) -> Path:
    logdir = tmp_path / name
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--logdir", logdir, "--check", "--width=4", *extra)
    assert code == 0, err
    return logdir


@pytest.mark.parametrize("name", ["last_full.pth", "last.pth"])  # exact resume, weights only
def test_resume_file_that_does_not_fit_the_model(tmp_path, capsys, name):
    logdir = _tiny_run(tmp_path, capsys, "small")
    checkpoint = logdir / "checkpoints" / name
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--logdir", tmp_path / "big", "--check", "--width=8",
                          "--resume", checkpoint)
    assert_user_error(code, err, str(checkpoint), "does not fit", "features.0.weight")


def test_autoresume_without_checkpoint_starts_fresh(tmp_path, capsys):
    logdir = _tiny_run(tmp_path, capsys, "auto", "--autoresume", "last")
    assert (logdir / "checkpoints" / "last_full.pth").is_file()


@pytest.mark.parametrize("argv, fragments", [
    (["--model_params=null"], ["model_params: expected a mapping"]),
    (["--stages=null"], ["stages: expected a mapping"]),
    (["--args.sead=1"], ["args.sead: unknown key (did you mean seed?)"]),
    (["--stages.main.optimiser_params.lr=0.1"], ["stages.main.optimiser_params: unknown key"]),
    (["--model_params.model=DigitCNN"], ["model_params.model: unknown model 'DigitCNN'; did you mean DigitsCNN"]),
    (["--stages.optimizer_params.optimizer=Adamw"], ["stages.warmup.optimizer_params.optimizer: unknown optimizer "
                                                     "'Adamw'; did you mean AdamW"]),
    (["--stages.main.scheduler_params.scheduler=CosineLR"], ["stages.main.scheduler_params.scheduler: unknown "
                                                             "scheduler 'CosineLR'"]),
    (["--stages.callbacks_params.accuracy.callback=AccuracyCallbak"],
     ["stages.warmup.callbacks_params.accuracy.callback: unknown callback 'AccuracyCallbak'",
      "did you mean AccuracyCallback"]),
    (["--stages.stage_params.valid_loader=validation"], ["stages.warmup: no valid loader 'validation'"]),
    (["--stages.stage_params.main_metric=nope"], ["nope"]),
    (["--num_epochs=2"], ["override 'num_epochs' is ambiguous", "stages.warmup.stage_params.num_epochs"]),
    (["--resume", "missing.pth"], ["checkpoint missing.pth: no such file"]),
    (["--autoresume", "first"], []),
    (["--apex"], ["--apex: mixed precision is not a flag of mlcomp run", "use_amp"]),
    (["--amp"], ["--amp: mixed precision is not a flag of mlcomp run"]),
    (["--stages/main/stage_params/num_epochs=two:int"], ["'two' is not a Python literal of type int"]),
    (["--sead=1:int"], ["args.sead: unknown key (did you mean seed?)"]),  # Catalyst: a key without / is an arg
    (["--stages/main/stage_parms/num_epochs=1:int"], ["stages.main.stage_parms: unknown key"]),  # made, refused
    (["-j", "2"], ["'-j': expected --dotted.key=value"]),
    (["--study_params/n_trials=3:int"], ["study_params: a `catalyst-dl tune` config", "mlcomp tune"]),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--logdir", tmp_path / "x", "--check", *argv)
    if argv[0] == "--autoresume":  # click's own usage error
        assert code == 2 and "Invalid value for '--autoresume'" in err and "Traceback" not in err
        return
    assert_user_error(code, err, *fragments)


def test_yaml_syntax_error_exits_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("model_params:\n  model: [DigitsCNN\nstages: {}\n")
    code, _, err = mlcomp(capsys, "run", "--config", bad)
    assert_user_error(code, err, f"{bad}:3:", "YAML syntax error")


def test_missing_required_key_exits_2(tmp_path, capsys):
    conf = tmp_path / "nomodel.yml"
    conf.write_text("stages: {train: {}}\n")
    code, _, err = mlcomp(capsys, "run", "--config", conf)
    assert_user_error(code, err, "missing required key 'model_params'")


def test_nproc_hands_the_merged_config_to_the_processes(tmp_path, capsys, monkeypatch):
    """The wiring of --nproc; the distributed run itself is tested in test_distributed.py."""
    from mlcomp.runner import distributed

    seen = {}

    def fake_spawn(argv, nprocs):
        seen["argv"], seen["nprocs"] = argv, nprocs
        seen["config"] = load_config(argv[argv.index("--config") + 1])
        return 75

    monkeypatch.setattr(distributed, "spawn_processes", fake_spawn)
    logdir = tmp_path / "ddp"
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--logdir", logdir, "--check", "--width=4",
                          "--nproc", 2)
    assert code == 75
    assert err.strip() == f"stopped; resume with --resume {logdir / 'checkpoints' / 'last_full.pth'}"
    assert seen["nprocs"] == 2 and seen["argv"][-3:-1] == ["run", "--config"]
    assert seen["config"]["args"] == {"logdir": str(logdir), "seed": 42, "check": True}
    assert seen["config"]["model_params"]["width"] == 4


def test_nproc_validates_the_config_before_starting_processes(tmp_path, capsys):
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--logdir", tmp_path / "x", "--nproc", 2,
                          "--model_params.model=Nope")
    assert_user_error(code, err, "model_params.model: unknown model 'Nope'")


def test_pipeline_config_reads_the_data_folder_from_the_environment(tmp_path, capsys, monkeypatch):
    """``${MLCOMP_DATA_DIR}`` in the digits pipeline config is expanded by ``mlcomp run`` itself."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_prepare", Path(DIGITS).parents[1] / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    pipeline = str(Path(DIGITS).with_name("pipeline.yml"))
    monkeypatch.delenv("MLCOMP_DATA_DIR", raising=False)
    code, _, err = mlcomp(capsys, "run", "--config", DIGITS, "--config", pipeline, "--logdir", tmp_path / "a",
                          "--check")
    assert_user_error(code, err, "stages.data_params.loaders.train.path", "MLCOMP_DATA_DIR", "not set")
    prepare.prepare(str(tmp_path / "data"))
    capsys.readouterr()
    monkeypatch.setenv("MLCOMP_DATA_DIR", str(tmp_path / "data"))
    code, out, err = mlcomp(capsys, "run", "--config", DIGITS, "--config", pipeline, "--logdir", tmp_path / "b",
                            "--check")
    assert code == 0, err
    saved = load_config(tmp_path / "b" / "config.yml")
    assert saved["stages"]["data_params"]["loaders"]["train"]["path"] == str(tmp_path / "data" / "train.npz")


# -- Catalyst 20.x's catalyst-dl run command line ---------------------------------------------

BLOBS = """
    # A Catalyst 20.02-style config: state_params, two stages, a scheduler stepped on reduce_metric.
    model_params: {model: SimpleNet, in_features: 4, hidden: 8, num_classes: 2}
    args: {expdir: blobs}
    stages:
      data_params:
        dataset: SyntheticDataset
        num_features: 4
        batch_size: 16
        num_workers: 0
        loaders: {train: {seed: 1, num_samples: 96}, valid: {seed: 2, num_samples: 64}}
      state_params: {main_metric: loss, minimize_metric: true}
      criterion_params: {criterion: CrossEntropyLoss}
      optimizer_params: {optimizer: SGD, lr: 0.1}
      scheduler_params: {scheduler: ReduceLROnPlateau}
      callbacks_params: {scheduler: {callback: SchedulerCallback, reduce_metric: loss}}
      stage1: {state_params: {num_epochs: 5}}
      stage2: {state_params: {num_epochs: 5}}
"""


def _blobs(tmp_path, monkeypatch, era: str = "reduce_metric") -> Path:
    """Writes the blobs config (``era``: the name of SchedulerCallback's metric argument, 20.02's
    ``reduce_metric`` or the later ``reduced_metric``) and an empty expdir ``blobs`` in
    ``tmp_path``, the working folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blobs").mkdir(exist_ok=True)
    (tmp_path / "blobs" / "__init__.py").write_text("")
    conf = tmp_path / f"{era}.yml"
    conf.write_text(textwrap.dedent(BLOBS).replace("reduce_metric", era))
    return conf


def _position(logdir: Path) -> dict:
    return torch.load(logdir / "checkpoints" / "last_full.pth", weights_only=True)["position"]


def test_catalyst_command_line_runs_unchanged(tmp_path, capsys, monkeypatch):
    conf = _blobs(tmp_path, monkeypatch)
    code, _, err = mlcomp(capsys, "run", "--expdir=blobs", f"--config={conf}", "--logdir=logs",
                          "--stages/state_params/num_epochs=1:int", "--check", "--verbose")
    assert code == 0, err
    saved = load_config(tmp_path / "logs" / "config.yml")
    assert saved["stages"]["state_params"]["num_epochs"] == 1
    assert saved["args"]["expdir"] == str(tmp_path / "blobs") and saved["args"]["verbose"] is True
    # the stages' own num_epochs (5) win over the override of the defaults, as in Catalyst; 20.02's
    # check: 4 batches per loader, 4 epochs over the run (stage1), then one for stage2
    position = _position(tmp_path / "logs")
    assert position["stage"] == "stage2" and position["global_epoch"] == 5
    assert position["global_batch_step"] == 5 * (4 + 4)


@pytest.mark.parametrize("era, epochs, batches", [("reduce_metric", 5, 4), ("reduced_metric", 2 + 2, 3)])
def test_check_counts_follow_the_configs_catalyst_era(tmp_path, capsys, monkeypatch, era, epochs, batches):
    conf = _blobs(tmp_path, monkeypatch, era)
    code, _, err = mlcomp(capsys, "run", "--config", conf, "--logdir", "logs", "--check")
    assert code == 0, err
    position = _position(tmp_path / "logs")
    assert (position["global_epoch"], position["global_batch_step"]) == (epochs, epochs * 2 * batches)


STOP_AFTER = """
from mlcomp.runner import registry
from mlcomp.runner.callback import Callback, CallbackOrder


@registry.Callback
class StopAfterBatch(Callback):
    \"\"\"Requests a stop after global batch ``at``.\"\"\"

    def __init__(self, at: int):
        super().__init__(CallbackOrder.External)
        self.at = at

    def on_batch_end(self, runner):
        if runner.global_batch_step == self.at:
            runner.request_stop()
"""


def test_catalyst_20_02_check_resumes_with_the_run_wide_epoch_count(tmp_path, capsys, monkeypatch):
    conf = _blobs(tmp_path, monkeypatch)
    (tmp_path / "blobs" / "__init__.py").write_text(STOP_AFTER)
    runs = {}
    for name, at in (("whole", 0), ("stopped", 4 * 8 + 3)):  # stage2's first epoch, third train batch
        stop = f"--stages/callbacks_params/stop={{'callback': 'StopAfterBatch', 'at': {at}}}:dict"
        argv = ["run", "--expdir", "blobs", "--config", conf, "--logdir", name, "--check", stop]
        code, _, err = mlcomp(capsys, *argv)
        if at:
            assert code == 75, err
            code, _, err = mlcomp(capsys, *argv, "--resume", tmp_path / name / "checkpoints" / "last_full.pth")
        assert code == 0, err
        runs[name] = _position(tmp_path / name), _weights(tmp_path / name)
    assert runs["stopped"][0]["global_epoch"] == runs["whole"][0]["global_epoch"] == 5
    assert runs["stopped"][0]["global_batch_step"] == runs["whole"][0]["global_batch_step"] == 40
    assert all(torch.equal(runs["stopped"][1][key], value) for key, value in runs["whole"][1].items())


def test_typed_overrides_and_catalyst_switches(tmp_path, capsys, monkeypatch):
    conf = _blobs(tmp_path, monkeypatch)
    extra = tmp_path / "extra.yml"
    extra.write_text("args: {check: true, seed: 3}\nstages: {stage2: null}\n")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    code, _, err = mlcomp(capsys, "run", "--configs", conf, extra, "--logdir=logs", "--no-check", "--deterministic",
                          "--no-benchmark", "--stages/stage1/state_params/num_epochs=1:int",
                          "--stages/optimizer_params/lr=1e-2:float", "--stages/optimizer_params/nesterov=False:bool",
                          "--stages/data_params/loaders/valid/num_samples=32:int", "--out_prefix=preds:str")
    assert code == 0, err
    saved = load_config(tmp_path / "logs" / "config.yml")
    assert saved["args"]["check"] is False and saved["args"]["seed"] == 3 and saved["args"]["out_prefix"] == "preds"
    assert saved["args"]["deterministic"] is True and saved["args"]["benchmark"] is False
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert saved["stages"]["optimizer_params"] == {"optimizer": "SGD", "lr": 0.01, "nesterov": False}
    position = _position(tmp_path / "logs")  # no check: every batch, stage1's one epoch only
    assert (position["stage"], position["global_epoch"], position["global_batch_step"]) == ("stage1", 1, 6 + 2)


def test_baselogdir_gives_a_logdir_per_run(tmp_path, capsys, monkeypatch):
    import re

    conf = _blobs(tmp_path, monkeypatch)
    code, _, err = mlcomp(capsys, "run", "--config", conf, "--baselogdir", "base", "--check", "--stages/stage2=none:str")
    assert code == 0, err
    [logdir] = (tmp_path / "base").iterdir()
    assert re.fullmatch(r"\d{6}\.\d{6}\.[\w-]{6}", logdir.name), logdir.name
    assert (logdir / "checkpoints" / "best.pth").is_file()
    assert load_config(logdir / "config.yml")["args"]["logdir"] == f"base/{logdir.name}"


INFER = """
    model_params: {model: SimpleNet, in_features: 4, hidden: 8, num_classes: 2}
    args: {expdir: blobs}
    stages:
      data_params:
        dataset: SyntheticDataset
        num_features: 4
        batch_size: 16
        num_workers: 0
        loaders: {infer: {seed: 3, num_samples: 40}}
      infer:
        callbacks_params:
          loader: {callback: CheckpointCallback}
          infer: {callback: InferCallback}
"""


def test_resume_from_a_model_only_checkpoint_runs_an_infer_config(tmp_path, capsys, monkeypatch):
    """Catalyst's CI: train, then ``--resume=LOGDIR/checkpoints/best.pth --out_dir=LOGDIR/:str
    --out_prefix="/predictions/":str`` with an infer config; the predictions land in LOGDIR/predictions."""
    from mlcomp.runner.datasets import SyntheticDataset
    from mlcomp.runner.models import SimpleNet

    conf = _blobs(tmp_path, monkeypatch)
    code, _, err = mlcomp(capsys, "run", "--config", conf, "--logdir", "logs", "--check")
    assert code == 0, err
    infer = tmp_path / "infer.yml"
    infer.write_text(textwrap.dedent(INFER))
    best = tmp_path / "logs" / "checkpoints" / "best.pth"
    code, _, err = mlcomp(capsys, "run", "--expdir=blobs", f"--config={infer}", "--logdir=logs_infer",
                          f"--resume={best}", "--out_dir=logs/:str", "--out_prefix=/predictions/:str")
    assert code == 0, err
    logits = np.load(tmp_path / "logs" / "predictions" / "infer.logits.npy")
    model = SimpleNet(in_features=4, hidden=8, num_classes=2).eval()
    model.load_state_dict(torch.load(best, weights_only=True)["model_state_dict"])
    with torch.no_grad():
        expected = model(SyntheticDataset(num_samples=40, num_features=4, seed=3).tensors["features"])
    assert logits.shape == (40, 2) and np.allclose(logits, expected.numpy(), atol=1e-6)


def test_distributed_flag_runs_one_process_per_gpu(tmp_path, capsys, monkeypatch):
    from mlcomp.runner import distributed

    conf = _blobs(tmp_path, monkeypatch)
    spawned = []
    monkeypatch.setattr(distributed, "spawn_processes", lambda argv, nprocs: spawned.append(nprocs) or 0)
    code, _, err = mlcomp(capsys, "run", "--config", conf, "--logdir", "cpu", "--check", "--distributed")
    assert code == 0, err
    assert spawned == [] and (tmp_path / "cpu" / "checkpoints" / "last_full.pth").is_file()  # CPU: here
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, _, err = mlcomp(capsys, "run", "--config", conf, "--logdir", "gpus", "--check", "-ddp")
    assert code == 0, err
    monkeypatch.setenv("USE_DDP", "1")  # Catalyst's default of --distributed
    code, _, err = mlcomp(capsys, "run", "--config", conf, "--logdir", "gpus", "--check")
    assert code == 0, err
    assert spawned == [2, 2]


def test_expand_configs_reads_several_files_after_one_flag():
    from mlcomp.cli.catalyst import expand_configs

    assert expand_configs(["-C", "a.yml", "b.yml", "--lr", "0.1", "--configs=c.yml", "d.yml", "--check"]) == [
        "--config", "a.yml", "--config", "b.yml", "--lr", "0.1", "--config=c.yml", "--config", "d.yml", "--check"]
