"""Checkpoint files: one resolver (best | last | a file name | a path), confined where asked;
loading with ``weights_only=True`` refuses pickled code; full checkpoints hold only tensors and
plain types."""
from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest
import torch
from runner_utils import TwoStageExperiment, one_thread  # noqa: F401 (autouse fixture)

from mlcomp.errors import ConfigError
from mlcomp.runner import SupervisedRunner
from mlcomp.runner.checkpoint import (check_plain, confine, load_checkpoint, resolve_checkpoint, resume_checkpoint,
                                      save_checkpoint, write_atomically)
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
])
def test_only_tensors_and_plain_types_are_saved(tmp_path, value, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}: a .* cannot be saved in a checkpoint"):
        save_checkpoint({"model_state_dict": {}, "a": value}, tmp_path / "c.pth")
    assert not (tmp_path / "c.pth").exists()


def test_plain_values_pass():
    check_plain({"t": torch.ones(2), "s": torch.Size([2]), "d": torch.float32, "n": None, "l": [1, 2.0, "x", b"y"],
                 "o": collections.OrderedDict(a=(1, {2, 3})), 5: True, "p": torch.nn.Parameter(torch.ones(1))})


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
