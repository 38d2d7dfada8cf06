"""A full disk under the worker's root (issue 23): the task that filled it fails with a reason
naming ENOSPC and the file system, its exit record survives, the computer stays alive.

Each test runs on a 20 MB tmpfs that it mounts in its own temporary folder and unmounts after
(root only; skipped where mounting is impossible). The store stays outside it, on the test's
folder, except in the test of a SQLite store on the full disk too (as in the issue), which the
worker's reserve beside the store keeps writable (:mod:`mlcomp.worker.disk`).
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from mlcomp.db import Computer, Task, TaskStatus, immediate, make_engine, make_sessionmaker, upgrade
from mlcomp.lifecycle import set_task_status
from mlcomp.settings import Settings
from mlcomp.supervisor.embedded import run_local
from mlcomp.worker import Worker
from mlcomp.worker.disk import FULL_BELOW, free_bytes
from mlcomp.worker.process import AttemptFiles
from supervisor_helpers import add_task, make_dag, wait_for, wait_status

S = TaskStatus


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs mounted at ``tmp_path/disk`` for the test, unmounted after it (lazily if a
    process still holds it); skips the test where it cannot be mounted (not root, no mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def disk_settings(small_disk, tmp_path) -> Settings:
    """Settings whose root (tasks, snapshots, data) is on the small disk, the store beside it."""
    return Settings(root=small_disk / "mlcomp", db_url=f"sqlite:///{tmp_path / 'mlcomp.db'}",
                    heartbeat_ttl=5.0, stop_grace=3.0)


@pytest.fixture
def disk_store(disk_settings):
    engine = make_engine(disk_settings.db_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def fill(folder: Path) -> None:
    """Writes zeros to ``folder/filler`` until its file system is full."""
    chunk = b"\0" * (1 << 20)
    with open(folder / "filler", "wb", buffering=0) as file:
        try:
            while True:
                file.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def new_tasks(store, *specs, **columns) -> list[int]:
    """One DAG of tasks: ``(name, command or executor config, names of its dependencies)`` each,
    with ``columns``; returns their ids."""
    with store.begin() as session:
        immediate(session)
        dag, tasks = make_dag(session, name=f"d{os.urandom(3).hex()}"), {}
        for name, command, depends in specs:
            config = command if isinstance(command, dict) else {"command": command}
            tasks[name] = add_task(session, dag, name, depends=[tasks[d] for d in depends],
                                   executor_config=config, **columns)
        return [task.id for task in tasks.values()]


def heartbeat(store):
    with store() as session:
        return session.get(Computer, "pc").heartbeat


def no_task_failed_for_silence(store) -> None:
    with store() as session:
        reasons = session.scalars(select(Task.reason)).all()
    assert not [r for r in reasons if r and ("silent" in r or "vanished" in r)], reasons


def test_a_task_that_fills_the_disk_fails_naming_enospc_and_the_computer_stays_alive(
        disk_settings, disk_store, small_disk):
    store = disk_store
    fill_id, after_id = new_tasks(store, ("fill", "echo filling; head -c 40M /dev/zero > big", ()),
                                  ("after", "echo after", ("fill",)))
    with run_local(disk_settings, gpus=[], name="pc", sessionmaker=store, interval=0.2):
        failed = wait_status(store, fill_id, S.failed, timeout=60)
        skipped = wait_status(store, after_id, S.skipped, S.failed, timeout=30)
        assert free_bytes(small_disk) < FULL_BELOW  # the disk is still full: the worker goes on beating
        beat = heartbeat(store)
        wait_for(lambda: heartbeat(store) > beat, timeout=30)
        (disk_settings.tasks_dir / str(fill_id) / "code" / "big").unlink()  # room again: the worker still runs tasks
        again, = new_tasks(store, ("again", "echo again", ()))
        wait_status(store, again, S.success, timeout=60)
    disk = os.path.realpath(small_disk)
    assert failed.reason.startswith(f"exit code 1: no space left on device (ENOSPC) on {disk} "), failed.reason
    assert str(disk_settings.tasks_dir / str(fill_id)) in failed.reason and "bytes free" in failed.reason
    assert skipped.status is S.skipped and "fill" in skipped.reason  # skipped for its dependency, not the disk
    no_task_failed_for_silence(store)


def test_with_the_store_on_the_full_disk_too_the_reason_is_recorded_and_the_computer_beats(small_disk):
    """The whole root on the small disk, SQLite store included (as in the issue): the reserve the
    worker keeps beside the store gives it room to record the end and to go on beating, where the
    end used to wait and the supervisor then failed the task as on a silent computer."""
    root = small_disk / "mlcomp"
    settings = Settings(root=root, db_url=f"sqlite:///{root / 'mlcomp.db'}", heartbeat_ttl=3.0, stop_grace=3.0)
    root.mkdir()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    store = make_sessionmaker(engine)
    try:
        fill_id, after_id = new_tasks(store, ("fill", "head -c 40M /dev/zero > big", ()),
                                      ("after", "echo after", ("fill",)))
        with run_local(settings, gpus=[], name="pc", sessionmaker=store, interval=0.2):
            failed = wait_status(store, fill_id, S.failed, timeout=60)
            wait_status(store, after_id, S.skipped, timeout=30)
            assert free_bytes(small_disk) < FULL_BELOW
            beat = heartbeat(store)
            for _ in range(3):  # beats go on for over a heartbeat_ttl after the disk filled
                wait_for(lambda: heartbeat(store) > beat, timeout=30)
                beat = heartbeat(store)
        disk = os.path.realpath(small_disk)
        assert failed.reason.startswith(f"exit code 1: no space left on device (ENOSPC) on {disk} "), failed.reason
        no_task_failed_for_silence(store)
    finally:
        engine.dispose()


def test_the_exit_record_is_kept_when_the_child_ends_on_a_full_disk(disk_settings, disk_store, small_disk, tmp_path):
    """A worker killed while its task runs; the disk fills; the task exits 0: the next worker
    reads the recorded exit (success), where the record used to be left empty ("no exit
    record", failed)."""
    store, go = disk_store, tmp_path / "go"
    task_id, = new_tasks(store, ("wait", 'while [ ! -e "$GO" ]; do sleep 0.05; done; exit 0', ()),
                         env={"GO": str(go)})
    with store.begin() as session:
        immediate(session)
        session.add(Computer(name="pc", gpus=[], cpu=2))
        task = session.get(Task, task_id)
        task.computer, task.gpus = "pc", []
        set_task_status(session, task, S.queued, "placed on pc")
    env = {**os.environ, "MLCOMP_ROOT": str(disk_settings.root), "MLCOMP_DB_URL": disk_settings.db_url,
           "MLCOMP_HEARTBEAT_TTL": "5"}
    env.pop("MLCOMP_BROKER_URL", None)
    worker = subprocess.Popen([sys.executable, "-c", "from mlcomp.cli import main; main()", "worker", "--name", "pc",
                               "--gpus", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = AttemptFiles.of(disk_settings.tasks_dir, task_id, 1)
    try:
        try:
            wait_status(store, task_id, S.in_progress, timeout=60)
            wait_for(lambda: files.live_pid())
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
        fill(small_disk)
    finally:
        go.touch()  # the child ends whatever happened, so the disk can be unmounted
    wait_for(lambda: files.live_pid() is None)
    assert free_bytes(small_disk) < FULL_BELOW
    assert files.exit_status() == 0
    w = Worker(disk_settings, store, name="pc", gpus=[], poll=0.05).start()
    try:
        task = wait_status(store, task_id, S.success, S.failed)
    finally:
        w.shutdown()
    assert (task.status, task.reason) == (S.success, "exit code 0")
    no_task_failed_for_silence(store)


def test_a_python_task_out_of_space_exits_74_and_says_enospc(disk_settings, disk_store):
    """The child's ENOSPC has its own exit status, so the reason names the device error even when
    the disk has room again by the time the worker looks (the task removed its file)."""
    job = ("import os\n"
           "def main():\n"
           "    try:\n"
           "        with open('big', 'wb', buffering=0) as f:\n"
           "            while True:\n"
           "                f.write(bytes(1 << 20))\n"
           "    finally:\n"
           "        os.remove('big')\n")
    task_id, = new_tasks(disk_store, ("py", {"function": "job:main", "kwargs": {}}, ()), type="python")
    code = disk_settings.tasks_dir / str(task_id) / "code"
    code.mkdir(parents=True)
    (code / "job.py").write_text(job)
    with run_local(disk_settings, gpus=[], name="pc", sessionmaker=disk_store, interval=0.2):
        task = wait_status(disk_store, task_id, S.failed, S.success, timeout=120)
    assert task.status is S.failed
    assert task.reason.startswith("exit code 74: no space left on device (ENOSPC)"), task.reason
    assert "No space left on device" in task.reason  # the traceback's line, written once there was room


def test_a_task_placed_on_a_full_disk_fails_at_once_naming_it(disk_settings, disk_store, small_disk):
    """Its records cannot be prepared, so it never starts: failed with the disk's reason, where the
    worker used to start the child, fail to record its watcher, and leave the task queued."""
    fill(small_disk)
    task_id, = new_tasks(disk_store, ("late", "echo never", ()))
    with run_local(disk_settings, gpus=[], name="pc", sessionmaker=disk_store, interval=0.2):
        task = wait_status(disk_store, task_id, S.failed, S.success, timeout=30)
        beat = heartbeat(disk_store)
        wait_for(lambda: heartbeat(disk_store) > beat, timeout=30)
    disk = os.path.realpath(small_disk)
    assert task.reason.startswith(f"cannot start on pc: no space left on device (ENOSPC) on {disk} "), task.reason
    assert not AttemptFiles.of(disk_settings.tasks_dir, task_id, 1).started()
    no_task_failed_for_silence(disk_store)


@pytest.mark.parametrize("returncode, last_error, no_space, reason", [
    (1, None, "no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free",
     "exit code 1: no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free"),
    (1, "head: error writing", "no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free",
     "exit code 1: no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free; head: error writing"),
    (None, None, "no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free",
     "no exit record: no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free"),
    (74, None, None, "exit code 74: no space left on device (ENOSPC)"),
    (74, "OSError: [Errno 28] No space left on device", None,
     "exit code 74: no space left on device (ENOSPC); OSError: [Errno 28] No space left on device"),
    (74, "a command's own exit 74", None, "exit code 74: a command's own exit 74"),
    (0, None, "no space left on device (ENOSPC) on /d (holding /d/t): 0 bytes free", "exit code 0"),
])
def test_a_full_disk_comes_first_in_a_failure_reason(returncode, last_error, no_space, reason):
    from mlcomp.worker.launch import outcome

    assert outcome(returncode, stop_requested=False, last_error=last_error, no_space=no_space).reason == reason


def test_records_are_read_from_their_first_line_over_the_placeholder(tmp_path):
    from mlcomp.worker.process import PLACEHOLDER

    files = AttemptFiles(tmp_path)
    files.prepare()
    assert (files.exit_status(), files.recorded_pid(), files.started()) == (None, None, False)
    subprocess.run(["/bin/sh", "-c", 'echo 143 1<> "$1/exit"; echo 4321 1<> "$1/pid"', "sh", str(tmp_path)], check=True)
    assert files.path("exit").read_bytes() == b"143\n" + PLACEHOLDER[4:]
    assert (files.exit_status(), files.recorded_pid(), files.started()) == (-signal.SIGTERM, 4321, True)
    assert files.path("watcher").read_text().split() == [str(os.getpid()), str(psutil.Process().create_time())]


def test_a_reserve_is_kept_beside_a_sqlite_store_only(tmp_path):
    from mlcomp.worker.disk import RESERVE, RESERVE_BYTES, keep_store_reserve

    assert keep_store_reserve(f"sqlite:///{tmp_path / 'mlcomp.db'}") == tmp_path / RESERVE
    assert (tmp_path / RESERVE).stat().st_size == RESERVE_BYTES
    assert keep_store_reserve("postgresql+psycopg://u@127.0.0.1/db") is None
    assert keep_store_reserve("sqlite://") is None
