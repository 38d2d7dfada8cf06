"""Errors rendered once: JSON under ``/api/``, an HTML page elsewhere.

:class:`ApiError` is the UI's own error (bad query parameter, refused CSRF token, refused path);
:class:`mlcomp.errors.MlcompError` raised by queries or control functions keeps its ``http_status``;
Werkzeug's HTTP errors (404 of an unknown route, 405) are rendered the same way, and a database
that cannot be reached for now is a 503.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from mlcomp.db.outage import transient
from mlcomp.errors import MlcompError

__all__ = ["ApiError", "init_app", "wants_json"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the UI refuses: ``status`` is the HTTP status, the message says what was wrong
    and what is allowed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def wants_json() -> bool:
    """True for API requests (path under ``/api/``), which get JSON errors."""
    return request.path.startswith("/api/")


def render_error(status: int, kind: str, message: str):
    """The response for an error: ``{"error": {"status", "type", "message"}}`` on the API, the
    ``errors/error.html`` page otherwise."""
    if wants_json():
        response = jsonify(error={"status": status, "type": kind, "message": message})
    else:
        response = render_template("errors/error.html", status=status, kind=kind, message=message)
    return response, status


def _mlcomp_error(e: MlcompError):
    return render_error(e.http_status, type(e).__name__, str(e))


def _api_error(e: ApiError):
    return render_error(e.status, "ApiError", str(e))


def _http_error(e: HTTPException):
    response, status = render_error(e.code or 500, e.name, e.description or e.name)
    # the error's own headers, e.g. Retry-After of a 429 (werkzeug's TooManyRequests)
    return response, status, [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]


def _store_error(e: SQLAlchemyError):
    if not transient(e):
        raise e  # a bug: Flask's own 500 handling and its log
    log.warning("UI: %s %s: the database is unreachable (%s)", request.method, request.path, type(e).__name__)
    response, status = render_error(503, "StoreUnavailable", "the database is unreachable for now; try again in a "
                                    "few seconds (no work is lost meanwhile)")
    return response, status, [("Retry-After", "5")]


def init_app(app: Flask) -> None:
    """Registers the error handlers; a request that finds the database unreachable gets a 503
    with ``Retry-After`` (:mod:`mlcomp.db.outage`)."""
    app.register_error_handler(SQLAlchemyError, _store_error)
    app.register_error_handler(MlcompError, _mlcomp_error)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
