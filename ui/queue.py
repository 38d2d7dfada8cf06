"""The queue page: the waiting tasks in the order the supervisor will run them (position,
priority, project, request and why each waits) and each project's GPU-hours over the last day
(hourly) and the last week (daily)."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, current_app

from mlcomp.db import utcnow
from mlcomp.supervisor.queue import queue as waiting
from mlcomp.usage import WINDOWS, gpu_hours
from ui import plots
from ui.db import get_session
from ui.views import twin

__all__ = ["bp"]

bp = Blueprint("queue", __name__)


def _figures(context: dict) -> dict:
    return {"figures": {window: plots.gpu_hours(usage) for window, usage in context["usage"].items()}}


@twin(bp, "/queue", "queue/queue.html", page_extra=_figures)
def queue() -> dict:
    """``{"queue": [QueueEntry as a dict, first to run first], "usage": {"day", "week":
    Usage as a dict}}`` (:func:`mlcomp.supervisor.queue.queue`, :func:`mlcomp.usage.gpu_hours`)."""
    session, now = get_session(), utcnow()
    entries = waiting(session, current_app.config["MLCOMP_SETTINGS"], now)
    return {"queue": [dataclasses.asdict(e) for e in entries],
            "usage": {window: gpu_hours(session, now, window).as_dict() for window in WINDOWS}}
