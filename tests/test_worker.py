"""The worker: launching tasks as process groups, logs, exit codes, stop, timeouts, retries,
vanished processes, heartbeats, and GPU placement seen by the children."""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
from sqlalchemy import select, update

from mlcomp.db import Attempt, Computer, LogLine, Metric, ResourceSample, Task, TaskStatus, immediate
from mlcomp.supervisor import Supervisor, set_task_status
from mlcomp.worker import Worker
from supervisor_helpers import make_dag, wait_for, wait_status

S = TaskStatus


def add_task(store, command=None, *, status=S.queued, computer="pc", gpus=(), type="bash", config=None,
             code=None, settings=None, **columns) -> int:
    """Inserts a task (in a DAG of its own), writes ``code`` ({file: text}) into its code folder
    under ``settings.tasks_dir``, and moves it to ``status`` the legal way."""
    with store.begin() as session:
        immediate(session)
        if session.get(Computer, computer) is None:
            session.add(Computer(name=computer, gpus=[], cpu=2))
        task = Task(dag=make_dag(session), name=f"t{time.monotonic_ns()}", type=type,
                    executor_config=config if config is not None else {"command": command}, **columns)
        session.add(task)
        session.flush()
        for name, text in (code or {}).items():
            (settings.tasks_dir / str(task.id) / "code").mkdir(parents=True, exist_ok=True)
            (settings.tasks_dir / str(task.id) / "code" / name).write_text(text)
        if status is not S.not_ran:
            task.computer, task.gpus = computer, list(gpus)
            set_task_status(session, task, S.queued, "test")
        return task.id


def get(store, task_id) -> Task:
    with store() as session:
        return session.get(Task, task_id)


def logs(store, task_id, stream=None) -> list[str]:
    with store() as session:
        query = select(LogLine.text).where(LogLine.task_id == task_id).order_by(LogLine.id)
        if stream:
            query = query.where(LogLine.stream == stream)
        return list(session.scalars(query))


@pytest.fixture
def changes():
    return []


@pytest.fixture
def worker(settings, store, changes):
    settings = dataclasses.replace(settings, stop_grace=0.5)
    w = Worker(settings, store, name="pc", gpus=[0, 1, 2, 3], on_change=lambda: changes.append(1), poll=0.05)
    w.start()
    yield w
    w.shutdown()


def test_register_writes_the_computer(worker, store):
    with store() as session:
        computer = session.get(Computer, "pc")
        assert [g["index"] for g in computer.gpus] == [0, 1, 2, 3]
        assert computer.cpu == psutil.cpu_count()
        assert computer.memory > 0 and computer.heartbeat is not None


def test_bash_task_succeeds_with_its_output_logged(worker, store, changes):
    task_id = add_task(store, "echo out-line; echo err-line >&2; printf 'no newline'")
    assert worker.submit(task_id)
    task = wait_status(store, task_id, S.success)
    assert task.reason == "exit code 0" and task.pid is not None and task.started and task.finished
    assert logs(store, task_id, "stdout") == ["out-line", "no newline"]
    assert logs(store, task_id, "stderr") == ["err-line"]
    with store() as session:
        attempt = session.scalars(select(Attempt).where(Attempt.task_id == task_id)).one()
        assert attempt.status is S.success and attempt.computer == "pc"
    assert len(changes) >= 2  # in_progress, success


def test_child_gets_gpus_env_and_code_folder(worker, store, settings):
    task_id = add_task(store, 'echo "$CUDA_VISIBLE_DEVICES|$MLCOMP_TASK_ID|$MLCOMP_ATTEMPT|$EXTRA|$PWD"',
                       gpus=[1, 3], env={"EXTRA": "x y"})
    worker.submit(task_id)
    wait_status(store, task_id, S.success)
    folder = settings.tasks_dir / str(task_id) / "code"
    assert logs(store, task_id) == [f"1,3|{task_id}|1|x y|{folder}"]
    no_gpu = add_task(store, 'echo "[$CUDA_VISIBLE_DEVICES]"')
    worker.submit(no_gpu)
    wait_status(store, no_gpu, S.success)
    assert logs(store, no_gpu) == ["[]"]


