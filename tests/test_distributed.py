"""torch.distributed helpers and launchers: identity when alone, real gloo groups of two CPU processes."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mlcomp.errors import ConfigError
from mlcomp.runner import distributed

DIST_ENV = distributed.ENV_KEYS


@pytest.fixture
def alone(monkeypatch):
    """A process with no torch.distributed environment."""
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


def _loader(n=10, batch_size=2, **kwargs):
    return DataLoader(TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1)), batch_size=batch_size,
                      **kwargs)


def test_helpers_are_identity_when_not_distributed(alone):
    assert distributed.setup() is False
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_master() and not distributed.is_distributed()
    assert distributed.device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torch.nn.Linear(2, 1)
    assert distributed.wrap_model(model, "cpu") is model
    assert distributed.unwrap_model(torch.nn.DataParallel(model)) is model
    loader = _loader()
    assert distributed.shard_loader(loader, shuffle=True) is loader
    distributed.set_epoch(loader, 3)  # a plain sampler: nothing happens
    assert distributed.all_reduce_mean({"loss": torch.tensor(0.5), "n": 2}) == {"loss": 0.5, "n": 2.0}
    assert distributed.any_true(True) and not distributed.any_true(False)
    distributed.barrier()
    distributed.cleanup()


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' should be an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK='2' should be in 0..1"),
    ({"WORLD_SIZE": "2"}, "RANK=None should be in 0..1"),
])
def test_setup_rejects_a_bad_environment(alone, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message):
        distributed.setup()


def test_launch_and_spawn_reject_bad_arguments():
    with pytest.raises(ConfigError, match="nprocs should be a positive integer"):
        distributed.launch(print, 0)
    with pytest.raises(ConfigError, match="argv is empty"):
        distributed.spawn_processes([], 2)


def test_rank_env_and_free_port():
    port = distributed.free_port()
    assert 0 < port < 65536
    assert distributed.rank_env(1, 4, port) == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
                                                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def test_launch_with_one_process_runs_here():
    assert distributed.launch(divmod, 1, 7, 2) == (3, 1)


def _gather(value):
    """Every rank's ``value``, in rank order."""
    values = [None] * distributed.world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def _exercise_helpers(n_samples):
    """Runs on each rank of a two-process gloo group; rank 0 returns what every rank saw."""
    torch.manual_seed(distributed.rank())  # different initial weights on purpose: DDP broadcasts rank 0's
    loader = distributed.shard_loader(_loader(n_samples, batch_size=2, drop_last=False), shuffle=True, seed=5)
    assert distributed.shard_loader(loader, shuffle=True) is loader  # already this rank's shard
    epochs = []
    for epoch in (1, 2):
        distributed.set_epoch(loader, epoch)
        epochs.append([int(x) for (batch,) in loader for x in batch.flatten()])
    model = torch.nn.Linear(1, 1)
    ddp = distributed.wrap_model(model, distributed.device())
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    (batch,) = next(iter(loader))
    ddp(batch).pow(2).mean().backward()  # each rank its own batch; DDP averages the gradients
    optimizer.step()
    seen = {
        "rank": distributed.rank(), "world_size": distributed.world_size(), "master": distributed.is_master(),
        "wrapped": type(ddp).__name__, "unwrapped": distributed.unwrap_model(ddp) is model,
        "batch_size": loader.batch_size, "epochs": epochs,
        "mean": distributed.all_reduce_mean({"b": 10.0 * distributed.rank(), "a": 1.0}),
        "any": [distributed.any_true(distributed.rank() == 1), distributed.any_true(False)],
        "weights": [p.detach().tolist() for p in model.parameters()],
    }
    distributed.barrier()
    return _gather(seen)


@pytest.mark.slow
def test_helpers_in_a_two_process_gloo_group():
    seen = distributed.launch(_exercise_helpers, 2, 9, backend="gloo")
    assert [s["rank"] for s in seen] == [0, 1]
    assert [s["master"] for s in seen] == [True, False]
    for s in seen:
        assert s["world_size"] == 2 and s["wrapped"] == "DistributedDataParallel" and s["unwrapped"]
        assert s["batch_size"] == 2
        assert s["mean"] == {"a": 1.0, "b": 5.0}
        assert s["any"] == [True, False]
    # each epoch: disjoint shards of ceil(9 / 2) = 5 indices covering all 9 samples (one padded)
    for epoch in range(2):
        shards = [s["epochs"][epoch] for s in seen]
        assert [len(shard) for shard in shards] == [5, 5]
        assert set(shards[0]) | set(shards[1]) == set(range(9))
    assert seen[0]["epochs"][0] != seen[0]["epochs"][1]  # set_epoch reshuffles
    assert seen[0]["weights"] == seen[1]["weights"]  # broadcast start + averaged gradients


