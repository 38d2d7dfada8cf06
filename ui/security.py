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
- A path or query argument with a control character (NUL, newline, ...), or a form field or JSON
  string with one other than a tab or a line break, is refused with a 400 before any view runs.
- A browser's login lives on the server too (:func:`logged_in`: its random id in the
  ``ui_session`` table), so logging out revokes every copy of its cookie.
- :class:`Throttle`: a client address that sent ``login_attempts`` failed logins or wrong
  ``Authorization`` headers within ``login_window`` seconds is answered 429 with ``Retry-After``.
- The session cookie is ``Secure`` with the ``cookie_secure`` setting or on a request that came
  over https; behind ``trusted_proxies`` reverse proxies werkzeug's ``ProxyFix`` takes the
  client's address and scheme from their ``X-Forwarded-For`` and ``X-Forwarded-Proto``.
- :func:`confined_path`: downloads stay inside a task's folder (no ``..``, no absolute path, no
  symlink leading out).
- Every response carries a Content-Security-Policy without inline scripts, and refuses framing.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from flask import Flask, current_app, has_request_context, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from mlcomp.db import UiSession, utcnow
from mlcomp.errors import ConfigError
from mlcomp.names import control_character
from ui.errors import ApiError

__all__ = [
    "check_bind",
    "is_loopback",
    "host_allowed",
    "secret_key",
    "bearer_ok",
    "csrf_token",
    "confined_path",
    "Throttle",
    "throttle",
    "logged_in",
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


class Throttle:
    """Failed attempts (logins, wrong ``Authorization`` headers) per client address, kept in
    this process's memory: an address with ``attempts`` failures within the last ``window``
    seconds is refused until the oldest of them is ``window`` seconds old. Successes do not reset
    the count (a guesser sharing an address with a user gains nothing from the user's logins).

    The UI serves from one process (``mlcomp server``'s), so this is the whole count; several UI
    processes would each keep their own, and a restart forgets. At most :attr:`MAX_ADDRESSES`
    addresses are remembered: beyond, the one whose last failure is oldest is forgotten.

    Args:
        attempts: failures allowed within ``window`` (at least 1).
        window: seconds (more than 0).
        clock: the time in seconds (default :func:`time.monotonic`; tests pass their own).

    Raises:
        ConfigError: ``attempts`` is below 1 or ``window`` is not positive.
    """

    MAX_ADDRESSES = 10_000

    def __init__(self, attempts: int, window: float, clock=time.monotonic):
        if attempts < 1 or not window > 0:
            raise ConfigError(f"login_attempts must be at least 1 and login_window more than 0 seconds, not "
                              f"{attempts!r} and {window!r}")
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, collections.deque] = {}  # address → failure times, oldest first

    def _recent(self, address: str, now: float) -> collections.deque | None:
        failures = self._failures.get(address)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if failures is not None and not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> float:
        """Seconds ``address`` must wait before its next attempt counts; 0.0 when it may try now."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if failures is None or len(failures) < self.attempts:
                return 0.0
            return failures[0] + self.window - now

    def failed(self, address: str) -> None:
        """Counts a failed attempt from ``address``."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if failures is None:
                failures = collections.deque(maxlen=self.attempts)
            else:
                del self._failures[address]  # re-inserted last: the dict stays ordered by last failure
            failures.append(now)
            self._failures[address] = failures
            while len(self._failures) > self.MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]


def throttle() -> Throttle:
    """The app's :class:`Throttle` (made by :func:`init_app` from the settings)."""
    return current_app.extensions["mlcomp_throttle"]


def _refuse_if_throttled() -> None:
    """Raises werkzeug's ``TooManyRequests`` (429, ``Retry-After`` in whole seconds) when the
    client's address has used up its failed attempts."""
    wait = throttle().retry_after(request.remote_addr or "")
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequests(f"too many failed logins or wrong tokens from this address: try again in {seconds} s",
                              retry_after=seconds)


def logged_in() -> bool:
    """True when the browser's session cookie carries a login that is still live: its session id
    is in the ``ui_session`` table (a logout deletes it) and younger than the app's
    ``PERMANENT_SESSION_LIFETIME``. Reads the store in a short session of its own, so the
    request's session can still become a writer (:func:`ui.db.writer`)."""
    sid = session.get("sid")
    if not session.get("auth") or not isinstance(sid, str):
        return False
    cutoff = utcnow() - current_app.permanent_session_lifetime
    with current_app.extensions["mlcomp_store"]() as db:
        return db.scalar(select(UiSession.id).where(UiSession.id == sid, UiSession.created >= cutoff)) is not None


