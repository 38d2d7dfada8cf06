"""The import graph between packages: arrows point one way. Executors import neither the store nor
the worker, and no two packages import each other, even through others (every ``import`` in the
source counts, also one inside a function)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mlcomp", "executors", "ui")


def unit(module: str) -> str | None:
    """The package a module belongs to, at the level the layering is about: ``executors``,
    ``ui``, ``mlcomp.<subpackage>`` or ``mlcomp.<module>``; None outside the project."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    return ".".join(parts[:2]) if parts[0] == "mlcomp" and len(parts) > 1 else parts[0]


def imports(path: Path, module: str) -> set[str]:
    """The project modules ``path`` (module ``module``) imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if unit(name) is not None}


def graph() -> nx.DiGraph:
    """Units → the units they import."""
    edges = nx.DiGraph()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            source = unit(module)
            edges.add_node(source)
            for name in imports(path, module):
                target = unit(name)
                if target != source and not (target == "mlcomp" and name.count(".") == 0):
                    edges.add_edge(source, target, module=module, name=name)
    return edges


ORCHESTRATOR = ("mlcomp.db", "mlcomp.worker", "mlcomp.supervisor", "mlcomp.control", "mlcomp.lifecycle")


def test_executors_import_neither_the_store_nor_the_worker_even_through_others():
    edges = graph()
    bad = [nx.shortest_path(edges, "executors", t) for t in ORCHESTRATOR
           if t in edges and nx.has_path(edges, "executors", t)]
    assert bad == []


def test_no_import_cycles_between_packages():
    edges = graph()
    cycles = [[(a, edges.edges[a, b]["module"], b) for a, b in zip(c, c[1:] + c[:1])]
              for c in nx.simple_cycles(edges)]
    assert cycles == []


WORKER_MODULES = ("mlcomp.cli.worker", "mlcomp.worker.worker")
"""What ``mlcomp worker`` imports before it runs (its command's module and the worker's)."""
NOT_IN_A_WORKER = ("torch", "flask", "plotly", "optuna", "celery", "networkx", "numpy", "pandas", "alembic",
                   "pathspec")
"""Packages an idle worker never uses: each costs megabytes of RSS on every GPU machine."""


def test_the_worker_imports_no_heavy_package_and_no_alembic_at_head(tmp_path):
    from mlcomp.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'mlcomp.db'}"
    engine = make_engine(url)
    upgrade(engine)  # at head: opening it must not need Alembic
    engine.dispose()
    code = ("import importlib, sys\n"
            f"for name in {WORKER_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "from mlcomp.db import open_store\n"
            "from mlcomp.settings import Settings\n"
            "open_store(Settings.from_env())\n"
            "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))\n")
    env = {**os.environ, "MLCOMP_ROOT": str(tmp_path), "MLCOMP_DB_URL": url}
    env.pop("MLCOMP_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"mlcomp", "sqlalchemy", "psutil"} <= loaded  # the probe ran
    assert sorted(loaded & set(NOT_IN_A_WORKER)) == []


RUNNER = "mlcomp.runner"
RUNNER_MODULES = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
                  for path in (ROOT / "mlcomp" / "runner").rglob("*.py")}

LAZY_OWN_IMPORTS: dict[tuple[str, str], str] = {}
"""Function-level imports of mlcomp's own modules inside ``mlcomp/runner`` that are allowed, (module,
imported module) → why. Only an import that closes no cycle may be here (a test checks it): one
that keeps start-up cheap. None is needed today: importing any module of the runner imports the
``mlcomp.runner`` package, and with it torch."""

PENDING_CYCLE_BREAKERS: dict[tuple[str, str], str] = {}
"""The cycle-breaking function-level imports still to remove (issue 22); the list only shrinks."""


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    """The project modules an import statement of ``module`` loads: for ``from a import b``, ``a.b``
    when it is a module of the runner, else ``a``; never the packages above ``module`` (Python
    initialises them before ``module``)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")[:len(module.split(".")) - node.level + is_package]
            base = ".".join(parts + ([base] if base else []))
        names = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in RUNNER_MODULES else base for alias in node.names}
    loaded = set()
    for name in names:
        parts = name.split(".")
        loaded.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))  # a.b.c loads a.b too
    ancestors = {".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)}
    return {name for name in loaded - ancestors - {module} if unit(name) is not None}


def runner_imports() -> tuple[nx.DiGraph, list[tuple[str, int, str]]]:
    """The runner's modules → the runner modules they import as they load (module-level statements,
    class bodies included), and every function-level import of one of mlcomp's own modules inside
    ``mlcomp/runner`` as ``(module, line, imported)``. Registries and ``mlcomp.runner``'s PEP 562
    attributes name their lazily loaded defaults by module path (``importlib.import_module``);
    those are data, not import statements, and are not counted."""
    edges, lazy = nx.DiGraph(), []
    for module, path in RUNNER_MODULES.items():
        edges.add_node(module)

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for name in _imported(child, module, path.name == "__init__.py"):
                        if in_function:
                            lazy.append((module, child.lineno, name))
                        elif name in RUNNER_MODULES:
                            edges.add_edge(module, name, line=child.lineno)
                visit(child, inside)

        visit(ast.parse(path.read_text(), str(path)), False)
    return edges, lazy


def test_no_import_cycles_inside_the_runner():
    edges, _ = runner_imports()
    cycles = [[(a, edges.edges[a, b]["line"], b) for a, b in zip(c, c[1:] + c[:1])] for c in nx.simple_cycles(edges)]
    assert cycles == []


def test_the_runner_imports_its_own_modules_at_the_top():
    """No function-level import of mlcomp's modules breaks a cycle inside the runner: each is either
    allowed (and closes no cycle) or a pending cycle-breaker, and every listed one still exists."""
    edges, lazy = runner_imports()
    found = {(module, name) for module, _, name in lazy if name in RUNNER_MODULES or not name.startswith(RUNNER)}
    listed = {**LAZY_OWN_IMPORTS, **PENDING_CYCLE_BREAKERS}
    assert sorted((m, line, n) for m, line, n in lazy if (m, n) not in listed) == []
    assert sorted(set(listed) - found) == []  # remove entries that are gone
    for module, name in LAZY_OWN_IMPORTS:
        assert name not in edges or not nx.has_path(edges, name, module), (module, name)
