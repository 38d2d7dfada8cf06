"""The one route of wake-ups and hand-overs: a push on a named channel, the store the only truth.

Two kinds of channel exist. :data:`SUPERVISOR` wakes the supervisors of a store (a submission, a
stop or resume request, a task's end); :func:`computer_channel` wakes one computer's worker, with
the ids of the tasks just placed there (the worker claims each through ``Worker.submit``), or
with none ("read the store now": a stop request, a gang's part to kill). A message is a hint and
never the truth: its receiver reads the store, and a lost message costs only latency, since a
supervisor ticks every second and a worker reads the store every :data:`POLL` seconds anyway.
Every path is the same: commit, then :meth:`Bus.publish`; client → supervisor → computer.

Delivery:

- *in this process*, subscribers are called synchronously in the publisher's thread (the
  single-box server: a placement reaches its own worker's claim with no thread hand-off);
- *other processes* through the one backend the deployment has, chosen from the settings:
  Redis pub/sub with ``broker_url`` (redis-py; what a lab uses: a listener costs Redis one
  connection and PostgreSQL none), PostgreSQL ``LISTEN/NOTIFY`` when the store is PostgreSQL
  without a broker (psycopg; each listening process holds one more connection, so keep it to
  small fleets), else a datagram socket per channel in Linux's abstract namespace (one machine,
  SQLite).

A process's own messages come back to it through Redis and PostgreSQL; each carries the sending
bus's token, and a listener skips its own (they were delivered in-process already).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import sys
import tempfile
import threading
import uuid
from typing import Callable, Iterable

__all__ = ["SUPERVISOR", "POLL", "computer_channel", "Bus", "Subscription"]

log = logging.getLogger(__name__)

SUPERVISOR = "supervisor"
"""The channel of the supervisors sharing a store."""
POLL = 5.0
"""Seconds between a worker's safety-net reads of the store when nothing wakes it."""
RETRY = 1.0
"""Seconds a listener waits before its first reconnect after its backend failed; the wait doubles
with each failed try up to :data:`RETRY_MAX`, each drawn between half and all of it (jitter), so a
fleet's listeners do not all knock at once."""
RETRY_MAX = 5.0
"""The longest wait, in seconds, between two reconnects of a listener."""


def _backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failed connects in a row (from 1)."""
    return random.uniform(0.5, 1.0) * min(RETRY * 2 ** (failures - 1), RETRY_MAX)

Callback = Callable[[list[int]], None]


def computer_channel(name: str) -> str:
    """The channel of computer ``name``'s worker."""
    return f"computer:{name}"


def _encode(token: str, ids: Iterable[int]) -> bytes:
    return f"{token}|{','.join(str(int(i)) for i in ids)}".encode()


def _decode(data: bytes | str) -> tuple[str, list[int]]:
    text = data.decode() if isinstance(data, bytes) else data
    token, _, ids = text.partition("|")
    return token, [int(i) for i in ids.split(",") if i.strip().isdigit()]