def test_many_lines_arrive_in_order_in_few_batches(worker, store):
    task_id = add_task(store, "for i in $(seq 1 250); do echo line-$i; done")
    worker.submit(task_id)
    wait_status(store, task_id, S.success)
    assert logs(store, task_id) == [f"line-{i}" for i in range(1, 251)]


def test_failure_names_exit_code_and_last_error_line(worker, store):
    task_id = add_task(store, "echo first >&2; echo 'no such thing' >&2; exit 3")
    worker.submit(task_id)
    task = wait_status(store, task_id, S.failed)
    assert task.reason == "exit code 3: no such thing"


def test_failure_reason_is_the_exception_line_not_a_later_warning(worker, store):
    script = ("import sys, warnings\n"
              "try:\n    raise ValueError('bad lr: -1')\n"
              "except ValueError:\n    import traceback; traceback.print_exc()\n"
              "print('see https://example.org/warnings for details', file=sys.stderr)\n"
              "sys.exit(1)\n")
    task_id = add_task(store, f"{sys.executable} -c {shlex.quote(script)}")
    worker.submit(task_id)
    task = wait_status(store, task_id, S.failed)
    assert task.reason == "exit code 1: ValueError: bad lr: -1"


def test_submit_twice_starts_once_and_ignores_foreign_tasks(worker, store):
    task_id = add_task(store, "sleep 0.3")
    assert worker.submit(task_id) is True
    assert worker.submit(task_id) is False
    other = add_task(store, "true", computer="elsewhere")
    assert worker.submit(other) is False
    wait_status(store, task_id, S.success)
    assert get(store, other).status is S.queued


def test_queued_task_is_picked_up_from_the_store(worker, store):
    task_id = add_task(store, "echo polled")
    wait_status(store, task_id, S.success)  # never submitted: the monitor found it
    assert logs(store, task_id) == ["polled"]


def test_task_stopped_while_queued_is_not_started(settings, store):
    w = Worker(settings, store, name="pc", gpus=[])
    w.register()
    task_id = add_task(store, "echo never")
    with store.begin() as session:
        set_task_status(session, session.get(Task, task_id), S.stopped, "user")
    assert w.submit(task_id) is False
    assert get(store, task_id).status is S.stopped and logs(store, task_id) == []


def request_stop(store, task_id):
    with store.begin() as session:
        set_task_status(session, session.get(Task, task_id), S.stopping, "stop requested")


def test_stop_ends_the_whole_process_tree(worker, store, settings):
    task_id = add_task(store, "sleep 300 & echo $! > grandchild.pid; echo started; wait")
    worker.submit(task_id)
    wait_for(lambda: logs(store, task_id) == ["started"])
    child = psutil.Process(get(store, task_id).pid)
    grandchild = psutil.Process(int((settings.tasks_dir / str(task_id) / "code" / "grandchild.pid").read_text()))
    request_stop(store, task_id)
    task = wait_status(store, task_id, S.stopped, timeout=10)
    assert task.reason.startswith("stopped on request (killed by SIGTERM")
    gone, alive = psutil.wait_procs([child, grandchild], timeout=5)
    assert not alive


def test_stop_kills_a_task_that_ignores_sigterm(worker, store):
    task_id = add_task(store, "trap '' TERM; echo ready; while true; do sleep 0.05; done")
    worker.submit(task_id)
    wait_for(lambda: logs(store, task_id) == ["ready"])
    request_stop(store, task_id)
    task = wait_status(store, task_id, S.stopped, timeout=10)
    assert task.reason == "stopped on request (killed by SIGKILL)"


def test_timeout_stops_and_fails_the_task(worker, store):
    task_id = add_task(store, "sleep 30", timeout=0.3)
    worker.submit(task_id)
    task = wait_status(store, task_id, S.failed, timeout=10)
    assert task.reason == "timed out after 0.3 s (killed by SIGTERM)"


def test_failed_task_with_retries_left_goes_back_to_not_ran(worker, store):
    task_id = add_task(store, "exit 1", retries=1)
    worker.submit(task_id)
    task = wait_status(store, task_id, S.not_ran)
    assert task.attempt == 2 and task.reason.startswith("retry 1/1 after: exit code 1")
    assert task.computer is None  # the supervisor places it again


