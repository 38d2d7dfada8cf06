"""A user's folder never replaces mlcomp's own top-level packages (mlcomp, executors, ui).

setuptools' default editable install (``pip install -e .``) resolves mlcomp's packages with a
meta-path finder placed *after* the PathFinder, so any folder on ``sys.path`` holding
``executors/`` wins over it; a compat editable install or a wheel puts mlcomp's folder on
``sys.path`` instead. Building such installs is too slow for a test, so each check runs a fresh
interpreter whose ``sitecustomize`` (found through ``PYTHONPATH``) turns this checkout's compat
install into the editable finder's situation: the checkout's folder leaves ``sys.path`` and a
finder for the three packages is appended to ``sys.meta_path``, as setuptools' is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlcomp
from mlcomp import pinning

REPO = Path(mlcomp.__file__).resolve().parents[1]

EDITABLE_FINDER = textwrap.dedent("""
    # sitecustomize: this interpreter finds mlcomp as setuptools' editable finder would
    import importlib.util, sys
    ROOT = {root!r}
    sys.path[:] = [p for p in sys.path if p.rstrip("/") != ROOT]

    class EditableFinder:  # after PathFinder, like setuptools' _EditableFinder
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if path is None and name in ("mlcomp", "executors", "ui"):
                return importlib.util.spec_from_file_location(
                    name, f"{{ROOT}}/{{name}}/__init__.py", submodule_search_locations=[f"{{ROOT}}/{{name}}"])
            return None

    sys.meta_path.append(EditableFinder)
""")

PROBE = textwrap.dedent("""
    # probe: where this process's mlcomp, executors and ui come from
    import importlib, json, os, sys


    def origins():
        found = {name: importlib.import_module(name).__file__ for name in ("mlcomp", "executors", "ui")}
        return {"pid": os.getpid(), **found}
""")


@pytest.fixture
def dag_folder(tmp_path):
    """A DAG's code folder with the user's own ``executors``, ``ui`` and ``mlcomp`` packages, each
    of which fails on import, and a ``site`` folder with the editable-finder ``sitecustomize``
    and the probe module; returns (code folder, environment for a fresh interpreter)."""
    code = tmp_path / "code"
    for name in pinning.OWN_PACKAGES:
        (code / name).mkdir(parents=True)
        (code / name / "__init__.py").write_text(f"raise ImportError('the user\\'s {name} was imported')\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(EDITABLE_FINDER.format(root=str(REPO)))
    (site / "probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(site)}
    return code, env


def _python(code: Path, env: dict, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``python -P -c script`` in ``code`` (``-P`` as the worker starts a task's child)."""
    return subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(script)], cwd=code, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _expected(name: str) -> str:
    return str(REPO / name / "__init__.py")


def test_the_simulated_editable_finder_lets_an_appended_user_folder_win(dag_folder):
    """The situation of the report: without pinning, the user's folder wins."""
    code, env = dag_folder
    done = _python(code, env, """
        import importlib.util, os, sys
        sys.path.append(os.getcwd())  # as an expdir import leaves it
        print(importlib.util.find_spec("executors").origin)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(code / "executors" / "__init__.py")


def test_pinned_packages_resolve_to_mlcomps_past_a_user_folder(dag_folder):
    code, env = dag_folder
    done = _python(code, env, """
        import json, os, sys
        from mlcomp.pinning import pin_own_packages
        sys.path.append(os.getcwd())
        pin_own_packages()
        sys.path.insert(0, os.getcwd())  # even first on sys.path
        pin_own_packages()  # a second call changes nothing
        import executors, ui, executors.base
        print(json.dumps([executors.__file__, ui.__file__, executors.base.__file__]))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [_expected("executors"), _expected("ui"), str(REPO / "executors" / "base.py")]


def test_pinning_after_a_user_package_was_imported_names_both_folders(dag_folder):
    code, env = dag_folder
    (code / "executors" / "__init__.py").write_text("")
    done = _python(code, env, """
        import os, sys
        from mlcomp.pinning import pin_own_packages
        sys.path.append(os.getcwd())
        import executors
        pin_own_packages()
    """)
    assert done.returncode == 1
    assert f"'executors' was imported from {code / 'executors' / '__init__.py'}" in done.stderr
    assert f"shadows mlcomp's package at {REPO / 'executors'}" in done.stderr


def test_the_task_child_module_pins_before_importing_executors(dag_folder):
    """Whoever imports the task's child module after a user folder joined sys.path gets mlcomp's
    executors (the worker starts it with ``-P``, so ``mlcomp`` itself comes first)."""
    code, env = dag_folder
    done = _python(code, env, """
        import os, sys
        import mlcomp
        sys.path.append(os.getcwd())
        import mlcomp.worker.child, executors
        print(executors.__file__)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _expected("executors")


def test_an_expdir_holding_executors_and_ui_does_not_replace_mlcomps(dag_folder):
    """``mlcomp run`` (and each of its ``--nproc`` ranks) appends the expdir to sys.path."""
    code, env = dag_folder
    for name in ("executors", "ui"):
        (code / name / "__init__.py").write_text("")  # imports fine: only its location tells
    (code / "__init__.py").write_text("")
    done = _python(code, env, """
        import json, os
        from mlcomp.runner.expdir import import_expdir
        import_expdir(os.getcwd())
        import executors, ui
        print(json.dumps([executors.__file__, ui.__file__]))
    """)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [_expected("executors"), _expected("ui")]


@pytest.mark.slow
def test_launched_ranks_import_mlcomps_packages_with_a_user_folder_on_sys_path(dag_folder):
    """The reported failure: the task's child (main module ``mlcomp.worker.child``, run with
    ``-P``) launches its ranks with the DAG's folder on sys.path (with ``executors/`` and even
    ``mlcomp/``); each rank must get mlcomp's packages, for the function and everything after."""
    code, env = dag_folder
    done = _python(code, env, """
        import importlib.util, json, os, sys
        sys.modules["__main__"].__spec__ = importlib.util.find_spec("mlcomp.worker.child")  # as with -m
        sys.path.append(os.getcwd())
        import probe
        from mlcomp.runner import distributed

        print(json.dumps(distributed.launch(probe.origins, 2, backend="gloo")))
    """)
    assert done.returncode == 0, done.stderr
    origins = json.loads(done.stdout)
    assert {name: origins[name] for name in pinning.OWN_PACKAGES} == {n: _expected(n) for n in pinning.OWN_PACKAGES}


def test_mlcomp_run_ranks_keep_the_working_folder_off_sys_path(dag_folder, tmp_path, monkeypatch, tiny_config):
    """``mlcomp run --nproc`` starts its ranks from the user's folder: the command it hands to
    :func:`~mlcomp.runner.distributed.spawn_processes` must not import from that folder."""
    import yaml

    from mlcomp.cli import main
    from mlcomp.runner import distributed

    code, env = dag_folder
    seen = {}
    monkeypatch.setattr(distributed, "spawn_processes", lambda argv, nprocs: seen.setdefault("argv", argv) and 0)
    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump(tiny_config()))
    with pytest.raises(SystemExit):
        main(["run", "--config", str(config), "--logdir", str(tmp_path / "logs"), "--nproc", "2"])
    argv = seen["argv"]
    interpreter = argv[:argv.index("-c")]
    done = subprocess.run([*interpreter, "-c", "import probe; print(probe.origins())"], cwd=code, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _expected("executors") in done.stdout and _expected("mlcomp") in done.stdout
