"""Exact resume: a run stopped anywhere and resumed ends bitwise like an uninterrupted one."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from runner_utils import StopAt, TwoStageExperiment, make_loaders, make_model, one_thread  # noqa: F401 (autouse fixture)

from mlcomp.errors import ConfigError
from mlcomp.runner import EXIT_STOPPED, Callback, CallbackOrder, RunStopped, SupervisedRunner


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights and ``_metrics.json`` of an uninterrupted two-stage run."""
    logdir = tmp_path_factory.mktemp("reference")
    experiment = TwoStageExperiment(logdir)
    SupervisedRunner().run_experiment(experiment)
    return experiment.model.state_dict(), json.loads((logdir / "checkpoints" / "_metrics.json").read_text())


def assert_same_run(experiment, logdir, reference):
    weights, metrics = reference
    for name, value in experiment.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert json.loads((logdir / "checkpoints" / "_metrics.json").read_text()) == metrics


# 16 batches per stage: 2 epochs × (train 4 + valid 2). 3: mid train loader; 4: end of a train
# loader; 6: end of an epoch; 12: end of stage1; 15: stage2 with an accumulated gradient pending.
@pytest.mark.parametrize("stop_at", [3, 4, 6, 12, 15])
def test_stop_and_resume_is_bitwise_identical(tmp_path, reference, stop_at, capsys):
    stopped = TwoStageExperiment(tmp_path, stop_at=stop_at)
    with pytest.raises(RunStopped) as info:
        SupervisedRunner().run_experiment(stopped)
    checkpoint = tmp_path / "checkpoints" / "last_full.pth"
    assert info.value.checkpoint == checkpoint and checkpoint.is_file()
    assert info.value.stage == ("stage1" if stop_at <= 12 else "stage2")
    assert "run stopped at stage" in capsys.readouterr().out
    assert not all(torch.equal(v, reference[0][k]) for k, v in stopped.model.state_dict().items())

    resumed = TwoStageExperiment(tmp_path, stop_at=stop_at)
    runner = SupervisedRunner().run_experiment(resumed, resume=checkpoint)
    assert_same_run(resumed, tmp_path, reference)
    assert runner.global_batch_step == 24


class CrashAt(Callback):
    """Raises at the start of ``(stage, epoch)``, like a process that dies."""

    def __init__(self, stage, epoch):
        super().__init__(CallbackOrder.Internal)
        self.where = (stage, epoch)

    def on_epoch_start(self, runner):
        if (runner.stage_name, runner.epoch) == self.where:
            raise RuntimeError("crash")


def test_resume_from_epoch_end_checkpoint(tmp_path, reference):
    crashed = TwoStageExperiment(tmp_path)
    runner = SupervisedRunner()
    original = crashed.get_callbacks
    crashed.get_callbacks = lambda stage: {**original(stage), "crash": CrashAt("stage2", 2)}
    with pytest.raises(RuntimeError, match="crash"):
        runner.run_experiment(crashed)
    position = torch.load(tmp_path / "checkpoints" / "last_full.pth", weights_only=True)["position"]
    assert (position["stage"], position["epoch"], position["epoch_done"]) == ("stage2", 1, True)

    resumed = TwoStageExperiment(tmp_path)
    SupervisedRunner().run_experiment(resumed, resume=tmp_path / "checkpoints" / "last_full.pth")
    assert_same_run(resumed, tmp_path, reference)


def test_run_stopped_pickles_with_its_attributes(tmp_path):
    stopped = pickle.loads(pickle.dumps(RunStopped("stage2", 3, "train", 5, tmp_path / "last_full.pth")))
    assert (stopped.stage, stopped.epoch, stopped.loader, stopped.batch) == ("stage2", 3, "train", 5)
    assert stopped.checkpoint == tmp_path / "last_full.pth" and "after batch 5" in str(stopped)


def test_resume_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="nope.pth: no such file"):
        SupervisedRunner().run_experiment(TwoStageExperiment(tmp_path), resume=tmp_path / "nope.pth")


