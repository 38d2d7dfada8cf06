"""``mlcomp run`` end to end: the digits example, overrides, exit codes and one-line user errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from mlcomp.cli import main
from mlcomp.runner.config import load_config, run_config

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


def test_resume_file_that_does_not_fit_the_model(tmp_path, capsys):
    logdir = _tiny_run(tmp_path, capsys, "small")
    checkpoint = logdir / "checkpoints" / "last_full.pth"
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