def _guard():
    token = _token()
    settings = current_app.config["MLCOMP_SETTINGS"]
    if not host_allowed(request.host, token, settings.allowed_hosts):
        raise ApiError(f"Host {request.host!r} refused: " + (
            "the server has a token; add the name to the allowed_hosts setting" if token else
            "without a token only 127.0.0.1, localhost and [::1] are served"), 400)
    authorization = bool(request.headers.get("Authorization"))
    if token and (authorization or (request.endpoint == "auth.login" and request.method == "POST")):
        _refuse_if_throttled()
    via_bearer = bearer_ok(token)
    if token and authorization and not via_bearer:
        throttle().failed(request.remote_addr or "")
    if token and not via_bearer and request.endpoint not in PUBLIC_ENDPOINTS and not logged_in():
        if session.get("auth"):  # logged out elsewhere, or expired: the cookie forgets it too
            session.pop("auth")
            session.pop("sid", None)
        if request.path.startswith("/api/"):
            raise ApiError("authentication required: send 'Authorization: Bearer <token>' or log in", 401)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method in UNSAFE_METHODS and not via_bearer and not _csrf_ok():
        raise ApiError("CSRF token missing or wrong: send the page's token in the X-CSRF-Token header "
                       "or the csrf_token form field", 403)
    return None


TEXT_CONTROLS = "\t\n\r"
"""The control characters a form field or JSON string may hold (free text may span lines)."""
CLEANED_ARGS = frozenset({("auth.login", "next")})
"""(endpoint, query argument) pairs whose control characters the view removes itself
(:func:`ui.auth.safe_next`) instead of the request being refused."""


def _strings(value: Any) -> Iterator[str]:
    """Every string of a JSON document (keys included), without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _no_control_characters():
    """Refuses (400, :class:`ApiError`) a request whose path (URL names and file paths included) or
    query arguments hold a control character (NUL, newline, …:
    :func:`mlcomp.names.control_character`), or whose form fields or JSON body strings hold one
    other than a tab, newline or carriage return (free text such as a note may span lines), before
    any view passes it to the store (PostgreSQL refuses NUL) or the file system."""
    found = [] if request.routing_exception is not None else [("the URL path", request.path, "")]  # else a 404
    found += [(f"query argument {key!r}", text, "") for key, values in request.args.lists()
              if (request.endpoint, key) not in CLEANED_ARGS for text in (key, *values)]
    found += [(f"form field {key!r}", text, TEXT_CONTROLS) for key, values in request.form.lists()
              for text in (key, *values)]
    if request.is_json and request.data:
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            body = None  # too deep to read: the view refuses it as no JSON object
        found += [("the JSON body", text, TEXT_CONTROLS) for text in _strings(body)]
    for where, text, allow in found:
        character = control_character(text, allow)
        if character:
            raise ApiError(f"{where} holds the control character {character}; allowed: text without control "
                           f"characters (NUL, escape, ...; in a path or query argument also no tab or newline)",
                           400)


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


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, the cookie also ``Secure`` on a request that came over
    https (directly, or through a trusted proxy's ``X-Forwarded-Proto``)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    """Installs the authentication and CSRF guard, the refusal of control characters, the security
    headers, the login throttle (:class:`Throttle`), the session interface (``Secure`` cookies
    over https), ``ProxyFix`` for ``trusted_proxies`` and the ``csrf_token`` template global.

    Raises:
        ConfigError: ``trusted_proxies`` is negative, ``login_attempts`` below 1 or
            ``login_window`` not positive.
    """
    settings = app.config["MLCOMP_SETTINGS"]
    if settings.trusted_proxies < 0:
        raise ConfigError(f"trusted_proxies must be 0 or more, not {settings.trusted_proxies!r}")
    app.extensions["mlcomp_throttle"] = Throttle(settings.login_attempts, settings.login_window)
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    app.session_interface = _SessionInterface()
    app.before_request(_guard)
    app.before_request(_no_control_characters)
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["auth_enabled"] = lambda: bool(_token())
