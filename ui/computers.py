"""The computers page: GPUs with memory and utilisation, CPU and RAM use, heartbeat age, the
tasks running on each computer, and the resource history (:mod:`mlcomp.worker.resources`)."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.orm import Session

from mlcomp.db import Computer
from mlcomp.errors import NotFoundError
from mlcomp.worker.resources import RETENTION, resource_history
from ui import plots, queries
from ui.db import get_session
from ui.views import int_arg, twin

__all__ = ["bp", "history_body"]

bp = Blueprint("computers", __name__)
MAX_POINTS = 600  # per series: a week in 17-minute buckets, as wide as a plot is


@twin(bp, "/computers", "computers/computers.html")
def computers() -> dict:
    """Every computer and what runs on it; ``alive`` is False when the heartbeat is older than
    the settings' ``heartbeat_ttl``; ``?window=`` is the seconds of resource history the page
    plots (default an hour)."""
    body = queries.list_computers(get_session())
    body["window"] = _window()
    ttl = current_app.config["MLCOMP_SETTINGS"].heartbeat_ttl
    for computer in body["computers"]:
        age = computer["heartbeat_age"]
        computer["alive"] = age is not None and age <= ttl
    body["heartbeat_ttl"] = ttl
    return body


def history_body(session: Session, start: int, end: int, **scope) -> dict:
    """``{"start", "end" (Unix seconds), "series"}`` and with ``?figures=1`` the ``figures``:
    the resource history of ``computer=`` or ``task_id=`` over ``[start, end]``, at most
    :data:`MAX_POINTS` per series."""
    series = resource_history(session, start=start, end=end, now=int(time.time()), max_points=MAX_POINTS, **scope)
    body = {"start": start, "end": end, "series": series}
    if request.args.get("figures"):
        body["figures"] = plots.resource_figures(series)
    return body


@bp.get("/api/computers/<computer>/resources")
def resources(computer: str):
    """The computer's CPU, RAM and GPU history over the last ``?window=`` seconds (default an
    hour, at most the longest retention)."""
    session = get_session()
    if session.get(Computer, computer) is None:
        raise NotFoundError(f"computer {computer!r} does not exist")
    end = int(time.time())
    return jsonify({"computer": computer, **history_body(session, end - _window(), end, computer=computer)})


def _window() -> int:
    return int_arg("window", 3600, lo=60, hi=RETENTION[600])
