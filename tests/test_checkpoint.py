"""Checkpoint files: one resolver (best | last | a file name | a path), confined where asked;
loading with ``weights_only=True`` refuses pickled code; checkpoints hold exactly what that loading
reads back, every torch scheduler's and optimizer's state included."""
from __future__ import annotations

import collections
import inspect
import os
import pickle

import numpy as np
import pytest
import torch
from runner_utils import StopAt, TwoStageExperiment, one_thread  # noqa: F401 (autouse fixture)

from mlcomp.errors import ConfigError
from mlcomp.runner import RunStopped, SupervisedRunner
from mlcomp.runner.checkpoint import (check_plain, confine, load_checkpoint, resolve_checkpoint, resume_checkpoint,
                                      save_checkpoint, write_atomically)
from mlcomp.runner.config import run_config
from mlcomp.runner.schedulers import OneCycleLRWithWarmup
from mlcomp.runner.seed import get_rng_state, set_rng_state


@pytest.fixture
def logdir(tmp_path):
    folder = tmp_path / "logdir" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("best.pth", "best_full.pth", "stage1.2.pth"):
        (folder / name).write_bytes(b"x")
    return tmp_path / "logdir"


def test_names_files_and_paths_resolve(logdir, monkeypatch):
    folder = logdir / "checkpoints"
    assert resolve_checkpoint(logdir, "best") == folder / "best.pth"
    assert resolve_checkpoint(logdir, "best", full=True) == folder / "best_full.pth"
    assert resolve_checkpoint(logdir, "best_full") == folder / "best_full.pth"
    assert resolve_checkpoint(logdir, "stage1.2.pth") == folder / "stage1.2.pth"
    assert resolve_checkpoint(logdir, folder / "best.pth") == folder / "best.pth"
    assert resolve_checkpoint(logdir, "checkpoints/best.pth", base=logdir) == folder / "best.pth"
    monkeypatch.chdir(logdir)
    assert resolve_checkpoint(None, "checkpoints/best.pth") == logdir / "checkpoints/best.pth"
    assert resolve_checkpoint(logdir, "last", full=True, missing_ok=True) is None
    with pytest.raises(ConfigError, match=r"checkpoint last: no such file \(.*last.pth\); "
                                          r"checkpoints in .*: best.pth, best_full.pth, stage1.2.pth"):
        resolve_checkpoint(logdir, "last")
    with pytest.raises(ConfigError, match="needs a logdir"):
        resolve_checkpoint(None, "best")


def test_one_table_names_the_checkpoint_files_and_imports_no_torch(logdir, tmp_path):
    import subprocess
    import sys

    from mlcomp.checkpoint_names import FILES, NAMED, checkpoint_path, full_name
    from mlcomp.runner.callbacks.checkpoint import _path
    from mlcomp.worker.carry import CARRIED

    assert NAMED == ("best", "last", "best_full", "last_full")
    assert FILES == {"best": "best.pth", "last": "last.pth", "best_full": "best_full.pth",
                     "last_full": "last_full.pth"}
    assert [full_name(name) for name in NAMED] == ["best_full", "last_full", "best_full", "last_full"]
    assert checkpoint_path(tmp_path, "last", full=True) == tmp_path / "checkpoints" / "last_full.pth"
    with pytest.raises(ValueError, match="not one of best, last, best_full, last_full"):
        checkpoint_path(tmp_path, "stage1.2")
    for name in ("best", "best_full"):  # the callback's loads and the resolver pick the same file
        assert _path(logdir, name) == resolve_checkpoint(logdir, name) == checkpoint_path(logdir, name)
    assert CARRIED == ("last_full.pth", "best_full.pth", "best.pth")
    code = "import sys, mlcomp.checkpoint_names; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_confined_resolution_refuses_files_outside_the_logdir_and_allowed_folders(logdir, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "w.pth").write_bytes(b"x")
    (logdir / "checkpoints" / "link.pth").symlink_to(outside / "w.pth")
    for which in (outside / "w.pth", "../elsewhere/w.pth", "link.pth"):
        with pytest.raises(ConfigError, match="refused: only files inside"):
            resolve_checkpoint(logdir, which, allowed_dirs=(), base=logdir)
    assert resolve_checkpoint(logdir, outside / "w.pth", allowed_dirs=[outside]) == outside / "w.pth"
    assert resolve_checkpoint(logdir, "best", allowed_dirs=()) == logdir / "checkpoints" / "best.pth"
    assert confine(logdir / "x" / ".." / "checkpoints", [logdir]) == (logdir / "checkpoints").resolve()