def test_vanished_process_fails_its_task_on_start(settings, store):
    dead = subprocess.Popen(["true"])
    dead.wait()
    task_id = add_task(store, "true")
    with store.begin() as session:
        task = session.get(Task, task_id)
        set_task_status(session, task, S.in_progress, "running before a restart")
        task.pid = dead.pid
    w = Worker(settings, store, name="pc", gpus=[], poll=0.05).start()
    try:
        task = wait_status(store, task_id, S.failed)
    finally:
        w.shutdown()
    assert task.reason.startswith(f"process vanished: pid {dead.pid} is gone from pc")


@pytest.mark.parametrize("exit_record, status, reason", [
    ("0\n", S.success, "exit code 0"),
    ("3\n", S.failed, "exit code 3: partial"),
    ("143\n", S.failed, "killed by SIGTERM: partial"),
    (None, S.failed, "no exit record: partial"),
])
def test_a_child_that_ended_unwatched_gets_its_recorded_outcome_and_the_rest_of_its_log(
        settings, store, exit_record, status, reason):
    from mlcomp.worker.process import AttemptFiles

    dead = subprocess.Popen(["true"])
    dead.wait()
    task_id = add_task(store, "true")
    files = AttemptFiles.of(settings.tasks_dir, task_id, 1)
    files.folder.mkdir(parents=True)
    files.path("pid").write_text(f"{dead.pid}\n")
    files.path("stdout").write_bytes(b"logged\nnot yet\nhalf")
    files.path("stderr").write_bytes(b"partial")
    if exit_record is not None:
        files.path("exit").write_text(exit_record)
    with store.begin() as session:
        task = session.get(Task, task_id)
        set_task_status(session, task, S.in_progress, "running before a restart")
        task.pid = dead.pid
        session.flush()
        session.execute(update(Attempt).where(Attempt.task_id == task_id).values(log_offsets={"stdout": 7}))
    w = Worker(settings, store, name="pc", gpus=[], poll=0.05).start()
    try:
        task = wait_status(store, task_id, status)
    finally:
        w.shutdown()
    assert task.reason == reason and task.attempt == 1
    assert logs(store, task_id) == ["not yet", "half", "partial"]


def test_a_returning_worker_kills_the_child_of_a_task_failed_while_it_was_away(settings, store):
    from mlcomp.worker.process import AttemptFiles

    task_id = add_task(store, "sleep 30")
    files = AttemptFiles.of(settings.tasks_dir, task_id, 1)
    files.folder.mkdir(parents=True)
    orphan = subprocess.Popen(["bash", "-c", f'echo $$ > {files.path("pid")}; exec sleep 30'], start_new_session=True)
    wait_for(lambda: files.live_pid() == orphan.pid)
    with store.begin() as session:
        task = session.get(Task, task_id)
        set_task_status(session, task, S.in_progress, "running")
        set_task_status(session, task, S.failed, "computer 'pc' silent since …")  # the sweep, meanwhile
    w = Worker(settings, store, name="pc", gpus=[], poll=0.05).start()
    try:
        assert orphan.wait(10) == -signal.SIGKILL
    finally:
        w.shutdown()
    assert get(store, task_id).status is S.failed


def test_offsets_stop_before_a_line_not_yet_complete(settings, store):
    from mlcomp.worker.process import AttemptFiles, TaskProcess

    files = AttemptFiles(settings.tasks_dir / "1")
    files.folder.mkdir(parents=True)
    files.path("stdout").write_bytes(b"one\ntw")
    reported = []
    reporter = type("R", (), {"output": lambda self, lines, offsets: reported.append((lines, offsets))})()
    process = TaskProcess(0, files, reporter, lambda *a: None, gone=True)
    process.read()
    with open(files.path("stdout"), "ab") as out:
        out.write(b"o\r\nthree")
    process.read()
    assert reported == [([("stdout", "one")], {"stdout": 4, "stderr": 0}),
                        ([("stdout", "two")], {"stdout": 9, "stderr": 0})]


