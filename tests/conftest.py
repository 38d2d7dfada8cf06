"""Shared fixtures: a temporary mlcomp root with its own SQLite store, and fresh PostgreSQL
databases and Redis key prefixes for the tests that need the services.

With ``CI=true`` a missing PostgreSQL or Redis fails the tests that need it instead of skipping.
"""
from __future__ import annotations

import os
import sys
import uuid

import pytest

from mlcomp.db import make_engine, make_sessionmaker, upgrade
from mlcomp.runner.compat.catalyst import catalyst_imports
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


@pytest.fixture
def write_file(tmp_path):
    """``write_file(relative_path, text) -> Path``: writes dedented ``text`` under ``tmp_path``
    (parents created), e.g. a DAG file and its expdir."""
    import textwrap

    def write(relative: str, text: str = ""):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (tiny models run faster and the suite shares few
    cores); the previous count is restored. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(num_epochs=1, num_samples=48, batch_size=16, dropout=0.0, **top_level)``: a
    fresh runner config dict that trains a SimpleNet on SyntheticDataset samples (8 features, 3
    classes) with SGD in one stage ``stage1``; ``top_level`` adds or replaces top-level keys."""

    def make(num_epochs=1, num_samples=48, batch_size=16, dropout=0.0, **top_level):
        data = {"dataset": "SyntheticDataset", "num_samples": num_samples, "num_features": 8, "num_classes": 3,
                "batch_size": batch_size, "loaders": {"train": {"seed": 1}, "valid": {"seed": 2}}}
        return {"model_params": {"model": "SimpleNet", "in_features": 8, "hidden": 16, "num_classes": 3,
                                 "dropout": dropout},
                "args": {"seed": 3}, "runner_params": {"input_key": "features", "output_key": "logits"},
                "stages": {"data_params": data, "criterion_params": {"criterion": "CrossEntropyLoss"},
                           "optimizer_params": {"optimizer": "SGD", "lr": 0.1},
                           "stage1": {"stage_params": {"num_epochs": num_epochs}}},
                **top_level}
    return make


@pytest.fixture
def cluster(pg_url, redis_url, tmp_path):
    """A harness of several computers (:class:`cluster.Cluster`): ``cluster.add("a", gpus="0")``
    starts an ``mlcomp worker`` with its own root folder and loopback address on a fresh
    PostgreSQL database with Redis as the broker; ``cluster.supervise()`` runs the supervisor
    in the test. Everything is stopped, and every task process killed, after the test."""
    from cluster import Cluster

    harness = Cluster(tmp_path / "computers", pg_url, redis_url[0])
    yield harness
    harness.close()


@pytest.fixture
def no_catalyst_modules():
    """No ``catalyst`` module imported before the test or left after it."""
    def forget():
        for name in [m for m in sys.modules if m == "catalyst" or m.startswith("catalyst.")]:
            del sys.modules[name]

    forget()
    yield
    forget()


@pytest.fixture
def hooked(no_catalyst_modules):
    """The Catalyst import hook on, as while an expdir loads."""
    with catalyst_imports() as active:
        assert active
        yield
