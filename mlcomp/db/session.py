"""Engines, sessions and migrations.

Callers own their transactions (SQLAlchemy's "the caller owns the session"): query functions take a
session first and never commit; a request, CLI command, supervisor tick or worker event frames
``with sessionmaker.begin() as session:``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, QueuePool, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.errors import ConfigError

if TYPE_CHECKING:  # alembic is imported where migrations run: task children and most commands never pay for it
    from alembic.config import Config

__all__ = ["make_engine", "make_sessionmaker", "upgrade", "open_store", "immediate", "at_head", "SCHEMA_REVISION",
           "SCHEMA_LOCK", "CONNECT_RETRY_FOR", "POOL_WAIT"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_REVISION = "shared_gpus"
"""The head of the Alembic migrations (a test checks it against them): a database already at it
is opened without importing Alembic, which would cost every CLI command about 0.2 s."""
_IMMEDIATE = "mlcomp_immediate"
BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the database lock before giving up."""
CONNECT_RETRY_FOR = 60.0
"""Seconds a new PostgreSQL connection keeps being retried while the server refuses it for being
full (SQLSTATE 53300: too many clients, too many connections for the role or database) or for
starting up (57P03); read at each connect, so tests can shorten it."""
CONNECT_RETRY_FIRST = 0.05
"""Seconds before the first retry of a refused connection; the wait doubles up to
:data:`CONNECT_RETRY_MAX`, each wait drawn between half and all of it (jitter)."""
CONNECT_RETRY_MAX = 2.0
"""The longest wait, in seconds, between two retries of a refused connection."""
CONNECT_TIMEOUT = 10
"""Seconds a PostgreSQL connect may take before it fails (libpq's ``connect_timeout``)."""
CONNECTION_TIMEOUTS = {"connect_timeout": CONNECT_TIMEOUT, "keepalives": 1, "keepalives_idle": 30,
                       "keepalives_interval": 10, "keepalives_count": 3}
"""libpq settings every PostgreSQL connection gets unless its URL sets them."""
POOL_WAIT = 90.0
"""Seconds a thread waits for its process's connection when :func:`make_engine`'s ``connections``
are all in use (longer than :data:`CONNECT_RETRY_FOR`, so a thread queued behind a connect that
rides out a full server meets the server's error, not the pool's); read when the engine is made."""
_WRITER = "mlcomp_writer"  # session.info key: (the writer lock held, the transaction holding it)


def make_engine(url: str, *, connections: int | None = None, idle_release: float | None = None,
                **kwargs) -> Engine:
    """Creates an engine for ``url``; SQLite gets WAL mode, foreign keys, a 30 s busy timeout and
    transactions that start with ``BEGIN`` (``BEGIN IMMEDIATE`` under :func:`immediate`).

    PostgreSQL URLs without a driver use psycopg 3 (``postgresql+psycopg``). Every PostgreSQL
    engine pings pooled connections before use (unless ``idle_release`` keeps them fresh) and rides out a full or starting server: a
    connection refused with SQLSTATE 53300 or 57P03 is retried with jittered exponential backoff
    (:data:`CONNECT_RETRY_FIRST` s doubling to :data:`CONNECT_RETRY_MAX` s) for up to
    :data:`CONNECT_RETRY_FOR` s, with one warning logged per connect, before the server's own
    error is raised (as :class:`sqlalchemy.exc.OperationalError`).

    A connection policy, for processes that must hold few connections (a lab's workers share one
    server's ``max_connections``); SQLite engines ignore both:

    Args:
        connections: the most connections this engine holds at once (a pool of that size, no
            overflow); other threads wait up to :data:`POOL_WAIT` s for one. None: SQLAlchemy's
            default pool (5, plus 10 overflow).
        idle_release: seconds a pooled connection may stay checked in, unused, before it is
            closed (by one short-lived daemon thread per engine), so an idle process holds no
            connection; the next checkout reconnects. None: pooled connections stay open.
        kwargs: passed to :func:`sqlalchemy.create_engine`.

    Raises:
        ConfigError: ``url`` is not a database URL SQLAlchemy can load (the message names it,
            password hidden).
        ValueError: ``connections`` is below 1, ``idle_release`` is negative, or a policy is asked
            for together with ``poolclass``/``pool_size``/``max_overflow``/``pool_timeout``.
    """
    if connections is not None and connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections!r}")
    if idle_release is not None and idle_release < 0:
        raise ValueError(f"idle_release must be seconds >= 0, not {idle_release!r}")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    policy = None
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": BUSY_TIMEOUT, "check_same_thread": False})
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    else:
        # a connection closed after a short idle time is fresh: pinging it would cost a round trip
        # per transaction (an idle worker's beat would be two transactions)
        kwargs.setdefault("pool_pre_ping", idle_release is None)
        if connections is not None or idle_release is not None:
            clash = sorted({"poolclass", "pool_size", "max_overflow", "pool_timeout"} & kwargs.keys())
            if clash:
                raise ValueError(f"connections/idle_release choose the pool themselves; drop {', '.join(clash)}")
            kwargs["poolclass"] = _PolicyPool
            kwargs["pool_timeout"] = POOL_WAIT
            if connections is not None:
                kwargs.update(pool_size=connections, max_overflow=0)
            policy = _Policy(f"{connections} (connections={connections})" if connections is not None
                             else "15 (the default pool: 5, plus 10 overflow)", idle_release)
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise ConfigError(f"db_url (MLCOMP_DB_URL) {_safe(url)!r} cannot be used: {e}; allowed: "
                          f"sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB") from None
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "do_connect", _connect_riding_out_refusals)
    if policy is not None and isinstance(engine.pool, _PolicyPool):
        engine.pool.policy = policy
        if idle_release is not None:
            event.listen(engine, "checkout", policy.checked_out)
            event.listen(engine, "checkin", policy.checked_in)
    return engine