def _fail_on_rank_one(message):
    if distributed.rank() == 1:
        raise ConfigError(message)
    distributed.barrier()  # rank 0 waits in a collective: the launcher must end it


@pytest.mark.slow
def test_launch_raises_the_first_failure_with_its_type():
    with pytest.raises(ConfigError, match="bad value on rank 1"):
        distributed.launch(_fail_on_rank_one, 2, "bad value on rank 1")


@pytest.mark.slow
def test_launch_runs_a_function_of_the_main_script(tmp_path):
    """As with multiprocessing's spawn, each process runs the script as ``__mp_main__`` first."""
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        from mlcomp.runner import distributed

        def ranks():
            return distributed.world_size(), __name__

        if __name__ == "__main__":  # not in the processes, or each would launch again
            print(*distributed.launch(ranks, 2, backend="gloo"))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "__mp_main__"]


def test_outcomes_keep_the_class_and_attributes_of_errors(tmp_path):
    from mlcomp.runner import RunStopped

    class Local(Exception):  # cannot be pickled by reference
        pass

    folder = str(tmp_path)
    distributed._write_outcome(folder, 0, True, {"ok": 1})
    distributed._write_outcome(folder, 1, False, RunStopped("main", 2, "train", 5, None))
    distributed._write_outcome(folder, 2, False, Local("made in a function"))
    outcomes = distributed._read_outcomes(folder)
    assert outcomes[0][1:] == (True, {"ok": 1})
    stopped = distributed._launch_error(outcomes, 1, 1, 0)
    assert isinstance(stopped, RunStopped) and (stopped.stage, stopped.batch) == ("main", 5)
    assert "raised on rank 1" in stopped.__notes__[0]
    local = outcomes[2][2]
    assert type(local) is RuntimeError and "Local: made in a function" in str(local)
    died = distributed._launch_error(outcomes, 3, -9, 4)  # no outcome of its own: killed
    assert type(died) is RuntimeError and str(died) == "a distributed process failed: rank 7 was killed by SIGKILL"


def _record_pid(folder):
    (Path(folder) / f"{distributed.rank()}.pid").write_text(str(os.getpid()))


def _fail_at_batch(folder, how, k):
    """Every rank all-reduces once per batch; rank 1 fails at batch ``k``, raising or exiting."""
    _record_pid(folder)
    for batch in range(10_000):
        if distributed.rank() == 1 and batch == k:
            if how == "raise":
                raise ValueError(f"rank 1 failed at batch {batch}")
            os._exit(3)
        distributed.all_reduce_mean({"loss": 1.0})


def _swallow_sigterm_and_wait(folder):
    """Rank 0 swallows SIGTERM and waits outside any collective; rank 1 fails once it does."""
    _record_pid(folder)
    if distributed.rank() == 0:
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    distributed.barrier()
    if distributed.rank() == 1:
        raise ValueError("rank 1 failed")
    while True:
        time.sleep(0.1)


