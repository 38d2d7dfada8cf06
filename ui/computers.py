"""The computers page: GPUs with memory and utilisation, CPU and RAM use, heartbeat age and the
tasks running on each computer."""
from __future__ import annotations

from flask import Blueprint, current_app

from ui import queries
from ui.db import get_session
from ui.views import twin

__all__ = ["bp"]

bp = Blueprint("computers", __name__)


@twin(bp, "/computers", "computers/computers.html")
def computers() -> dict:
    """Every computer and what runs on it; ``alive`` is False when the heartbeat is older than
    the settings' ``heartbeat_ttl``."""
    body = queries.list_computers(get_session())
    ttl = current_app.config["MLCOMP_SETTINGS"].heartbeat_ttl
    for computer in body["computers"]:
        age = computer["heartbeat_age"]
        computer["alive"] = age is not None and age <= ttl
    body["heartbeat_ttl"] = ttl
    return body