# PostgreSQL's messages for SQLSTATE 53300 (too_many_connections) and 57P03 (cannot_connect_now,
# while starting up): libpq reports a refused connection with its message only, no SQLSTATE.
_REFUSED_STATES = frozenset({"53300", "57P03"})
_REFUSED = re.compile(r"too many clients|too many connections for|connection slots are reserved|"
                      r"database system is starting up|not yet accepting connections", re.IGNORECASE)


def _refused_for_now(error: BaseException) -> bool:
    """Whether ``error``, raised while connecting, says the server is full or starting up."""
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return state in _REFUSED_STATES or bool(_REFUSED.search(str(error)))


def _connect_riding_out_refusals(dialect, _record, cargs, cparams):
    """``do_connect`` listener: the DBAPI connection, retrying while the server refuses for now.
    A server that does not answer at all (a network cut) fails a connect within
    :data:`CONNECT_TIMEOUT` s, and an open connection within about a minute (TCP keepalives), so a
    caller's retry loop (:mod:`mlcomp.db.outage`) never hangs; the URL's own settings win."""
    for key, value in CONNECTION_TIMEOUTS.items():
        cparams.setdefault(key, value)
    started = time.monotonic()
    delay = CONNECT_RETRY_FIRST
    warned = False
    while True:
        try:
            connection = dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as e:
            left = CONNECT_RETRY_FOR - (time.monotonic() - started)
            if not _refused_for_now(e) or left <= 0:
                raise
            if not warned:
                warned = True
                log.warning("PostgreSQL refuses connections (%s); retrying for up to %g s",
                            _reason(e), CONNECT_RETRY_FOR)
            time.sleep(min(left, random.uniform(delay / 2, delay)))
            delay = min(delay * 2, CONNECT_RETRY_MAX)
        else:
            if warned:
                log.info("PostgreSQL accepted the connection after %.1f s", time.monotonic() - started)
            return connection


def _reason(error: BaseException) -> str:
    """The server's words in a refused connection's error, e.g. ``too many clients already``."""
    words = str(error).strip()
    match = re.search(r"FATAL:\s*(.+)", words)
    lines = (match.group(1) if match else words).splitlines()
    return lines[0].strip() if lines else "refused"