def _assert_no_rank_left(folder, ranks=2):
    """Every rank recorded its pid in ``folder``, and none of them is still a child of this process."""
    pids = {int(path.read_text()) for path in Path(folder).glob("*.pid")}
    assert len(pids) == ranks
    assert not pids & {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.slow
@pytest.mark.timeout(90)  # the ranks must not wait for gloo's timeout (30 minutes)
@pytest.mark.parametrize("how, error", [("raise", "rank 1 failed at batch 3"), ("exit", "rank 1 exited with code 3")])
def test_a_failing_rank_ends_the_launch_and_every_rank(tmp_path, how, error):
    with pytest.raises(ValueError if how == "raise" else RuntimeError, match=error):
        distributed.launch(_fail_at_batch, 2, str(tmp_path), how, 3, backend="gloo")
    _assert_no_rank_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_rank_that_swallows_sigterm_is_killed_after_the_grace(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=distributed.__name__):
        with pytest.raises(ValueError, match="rank 1 failed"):
            distributed.launch(_swallow_sigterm_and_wait, 2, str(tmp_path), backend="gloo", grace=0.5)
    swallower = int((tmp_path / "0.pid").read_text())
    killed = [r.getMessage() for r in caplog.records if "after SIGTERM" in r.getMessage()]
    assert killed == [f"rank process {swallower} did not end 0.5 s after SIGTERM; killing it"]
    _assert_no_rank_left(tmp_path)


def test_cleanup_skips_the_barrier_while_an_error_propagates(monkeypatch):
    """A failing rank's peers may wait in another collective: it must not wait for them."""
    calls = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.cleanup()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(ValueError):
        try:
            raise ValueError("failed in the run")
        finally:
            distributed.cleanup()
    assert calls == ["destroy"]


SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    if {swallow}:
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    env = {{key: os.environ.get(key) for key in {keys!r}}}
    with open(os.path.join({folder!r}, env["RANK"] + ".pid"), "w") as f:
        f.write(str(os.getpid()))
    with open(os.path.join({folder!r}, env["RANK"] + ".json"), "w") as f:
        json.dump(env, f)
    if env["RANK"] == "1":  # exit once every rank has written its file
        while len([n for n in os.listdir({folder!r}) if n.endswith(".json")]) < 3:
            time.sleep(0.01)
        sys.exit({code})
    time.sleep({sleep})
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code, sleep, swallow", [(0, 0, False), (75, 600, False), (75, 600, True)])
def test_spawn_processes_sets_the_environment_and_returns_the_first_failure(tmp_path, code, sleep, swallow):
    script = SCRIPT.format(keys=DIST_ENV, folder=str(tmp_path), code=code, sleep=sleep, swallow=swallow)
    result = distributed.spawn_processes([sys.executable, "-c", script], 3, env=dict(os.environ), grace=0.5)
    assert result == code  # with 75, ranks 0 and 2 (sleeping) were terminated or killed, not waited for
    _assert_no_rank_left(tmp_path, ranks=3)
    envs = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(3)]
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"]) for e in envs] == [(str(r), str(r), "3") for r in range(3)]
    assert len({e["MASTER_PORT"] for e in envs}) == 1 and envs[0]["MASTER_ADDR"] == "127.0.0.1"


# ------------------------------------------------------------------------------ DDP through the runner

N_TRAIN, N_VALID, BATCH, WORLD = 64, 32, 8, 2


def _train(folder, world_size):
    """Train a small MLP with SupervisedRunner.train; each rank saves what it ended with.

    With ``world_size`` processes each rank reads batches of ``BATCH``; the single-process
    reference reads batches of ``BATCH * WORLD`` in the order of a one-replica DistributedSampler
    with the same seed, i.e. the same global batches, so both runs take the same SGD steps.
    """
    from torch.utils.data.distributed import DistributedSampler

    from mlcomp.runner import SupervisedRunner
    from mlcomp.runner.datasets import SyntheticDataset
    from mlcomp.runner.models import SimpleNet

    torch.set_num_threads(1)
    train = SyntheticDataset(num_samples=N_TRAIN, num_features=8, num_classes=3, seed=1)
    valid = SyntheticDataset(num_samples=N_VALID, num_features=8, num_classes=3, seed=2)
    batch = BATCH * WORLD // world_size
    sampler = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=3)  # = initial_seed
    loaders = {"train": DataLoader(train, batch_size=batch, sampler=sampler),
               "valid": DataLoader(valid, batch_size=batch)}
    torch.manual_seed(distributed.rank())  # rank 1 starts elsewhere: DDP must broadcast rank 0's weights
    model = SimpleNet(in_features=8, hidden=16, num_classes=3)
    runner = SupervisedRunner()
    logdir = folder / f"logs{distributed.rank()}"
    runner.train(model=model, loaders=loaders, criterion=torch.nn.CrossEntropyLoss(), logdir=str(logdir),
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.5), num_epochs=2, initial_seed=3)
    torch.save({"state": model.state_dict(), "epoch_metrics": runner.epoch_metrics,
                "valid_metrics": runner.valid_metrics, "flags": (runner.is_distributed, runner.rank,
                                                                 runner.world_size, runner.is_master)},
               folder / f"{world_size}-{runner.rank}.pt")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """What the two ranks of a DDP run and a single-process run ended with, and their folder."""
    folder = tmp_path_factory.mktemp("ddp")
    distributed.launch(_train, WORLD, folder, WORLD, backend="gloo")
    single = folder / "single"
    single.mkdir()
    _train(single, 1)
    ranks = [torch.load(folder / f"{WORLD}-{r}.pt") for r in range(WORLD)]
    return ranks, torch.load(single / "1-0.pt"), folder


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_weights(ddp_runs):
    ranks, _, _ = ddp_runs
    assert [r["flags"] for r in ranks] == [(True, 0, 2, True), (True, 1, 2, False)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key


@pytest.mark.slow
def test_ddp_matches_a_single_process_run_over_the_same_global_batches(ddp_runs):
    ranks, single, _ = ddp_runs
    assert single["flags"] == (False, 0, 1, True)
    for key, value in single["state"].items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5)
    # metrics are means over the ranks' shards, so they equal the single run's over all samples
    assert set(ranks[0]["epoch_metrics"]) == set(single["epoch_metrics"]) >= {"train_loss", "valid_loss"}
    for rank in ranks:
        assert rank["epoch_metrics"] == pytest.approx(single["epoch_metrics"], rel=1e-4)
        assert rank["valid_metrics"] == pytest.approx(single["valid_metrics"], rel=1e-4)


