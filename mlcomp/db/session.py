"""Engines, sessions and migrations.

Callers own their transactions (SQLAlchemy's "the caller owns the session"): query functions take a
session first and never commit; a request, CLI command, supervisor tick or worker event frames
``with sessionmaker.begin() as session:``.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.errors import ConfigError

if TYPE_CHECKING:  # alembic is imported where migrations run: task children and most commands never pay for it
    from alembic.config import Config

__all__ = ["make_engine", "make_sessionmaker", "upgrade", "open_store", "immediate", "at_head", "SCHEMA_REVISION"]

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_REVISION = "pipes_models"
"""The head of the Alembic migrations (a test checks it against them): a database already at it
is opened without importing Alembic, which would cost every CLI command about 0.2 s."""
_IMMEDIATE = "mlcomp_immediate"
BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the database lock before giving up."""
_WRITER = "mlcomp_writer"  # session.info key: (the writer lock held, the transaction holding it)


def make_engine(url: str, **kwargs) -> Engine:
    """Creates an engine for ``url``; SQLite gets WAL mode, foreign keys, a 30 s busy timeout and
    transactions that start with ``BEGIN`` (``BEGIN IMMEDIATE`` under :func:`immediate`).

    PostgreSQL URLs without a driver use psycopg 3 (``postgresql+psycopg``).

    Raises:
        ConfigError: ``url`` is not a database URL SQLAlchemy can load (the message names it,
            password hidden).
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": BUSY_TIMEOUT, "check_same_thread": False})
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.setdefault("pool_pre_ping", True)
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise ConfigError(f"db_url (MLCOMP_DB_URL) {_safe(url)!r} cannot be used: {e}; allowed: "
                          f"sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB") from None
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    return engine


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
    """Brings the database behind ``engine`` to ``revision`` with Alembic."""
    from alembic import command

    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def at_head(engine: Engine) -> bool:
    """Whether the database behind ``engine`` is at :data:`SCHEMA_REVISION` (False for a new
    database without Alembic's version table)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                SCHEMA_REVISION]
    except SQLAlchemyError:  # no version table yet
        return False


def open_store(settings) -> sessionmaker[Session]:
    """The sessionmaker for ``settings.db_url``, upgrading the database on first use (and
    whenever it is behind :data:`SCHEMA_REVISION`).

    Raises:
        ConfigError: the URL is not usable, or the database cannot be reached or opened.
    """
    engine = make_engine(settings.db_url)
    try:
        if not at_head(engine):
            upgrade(engine)
    except DBAPIError as e:  # the server cannot be reached, the login is refused, …
        engine.dispose()
        raise ConfigError(f"cannot open the database {_safe(settings.db_url)!r} (db_url, MLCOMP_DB_URL): "
                          f"{str(e.orig).strip()}") from None
    return make_sessionmaker(engine)


