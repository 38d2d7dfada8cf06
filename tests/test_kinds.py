"""The composite task kinds (mlcomp.kinds) and their drivers (mlcomp.search.drivers): each kind
spelled once, every kind driven, the tick's drivers called in order with their own kind's ids."""
import datetime as dt
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlcomp.kinds import COMPOSITE_KINDS, TaskKind, is_composite
from mlcomp.search import drivers
from mlcomp.search.drivers import DRIVERS, CompositeDriver, advance_all

ROOT = Path(__file__).resolve().parent.parent


def test_a_kind_is_its_stored_string():
    assert TaskKind.GRID == "grid_search" and TaskKind.SEARCH == "search"
    assert (f"{TaskKind.GRID}", str(TaskKind.SEARCH)) == ("grid_search", "search")
    assert TaskKind("grid_search") is TaskKind.GRID and TaskKind.GRID in {"grid_search"}
    assert COMPOSITE_KINDS == {"grid_search", "search"}
    assert is_composite("search") and is_composite(TaskKind.GRID)
    assert not any(map(is_composite, ["train", "bash", None, "Search"]))


@pytest.mark.parametrize("kind", list(TaskKind))
def test_each_kind_is_spelled_once_in_the_source(kind):
    """``"grid_search"`` anywhere, and ``"search"`` compared with a type or given to a constant (it
    is also the ``search:`` key of a DAG file and of a stored config), only in mlcomp/kinds.py."""
    quoted = rf"""(?P<q>["']){re.escape(kind.value)}(?P=q)"""
    compared_or_named = rf"(type\s*(==|!=|in\W*)\s*|^\s*[A-Z_][A-Z0-9_]*\s*=\s*){quoted}"
    spelled = re.compile(quoted if kind is TaskKind.GRID else compared_or_named)
    places = [f"{path.relative_to(ROOT)}:{n}" for package in ("mlcomp", "executors", "ui", "bench")
              for path in sorted((ROOT / package).rglob("*")) if path.suffix in (".py", ".html", ".js")
              for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if spelled.search(line)]
    assert places == [f"mlcomp/kinds.py:{_line_of(kind)}"]


def _line_of(kind: TaskKind) -> int:
    lines = (ROOT / "mlcomp" / "kinds.py").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.strip() == f'{kind.name} = "{kind.value}"')


def test_every_kind_has_one_driver_in_order():
    assert list(DRIVERS) == [TaskKind.GRID, TaskKind.SEARCH]
    assert all(driver.kind is kind for kind, driver in DRIVERS.items())


def test_advance_all_gives_each_driver_its_own_kinds_ids_in_order(monkeypatch):
    calls = []

    def step(name):
        def run(session, now, ids):
            calls.append((name, list(ids)))
            return len(ids)
        return run

    monkeypatch.setattr(drivers, "DRIVERS", {kind: CompositeDriver(kind, step(kind.value)) for kind in TaskKind})
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    active = [SimpleNamespace(id=i, type=t) for i, t in
              [(1, "train"), (2, "search"), (3, "grid_search"), (4, "bash"), (5, "grid_search")]]
    assert advance_all("session", now, active) == 3
    assert calls == [("grid_search", [3, 5]), ("search", [2])]
    calls.clear()
    assert advance_all("session", now, []) == 0
    assert calls == [("grid_search", []), ("search", [])]  # each driver reads nothing for no ids
