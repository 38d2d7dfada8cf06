"""The models page: registered models (MLComp's "model add") with a button per pipe of their
project that starts a DAG for the model (MLComp's "start pipe"), and the registered pipes;
its ``/api/`` twin and the start command (:mod:`mlcomp.model_registry`)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from mlcomp import model_registry
from mlcomp.db import Model
from mlcomp.errors import NotFoundError
from ui import queries
from ui.api import json_body
from ui.db import commit, get_session, writer
from ui.errors import ApiError
from ui.views import twin

__all__ = ["bp"]

bp = Blueprint("models", __name__)


@twin(bp, "/models", "models/models.html")
def models() -> dict:
    """The models, newest first, each with the pipes it can run through, and the pipes:
    ``?project=`` keeps one project's."""
    session, project = get_session(), request.args.get("project") or None
    models = [{**m, "created": queries.iso(m["created"])} for m in model_registry.list_models(session, project)]
    pipes = [{**p, "updated": queries.iso(p["updated"])} for p in model_registry.list_pipes(session, project)]
    return {"models": models, "pipes": pipes}


@bp.post("/api/models/<int:model_id>/start")
def start(model_id: int):
    """Starts a DAG from the pipe named by the body's ``pipe`` for model ``model_id``
    (:func:`mlcomp.model_registry.start_model`); answers ``{"dag", "name", "tasks"}`` with the
    new DAG's tasks."""
    session = writer()
    model = session.get(Model, model_id)
    if model is None:
        raise NotFoundError(f"model {model_id} does not exist")
    pipe = json_body().get("pipe")
    if not isinstance(pipe, str) or not pipe:
        raise ApiError("pipe: expected the name of a pipe of the model's project")
    dag = model_registry.start_model(session, model.name, pipe, model.project.name)
    answer = {"dag": dag.id, "name": dag.name, "tasks": [{"id": t.id, "name": t.name, "status": t.status.value,
                                                          "attempt": t.attempt} for t in dag.tasks]}
    commit()
    return jsonify(answer)