def test_runner_args_resume_and_autoresume(logdir, tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint .*missing.pth: no such file"):
        resume_checkpoint({"resume": str(tmp_path / "missing.pth")}, None)
    assert resume_checkpoint({"autoresume": "last"}, logdir) is None
    assert resume_checkpoint({"autoresume": "best"}, logdir) == logdir / "checkpoints" / "best_full.pth"
    assert resume_checkpoint({"resume": "best"}, logdir) == logdir / "checkpoints" / "best_full.pth"
    assert resume_checkpoint({}, logdir) is None
    with pytest.raises(ConfigError, match="needs a logdir"):
        resume_checkpoint({"autoresume": "best"}, None)


class Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "x": Payload(marker)}, path)
    with pytest.raises(ConfigError, match=r"evil.pth: refused: it holds pickled Python objects.*weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"model_state_dict": Payload(marker)}))  # a plain pickle, not a torch file
    with pytest.raises(ConfigError, match="evil.pth"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("value, key", [
    (np.float64(1.0), "checkpoint.a"), (np.zeros(2), "checkpoint.a"), ({"b": [1, object()]}, "checkpoint.a.b.1"),
    (collections.defaultdict(int), "checkpoint.a"), (lambda: 1, "checkpoint.a"),
    (collections.deque([1]), "checkpoint.a"), ({"b": (1, frozenset({2}))}, "checkpoint.a.b.1"),
    (range(3), "checkpoint.a"), ({"b": collections.Counter(x=object())}, "checkpoint.a.b.x"),
])
def test_what_weights_only_loading_refuses_is_not_saved(tmp_path, value, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}: a .* cannot be saved in a checkpoint"):
        save_checkpoint({"model_state_dict": {}, "a": value}, tmp_path / "c.pth")
    assert not (tmp_path / "c.pth").exists()


def test_what_weights_only_loading_reads_is_saved_and_comes_back_alike(tmp_path):
    value = {"t": torch.ones(2), "s": torch.Size([2]), "d": torch.float32, "n": None, "l": [1, 2.0, "x", b"y"],
             "o": collections.OrderedDict(a=(1, {2, 3})), 5: True, "p": torch.nn.Parameter(torch.ones(1)),
             "c": collections.Counter([3, 3, 5]), "z": 1 + 2j, "dev": torch.device("cpu"), "lay": torch.strided,
             "ba": bytearray(b"q"), "big": 2 ** 80}
    save_checkpoint({"model_state_dict": {}, "value": value}, tmp_path / "c.pth")
    loaded = load_checkpoint(tmp_path / "c.pth")["value"]
    assert_same(loaded, value)
    assert type(loaded["c"]) is collections.Counter and type(loaded["o"]) is collections.OrderedDict


def test_a_class_the_user_allows_for_weights_only_loading_is_saved(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint.a: a .*Allowed cannot be saved"):
        check_plain({"a": Allowed(3)})
    with torch.serialization.safe_globals([Allowed]):
        save_checkpoint({"model_state_dict": {}, "a": Allowed(3)}, tmp_path / "c.pth")
        assert load_checkpoint(tmp_path / "c.pth")["a"].n == 3


class Allowed:
    """A user's class, loadable only once allow-listed with ``torch.serialization.add_safe_globals``."""

    def __init__(self, n):
        self.n = n


def assert_same(a, b, key="value"):
    """``a == b`` recursively, tensors compared with ``torch.equal``, container types kept."""
    assert type(a) is type(b), f"{key}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), key
    elif isinstance(a, dict):
        assert list(a) == list(b), key
        for name in a:
            assert_same(a[name], b[name], f"{key}.{name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), key
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{key}.{i}")
    else:
        assert a == b, key


def round_trip(state, tmp_path):
    """``state`` saved with :func:`save_checkpoint` and read back with :func:`load_checkpoint`."""
    save_checkpoint({"model_state_dict": {}, "state": state}, tmp_path / "state.pth")
    return load_checkpoint(tmp_path / "state.pth")["state"]


def halve(epoch):
    """A plain function as LambdaLR's ``lr_lambda`` (its state then holds no function)."""
    return 0.5 ** epoch


def _scheduler_arguments(optimizer):
    """Values of the required arguments of torch's schedulers, by parameter name."""
    lr = torch.optim.lr_scheduler
    return {"lr_lambda": halve, "step_size": 2, "milestones": [2], "gamma": 0.5, "T_max": 4, "T_0": 2,
            "base_lr": 0.01, "max_lr": 0.1, "total_steps": 10,
            "schedulers": [lr.ConstantLR(optimizer, total_iters=2), lr.ExponentialLR(optimizer, 0.9)]}


def _schedulers():
    lr = torch.optim.lr_scheduler
    return sorted(name for name, kind in vars(lr).items() if inspect.isclass(kind) and kind.__module__ == lr.__name__
                  and issubclass(kind, (lr.LRScheduler, lr.ReduceLROnPlateau))
                  and kind not in (lr.LRScheduler, lr._LRScheduler))


@pytest.mark.parametrize("name", [*_schedulers(), "OneCycleLRWithWarmup"])
def test_every_scheduler_state_round_trips(tmp_path, name):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
    if name == "OneCycleLRWithWarmup":
        scheduler = OneCycleLRWithWarmup(optimizer, num_steps=6, lr_range=(0.1, 0.01), warmup_steps=2)
    else:
        kind = getattr(torch.optim.lr_scheduler, name)
        values = _scheduler_arguments(optimizer)  # the required ones, and optional ones it names
        names = [p.name for p in inspect.signature(kind).parameters.values() if p.name != "optimizer"
                 and (p.name in values or p.default is inspect.Parameter.empty)]
        scheduler = kind(optimizer=optimizer, **{arg: values[arg] for arg in names})
    for _ in range(3):
        optimizer.step()
        scheduler.step(*[1.0] * (name == "ReduceLROnPlateau"))
    state = scheduler.state_dict()
    assert_same(round_trip(state, tmp_path), state)


def _optimizer_params(name):
    if name == "SparseAdam":
        return torch.nn.Embedding(4, 2, sparse=True), lambda model: model(torch.tensor([0, 2])).sum()
    model = torch.nn.Linear(3, 2)
    return model, lambda model: model(torch.ones(1, 3)).pow(2).sum()


@pytest.mark.parametrize("name", sorted(name for name, kind in vars(torch.optim).items() if inspect.isclass(kind)
                                        and issubclass(kind, torch.optim.Optimizer)
                                        and kind is not torch.optim.Optimizer))
def test_every_optimizer_state_round_trips(tmp_path, name):
    model, loss = _optimizer_params(name)
    params = [model.weight] if name == "Muon" else model.parameters()  # Muon takes matrices only
    optimizer = getattr(torch.optim, name)(params, **({"momentum": 0.9} if name == "SGD" else {}))  # SGD: a state

    def closure():
        optimizer.zero_grad()
        value = loss(model)
        value.backward()
        return value

    optimizer.step(closure)
    state = optimizer.state_dict()
    assert state["state"], "one step gives the optimizer state"
    assert_same(round_trip(state, tmp_path), state)


def test_a_multistep_lr_config_runs_and_resumes(tmp_path):
    config = {
        "args": {"seed": 3},
        "model_params": {"model": "SimpleNet", "in_features": 4, "hidden": 8, "num_classes": 2},
        "stages": {
            "data_params": {"dataset": "SyntheticDataset", "num_features": 4, "batch_size": 16,
                            "loaders": {"train": {"seed": 1, "num_samples": 64},
                                        "valid": {"seed": 2, "num_samples": 32}}},
            "criterion_params": {"criterion": "CrossEntropyLoss"},
            "optimizer_params": {"optimizer": "SGD", "lr": 0.1},
            "scheduler_params": {"scheduler": "MultiStepLR", "milestones": [1, 2], "gamma": 0.5},
            "train": {"stage_params": {"num_epochs": 3}},
        },
    }
    with pytest.raises(RunStopped):
        run_config(config, logdir=tmp_path, extra_callbacks={"stop": StopAt(8)})  # epoch 2, batch 2 of 4 train
    assert load_checkpoint(tmp_path / "checkpoints" / "last_full.pth")["position"]["epoch"] == 2
    runner = run_config(config, logdir=tmp_path, resume=tmp_path / "checkpoints" / "last_full.pth")
    assert runner.epoch == 3 and runner.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert runner.scheduler.milestones == collections.Counter([1, 2])


def test_rng_state_is_plain_and_restores_numpy_exactly():
    np.random.seed(7)
    np.random.standard_normal()  # has_gauss set
    state = get_rng_state()
    check_plain(state)
    expected = np.random.standard_normal(5)
    set_rng_state(state)
    assert np.array_equal(np.random.standard_normal(5), expected)


def test_full_checkpoints_of_a_run_load_with_weights_only(tmp_path):
    SupervisedRunner().run_experiment(TwoStageExperiment(tmp_path))
    for path in (tmp_path / "checkpoints").glob("*.pth"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert "model_state_dict" in checkpoint
    full = load_checkpoint(tmp_path / "checkpoints" / "last_full.pth")
    assert isinstance(full["rng"]["numpy"]["key"], list) and full["optimizer_state_dict"]["state"]


def test_write_atomically_replaces_whole_files_and_a_failed_write_leaves_the_old_one(tmp_path, monkeypatch):
    import mlcomp.runner.checkpoint as checkpoint

    path = tmp_path / "models" / "m.pth"
    assert write_atomically(path, b"old") == path and path.read_bytes() == b"old"
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, b"partial")
    assert path.read_bytes() == b"new" and [p.name for p in path.parent.iterdir()] == ["m.pth"]
