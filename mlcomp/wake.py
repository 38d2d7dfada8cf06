"""Waking a running supervisor at once after a change (a submission, a stop or resume request).

Three mechanisms, all best effort (a supervisor also ticks on an interval);
:func:`mlcomp.control.wake` uses the first and one of the other two, chosen by the configuration:

- in the same process (the server's UI, an embedded supervisor): :func:`wake_after_commit`
  registers a one-shot ``after_commit`` hook on the session that calls every supervisor
  registered with :func:`add_listener`;
- across processes on one machine (the CLI and a running ``mlcomp server``): the supervisor
  listens on a UNIX datagram socket named after ``settings.root`` (:class:`WakeListener`) and
  :func:`poke` sends it one byte. A poke that reaches nobody means no server runs for this root,
  which is how ``mlcomp dag submit --wait`` decides to run an embedded supervisor;
- across machines (``settings.broker_url`` set): the supervisor subscribes to a Redis channel
  named after the database URL (:class:`RedisWakeListener`) and :func:`publish` sends to it; the
  number of receivers says whether a server listens. With a broker this replaces the socket for
  wake-ups; the socket's listener stays, as the guard that one server serves a root.

On Linux the socket lives in the abstract namespace (no file left behind, no path length limit);
elsewhere it is ``root/supervisor.sock``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import threading
import weakref
from typing import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["add_listener", "remove_listener", "notify", "wake_after_commit", "socket_address", "poke",
           "WakeListener", "channel", "publish", "RedisWakeListener"]

log = logging.getLogger(__name__)

_listeners: "weakref.WeakSet" = weakref.WeakSet()


def add_listener(listener) -> None:
    """Registers an object with a ``wake()`` method to be called by :func:`notify` (held weakly)."""
    _listeners.add(listener)


def remove_listener(listener) -> None:
    """Unregisters ``listener``; unknown listeners are ignored."""
    _listeners.discard(listener)


def notify() -> None:
    """Wakes every supervisor running in this process."""
    for listener in list(_listeners):
        listener.wake()


def wake_after_commit(session: Session) -> None:
    """Makes the next commit of ``session`` wake the in-process supervisors (nothing on rollback)."""
    if not session.info.get("mlcomp_wake"):
        session.info["mlcomp_wake"] = True
        event.listen(session, "after_commit", _after_commit, once=True)


def _after_commit(session: Session) -> None:
    session.info.pop("mlcomp_wake", None)
    notify()


def socket_address(root) -> str:
    """The wake socket's address for an mlcomp root folder."""
    if sys.platform.startswith("linux"):
        digest = hashlib.sha1(os.fsencode(os.path.abspath(root))).hexdigest()[:20]
        return f"\0mlcomp-wake-{digest}"
    return os.path.join(os.fspath(root), "supervisor.sock")


def poke(root) -> bool:
    """Sends a wake-up to the supervisor serving ``root``.

    Returns:
        True if a supervisor listens (the datagram was delivered), False otherwise.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"w", socket_address(root))
        except OSError:
            return False
    return True


class WakeListener:
    """A daemon thread that calls ``callback()`` for every datagram on the wake socket of ``root``.

    ``start()`` returns False (and listens to nothing) when another supervisor already holds the
    address; ``close()`` stops the thread at once.
    """

    def __init__(self, root, callback: Callable[[], None]):
        self.address = socket_address(root)
        self.callback = callback
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Binds the address and starts the thread; False when another supervisor holds it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if not self.address.startswith("\0") and os.path.exists(self.address):
                if poke(os.path.dirname(self.address)):
                    raise OSError("address in use")
                os.unlink(self.address)
            sock.bind(self.address)
        except OSError as e:
            sock.close()
            log.warning("WakeListener: cannot listen on %r (%s); another supervisor serves this root",
                        self.address, e)
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, args=(sock,), name="mlcomp-wake", daemon=True)
        self._thread.start()
        return True

    def _loop(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(64)
            except OSError:  # closed
                return
            if not data:  # shut down
                return
            try:
                self.callback()
            except Exception:  # one bad wake must not end the listener
                log.exception("WakeListener: callback failed")

    def close(self) -> None:
        """Stops listening (the thread ends at once) and frees the address."""
        if self._sock is None:
            return
        sock, self._sock = self._sock, None
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.address.startswith("\0"):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass


def channel(db_url: str) -> str:
    """The Redis channel of the supervisors sharing the database at ``db_url``."""
    return "mlcomp:wake:" + hashlib.sha1(db_url.encode()).hexdigest()[:20]


def publish(broker_url: str, db_url: str) -> int:
    """Publishes a wake-up for the supervisors of ``db_url`` on the Redis at ``broker_url``.

    Returns:
        how many supervisors received it (0 when Redis cannot be reached).
    """
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2)
    try:
        return int(client.publish(channel(db_url), b"w"))
    except redis.exceptions.RedisError as e:
        log.warning("wake: cannot publish to %s: %s", broker_url, e)
        return 0
    finally:
        client.close()


class RedisWakeListener:
    """Calls ``callback()`` for every wake-up published for ``db_url`` on the broker's Redis,
    from redis-py's pub/sub thread (``PubSub.run_in_thread``); ``close()`` stops it within
    ``sleep`` seconds."""

    def __init__(self, broker_url: str, db_url: str, callback: Callable[[], None], sleep: float = 0.5):
        self.broker_url, self.channel, self.callback, self.sleep = broker_url, channel(db_url), callback, sleep
        self._client = self._pubsub = self._thread = None

    def start(self) -> bool:
        """Subscribes; returns False (logging why) when Redis cannot be reached."""
        import redis

        self._client = redis.Redis.from_url(self.broker_url, socket_connect_timeout=2)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(**{self.channel: self._message})
        except redis.exceptions.RedisError as e:
            log.warning("RedisWakeListener: cannot subscribe on %s: %s", self.broker_url, e)
            self.close()
            return False
        self._thread = self._pubsub.run_in_thread(sleep_time=self.sleep, daemon=True)
        return True

    def _message(self, _message) -> None:
        try:
            self.callback()
        except Exception:
            log.exception("RedisWakeListener: callback failed")

    def close(self) -> None:
        """Unsubscribes and stops the pub/sub thread."""
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(timeout=5)
        for resource in (self._pubsub, self._client):
            if resource is not None:
                resource.close()
        self._client = self._pubsub = self._thread = None