def test_resume_file_not_fitting(tmp_path):
    with pytest.raises(RunStopped):
        SupervisedRunner().run_experiment(TwoStageExperiment(tmp_path, stop_at=2))
    experiment = TwoStageExperiment(tmp_path)
    experiment.model = make_model(features=5)
    with pytest.raises(ConfigError, match=r"model state does not fit.*0\.weight: checkpoint \(8, 6\) vs model \(8, 5\)"):
        SupervisedRunner().run_experiment(experiment, resume=tmp_path / "checkpoints" / "last_full.pth")


def test_resume_needs_full_checkpoint(tmp_path):
    with pytest.raises(RunStopped):
        SupervisedRunner().run_experiment(TwoStageExperiment(tmp_path, stop_at=7))
    with pytest.raises(ConfigError, match=r"best.pth: not a full checkpoint \(missing keys \['optimizer_state_dict'"):
        SupervisedRunner().run_experiment(TwoStageExperiment(tmp_path), resume=tmp_path / "checkpoints" / "best.pth")


SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    sys.path.insert(0, sys.argv[3])
    from runner_utils import TwoStageExperiment
    from mlcomp.runner import EXIT_STOPPED, Callback, CallbackOrder, RunStopped, SupervisedRunner

    class WaitForSignal(Callback):
        '''After global batch 5, tell the test and wait until SIGTERM sets the stop flag.'''
        def __init__(self):
            super().__init__(CallbackOrder.External)
        def on_batch_end(self, runner):
            if runner.global_batch_step == 5:
                print("at batch 5", flush=True)
                deadline = time.monotonic() + 60
                while not runner.stop_requested and time.monotonic() < deadline:
                    time.sleep(0.01)

    torch.set_num_threads(1)
    logdir, mode = sys.argv[1], sys.argv[2]
    experiment = TwoStageExperiment(logdir)
    original = experiment.get_callbacks
    if mode == "stop":
        experiment.get_callbacks = lambda stage: {**original(stage), "wait": WaitForSignal()}
    try:
        resume = logdir + "/checkpoints/last_full.pth" if mode == "resume" else None
        SupervisedRunner().run_experiment(experiment, resume=resume)
    except RunStopped:
        sys.exit(EXIT_STOPPED)
    torch.save(experiment.model.state_dict(), logdir + "/final.pth")
""")


def test_sigterm_stops_a_real_process_and_resume_matches(tmp_path, reference):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    logdir, tests = tmp_path / "run", os.path.dirname(__file__)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(script), str(logdir), "stop", tests]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in process.stdout:
            if line.startswith("at batch 5"):
                process.send_signal(signal.SIGTERM)
                break
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == EXIT_STOPPED, output
    assert "run stopped at stage 'stage1', epoch 1, loader 'valid', after batch 1" in output
    assert (logdir / "checkpoints" / "last_full.pth").is_file()

    resumed = subprocess.run([sys.executable, str(script), str(logdir), "resume", tests],
                             capture_output=True, text=True, timeout=120, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = torch.load(logdir / "final.pth")
    assert all(torch.equal(value, reference[0][name]) for name, value in final.items())
    shutil.rmtree(logdir)


def test_notebook_train_resumes_exactly(tmp_path):
    def run(logdir, stop_at=None, resume=None):
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        SupervisedRunner().train(model=model, criterion=torch.nn.CrossEntropyLoss(), optimizer=optimizer,
                                 scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5),
                                 loaders=make_loaders(), logdir=logdir, num_epochs=3,
                                 callbacks={"stop": StopAt(stop_at)}, resume=resume)
        return model

    whole = run(tmp_path / "whole")
    with pytest.raises(RunStopped):
        run(tmp_path / "parts", stop_at=8)
    resumed = run(tmp_path / "parts", resume=tmp_path / "parts" / "checkpoints" / "last_full.pth")
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    lines = [(tmp_path / name / "metrics.jsonl").read_text() for name in ("whole", "parts")]
    assert lines[0] == lines[1]
