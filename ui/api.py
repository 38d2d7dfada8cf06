"""What the API shares across blueprints: the OpenAPI document, the index of endpoints, and
:func:`control_response`, the one way a POST runs a control function."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

from flask import Blueprint, jsonify, request

from ui.db import commit, writer
from ui.errors import ApiError

__all__ = ["bp", "openapi", "control_response", "json_body"]

bp = Blueprint("api", __name__)
OPENAPI = Path(__file__).with_name("openapi.json")


@functools.cache
def openapi() -> dict[str, Any]:
    """The OpenAPI 3 document of the API (``ui/openapi.json``)."""
    return json.loads(OPENAPI.read_text(encoding="utf-8"))


@bp.get("/api/openapi.json")
def openapi_json():
    """Serves the OpenAPI document."""
    return jsonify(openapi())


@bp.get("/api/")
def index():
    """The API's paths and their summaries."""
    return jsonify(paths={path: sorted({op.get("summary", "") for op in item.values() if isinstance(op, dict)})
                          for path, item in openapi()["paths"].items()})


def json_body() -> dict[str, Any]:
    """The request's JSON object (an empty dict for an empty body or a form post).

    Raises:
        ApiError: 400 when the body is not a JSON object.
    """
    if not request.data or not request.is_json:
        return dict(request.form)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError("request body: expected a JSON object, e.g. {\"from\": \"last\"}")
    return body


def control_response(action: Callable[..., Any], *args, **kwargs):
    """Runs ``action(session, *args, **kwargs)`` (a :mod:`mlcomp.control` function) in a writer
    transaction, commits, and answers ``{"tasks": [{id, name, status, attempt}]}`` with the tasks
    it changed. MlcompErrors (404 unknown id, 409 wrong state) propagate to the error handler."""
    result = action(writer(), *args, **kwargs)
    tasks = result if isinstance(result, list) else [result]
    body = {"tasks": [{"id": t.id, "name": t.name, "status": t.status.value, "attempt": t.attempt}
                      for t in tasks]}
    commit()
    return jsonify(body)
