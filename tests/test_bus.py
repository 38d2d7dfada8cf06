"""The bus (:mod:`mlcomp.bus`): in-process delivery in the publisher's thread, and each backend
between two buses of one store, as two processes would have (a fresh ``Bus`` has its own token)."""
import threading
import time

import pytest

from mlcomp.bus import SUPERVISOR, Bus, computer_channel
from mlcomp.db import TaskStatus
from mlcomp.lifecycle import set_task_status
from mlcomp.worker import Worker
from services import PrivateRedis
from supervisor_helpers import add_task, make_dag, wait_for, wait_status


class Inbox:
    def __init__(self):
        self.messages: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, ids):
        self.messages.append(ids)
        self.threads.add(threading.current_thread().name)


def test_in_process_subscribers_get_the_message_in_the_publishers_thread_once(settings):
    bus, inbox, other = Bus.of(settings), Inbox(), Inbox()
    subscription = bus.subscribe(computer_channel("a"), inbox)
    elsewhere = bus.subscribe(computer_channel("b"), other)
    try:
        bus.publish(computer_channel("a"), [3, 4])
        assert inbox.messages == [[3, 4]] and inbox.threads == {threading.current_thread().name}
        time.sleep(0.3)  # its own message, back through the socket, is skipped
        assert inbox.messages == [[3, 4]] and other.messages == []
    finally:
        subscription.close()
        elsewhere.close()
    bus.publish(computer_channel("a"), [5])
    assert inbox.messages == [[3, 4]]


def across(sender: Bus, receiver: Bus) -> None:
    """A message from ``sender`` reaches a subscriber of ``receiver`` (another process's bus)."""
    inbox = Inbox()
    subscription = receiver.subscribe(SUPERVISOR, inbox)
    try:
        wait_for(lambda: sender.publish(SUPERVISOR, [7]) or inbox.messages)
        assert set(map(tuple, inbox.messages)) == {(7,)}
    finally:
        subscription.close()
        sender.close()
        receiver.close()


def test_the_local_socket_carries_messages_between_processes_of_a_sqlite_store(settings):
    across(Bus(settings.db_url), Bus(settings.db_url))


@pytest.mark.redis
def test_redis_carries_messages_between_machines(settings, redis_url):
    across(Bus(settings.db_url, redis_url[0]), Bus(settings.db_url, redis_url[0]))


@pytest.mark.postgres
def test_postgresql_listen_notify_carries_messages_without_a_broker(pg_url):
    across(Bus(pg_url), Bus(pg_url))


def test_stores_sharing_a_backend_do_not_hear_each_other(settings, tmp_path):
    inbox = Inbox()
    subscription = Bus(settings.db_url).subscribe(SUPERVISOR, inbox)
    try:
        Bus(f"sqlite:///{tmp_path / 'other.db'}").publish(SUPERVISOR, [1])
        time.sleep(0.3)
        assert inbox.messages == []
    finally:
        subscription.close()


@pytest.mark.redis
def test_a_listener_rides_out_a_redis_restart_and_says_it_may_have_missed_messages(settings):
    redis = PrivateRedis()
    inbox = Inbox()
    sender = Bus(settings.db_url, redis.url)
    subscription = Bus(settings.db_url, redis.url).subscribe(SUPERVISOR, inbox)
    try:
        wait_for(lambda: sender.publish(SUPERVISOR, [1]) or inbox.messages)
        redis.stop()
        sender.publish(SUPERVISOR, [2])  # lost, and logged: nobody can hear it
        time.sleep(1.5)
        redis.start()
        wait_for(lambda: [] in inbox.messages, timeout=15)  # back: "read the store"
        wait_for(lambda: sender.publish(SUPERVISOR, [3]) or [3] in inbox.messages, timeout=15)
        assert [2] not in inbox.messages
    finally:
        subscription.close()
        redis.stop()


@pytest.mark.redis
def test_a_worker_claims_the_task_a_message_names_at_once(settings, store, redis_url):
    """With an hour between the worker's reads of the store, only the message can start it."""
    import dataclasses

    settings = dataclasses.replace(settings, broker_url=redis_url[0])
    worker = Worker(settings, store, name="far", gpus=[0], poll=3600, bus=Bus(settings.db_url, settings.broker_url))
    worker.start()
    try:
        with store.begin() as session:
            task = add_task(session, make_dag(session), "t", executor_config={"command": "echo hi"})
            task.computer, task.gpus = "far", [0]
            set_task_status(session, task, TaskStatus.queued, "placed on far")
            task_id = task.id
        time.sleep(0.3)  # after the monitor's first read at start, which found nothing
        Bus.of(settings).publish(computer_channel("far"), [task_id])
        assert wait_status(store, task_id, TaskStatus.success).computer == "far"
    finally:
        worker.shutdown()
