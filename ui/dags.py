"""DAG pages: the paged, filtered list and a DAG's graph, tasks, YAML and code snapshot; their
``/api/`` twins; and the DAG stop/resume commands."""
from __future__ import annotations

from flask import Blueprint, current_app, redirect, request, url_for

from mlcomp import control
from ui import plots, queries
from ui.api import control_response
from ui.db import get_session
from ui.errors import ApiError
from ui.views import int_arg, twin

__all__ = ["bp"]

bp = Blueprint("dags", __name__)


@bp.get("/")
def index():
    """The home page is the DAG list."""
    return redirect(url_for("dags.dags"))


@twin(bp, "/dags", "dags/list.html")
def dags() -> dict:
    """The DAG list: ``?project=&status=&name=&page=&per_page=``."""
    status = request.args.get("status") or None
    if status and status not in queries.STATUSES:
        raise ApiError(f"query argument status={status!r}: expected one of {', '.join(queries.STATUSES)}")
    return queries.list_dags(
        get_session(), project=request.args.get("project") or None, status=status,
        name=request.args.get("name") or None, page=int_arg("page", 1, lo=1),
        per_page=int_arg("per_page", current_app.config["PAGE_SIZE"], lo=1, hi=500))


@twin(bp, "/dags/<int:dag_id>", "dags/dag.html")
def dag(dag_id: int) -> dict:
    """A DAG: status, task table, graph figure, YAML, snapshot file list."""
    detail = queries.dag_detail(get_session(), dag_id)
    detail["graph"] = plots.dag_graph(detail["tasks"])
    return detail


@twin(bp, "/dags/<int:dag_id>/files/<path:path>", "dags/file.html")
def snapshot_file(dag_id: int, path: str) -> dict:
    """One file of the DAG's code snapshot (highlighted on the page, raw text in the API)."""
    return queries.snapshot_file(get_session(), dag_id, path)


@bp.post("/api/dags/<int:dag_id>/stop")
def stop(dag_id: int):
    """Stops every unfinished task of the DAG (:func:`mlcomp.control.stop_dag`)."""
    return control_response(control.stop_dag, dag_id)


@bp.post("/api/dags/<int:dag_id>/resume")
def resume(dag_id: int):
    """Resumes the DAG's failed, stopped and skipped tasks (:func:`mlcomp.control.resume_dag`)."""
    return control_response(control.resume_dag, dag_id)