def test_shutdown_stops_running_tasks_and_threads_at_once(settings, store, caplog):
    caplog.set_level("INFO", logger="mlcomp.worker.worker")
    settings = dataclasses.replace(settings, heartbeat_ttl=300.0, stop_grace=0.5)
    w = Worker(settings, store, name="pc", gpus=[]).start()
    task_id = add_task(store, "sleep 300")
    w.submit(task_id)
    wait_status(store, task_id, S.in_progress)
    started = time.monotonic()
    w.shutdown()
    assert time.monotonic() - started < 3.0  # not a heartbeat interval (100 s)
    assert get(store, task_id).status is S.stopped
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("worker-pc"))
    assert "worker pc: monitor loop ends: the worker shuts down" in caplog.messages  # says why it exits


def test_shutdown_during_a_launch_waits_for_it_and_records_the_stop(settings, store, monkeypatch):
    """SIGTERM to ``dag submit --wait`` may come while a child has started but is not yet handed to
    the output pump: shutdown must still see the task end as ``stopped``, not leave it stopping."""
    from mlcomp.worker.process import TaskProcess

    start = TaskProcess.start
    monkeypatch.setattr(TaskProcess, "start", lambda self: (time.sleep(0.5), start(self))[1])
    settings = dataclasses.replace(settings, heartbeat_ttl=300.0, stop_grace=0.5)
    w = Worker(settings, store, name="pc", gpus=[]).start()
    task_id = add_task(store, "sleep 300")
    launch = threading.Thread(target=w.submit, args=(task_id,))
    launch.start()
    wait_status(store, task_id, S.in_progress)  # committed; the pump does not have it yet
    w.shutdown()
    assert get(store, task_id).status is S.stopped
    launch.join()
    assert w.submit(add_task(store, "true")) is False  # a closing worker starts nothing new


def test_heartbeat_updates_the_computer(settings, store):
    w = Worker(settings, store, name="pc", gpus=[])
    w.register()
    with store() as session:
        first = session.get(Computer, "pc").heartbeat
    time.sleep(0.01)
    w.heartbeat()
    with store() as session:
        computer = session.get(Computer, "pc")
        assert computer.heartbeat > first and set(computer.usage) == {"cpu", "memory", "memory_bytes", "gpus", "tasks"}
        [sample] = session.scalars(select(ResourceSample))  # and its history (mlcomp.worker.resources)
        assert (sample.computer, sample.task_id, sample.gpu, sample.memory) == ("pc", None, None,
                                                                                computer.usage["memory_bytes"])


def test_python_task_runs_in_the_child_and_stores_its_result(worker, store, settings):
    job = ("import os\n"
           "def main(n, task):\n"
           "    print('hello from', os.environ['MLCOMP_TASK_ID'])\n"
           "    task.reporter.metric('loss', 0.5, step=1)\n"
           "    return {'n': n * 2, 'gpus': os.environ['CUDA_VISIBLE_DEVICES']}\n")
    task_id = add_task(store, type="python", config={"function": "job:main", "kwargs": {"n": 3}},
                       code={"job.py": job}, settings=settings)
    worker.submit(task_id)
    task = wait_status(store, task_id, S.success)
    assert task.result == {"n": 6, "gpus": ""}
    assert f"hello from {task_id}" in logs(store, task_id, "stdout")
    with store() as session:
        assert session.scalars(select(Metric.value).where(Metric.task_id == task_id)).all() == [0.5]


def test_python_task_exception_fails_and_sigterm_stops(worker, store, settings):
    worker.settings = dataclasses.replace(worker.settings, stop_grace=10.0)  # a loaded machine is slow
    job = ("import sys, time\n"
           "def boom():\n    raise ValueError('bad value 42')\n"
           "def pause():\n    sys.exit(75)\n"
           "def sleep():\n    print('sleeping', flush=True)\n    time.sleep(300)\n")
    failing, pausing, sleeping = (
        add_task(store, type="python", config={"function": f"job:{name}", "kwargs": {}}, code={"job.py": job},
                 settings=settings) for name in ("boom", "pause", "sleep"))
    assert wait_status(store, failing, S.failed).reason == "exit code 1: ValueError: bad value 42"
    assert wait_status(store, pausing, S.stopped).reason == "the task stopped itself (exit code 75)"
    wait_for(lambda: "sleeping" in logs(store, sleeping))
    request_stop(store, sleeping)
    assert wait_status(store, sleeping, S.stopped).reason == "stopped on request (exit code 75)"


