"""Who may use the UI, and what a request may touch.

- :func:`check_bind`: listening beyond loopback without a token is refused (DESIGN §8).
- :func:`host_allowed`: without a token only loopback ``Host`` names are served (``127.0.0.1``,
  ``localhost``, ``[::1]``, with a port), so a web page cannot read the server through DNS
  rebinding (its requests carry the attacker's host name); with a token ``allowed_hosts`` decides.
- With ``settings.token`` every page and API call is authenticated: API clients send
  ``Authorization: Bearer <token>``; browsers log in once (``/login``) and carry a session cookie
  signed with a key derived from the token (so changing the token logs everybody out). Tokens are
  compared with :func:`hmac.compare_digest`.
- CSRF: a state-changing request (POST, PUT, PATCH, DELETE) that is not bearer-authenticated must
  carry the session's CSRF token in the ``X-CSRF-Token`` header or a ``csrf_token`` form field
  (the synchronizer-token pattern of the OWASP CSRF cheat sheet). This holds without a token too:
  a web page must not be able to stop your tasks through your browser.
- :func:`confined_path`: downloads stay inside a task's folder (no ``..``, no absolute path, no
  symlink leading out).
- Every response carries a Content-Security-Policy without inline scripts, and refuses framing.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, current_app, redirect, request, session, url_for

from mlcomp.errors import ConfigError
from ui.errors import ApiError

__all__ = [
    "check_bind",
    "is_loopback",
    "host_allowed",
    "secret_key",
    "bearer_ok",
    "csrf_token",
    "confined_path",
    "init_app",
]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "vendor_plotly", "pygments_css"})


def is_loopback(host: str) -> bool:
    """True when ``host`` (``localhost``, an IPv4 or IPv6 address, ``[::1]``) is a loopback
    address; ``0.0.0.0``, ``::`` and names other than ``localhost`` are not."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuses to serve beyond loopback without a token.

    Raises:
        ConfigError: ``host`` is not a loopback address and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"host {host!r} is reachable from other machines: set a token (MLCOMP_TOKEN or 'token' in "
            "config.yml) or listen on 127.0.0.1"
        )


def host_allowed(host: str, token: str | None, allowed_hosts=("*",)) -> bool:
    """Whether a request's ``Host`` header (``name`` or ``name:port``, ``[::1]:4201``) may be
    served: without ``token`` only loopback names; with it a name in ``allowed_hosts`` (compared
    without case; ``*`` allows any)."""
    try:
        parts = urlsplit(f"//{host}")
        name, _ = parts.hostname, parts.port  # .port raises ValueError for a port that is not a number
    except ValueError:
        return False
    if not name or any(c.isspace() or ord(c) < 32 for c in host):
        return False
    if not token:
        return name in LOOPBACK_NAMES
    return "*" in allowed_hosts or name in {h.lower().strip("[]") for h in allowed_hosts}


def secret_key(token: str | None) -> bytes:
    """The session-signing key: derived from ``token`` (stable across restarts and processes, and
    changed with the token), else random for this process."""
    if not token:
        return os.urandom(32)
    return hashlib.sha256(b"mlcomp-ui-session:" + token.encode()).digest()


def bearer_ok(token: str | None) -> bool:
    """True when the request carries ``Authorization: Bearer <token>`` with the right token."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not token or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def csrf_token() -> str:
    """The session's CSRF token, created on first use (put it in forms and the JS header)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    expected = session.get("csrf")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _token() -> str | None:
    return current_app.config["MLCOMP_SETTINGS"].token


def _guard():
    token = _token()
    settings = current_app.config["MLCOMP_SETTINGS"]
    if not host_allowed(request.host, token, settings.allowed_hosts):
        raise ApiError(f"Host {request.host!r} refused: " + (
            "the server has a token; add the name to the allowed_hosts setting" if token else
            "without a token only 127.0.0.1, localhost and [::1] are served"), 400)
    via_bearer = bearer_ok(token)
    if token and not via_bearer and not session.get("auth") and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.path.startswith("/api/"):
            raise ApiError("authentication required: send 'Authorization: Bearer <token>' or log in", 401)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method in UNSAFE_METHODS and not via_bearer and not _csrf_ok():
        raise ApiError("CSRF token missing or wrong: send the page's token in the X-CSRF-Token header "
                       "or the csrf_token form field", 403)
    return None


def confined_path(base: Path, relative: str) -> Path:
    """``base / relative`` if it stays inside ``base`` once symlinks are resolved.

    Raises:
        ApiError: 403 for an absolute path, a ``..`` part or a symlink leading out of ``base``;
            404 when the file does not exist.
    """
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise ApiError(f"path {relative!r} refused: only paths inside the task's folder", 403)
    root = base.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ApiError(f"path {relative!r} refused: it leads out of the task's folder", 403)
    if not path.is_file():
        raise ApiError(f"file {relative!r} does not exist in the task's folder", 404)
    return path


HEADERS = {
    # scripts only from this server (no inline script: page data travels in data- attributes);
    # plotly.js needs eval for its WebGL traces and inline styles for its layout
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",  # no clickjacking of the stop buttons
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Installs the authentication and CSRF guard, the security headers and the ``csrf_token``
    template global."""
    app.before_request(_guard)
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["auth_enabled"] = lambda: bool(_token())
