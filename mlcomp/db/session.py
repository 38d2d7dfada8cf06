"""Engines, sessions and migrations.

Callers own their transactions (SQLAlchemy's "the caller owns the session"): query functions take a
session first and never commit; a request, CLI command, supervisor tick or worker event frames
``with sessionmaker.begin() as session:``.
"""
from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_sessionmaker", "upgrade", "open_store", "immediate"]

MIGRATIONS = Path(__file__).with_name("migrations")
_IMMEDIATE = "mlcomp_immediate"
BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the database lock before giving up."""
_WRITER = "mlcomp_writer"  # session.info key: (the writer lock held, the transaction holding it)


def make_engine(url: str, **kwargs) -> Engine:
    """Creates an engine for ``url``; SQLite gets WAL mode, foreign keys, a 30 s busy timeout and
    transactions that start with ``BEGIN`` (``BEGIN IMMEDIATE`` under :func:`immediate`).

    PostgreSQL URLs without a driver use psycopg 3 (``postgresql+psycopg``).
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": BUSY_TIMEOUT, "check_same_thread": False})
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    return engine


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


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic configuration pointing at the packaged migrations (``alembic.ini`` at the repository
    top does the same for the ``alembic`` command)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the database behind ``engine`` to ``revision`` with Alembic."""
    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def open_store(settings) -> sessionmaker[Session]:
    """The sessionmaker for ``settings.db_url``, upgrading the database on first use."""
    engine = make_engine(settings.db_url)
    upgrade(engine)
    return make_sessionmaker(engine)