class Subscription:
    """A callback listening on one channel; :meth:`close` stops it (at once in this process,
    within a second for its backend's listener thread)."""

    def __init__(self, bus: "Bus", channel: str, callback: Callback):
        self.bus, self.channel, self.callback = bus, channel, callback
        self._listener: _Listener | None = None

    def deliver(self, ids: list[int]) -> None:
        """Calls the callback with ``ids``; an error is logged, never raised to the publisher."""
        try:
            self.callback(ids)
        except Exception:
            log.exception("bus: a subscriber of %s failed", self.channel)

    def close(self) -> None:
        """Unsubscribes."""
        self.bus._remove(self)
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class Bus:
    """Publishes and subscribes on the channels of one store (see the module docstring).

    Args:
        db_url: the store's URL: it names the channels (installations sharing a Redis stay
            apart) and, for PostgreSQL without a broker, is the backend.
        broker_url: Redis, e.g. ``redis://host:6379/0``; None: PostgreSQL or the local socket.
    """

    _shared: dict[tuple[str, str | None], "Bus"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, db_url: str, broker_url: str | None = None):
        self.db_url, self.broker_url = db_url, broker_url
        self.token = uuid.uuid4().hex[:12]
        self.prefix = hashlib.sha1(db_url.encode()).hexdigest()[:16]
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._lock = threading.Lock()
        if broker_url:
            self.backend: _Backend = _Redis(broker_url)
        elif db_url.startswith("postgresql"):
            self.backend = _Postgres(db_url)
        else:
            self.backend = _Socket()

    @classmethod
    def of(cls, settings) -> "Bus":
        """The bus of ``settings``' store and broker, one per process, so that the in-process
        subscribers of a store meet its publishers."""
        key = (settings.db_url, settings.broker_url or None)
        with cls._shared_lock:
            bus = cls._shared.get(key)
            if bus is None:
                bus = cls._shared[key] = cls(*key)
        return bus

    def name(self, channel: str) -> str:
        """The backend's name of ``channel`` for this store (a valid PostgreSQL identifier)."""
        return "mlcomp_" + hashlib.sha1(f"{self.prefix}|{channel}".encode()).hexdigest()[:24]

    def publish(self, channel: str, ids: Iterable[int] = ()) -> None:
        """Delivers ``ids`` (possibly none) to the subscribers of ``channel``: in this process at
        once, in the calling thread; elsewhere through the backend. Call it after the commit
        that the message announces. Best effort: a backend failure is logged, not raised."""
        ids = list(ids)
        with self._lock:
            local = list(self._subscriptions.get(channel, ()))
        for subscription in local:
            subscription.deliver(ids)
        try:
            self.backend.send(self.name(channel), _encode(self.token, ids))
        except Exception as e:  # the receivers' own reads of the store make up for it
            log.warning("bus: cannot publish on %s through %s: %s", channel, type(self.backend).__name__[1:], e)

    def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Calls ``callback(ids)`` for every message on ``channel`` (from the publisher's thread
        in this process, from a listener thread for other processes') until the subscription
        is closed."""
        subscription = Subscription(self, channel, callback)
        with self._lock:
            self._subscriptions.setdefault(channel, []).append(subscription)

        def remote(data: bytes) -> None:
            token, ids = _decode(data)
            if token != self.token:
                subscription.deliver(ids)

        subscription._listener = self.backend.listen(self.name(channel), remote, lambda: subscription.deliver([]))
        return subscription

    def close(self) -> None:
        """Closes the backend's sending connection (a subscription closes its own listener)."""
        self.backend.close()

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            subscriptions = self._subscriptions.get(subscription.channel, [])
            if subscription in subscriptions:
                subscriptions.remove(subscription)


class _Listener:
    """A daemon thread running ``loop(stop)`` until :meth:`close`."""

    def __init__(self, name: str, loop: Callable[[threading.Event], None]):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=loop, args=(self._stop,), name=f"bus-{name[:20]}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Backend:
    def send(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Closes the sending connection, if any."""

    def listen(self, name: str, receive: Callable[[bytes], None], reconnected: Callable[[], None]) -> _Listener | None:
        """Calls ``receive(data)`` per message on ``name`` from a thread; ``reconnected()`` after
        the backend came back (messages may have been lost meanwhile)."""
        raise NotImplementedError


class _Redis(_Backend):
    """Redis pub/sub through redis-py: one client for sending, one pub/sub connection per
    listener, polled by a thread that reconnects after an outage."""

    def __init__(self, url: str):
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)

    def send(self, name: str, data: bytes) -> None:
        self.client.publish(name, data)

    def close(self) -> None:
        self.client.close()

    def listen(self, name, receive, reconnected):
        import redis

        def loop(stop: threading.Event) -> None:
            failed = 0
            while not stop.is_set():
                client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(name)
                    if failed:
                        log.warning("bus: Redis %s answers again", _safe(self.url))
                        failed = 0
                        reconnected()
                    while not stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            receive(message["data"])
                except redis.exceptions.RedisError as e:
                    if not failed:
                        log.warning("bus: Redis %s unreachable (%s); trying again every %g-%g s",
                                    _safe(self.url), e, RETRY, RETRY_MAX)
                    failed += 1
                    stop.wait(_backoff(failed))
                finally:
                    pubsub.close()
                    client.close()

        return _Listener(name, loop)


class _Postgres(_Backend):
    """PostgreSQL ``LISTEN/NOTIFY`` through psycopg: one connection for sending (opened on
    first use), one per listener."""

    def __init__(self, db_url: str):
        from sqlalchemy import make_url

        self.conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._sender = None
        self._lock = threading.Lock()

    def send(self, name: str, data: bytes) -> None:
        import psycopg

        with self._lock:
            for attempt in (1, 2):  # a connection dropped since the last message is opened again
                try:
                    if self._sender is None or self._sender.closed:
                        self._sender = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                    self._sender.execute("SELECT pg_notify(%s, %s)", (name, data.decode()))
                    return
                except psycopg.OperationalError:
                    self._sender = None
                    if attempt == 2:
                        raise

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def listen(self, name, receive, reconnected):
        import psycopg

        def loop(stop: threading.Event) -> None:
            failed = 0
            while not stop.is_set():
                try:
                    with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                        conn.execute(f"LISTEN {name}")  # a digest: a valid identifier (Bus.name)
                        if failed:
                            log.warning("bus: PostgreSQL answers again")
                            failed = 0
                            reconnected()
                        while not stop.is_set():
                            for notify in conn.notifies(timeout=1.0):
                                receive(notify.payload.encode())
                except psycopg.OperationalError as e:
                    if not failed:
                        log.warning("bus: PostgreSQL unreachable (%s); trying again every %g-%g s", e, RETRY,
                                    RETRY_MAX)
                    failed += 1
                    stop.wait(_backoff(failed))

        return _Listener(name, loop)


class _Socket(_Backend):
    """A datagram socket per channel (Linux's abstract namespace, else a file in the temporary
    folder): one machine; the first process to bind a channel listens on it."""

    @staticmethod
    def address(name: str) -> str:
        if sys.platform.startswith("linux"):
            return f"\0{name}"
        return os.path.join(tempfile.gettempdir(), f"{name}.sock")

    def send(self, name: str, data: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(data, self.address(name))
            except OSError:  # nobody listens
                pass

    def listen(self, name, receive, reconnected):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = self.address(name)
        try:
            if not address.startswith("\0") and os.path.exists(address):
                os.unlink(address)  # left by a process that died
            sock.bind(address)
        except OSError as e:
            sock.close()
            log.info("bus: another process listens on %s (%s); this one reads the store", name, e)
            return None
        sock.settimeout(1.0)

        def loop(stop: threading.Event) -> None:
            with sock:
                while not stop.is_set():
                    try:
                        receive(sock.recv(65536))
                    except socket.timeout:
                        continue
            if not address.startswith("\0"):
                try:
                    os.unlink(address)
                except FileNotFoundError:
                    pass

        return _Listener(name, loop)


def _safe(url: str) -> str:
    """``url`` without its password, for messages."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//…@{tail}" if at else url