class _Policy:
    """The connection policy of one engine (:func:`make_engine`'s ``connections`` and
    ``idle_release``): counts checkouts in progress and closes pooled connections left unused for
    ``idle_release`` seconds, from a daemon thread that lives while some connection sits idle."""

    def __init__(self, limit: str, idle_release: float | None):
        self.limit = limit  # for messages, e.g. "1 (connections=1)"
        self.idle_release = idle_release
        self._reset()
        _POLICIES.add(self)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self._idle: dict = {}  # ConnectionPoolEntry → time.monotonic() of its checkin
        self._checkouts = 0  # checkouts in progress: their entry may be between queue and use
        self._running = False  # the releasing thread is started and has not decided to end

    def checkout_begins(self) -> None:
        with self.lock:
            self._checkouts += 1

    def checkout_ends(self) -> None:
        with self.lock:
            self._checkouts -= 1

    def checked_out(self, _dbapi_connection, record, _proxy) -> None:
        """Pool ``checkout`` listener."""
        with self.lock:
            self._idle.pop(record, None)

    def checked_in(self, dbapi_connection, record) -> None:
        """Pool ``checkin`` listener."""
        if dbapi_connection is None:  # invalidated: nothing left open
            return
        with self.lock:
            self._idle[record] = time.monotonic()
            if not self._running:
                self._running = True
                threading.Thread(target=self._release_idle, name="mlcomp-db-idle-release", daemon=True).start()

    def _release_idle(self) -> None:
        """The releasing thread: closes each entry once it has been idle ``idle_release`` s and no
        checkout is under way (one could be taking that very entry); ends when none is left."""
        with self.lock:
            while True:
                now = time.monotonic()
                wait = self.idle_release
                if self._checkouts == 0:
                    for record, since in list(self._idle.items()):
                        if now - since >= self.idle_release:
                            del self._idle[record]
                            if not record.in_use:
                                try:
                                    record.close()
                                except Exception as e:  # a broken connection: it is gone either way
                                    log.debug("closing an idle database connection failed: %s", e)
                    if not self._idle:
                        self._running = False
                        return
                    wait = min(self._idle.values()) + self.idle_release - now
                self._changed.wait(max(wait, 0.01))


_POLICIES: weakref.WeakSet = weakref.WeakSet()


def _policies_after_fork() -> None:
    # a forked child has none of the parent's threads, and a lock held by one of them stays held
    for policy in list(_POLICIES):
        policy._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_policies_after_fork)


# SQLAlchemy keeps its own loggers at WARNING unless asked (sqlalchemy.log); a pool subclass logs
# under this module's name instead, so its INFO lines ("Pool recreating") are kept at WARNING too
logging.getLogger(f"{__name__}._PolicyPool").setLevel(logging.WARNING)


class _PolicyPool(QueuePool):
    """The pool of an engine with a connection policy: a :class:`~sqlalchemy.pool.QueuePool` that
    tells its :class:`_Policy` when checkouts start and end, and whose timeout says why it waited."""

    policy: _Policy | None = None

    def recreate(self) -> QueuePool:  # Engine.dispose() replaces the pool with this one
        pool = super().recreate()
        pool.policy = self.policy
        return pool

    def dispose(self) -> None:  # not while the releasing thread closes one of the same connections
        policy = self.policy
        if policy is None:
            return super().dispose()
        with policy.lock:
            super().dispose()

    def connect(self):
        policy = self.policy
        if policy is None:
            return super().connect()
        policy.checkout_begins()
        try:
            return super().connect()
        except PoolTimeout as e:
            raise PoolTimeout(f"no database connection came free within {self.timeout():g} s: this process "
                              f"holds at most {policy.limit} and its other threads kept them busy all that "
                              f"time") from e
        finally:
            policy.checkout_ends()


def _safe(url) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url).split("@")[-1]


def _sqlite_pragmas(engine: Engine) -> None:
    # pysqlite's own transaction handling is switched off so that BEGIN is ours (SQLAlchemy docs,
    # "Serializable isolation / Savepoints / Transactional DDL" for pysqlite).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN")


_WRITERS: dict = {}  # database URL → the lock of this process's writers
_WRITERS_LOCK = threading.Lock()


def _writer_lock(url) -> threading.RLock:
    lock = _WRITERS.get(url)
    if lock is None:
        with _WRITERS_LOCK:
            lock = _WRITERS.setdefault(url, threading.RLock())
    return lock


