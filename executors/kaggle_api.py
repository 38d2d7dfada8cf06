"""The Kaggle client of the ``download`` and ``submit`` task types (MLComp's ``kaggle.py``).

:func:`connect` checks, before any request, that credentials exist (``kaggle.json`` in
``~/.kaggle`` or ``$KAGGLE_CONFIG_DIR``, or ``KAGGLE_USERNAME`` and ``KAGGLE_KEY``, or
``KAGGLE_API_TOKEN``: the official client's places), that the client library is installed
(``pip install "mlcomp[kaggle]"``, optional) and that Kaggle answers a TCP connection within
:data:`CONNECT_TIMEOUT` seconds, so a machine without one of them fails at once with an error
that says which, instead of hanging.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from mlcomp.errors import ExecutorError

__all__ = ["connect", "credentials", "HOST", "CONNECT_TIMEOUT"]

HOST = ("www.kaggle.com", 443)
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for Kaggle to accept a connection before the task fails."""


def credentials() -> str:
    """Where the Kaggle credentials come from (a variable's name or ``kaggle.json``'s path).

    Raises:
        ExecutorError: none of the client's places holds credentials.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path("~/.kaggle").expanduser())
    if (folder / "kaggle.json").is_file():
        return str(folder / "kaggle.json")
    raise ExecutorError(f"no Kaggle credentials on this machine: put kaggle.json (kaggle.com → Settings → API → "
                        f"Create New Token) in {folder}, or set KAGGLE_USERNAME and KAGGLE_KEY for the task "
                        f"(its env:)")


def connect(timeout: float = CONNECT_TIMEOUT):
    """An authenticated ``kaggle.api.kaggle_api_extended.KaggleApi``.

    Raises:
        ExecutorError: no credentials, the ``kaggle`` package missing, Kaggle not reachable
            within ``timeout`` seconds, or the client refusing the credentials.
    """
    where = credentials()
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as e:
        raise ExecutorError(f"the Kaggle client is not installed ({e}): pip install \"mlcomp[kaggle]\"") from None
    try:
        socket.create_connection(HOST, timeout=timeout).close()
    except OSError as e:
        raise ExecutorError(f"Kaggle cannot be reached ({HOST[0]}:{HOST[1]}, {timeout:g} s): {e}") from None
    api = KaggleApi()
    try:
        api.authenticate()
    except (OSError, ValueError, SystemExit) as e:  # some client versions exit on bad credentials
        raise ExecutorError(f"Kaggle refused the credentials of {where}: {e}") from None
    return api
