"""Shared fixtures: a temporary mlcomp root with its own SQLite store, and fresh PostgreSQL
databases and Redis key prefixes for the tests that need the services.

With ``CI=true`` a missing PostgreSQL or Redis fails the tests that need it instead of skipping.
"""
from __future__ import annotations

import os
import uuid

import pytest

from mlcomp.db import make_engine, make_sessionmaker, upgrade
from mlcomp.settings import Settings

PG_ADMIN = os.environ.get("MLCOMP_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_URL = os.environ.get("MLCOMP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}")
REDIS_URL = os.environ.get("MLCOMP_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _service_missing(name: str, error: Exception):
    message = f"{name} is not reachable: {error}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings rooted in a fresh temporary folder with a SQLite database there."""
    root = tmp_path / "mlcomp"
    return Settings(root=root, db_url=f"sqlite:///{root / 'mlcomp.db'}", heartbeat_ttl=5.0, stop_grace=3.0)


@pytest.fixture
def store(settings):
    """A migrated SQLite store for ``settings``: a sessionmaker."""
    engine = make_engine(settings.db_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def pg_url():
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    psycopg = pytest.importorskip("psycopg")
    name = f"mlcomp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        _service_missing("PostgreSQL", e)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.format(db=name)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_store(pg_url):
    """A migrated PostgreSQL store: a sessionmaker."""
    engine = make_engine(pg_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store(request):
    """The same test against a SQLite and a PostgreSQL store."""
    return request.getfixturevalue("store" if request.param == "sqlite" else "pg_store")


@pytest.fixture
def redis_url():
    """A Redis URL and a unique key prefix; keys under the prefix are deleted after the test."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as e:
        _service_missing("Redis", e)
    prefix = f"mlcomp-test-{uuid.uuid4().hex[:12]}"
    yield REDIS_URL, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
