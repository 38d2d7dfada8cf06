"""A ``search:`` block at submission: its stored form, and every bad input rejected with
``FILE:LINE:``, the task and the key, leaving the database unchanged."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from mlcomp.dag import submit
from mlcomp.db import Dag, Project, SnapshotFile, Task
from mlcomp.errors import DagError
from ml_helpers import write_expdir

SEARCH = """\
info: {name: s, project: p, expdir: .}
executors:
  search:
    type: TYPE
    config: [configs/train.yml]
    search:
      space:
        lr: LR
        hidden: {choice: [4, 8]}
      sampler: SAMPLER
      trials: 6
      parallel: 2
      scheduler: {type: asha, metric: METRIC, grace_epochs: 1, max_epochs: MAX, reduction_factor: 2}
"""
GOOD = {"TYPE": "train", "LR": "{loguniform: [0.001, 0.1]}", "SAMPLER": "tpe", "METRIC": "accuracy01", "MAX": "3"}


def _file(tmp_path, **changes):
    text = SEARCH
    for key, value in {**GOOD, **changes}.items():
        text = text.replace(key, value)
    return write_expdir(tmp_path / "exp", text)


def test_a_search_is_stored_as_a_virtual_task_with_resolved_keys(store, tmp_path):
    with store.begin() as session:
        dag, = submit(session, None, _file(tmp_path))
        task, = dag.tasks
        assert task.type == "search" and (task.cpu, task.gpu_max) == (0, 0)
        config = task.executor_config
    search = config["search"]
    assert search["space"]["lr"] == {"kind": "loguniform", "values": [0.001, 0.1], "path": "stages.optimizer_params.lr"}
    assert search["space"]["hidden"]["path"] == "model_params.hidden"
    assert search["scheduler"] == {"type": "asha", "metric": "accuracy01", "loader": "valid", "mode": "max",
                                   "grace_epochs": 1, "max_epochs": 3, "reduction_factor": 2, "rungs": [1, 2, 3]}
    assert (search["trials"], search["parallel"], search["seed"], search["sampler"]) == (6, 2, 0, "tpe")
    assert config["template"]["type"] == "train" and config["resources"]["cpu"] == 1


def test_a_trial_config_sets_the_values_and_cuts_the_stages_at_max_epochs(tmp_path):
    from mlcomp.dag.spec import load_spec
    from mlcomp.dag.submit import plan
    from mlcomp.search.spec import trial_config, training_epochs

    config = plan(load_spec(_file(tmp_path)))[0].tasks[0].config
    trial = trial_config(config["template"]["config"], config["search"], {"lr": 0.05, "hidden": 4})
    assert trial["stages"]["optimizer_params"]["lr"] == 0.05 and trial["model_params"]["hidden"] == 4
    assert training_epochs(config["template"]["config"]) == 4 and training_epochs(trial) == 3
    assert trial["stages"]["two"]["stage_params"]["num_epochs"] == 1


BAD = [
    ({"LR": "{normal: [0, 1]}"}, "lr: ", "search.space.lr", "unknown distribution 'normal'"),
    ({"LR": "{uniform: [0.1, 0.01]}"}, "lr: ", "search.space.lr", "low 0.1 >= high 0.01"),
    ({"LR": "{loguniform: [0, 0.1]}"}, "lr: ", "search.space.lr", "loguniform: low 0 <= 0"),
    ({"LR": "{choice: []}"}, "lr: ", "search.space.lr", "non-empty list"),
    ({"LR": "{int: [1.5, 3]}"}, "lr: ", "search.space.lr", "two ints"),
    ({"LR": "0.1"}, "lr: ", "search.space.lr", "one-key mapping"),
    ({"SAMPLER": "cmaes"}, "sampler:", "search.sampler", "allowed: random, tpe, grid"),
    ({"SAMPLER": "grid"}, "sampler:", "search.sampler", "choice or int dimensions only"),
    ({"METRIC": "f1"}, "scheduler:", "search.scheduler.metric", "metric 'f1' is not produced"),
    ({"MAX": "5"}, "scheduler:", "search.scheduler.max_epochs", "above the config's 4 training epochs"),
    ({"TYPE": "bash"}, "search:", "search", "needs a task of type 'train'"),
]


def _count(session) -> tuple:
    return tuple(session.scalar(select(func.count()).select_from(table)) for table in (Project, Dag, Task, SnapshotFile))


def _check_rejected(store, path, marker, key, message):
    lines = path.read_text().splitlines()
    line = [i for i, text in enumerate(lines, 1) if text.strip().startswith(marker)][-1]
    with store() as session:
        before = _count(session)
    with pytest.raises(DagError) as info:
        with store.begin() as session:
            submit(session, None, path)
    text = str(info.value)
    assert text.startswith(f"{path}:{line}: task 'search', key '{key}': "), text
    assert message in text
    with store() as session:
        assert _count(session) == before == (0, 0, 0, 0)


@pytest.mark.parametrize("changes, marker, key, message", BAD)
def test_bad_search_input_is_rejected_with_file_line_task_and_key(store, tmp_path, changes, marker, key, message):
    _check_rejected(store, _file(tmp_path, **changes), marker, key, message)


@pytest.mark.parametrize("space_key, message", [
    ("nosuch", "matches no key of the config"),
    ("num_epochs", "is ambiguous: it matches stages.one.stage_params.num_epochs, stages.two.stage_params"),
])
def test_a_space_key_must_match_exactly_one_config_path(store, tmp_path, space_key, message):
    path = write_expdir(tmp_path / "exp", SEARCH.replace("hidden: {choice", f"{space_key}: {{choice").replace(
        "TYPE", "train").replace("LR", "{uniform: [0.01, 0.1]}").replace("SAMPLER", "tpe").replace(
        "METRIC", "accuracy01").replace("MAX", "3"))
    _check_rejected(store, path, f"{space_key}:", f"search.space.{space_key}", message)


def test_grid_and_search_on_the_same_task_are_rejected(store, tmp_path):
    text = _file(tmp_path).read_text().replace("    search:\n", "    grid: [{lr: [0.1, 0.01]}]\n    search:\n")
    path = tmp_path / "exp" / "dag.yml"
    path.write_text(text)
    lines = text.splitlines()
    line = [i for i, t in enumerate(lines, 1) if t.strip() == "search:"][-1]
    with pytest.raises(DagError, match=re.escape(f"{path}:{line}: task 'search', key 'search': a task has either a "
                                                 f"'grid' or a 'search', not both")):
        with store.begin() as session:
            submit(session, None, path)
    with store() as session:
        assert _count(session) == (0, 0, 0, 0)
