"""DAG pages: the paged, filtered list and a DAG's graph, tasks, YAML and code snapshot; their
``/api/`` twins; the DAG stop/resume commands and its editable tags and note."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from mlcomp import control
from ui import plots, queries
from ui.api import control_response, json_body
from ui.db import commit, get_session, writer
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
    """The DAG list: ``?project=&status=&name=&tag=&page=&per_page=``."""
    status = request.args.get("status") or None
    if status and status not in queries.STATUSES:
        raise ApiError(f"query argument status={status!r}: expected one of {', '.join(queries.STATUSES)}")
    return queries.list_dags(
        get_session(), project=request.args.get("project") or None, status=status,
        name=request.args.get("name") or None, tag=request.args.get("tag") or None, page=int_arg("page", 1, lo=1),
        per_page=int_arg("per_page", current_app.config["PAGE_SIZE"], lo=1, hi=500))


@twin(bp, "/dags/<int:dag_id>", "dags/dag.html", page_extra=lambda _: {"statuses": queries.STATUSES})
def dag(dag_id: int) -> dict:
    """A DAG: status, its own tasks (a grid search's cells summarised by status), graph figure,
    one page of its cells (``?page=&per_page=&cell_status=``), YAML, snapshot file list."""
    status = request.args.get("cell_status") or None
    if status and status not in queries.STATUSES:
        raise ApiError(f"query argument cell_status={status!r}: expected one of {', '.join(queries.STATUSES)}")
    detail = queries.dag_detail(
        get_session(), dag_id, cell_status=status, page=int_arg("page", 1, lo=1),
        per_page=int_arg("per_page", current_app.config["PAGE_SIZE"], lo=1, hi=500))
    detail["graph"] = plots.dag_graph(detail["tasks"])
    return detail


@twin(bp, "/dags/<int:dag_id>/files/<path:path>", "dags/file.html")
def snapshot_file(dag_id: int, path: str) -> dict:
    """One file of the DAG's code snapshot (highlighted on the page, raw text in the API)."""
    return queries.snapshot_file(get_session(), dag_id, path)


MAX_TAGS, MAX_TAG, MAX_NOTE = 20, 50, 10_000


def _tags(value) -> list[str]:
    """Tags from a JSON list or a comma-separated string, stripped, without empties or repeats."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ApiError("tags: expected a list of strings or a comma-separated string")
    tags = list(dict.fromkeys(t.strip() for t in value if t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG for t in tags):
        raise ApiError(f"tags: at most {MAX_TAGS} tags of at most {MAX_TAG} characters each")
    return tags


@bp.post("/api/dags/<int:dag_id>/meta")
def meta(dag_id: int):
    """Sets the DAG's ``tags`` (a list or comma-separated string) and/or ``note`` (text); a key
    left out keeps its value. Answers ``{"id", "tags", "note"}``."""
    session = writer()
    body = json_body()
    dag = queries.get_dag_or_404(session, dag_id)
    if "tags" in body:
        dag.tags = _tags(body["tags"])
    if "note" in body:
        if not isinstance(body["note"], str) or len(body["note"]) > MAX_NOTE:
            raise ApiError(f"note: expected text of at most {MAX_NOTE} characters")
        dag.note = body["note"].strip() or None
    answer = {"id": dag.id, "tags": list(dag.tags or []), "note": dag.note or ""}
    commit()
    return jsonify(answer)


@bp.post("/api/dags/<int:dag_id>/stop")
def stop(dag_id: int):
    """Stops every unfinished task of the DAG (:func:`mlcomp.control.stop_dag`)."""
    return control_response(control.stop_dag, dag_id)


@bp.post("/api/dags/<int:dag_id>/resume")
def resume(dag_id: int):
    """Resumes the DAG's failed, stopped and skipped tasks (:func:`mlcomp.control.resume_dag`)."""
    return control_response(control.resume_dag, dag_id)
