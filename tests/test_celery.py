"""The Celery transport on the local Redis: a real Celery worker (in a thread, solo pool)
consumes a computer's queue and starts a bash task through the same Worker.submit."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest

from mlcomp.db import TaskStatus
from mlcomp.errors import ConfigError
from mlcomp.supervisor import HandOver
from mlcomp.worker import CeleryDispatcher, Worker, bind_worker, make_celery, queue_name
from test_worker import add_task, logs, wait_status

pytestmark = pytest.mark.redis


@pytest.fixture
def celery_settings(settings, redis_url):
    url, prefix = redis_url
    return dataclasses.replace(settings, broker_url=url), prefix


def test_a_bash_task_runs_through_the_computers_queue(celery_settings, store):
    from celery.contrib.testing.worker import start_worker

    settings, prefix = celery_settings
    name = f"{prefix}-pc"
    worker = Worker(settings, store, name=name, gpus=[0, 1])
    worker.register()  # no monitor thread: only the Celery message can start the task
    consumer_app = make_celery(settings, key_prefix=prefix)
    bind_worker(consumer_app, worker)
    task_id = add_task(store, 'echo "via celery $CUDA_VISIBLE_DEVICES"', computer=name, gpus=[1])
    with start_worker(consumer_app, pool="solo", perform_ping_check=False, queues=[queue_name(name)],
                      shutdown_timeout=30):
        CeleryDispatcher(make_celery(settings, key_prefix=prefix)).dispatch(task_id, name)
        wait_status(store, task_id, TaskStatus.success, timeout=30)
    worker.shutdown()
    assert logs(store, task_id) == ["via celery 1"]


def test_server_dispatcher_keeps_local_tasks_in_process(settings, store):
    class Remote:
        calls = []

        def dispatch(self, task_id, computer):
            self.calls.append((task_id, computer))

    local = Worker(settings, store, name="here", gpus=[])
    local.register()
    task_id = add_task(store, "echo local", computer="here")
    remote = Remote()
    dispatcher = HandOver([local], remote)
    dispatcher.dispatch(task_id, "here")
    dispatcher.dispatch(99, "there")
    assert wait_status(store, task_id, TaskStatus.success) and remote.calls == [(99, "there")]
    HandOver([local]).dispatch(100, "there")  # no broker: the remote worker polls the store
    local.shutdown()


def test_make_celery_needs_a_broker(settings):
    with pytest.raises(ConfigError, match="broker_url is not set"):
        make_celery(settings)


CONSUMER = """
import sys
from mlcomp.db import open_store
from mlcomp.settings import Settings
from mlcomp.worker import Worker, consume, make_celery
settings = Settings.from_env()
worker = Worker(settings, open_store(settings), name=sys.argv[1], gpus=[])
worker.register()
try:
    consume(worker, make_celery(settings, key_prefix=sys.argv[2]), loglevel="WARNING")
finally:
    worker.shutdown()
print("consumer ended", flush=True)
"""


def test_consume_serves_the_queue_until_sigterm(celery_settings, store):
    """``consume`` (what ``mlcomp worker`` runs with a broker) in its own process: Celery's
    worker in the main thread, ended by SIGTERM (a warm shutdown)."""
    settings, prefix = celery_settings
    name = f"{prefix}-box"
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": settings.db_url,
           "MLCOMP_BROKER_URL": settings.broker_url}
    process = subprocess.Popen([sys.executable, "-c", CONSUMER, name, prefix], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        task_id = add_task(store, "echo consumed", computer=name)
        CeleryDispatcher(make_celery(settings, key_prefix=prefix)).dispatch(task_id, name)
        wait_status(store, task_id, TaskStatus.success, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "consumer ended" in output, output
    assert logs(store, task_id) == ["consumed"]
