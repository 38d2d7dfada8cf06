"""The ``bash`` and ``python`` executors: validation at submission, substitution, the command and
the in-child run."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from executors import SubmitContext, TaskContext, get_executor
from mlcomp.errors import DagError


def context(tmp_path, cell=None, task="t") -> SubmitContext:
    return SubmitContext(file=Path("dag.yml"), expdir=tmp_path, dag="d", task=task,
                         path=("executors", "t"), line_of=lambda path: 7, grid_cell=cell)


def run_bash(config) -> str:
    argv = get_executor("bash").command(TaskContext(1, 1, 1, "t", Path("."), Path("."), config=config))
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


# -- bash -------------------------------------------------------------------------------------------
def test_bash_runs_its_command_directly(tmp_path):
    bash = get_executor("bash")
    config = bash.validate({"command": "echo $HOME-ok"}, context(tmp_path))
    assert bash.command(TaskContext(1, 1, 1, "t", tmp_path, tmp_path, config=config)) == [
        "bash", "-c", "echo $HOME-ok"]


def test_bash_substitutes_grid_values_shell_quoted(tmp_path):
    cell = {"lr": 0.1, "name": "a b; rm -rf /", "flag": True, "dims": [1, 2]}
    config = get_executor("bash").validate(
        {"command": 'echo $lr ${name} $flag $dims \\$lr "$HOME" ${lr}x'}, context(tmp_path, cell))
    assert config["command"] == "echo 0.1 'a b; rm -rf /' true '[1, 2]' \\$lr \"$HOME\" 0.1x"
    assert run_bash(config).split("\n")[0] == "0.1 a b; rm -rf / true [1, 2] $lr " + str(Path.home()) + " 0.1x"


def test_bash_accepts_variables_the_command_assigns(tmp_path):
    command = "total=0; for i in 1 2 3; do total=$((total + i)); done; read line < /dev/null; echo $total ${x:-d} $1"
    config = get_executor("bash").validate({"command": command}, context(tmp_path))
    assert run_bash(config) == "6 d\n"


def test_bash_list_form_runs_its_argv_without_a_shell(tmp_path):
    cell = {"lr": 0.1, "name": "a b; rm -rf /"}
    bash = get_executor("bash")
    config = bash.validate({"command": ["printf", "%s|", "$lr", "${name}", "x${lr}y", "*", "$(id)"]},
                           context(tmp_path, cell))
    assert config["command"] == ["printf", "%s|", "0.1", "a b; rm -rf /", "x0.1y", "*", "$(id)"]
    assert bash.command(TaskContext(1, 1, 1, "t", tmp_path, tmp_path, config=config))[0] == "printf"
    assert run_bash(config) == "0.1|a b; rm -rf /|x0.1y|*|$(id)|"  # nothing globbed, expanded or run


@pytest.mark.parametrize("spec, message", [
    ({}, "key 'command': expected a non-empty string"),
    ({"command": "   "}, "expected a non-empty string"),
    ({"command": 3}, "expected a non-empty string (the shell command) or a list of strings"),
    ({"command": []}, "expected a non-empty list of strings"),
    ({"command": ["echo", 3]}, "expected a non-empty list of strings (a program and its arguments), got ['echo', 3]"),
    ({"command": ["echo", "$HOME"]}, "key 'command.1': $HOME is not a grid name (grid names: lr); the list form"),
    ({"command": "echo", "shell": "zsh"}, "key 'shell': unknown key for a bash task; allowed: command"),
    ({"command": "echo $lr_typo"}, "$lr_typo is not a grid name (grid names: lr)"),
])
def test_bash_rejects_bad_specs_naming_file_line_task_and_key(tmp_path, spec, message):
    with pytest.raises(DagError) as info:
        get_executor("bash").validate(spec, context(tmp_path, {"lr": 1}))
    assert str(info.value).startswith("dag.yml:7: task 't'")
    assert message in str(info.value)


# -- python -----------------------------------------------------------------------------------------
@pytest.fixture
def expdir(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "jobs.py").write_text(
        "def scale(x, factor=2):\n    return {'y': x * factor}\n"
        "def with_task(task, n=1):\n    return [task.name, n]\n"
        "def opaque():\n    return object()\n"
        "NOT_CALLABLE = 3\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('import-time failure')\n")
    return tmp_path


def test_python_resolves_the_function_at_submission(expdir):
    config = get_executor("python").validate({"function": "pkg.jobs:scale", "x": 3}, context(expdir))
    assert config == {"function": "pkg.jobs:scale", "kwargs": {"x": 3}}


@pytest.mark.parametrize("spec, message", [
    ({}, "expected 'module:function'"),
    ({"function": "pkg.jobs"}, "expected 'module:function'"),
    ({"function": "missing:f"}, "No module named 'missing'"),
    ({"function": "broken:f"}, "importing broken failed: RuntimeError: import-time failure"),
    ({"function": "pkg.jobs:nope"}, "has no attribute 'nope'"),
    ({"function": "pkg.jobs:NOT_CALLABLE"}, "is a int, not a callable"),
    ({"function": "pkg.jobs:scale"}, "does not accept the keys []: missing a required argument: 'x'"),
    ({"function": "pkg.jobs:scale", "x": 1, "z": 2}, "unexpected keyword argument 'z'"),
])
def test_python_rejects_what_cannot_be_called(expdir, spec, message):
    with pytest.raises(DagError) as info:
        get_executor("python").validate(spec, context(expdir))
    assert str(info.value).startswith("dag.yml:7: task 't', key 'function'")
    assert message in str(info.value)


def test_python_validation_leaves_no_user_module_behind(expdir):
    import sys

    get_executor("python").validate({"function": "pkg.jobs:scale", "x": 1}, context(expdir))
    assert "pkg.jobs" not in sys.modules and str(expdir) not in sys.path


def run_python(expdir, config, name="t"):
    executor = get_executor("python")()
    return executor.run(TaskContext(1, 1, 1, name, expdir, expdir, config=config))


def test_python_run_calls_with_kwargs_and_the_task(expdir):
    assert run_python(expdir, {"function": "pkg.jobs:scale", "kwargs": {"x": 4}}) == {"y": 8}
    assert run_python(expdir, {"function": "pkg.jobs:with_task", "kwargs": {"n": 5}}, name="job") == {
        "value": ["job", 5]}
    assert run_python(expdir, {"function": "pkg.jobs:opaque", "kwargs": {}}) is None


def test_python_validation_resolves_the_expdirs_module_not_an_imported_one(tmp_path):
    import json
    import sys

    (tmp_path / "json.py").write_text("def mine():\n    return 1\n")
    config = get_executor("python").validate({"function": "json:mine"}, context(tmp_path))
    assert config["function"] == "json:mine"
    assert sys.modules["json"] is json  # the real one is back


def test_python_run_uses_the_code_folders_module_even_if_the_name_is_taken(tmp_path):
    import sys

    (tmp_path / "json.py").write_text("def mine():\n    return 'expdir json'\n")
    real = sys.modules["json"]
    try:
        assert run_python(tmp_path, {"function": "json:mine", "kwargs": {}}) == {"value": "expdir json"}
    finally:
        sys.modules["json"] = real