@pytest.mark.slow
def test_ddp_only_rank_zero_writes_checkpoints_and_logs(ddp_runs):
    _, _, folder = ddp_runs
    assert (folder / "logs0" / "checkpoints" / "best.pth").is_file()
    assert (folder / "logs0" / "checkpoints" / "last_full.pth").is_file()
    assert not (folder / "logs1").exists() or not any((folder / "logs1").rglob("*"))


@pytest.mark.slow
def test_spawn_processes_runs_mlcomp_run_as_two_ranks(tmp_path, capfd, tiny_config):
    """What the train executor does for ``distr``: the ``mlcomp run`` command, once per rank."""
    import yaml

    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump(tiny_config(num_samples=32, batch_size=8,
                                                 distributed_params={"backend": "gloo"})))
    logdir = tmp_path / "logs"
    argv = [sys.executable, "-c", "from mlcomp.cli import main; main()", "run", "--config", str(config),
            "--logdir", str(logdir)]
    assert distributed.spawn_processes(argv, 2) == 0
    assert capfd.readouterr().out.count(f"done in {logdir}") == 1  # rank 0 alone reports
    assert (logdir / "config.yml").is_file() and (logdir / "checkpoints" / "best.pth").is_file()
    assert len((logdir / "log.txt").read_text().splitlines()) >= 1


@pytest.mark.parametrize("cuda, local_rank, backend", [(False, None, "gloo"), (True, 1, "nccl")])
def test_setup_picks_nccl_on_gpus_and_gloo_on_the_cpu(alone, monkeypatch, cuda, local_rank, backend):
    """The NCCL path cannot run here: the group creation and the CUDA calls are recorded instead."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.setdefault("device", index))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.setdefault("group", kwargs))
    monkeypatch.setattr(distributed, "is_distributed", lambda: False)
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    assert distributed.setup() is True
    assert calls["group"] == {"backend": backend, "init_method": "env://", "rank": 1, "world_size": 2}
    assert calls.get("device") == local_rank
    calls.clear()
    distributed.setup(backend="gloo")
    assert calls["group"]["backend"] == "gloo"


def _second_stage_start(folder):
    """A two-stage run whose best epoch is the first; each rank saves its weights as stage2's
    first epoch starts (after rank 0's saver loaded ``best.pth``)."""
    from runner_utils import callback
    from test_catalyst_outputs import catalyst_config

    from mlcomp.runner import CallbackOrder
    from mlcomp.runner.config import run_config

    torch.set_num_threads(1)
    config = catalyst_config({"stage1": 3, "stage2": 1}, save_n_best=1)
    config["stages"]["stage_params"]["minimize_metric"] = False  # the best epoch is the first: best != last

    def save(runner):
        if runner.stage_name == "stage2":
            torch.save(runner.model.state_dict(), folder / f"stage2-{distributed.rank()}.pt")

    run_config(config, logdir=folder / f"logs{distributed.rank()}",  # rank 1 has no best.pth of its own
               extra_callbacks={"save": callback(CallbackOrder.External, on_epoch_start=save)})


@pytest.mark.slow
def test_every_rank_starts_a_later_stage_from_the_weights_rank_zero_loaded(tmp_path):
    from mlcomp.runner.checkpoint import load_checkpoint

    distributed.launch(_second_stage_start, 2, tmp_path, backend="gloo")
    best = load_checkpoint(tmp_path / "logs0" / "checkpoints" / "stage1.1.pth")["model_state_dict"]
    for rank in (0, 1):
        state = torch.load(tmp_path / f"stage2-{rank}.pt")
        assert all(torch.equal(value.cpu(), best[key.removeprefix("module.")]) for key, value in state.items())