def test_gpu_requests_on_two_computers_get_disjoint_indices(settings, store):
    """Tasks asking for 1, 2 and "2-4" GPUs on two computers of 4 declared GPUs: each child sees
    exactly its allocation in CUDA_VISIBLE_DEVICES and no GPU is given twice at once."""
    workers = [Worker(settings, store, name=name, gpus=[0, 1, 2, 3], poll=0.05) for name in ("pc1", "pc2")]
    for w in workers:
        w.register()
    supervisor = Supervisor(settings, store, interval=0.1)
    for w in workers:
        w.on_change = supervisor.wake
        w.start()
    requests = [(1, 1), (2, 2), (2, 4), (1, 1), (2, 4)]
    ids = [add_task(store, 'echo "$CUDA_VISIBLE_DEVICES"; sleep 0.3', status=S.not_ran, computer="pc1",
                    gpu_min=lo, gpu_max=hi) for lo, hi in requests]
    supervisor.start()
    try:
        tasks = [wait_status(store, i, S.success) for i in ids]
    finally:
        supervisor.shutdown()
        for w in workers:
            w.shutdown()
    for task, (lo, hi) in zip(tasks, requests):
        assert lo <= len(task.gpus) <= hi
        assert logs(store, task.id) == [",".join(map(str, task.gpus))]
    # tasks that ran at the same time on one computer never shared a GPU
    for a in tasks:
        for b in tasks:
            overlap = a.id < b.id and a.computer == b.computer and a.started < b.finished and b.started < a.finished
            assert not (overlap and set(a.gpus) & set(b.gpus)), (a, b)


