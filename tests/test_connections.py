"""The connection policy of :func:`mlcomp.db.make_engine` (``connections``, ``idle_release``) and
how PostgreSQL engines ride out a full server, on the real PostgreSQL: a lab of workers must share
one server's ``max_connections``."""
from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from sqlalchemy import exc, make_url, text

from mlcomp.db import make_engine, open_store
from mlcomp.db import session as db_session
from mlcomp.settings import Settings

pytestmark = pytest.mark.postgres


def _libpq(url) -> str:
    """A SQLAlchemy URL as a libpq URI for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Monitor:
    """A superuser connection of its own into the test's database that counts the others."""

    def __init__(self, url: str):
        import psycopg

        self.connection = psycopg.connect(_libpq(url), autocommit=True)
        self.lock = threading.Lock()

    def count(self) -> int:
        with self.lock:
            return self.connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()[0]

    def wait_for(self, count: int, within: float) -> float:
        """Seconds until the count is ``count``; fails after ``within`` s."""
        started = time.monotonic()
        while (seen := self.count()) != count:
            assert time.monotonic() - started < within, f"still {seen} connections after {within} s"
            time.sleep(0.02)
        return time.monotonic() - started


@pytest.fixture
def monitor(pg_url):
    watcher = Monitor(pg_url)
    yield watcher
    watcher.connection.close()


@pytest.fixture
def limited(pg_url):
    """``(url, holder)``: the test database limited to one connection (``ALTER DATABASE … CONNECTION
    LIMIT 1``) and the URL of a non-superuser role (superusers are exempt from the limit); ``holder()``
    opens a psycopg connection as that role, taking the one slot."""
    import psycopg

    role = f"mlcomp_test_{uuid.uuid4().hex[:12]}"
    url = make_url(pg_url).set(username=role)
    with psycopg.connect(_libpq(pg_url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'ALTER DATABASE "{url.database}" CONNECTION LIMIT 1')
    opened = []

    def holder():
        deadline = time.monotonic() + 10
        while True:  # the slot may be taken a moment by an autovacuum worker visiting the new database
            try:
                connection = psycopg.connect(_libpq(url), autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        opened.append(connection)
        return connection

    yield url.render_as_string(hide_password=False), holder
    for connection in opened:
        connection.close()
    with psycopg.connect(_libpq(pg_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_one_connection_serves_four_threads(pg_url, monitor):
    engine = make_engine(pg_url, connections=1)
    counts, done, errors = [], [], []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            counts.append(monitor.count())
            time.sleep(0.005)

    def work(n):
        try:
            for _ in range(3):
                with engine.begin() as connection:
                    connection.execute(text("SELECT pg_sleep(0.05)"))
                    counts.append(engine.pool.checkedout())
            done.append(n)
        except Exception as e:  # reported below
            errors.append(e)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(30)
    stop.set()
    sampler.join(5)
    engine.dispose()
    assert not errors
    assert sorted(done) == [0, 1, 2, 3]
    assert max(counts) == 1, counts


def test_idle_connection_is_released_and_reopened(pg_url, monitor):
    engine = make_engine(pg_url, connections=1, idle_release=0.3)
    try:
        for _ in range(2):  # released, then the next transaction reconnects and is released again
            with engine.begin() as connection:
                assert connection.execute(text("SELECT 1")).scalar() == 1
            assert monitor.count() == 1
            assert monitor.wait_for(0, within=1.5) >= 0.2
        with engine.begin() as connection:  # a connection in use is never released under it
            connection.execute(text("SELECT pg_sleep(0.6)"))
            assert connection.execute(text("SELECT 2")).scalar() == 2
        engine.dispose()  # the policy survives the pool's replacement
        with engine.begin() as connection:
            connection.execute(text("SELECT 1"))
        assert monitor.count() == 1
        monitor.wait_for(0, within=1.5)
        assert engine.pool.checkedin() == 1  # the entry stays pooled, its connection closed
    finally:
        engine.dispose()


def test_full_database_is_waited_out(limited, caplog):
    url, holder = limited
    held = holder()
    engine = make_engine(url, connections=1)
    threading.Timer(0.5, held.close).start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="mlcomp.db.session"):
            with engine.begin() as connection:
                assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    assert time.monotonic() - started >= 0.4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("PostgreSQL refuses connections (too many connections for database")
    assert warnings[0].endswith("retrying for up to 60 s")


def test_full_database_fails_with_the_servers_error_after_the_bound(limited, monkeypatch):
    import psycopg

    url, holder = limited
    holder()
    monkeypatch.setattr(db_session, "CONNECT_RETRY_FOR", 0.6)
    engine = make_engine(url, connections=1, idle_release=5.0)
    started = time.monotonic()
    with pytest.raises(exc.OperationalError) as info:
        with engine.connect():
            pass
    elapsed = time.monotonic() - started
    engine.dispose()
    assert isinstance(info.value.orig, psycopg.OperationalError)
    assert "too many connections for database" in str(info.value.orig)
    assert 0.5 <= elapsed < 3.0


def test_other_connect_errors_are_not_retried(pg_url, caplog):
    missing = make_url(pg_url).set(database=f"mlcomp_missing_{uuid.uuid4().hex[:8]}")
    engine = make_engine(missing.render_as_string(hide_password=False))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mlcomp.db.session"):
        with pytest.raises(exc.OperationalError, match="does not exist"):
            with engine.connect():
                pass
    engine.dispose()
    assert time.monotonic() - started < 5.0  # a retry would go on for 60 s
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_waiting_for_the_one_connection_times_out_with_a_reason(pg_url, monkeypatch):
    monkeypatch.setattr(db_session, "POOL_WAIT", 0.2)
    engine = make_engine(pg_url, connections=1)
    try:
        with engine.connect():
            with pytest.raises(exc.TimeoutError,
                               match=r"within 0\.2 s: this process holds at most 1 \(connections=1\)"):
                engine.connect()
    finally:
        engine.dispose()


def test_open_store_migrates_through_one_connection(pg_url, tmp_path, monkeypatch, monitor):
    monkeypatch.setattr(db_session, "POOL_WAIT", 5.0)  # a second connection would fail here, not hang
    store = open_store(Settings(root=tmp_path / "mlcomp", db_url=pg_url), connections=1, idle_release=0.3)
    with store.begin() as session:
        assert session.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    monitor.wait_for(0, within=1.5)
    store.kw["bind"].dispose()


def test_sqlite_ignores_the_policy(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}", connections=1, idle_release=0.1)
    assert engine.pool.size() == 5
    engine.dispose()


def test_policy_arguments_are_checked(pg_url):
    with pytest.raises(ValueError, match="at least 1"):
        make_engine(pg_url, connections=0)
    with pytest.raises(ValueError, match="seconds >= 0"):
        make_engine(pg_url, idle_release=-1)
    with pytest.raises(ValueError, match="pool_size"):
        make_engine(pg_url, connections=1, pool_size=3)
