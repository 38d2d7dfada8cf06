"""The executor base and registry: built-ins by name, user executors in an expdir, contexts."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from executors import BUILTINS, Executor, SubmitContext, get_executor, known_types, register
from mlcomp.errors import DagError, ExecutorError
from mlcomp.kinds import COMPOSITE_KINDS, TaskKind

USER = '''
from executors import Executor
from helper import PREFIX


class Shout(Executor):
    type_name = "shout"

    @classmethod
    def validate(cls, spec, ctx):
        return {"text": PREFIX + spec["text"]}
'''


def test_builtins_resolve_by_type_name_without_importing_torch():
    code = ("import sys; from executors import get_executor; "
            "print(get_executor('bash').type_name, get_executor('python').type_name, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout
    assert out.split() == ["bash", "python", "False"]


def test_composite_kinds_have_no_executor_and_keep_their_names():
    assert {kind.value for kind in TaskKind} == COMPOSITE_KINDS == {"grid_search", "search"}
    assert not COMPOSITE_KINDS & set(BUILTINS)
    for name in COMPOSITE_KINDS:
        with pytest.raises(ExecutorError, match=f"task type '{name}' is a composite kind"):
            get_executor(name)

        class Taken(Executor):
            type_name = name
        with pytest.raises(ExecutorError, match="is a composite task kind"):
            register(Taken)


def test_unknown_type_lists_the_known_ones(tmp_path):
    with pytest.raises(ExecutorError) as info:
        get_executor("nope", tmp_path)
    known = sorted(set(BUILTINS) | COMPOSITE_KINDS)
    assert str(info.value) == f"unknown executor type 'nope'; known types: {', '.join(known)}"
    assert known_types() == known


def test_missing_builtin_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(BUILTINS, "later", "executors.not_written_yet")
    with pytest.raises(ExecutorError, match="'later' needs module executors.not_written_yet, which cannot be"):
        get_executor("later")


def test_user_executor_is_found_in_the_expdir_and_reloaded_when_edited(write_file, tmp_path):
    write_file("exp/helper.py", "PREFIX = '!'\n")
    path = write_file("exp/executors.py", USER)
    cls = get_executor("shout", tmp_path / "exp")
    assert cls.type_name == "shout" and issubclass(cls, Executor)
    assert cls.validate({"text": "hi"}, None) == {"text": "!hi"}
    assert "shout" in known_types(tmp_path / "exp") and "helper" not in sys.modules
    path.write_text(USER.replace('"shout"', '"whisper"') + "\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert get_executor("whisper", tmp_path / "exp").type_name == "whisper"
    with pytest.raises(ExecutorError, match="unknown executor type 'shout'"):
        get_executor("shout", tmp_path / "exp")


X = "from executors import Executor\nclass X(Executor):\n    type_name = 'x'\n"


@pytest.mark.parametrize("source, fragment", [
    (X + "raise RuntimeError('boom')\n", "importing the user's executors failed: RuntimeError: boom"),
    (X + "class B(Executor):\n    type_name = 'bash'\n", "class B uses the built-in type name 'bash'"),
    (X + "class B(Executor):\n    type_name = 'x'\n", "classes X and B both have type_name 'x'"),
    (X + "class A(Executor):\n    type_name = ''\n", "type_name must be a non-empty string"),
    ("class X:\n    type_name = 'x'\n", "declares executor type 'x', but importing __init__.py gives no Executor"),
])
def test_bad_user_executors(write_file, tmp_path, source, fragment):
    write_file("exp/__init__.py", source)
    with pytest.raises(ExecutorError, match=fragment):
        get_executor("x", tmp_path / "exp")


def test_register_checks_the_class():
    with pytest.raises(ExecutorError, match="must subclass executors.base.Executor"):
        register(int)
    with pytest.raises(ExecutorError, match="type_name must be a non-empty string"):
        register(type("NoName", (Executor,), {}))


def context(tmp_path, cell=None):
    return SubmitContext(file=tmp_path / "dag.yml", expdir=tmp_path, dag="d", task="t lr=1",
                         path=("executors", "t"), line_of=lambda path: len(path) * 10, grid_cell=cell)


def test_submit_context_errors_name_file_line_task_and_key(tmp_path):
    error = context(tmp_path).error("args.lr", "bad")
    assert isinstance(error, DagError)
    assert str(error) == f"{tmp_path / 'dag.yml'}:40: task 't lr=1', key 'args.lr': bad"
    assert str(context(tmp_path).error(None, "bad")) == f"{tmp_path / 'dag.yml'}:20: task 't lr=1': bad"


def test_default_apply_cell_sets_known_keys_by_dotted_path(tmp_path):
    spec = {"command": "x", "args": {"lr": 1, "wd": 0}}
    cell = {"args.lr": 0.1, "command": "y", "seed": 3}
    applied = Executor.apply_cell(spec, cell, context(tmp_path, cell))
    assert applied == {"command": "y", "args": {"lr": 0.1, "wd": 0}}
    assert spec == {"command": "x", "args": {"lr": 1, "wd": 0}}
    with pytest.raises(DagError, match=r"key 'command': grid key 'command.x': cannot set 'x' inside str 'x' \(at command\)"):
        Executor.apply_cell(spec, {"command.x": 1}, context(tmp_path))
    assert Executor.validate({"a": [1]}, context(tmp_path)) == {"a": [1]}
    assert Executor.command(None) is None


def test_task_context_from_a_task_row(settings):
    from mlcomp.worker.context import task_context

    class Row:
        id, attempt, dag_id, name, gpus, executor_config = 7, 2, 3, "train", [1], {"a": 1}
        grid_cell, resume_from, env, cpu, distr = {"lr": 1}, "last", {"X": "1"}, 2, True
        dag = type("Dag", (), {"project": type("Project", (), {"name": "p"})})

    ctx = task_context(Row, settings, reporter="r")
    assert (ctx.folder, ctx.code_dir) == (settings.tasks_dir / "7", settings.tasks_dir / "7" / "code")
    assert (ctx.task_id, ctx.attempt, ctx.dag_id, ctx.gpus, ctx.config) == (7, 2, 3, [1], {"a": 1})
    assert (ctx.grid_cell, ctx.resume_from, ctx.reporter, ctx.env) == ({"lr": 1}, "last", "r", {"X": "1"})
    assert (ctx.cpu, ctx.distr, ctx.data_dir) == (2, True, settings.data_dir / "p")


def test_apply_cell_refuses_a_grid_key_with_an_empty_part(tmp_path):
    """Grid-cell keys go through configkit's one dotted-path parser, which refuses empty parts."""
    for key in ("args..lr", "..x", "seed."):
        with pytest.raises(DagError, match=re.escape(f"grid key {key!r}: {key!r}: empty part in the dotted path")):
            Executor.apply_cell({"args": {"lr": 1}}, {key: 1}, context(tmp_path))
    assert str(context(tmp_path).error("a..b", "bad")).endswith("task 't lr=1', key 'a..b': bad")