def immediate(session: Session) -> Session:
    """Makes ``session``'s transaction a writer from its first statement: ``BEGIN IMMEDIATE`` on
    SQLite (one writer at a time); on PostgreSQL nothing changes and callers lock rows with
    ``with_for_update``. Call it before the transaction's first statement.

    On SQLite the writers of one process also take a lock per database (held until the
    transaction ends), so a thread waiting to write wakes as soon as the previous writer
    commits instead of sleeping in SQLite's busy handler, whose retries back off to tens of
    milliseconds (writers in other processes still meet the busy handler).
    """
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        session.connection(execution_options={_IMMEDIATE: True})
        return session
    lock = _writer_lock(bind.url)
    if not lock.acquire(timeout=BUSY_TIMEOUT):  # held too long: SQLite's busy timeout decides
        session.connection(execution_options={_IMMEDIATE: True})
        return session
    try:
        session.connection(execution_options={_IMMEDIATE: True})
    except BaseException:
        lock.release()
        raise
    session.info[_WRITER] = (lock, session.get_transaction())
    if not event.contains(session, "after_transaction_end", _release_writer):
        event.listen(session, "after_transaction_end", _release_writer)
    return session


def _release_writer(session: Session, ended) -> None:
    """Releases the writer lock taken by :func:`immediate` when the root transaction that took
    it ends (commit, rollback or close)."""
    held = session.info.get(_WRITER)
    if held is not None and held[1] is ended:
        del session.info[_WRITER]
        held[0].release()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """One sessionmaker per process, made at configuration time."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine | None = None) -> "Config":
    """Alembic configuration pointing at the packaged migrations (``alembic.ini`` at the repository
    top does the same for the ``alembic`` command)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the database behind ``engine`` to ``revision`` with Alembic, one process at a time.

    The migration runs in one transaction that first takes the database's schema lock: on
    PostgreSQL the transaction-level advisory lock :data:`SCHEMA_LOCK` (``pg_advisory_xact_lock``,
    waited for as long as another process migrates); on SQLite the write lock (``BEGIN
    IMMEDIATE``, waited for up to :data:`BUSY_TIMEOUT` s) and this process's writer lock
    (:func:`immediate`'s). Once the lock is held the version is read again, so of several
    processes opening a new database at once one creates the schema and the others find it done.

    Raises:
        sqlalchemy.exc.DBAPIError: the database cannot be reached, or a migration fails (its
            transaction is rolled back).
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with _schema_locked(engine) as connection:
        if revision == "head" and MigrationContext.configure(connection).get_current_heads() == (SCHEMA_REVISION,):
            return  # another process migrated it while this one waited for the lock
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


SCHEMA_LOCK = 0x6D6C_636F_6D70  # "mlcomp" in ASCII
"""The key (a bigint) of the PostgreSQL advisory lock under which :func:`upgrade` migrates; an
advisory lock is per database, so servers sharing a PostgreSQL cluster do not wait for each other."""


@contextlib.contextmanager
def _schema_locked(engine: Engine):
    """A connection in a transaction holding the schema lock of ``engine``'s database (see
    :func:`upgrade`); the transaction commits when the block ends (rolls back on an error)."""
    if engine.dialect.name == "sqlite":
        with _writer_lock(engine.url), engine.execution_options(**{_IMMEDIATE: True}).begin() as connection:
            yield connection
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        yield connection


def at_head(engine: Engine) -> bool:
    """Whether the database behind ``engine`` is at :data:`SCHEMA_REVISION` (False for a new
    database without Alembic's version table)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                SCHEMA_REVISION]
    except SQLAlchemyError:  # no version table yet
        return False


def open_store(settings, *, connections: int | None = None,
               idle_release: float | None = None) -> sessionmaker[Session]:
    """The sessionmaker for ``settings.db_url``, upgrading the database on first use (and
    whenever it is behind :data:`SCHEMA_REVISION`).

    ``connections`` and ``idle_release`` (seconds) are :func:`make_engine`'s connection policy,
    e.g. ``connections=1, idle_release=5.0`` for a worker: at most one connection, closed when
    unused for 5 s. SQLite ignores them.

    Raises:
        ConfigError: the URL is not usable, or the database cannot be reached or opened.
        ValueError: ``connections`` is below 1 or ``idle_release`` is negative.
    """
    engine = make_engine(settings.db_url, connections=connections, idle_release=idle_release)
    try:
        if not at_head(engine):
            upgrade(engine)
    except DBAPIError as e:  # the server cannot be reached, the login is refused, …
        engine.dispose()
        raise ConfigError(f"cannot open the database {_safe(settings.db_url)!r} (db_url, MLCOMP_DB_URL): "
                          f"{str(e.orig).strip()}") from None
    return make_sessionmaker(engine)


