"""Presentation helpers shared by the blueprints: the page/API twin decorator, Jinja filters,
request-argument parsing, and the route that serves plotly.js from the installed ``plotly`` package.
"""
from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Callable

from flask import Blueprint, Flask, jsonify, render_template, request, send_from_directory, url_for
from markupsafe import Markup
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound
from werkzeug.routing import IntegerConverter

from mlcomp.kinds import TaskKind
from ui.errors import ApiError

__all__ = ["twin", "int_arg", "choice_arg", "url_with_args", "duration", "highlight", "pygments_css", "init_app", "MAX_INT"]

MAX_INT = 2 ** 31 - 1
"""The largest id or count a URL or query argument may carry (the store's integer columns)."""


class BoundedInt(IntegerConverter):
    """``<int:…>`` in URL rules, at most :data:`MAX_INT`: a larger id matches no route (404)
    instead of overflowing the database driver."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)


def twin(bp: Blueprint, rule: str, template: str, page_extra: Callable[[dict], dict] | None = None):
    """Registers a view twice: ``rule`` renders ``template`` with the view's dict, and
    ``/api`` + ``rule`` returns the same dict as JSON (endpoint ``<name>_api``).

    Args:
        bp: the blueprint.
        rule: the page's URL rule, e.g. ``/dags/<int:dag_id>``.
        template: the page's template, e.g. ``dags/dag.html``.
        page_extra: called with the view's dict for the page only, returning extra template values
            (things the API serves at their own endpoint, such as a log tail).
    """

    def decorate(view: Callable[..., dict]):
        @functools.wraps(view)
        def page(**kwargs):
            context = view(**kwargs)
            extra = page_extra(context) if page_extra else {}
            return render_template(template, **context, **extra)

        def api(**kwargs):
            return jsonify(view(**kwargs))

        bp.add_url_rule(rule, view.__name__, page, methods=["GET"])
        bp.add_url_rule("/api" + rule, view.__name__ + "_api", api, methods=["GET"])
        return view

    return decorate


def int_arg(name: str, default: int | None = None, *, lo: int = 0, hi: int = MAX_INT) -> int | None:
    """The query argument ``name`` as an int in ``[lo, hi]`` (``hi`` at most :data:`MAX_INT`).

    Raises:
        ApiError: 400 naming the argument, its value and the allowed range.
    """
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lo or value > hi:
        allowed = f"an integer ≥ {lo} and ≤ {hi}"
        raise ApiError(f"query argument {name}={raw!r}: expected {allowed}")
    return value


def choice_arg(name: str, choices: tuple[str, ...], default: str) -> str:
    """The query argument ``name``, one of ``choices``.

    Raises:
        ApiError: 400 naming the argument, its value and the choices.
    """
    value = request.args.get(name) or default
    if value not in choices:
        raise ApiError(f"query argument {name}={value!r}: expected one of {', '.join(choices)}")
    return value


def url_with_args(endpoint: str, _anchor: str | None = None, **values) -> str:
    """``url_for(endpoint)`` with the request's query arguments, ``values`` replacing theirs (a
    pager's ``page``, a page's URL parts such as ``dag_id``). Arguments whose name starts with
    ``_`` are dropped: ``url_for`` would read them as its own options (``_external``, …)."""
    args = {k: v for k, v in request.args.items() if not k.startswith("_")}
    args.update(values)
    return url_for(endpoint, _anchor=_anchor, **args)


def duration(seconds: float | None) -> str:
    """``3725`` → ``"1h 2m"``, ``42.5`` → ``"42s"``; ``None`` → ``"–"``."""
    if seconds is None:
        return "–"
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def filesize(size: float | None) -> str:
    """Bytes as a short human size: ``2048`` → ``"2.0 KiB"``."""
    if size is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def timestamp(value: str | None) -> str:
    """An ISO timestamp shown as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if not value:
        return "–"
    return dt.datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


_FORMATTER = HtmlFormatter(cssclass="highlight", linenos="table")


def highlight(text: str, filename: str) -> Markup:
    """``text`` as syntax-highlighted HTML (Pygments; the lexer is chosen by ``filename``, plain
    text when none fits). Pygments escapes the text."""
    try:
        lexer = get_lexer_for_filename(filename, stripnl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False)
    return Markup(pygments_highlight(text, lexer, _FORMATTER))


def pygments_css() -> str:
    """The stylesheet for :func:`highlight`'s HTML."""
    return _FORMATTER.get_style_defs(".highlight")


def _plotly_dir() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data"


def vendor_plotly():
    """Serves ``plotly.min.js`` from the installed plotly package (no copy, no CDN)."""
    return send_from_directory(_plotly_dir(), "plotly.min.js", max_age=86400)


def init_app(app: Flask) -> None:
    """Registers the filters, the ``url_with_args`` and ``TaskKind`` (:class:`mlcomp.kinds.TaskKind`,
    the composite task kinds the templates link to) template globals, the
    ``/static/vendor/plotly.min.js`` and ``/static/pygments.css`` routes, and bounds ``<int:…>`` URL parts (:class:`BoundedInt`)."""
    app.url_map.converters["int"] = BoundedInt
    app.jinja_env.filters.update(duration=duration, filesize=filesize, timestamp=timestamp,
                                 highlight=highlight)
    app.jinja_env.globals["url_with_args"] = url_with_args
    app.jinja_env.globals["TaskKind"] = TaskKind
    app.add_url_rule("/static/vendor/plotly.min.js", "vendor_plotly", vendor_plotly)
    app.add_url_rule("/static/pygments.css", "pygments_css",
                     lambda: (pygments_css(), 200, {"Content-Type": "text/css"}))