# -- the worker and server commands ------------------------------------------------------------------
def start_command(settings, *args) -> subprocess.Popen:
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": settings.db_url}
    env.pop("MLCOMP_BROKER_URL", None)
    return subprocess.Popen([sys.executable, "-c", "from mlcomp.cli import main; main()", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def end_command(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


def test_worker_command_runs_tasks_placed_on_it_from_the_store(settings, store):
    process = start_command(settings, "worker", "--name", "box", "--gpus", "0,1")
    try:
        wait_for(lambda: get_computer(store, "box"))
        task_id = add_task(store, 'echo "box $CUDA_VISIBLE_DEVICES"', computer="box", gpus=[1])
        wait_status(store, task_id, S.success)
    finally:
        output = end_command(process)
    assert logs(store, task_id) == ["box 1"]
    assert [g["index"] for g in get_computer(store, "box").gpus] == [0, 1]
    assert "mlcomp worker box: 2 GPU(s); tasks through Socket" in output and "stopped" in output


def test_server_command_supervises_its_local_worker(settings, store):
    from mlcomp.control import wake
    from mlcomp.db import utcnow
    from mlcomp.supervisor.supervisor import serving

    port = free_port()
    process = start_command(settings, "server", "--port", str(port), "--name", "srv", "--gpus", "0")
    try:
        def served():
            with store() as session:
                return serving(session, settings, utcnow())
        wait_for(served)
        task_id = add_task(store, "echo served", status=S.not_ran, computer="srv", gpu_min=1, gpu_max=1)
        wake(settings)
        task = wait_status(store, task_id, S.success)
        second = start_command(settings, "server", "--port", str(port + 1))
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 1 and "already serves" in output
    finally:
        output = end_command(process)
    assert (task.computer, task.gpus) == ("srv", [0])
    assert f"mlcomp server: http://127.0.0.1:{port}" in output


def test_server_refuses_a_public_host_without_token_before_starting_anything(settings, store, monkeypatch):
    monkeypatch.delenv("MLCOMP_TOKEN", raising=False)
    process = start_command(settings, "server", "--host", "0.0.0.0", "--port", str(free_port()), "--name", "pub")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "set a token" in output and "Traceback" not in output, output
    assert get_computer(store, "pub") is None  # the worker never started


def test_server_refuses_a_taken_port_before_starting_anything(settings, store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_command(settings, "server", "--port", str(port), "--name", "busy")
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in output, output
    assert "Traceback" not in output
    assert get_computer(store, "busy") is None  # the worker never started


def test_bad_gpus_option_is_a_usage_error():
    from click.testing import CliRunner

    from mlcomp.cli import cli

    result = CliRunner().invoke(cli, ["worker", "--gpus", "0,x"])
    assert result.exit_code == 2 and "expected comma-separated GPU indices" in result.output


def get_computer(store, name) -> Computer | None:
    with store() as session:
        return session.get(Computer, name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.postgres
def test_worker_on_postgresql_runs_and_stops_tasks(settings, pg_store, pg_url):
    settings = dataclasses.replace(settings, db_url=pg_url, stop_grace=0.5)
    w = Worker(settings, pg_store, name="pc", gpus=[0], poll=0.05).start()
    try:
        done = add_task(pg_store, 'echo "pg $MLCOMP_DB_URL"', gpus=[0])
        w.submit(done)
        wait_status(pg_store, done, S.success)
        python = add_task(pg_store, type="python", config={"function": "job:main", "kwargs": {}}, settings=settings,
                          code={"job.py": "def main(task):\n    task.reporter.log('from the child')\n    return 7\n"})
        w.submit(python)
        assert wait_status(pg_store, python, S.success).result == {"value": 7}
        running = add_task(pg_store, "echo go; sleep 300")
        w.submit(running)
        wait_for(lambda: logs(pg_store, running) == ["go"])
        request_stop(pg_store, running)
        assert wait_status(pg_store, running, S.stopped).reason.startswith("stopped on request")
    finally:
        w.shutdown()
    assert logs(pg_store, done) == [f"pg {pg_url}"]
    assert logs(pg_store, python) == ["from the child"]


@pytest.mark.parametrize("returncode, stop, timed_out, status, reason", [
    (0, False, None, S.success, "exit code 0"),
    (0, True, None, S.success, "exit code 0"),
    (75, False, None, S.stopped, "the task stopped itself (exit code 75)"),
    (75, True, None, S.stopped, "stopped on request (exit code 75)"),
    (-9, True, None, S.stopped, "stopped on request (killed by SIGKILL)"),
    (-9, False, None, S.failed, "killed by SIGKILL: boom"),
    (2, False, None, S.failed, "exit code 2: boom"),
    (-15, True, 1.5, S.failed, "timed out after 1.5 s (killed by SIGTERM)"),
])
def test_exit_to_outcome(returncode, stop, timed_out, status, reason):
    from mlcomp.worker.launch import outcome

    result = outcome(returncode, stop_requested=stop, timed_out=timed_out, last_error="boom")
    assert (result.status, result.reason) == (status, reason)


def test_line_splitter_renders_carriage_returns_and_cuts_long_lines():
    from mlcomp.worker.process import LineSplitter

    splitter = LineSplitter(max_bytes=10)
    assert splitter.feed(b"a\nb") == ["a"]
    assert splitter.feed(b"c\r\n 10%\r 20%\r") == ["bc"]
    assert splitter.feed(b" 30%|done\n\xff\n") == [" 30%|done", "\ufffd"]
    assert splitter.feed(b"x" * 12) == ["x" * 12] and splitter.close() == []
    assert splitter.feed(b"tail") == [] and splitter.close() == ["tail"]
    assert splitter.feed(b" 1/3\r 2/3\r") == [] and splitter.close() == [" 2/3"]


def test_shutdown_rides_out_a_store_locked_by_another_process(settings, store):
    """SIGTERM to ``dag submit --wait`` shuts its scoped worker down while a task's child may hold
    SQLite's write lock: the shutdown's writes wait for it instead of failing the command."""
    import sqlite3

    from mlcomp.db.session import make_engine, make_sessionmaker

    impatient = make_engine(settings.db_url, connect_args={"timeout": 0.05, "check_same_thread": False})
    scoped = Worker(settings, make_sessionmaker(impatient), name="pc", gpus=[], poll=0.05, dag_ids=[7])
    scoped.start()
    wait_for(lambda: get_computer(store, "pc").dag_ids == [7])
    holder = sqlite3.connect(settings.root / "mlcomp.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(3.0, holder.rollback)  # the other process's transaction ends 3 s later
    release.start()
    try:
        scoped.shutdown()
    finally:
        release.cancel()
        release.join()
        impatient.dispose()
        holder.close()
    assert get_computer(store, "pc").dag_ids == []
