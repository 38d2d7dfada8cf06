"""The grid-search page: a leaderboard of the cells sortable by the metric, and a
parallel-coordinates plot of parameters against it."""
from __future__ import annotations

from flask import Blueprint, request

from ui import plots, queries
from ui.db import get_session
from ui.errors import ApiError
from ui.views import twin

__all__ = ["bp"]

bp = Blueprint("grid", __name__)

_BOOL = {"1": True, "true": True, "0": False, "false": False}


def _flag(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() not in _BOOL:
        raise ApiError(f"query argument {name}={raw!r}: expected true or false")
    return _BOOL[raw.lower()]


@twin(bp, "/grid/<int:task_id>", "grid/grid.html")
def grid(task_id: int) -> dict:
    """Leaderboard of grid search ``task_id``: ``?metric=&loader=&minimize=&sort=asc|desc``."""
    sort = request.args.get("sort") or None
    if sort not in (None, "asc", "desc"):
        raise ApiError(f"query argument sort={sort!r}: expected 'asc' or 'desc'")
    board = queries.grid_leaderboard(
        get_session(), task_id, metric=request.args.get("metric") or None,
        loader=request.args.get("loader") or None, minimize=_flag("minimize"),
        descending=None if sort is None else sort == "desc")
    board["figure"] = plots.parallel_coordinates(board)
    return board
