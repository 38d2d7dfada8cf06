"""Bounded fuzzing (Hypothesis) of the DAG parser and submission: whatever the file holds —
random structures with mlcomp's keys, random text, a valid file with random edits, random
``--set`` items — submission ends in DAG rows or a clear error (an ``MlcompError`` subclass),
never another exception. Each run rolls back, so the store stays empty."""
from __future__ import annotations

import itertools

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st

from mlcomp.dag import submit
from mlcomp.db import Dag, open_store
from mlcomp.errors import MlcompError
from mlcomp.settings import Settings

FUZZ = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VALID = """\
info: {name: fuzz, project: p, expdir: code}
executors:
  a: {type: bash, command: echo a, gpu: 0, cpu: 1}
  b:
    type: bash
    command: echo $n
    depends: a
    grid: [{n: "1-3"}, {m: [x, y]}]
    parallel: 2
  c: {type: grid_search, executor: d, grid: {k: [1, 2]}, depends: b}
  d: {type: python, function: "code:main"}
"""
KEYS = ["info", "executors", "grid", "name", "project", "expdir", "type", "command", "depends", "gpu", "cpu",
        "memory", "distr", "single_node", "computer", "env", "retries", "priority", "timeout", "parallel",
        "executor", "function", "config", "params", "_folder", "_file", "a", "b", "n", "lr"]
TYPES = ["bash", "python", "train", "infer", "trace", "grid_search", "nope"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
           | st.sampled_from(TYPES + ["1-3", "0-99999999", "a", "..", "/etc", "code:main", "echo hi"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4),
                      max_leaves=12)
tasks = st.fixed_dictionaries({"type": st.sampled_from(TYPES) | scalars},
                              optional={key: values for key in KEYS[7:]})
dags = st.fixed_dictionaries({}, optional={
    "info": st.fixed_dictionaries({}, optional={"name": scalars, "project": scalars,
                                                "expdir": st.sampled_from(["code", ".", "missing"]) | scalars}),
    "executors": st.dictionaries(st.sampled_from(list("abcd")) | st.text(max_size=4), tasks | values, max_size=4),
    "grid": values,
})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``(folder, sessionmaker, settings)``: an expdir ``code/`` next to the DAG files, a store."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "code").mkdir()
    (folder / "code" / "code.py").write_text("def main():\n    return 1\n")
    (folder / "code" / "grid").mkdir()
    (folder / "code" / "grid" / "g.yml").write_text("lr: 0.1\n")
    settings_ = Settings(root=folder / "root", db_url=f"sqlite:///{folder / 'root' / 'mlcomp.db'}")
    store = open_store(settings_)
    yield folder, store, settings_
    store.kw["bind"].dispose()


_names = itertools.count()


def _submit(world, text: str, sets=()) -> None:
    """Submits ``text`` as a DAG file and rolls back; only an MlcompError may come out."""
    folder, store, settings_ = world
    path = folder / f"dag{next(_names)}.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with store() as session:
        try:
            dags = submit(session, settings_, path, sets)
            assert dags and all(isinstance(dag, Dag) and dag.id for dag in dags)
            event("accepted")
        except MlcompError as e:
            event(f"refused: {type(e).__name__}")
            assert str(e).startswith(str(path)) or "--set" in str(e), str(e)  # says where
        finally:
            session.rollback()
    path.unlink()


def test_the_valid_seed_file_is_accepted(world):
    folder, store, settings_ = world
    (folder / "seed.yml").write_text(VALID)
    with store() as session:
        assert len(submit(session, settings_, folder / "seed.yml")) == 1
        session.rollback()


@FUZZ
@given(dag=dags)
def test_random_structures(world, dag):
    _submit(world, yaml.safe_dump(dag, allow_unicode=True))


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(world, text):
    _submit(world, text)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 4),
                                st.text(alphabet="{}[]:,-&*!|>'\"#%@` \n\t0123456789abcxyz", max_size=4)),
                      min_size=1, max_size=4))
def test_edits_of_a_valid_file(world, edits):
    text = VALID
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut:]
    _submit(world, text)


@FUZZ
@given(sets=st.lists(st.builds("{}={}".format, st.sampled_from(["executors.a.gpu", "executors.b.grid", "grid", "info",
                                                                "executors.a", "executors", "x.y.z", "executors.b.grid.0.n"])
                               | st.text(max_size=6), st.text(max_size=12)), max_size=3))
def test_random_overrides(world, sets):
    _submit(world, VALID, sets)
