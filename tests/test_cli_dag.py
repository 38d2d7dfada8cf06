"""``mlcomp dag/task/computer/db`` through click's CliRunner with a temporary MLCOMP_ROOT, running
the embedded supervisor and local worker for real."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from mlcomp import control
from mlcomp.cli import cli
from mlcomp.db import LogLine, Task, TaskStatus, open_store
from mlcomp.errors import ConfigError, DagError, NotFoundError, StateError
from mlcomp.settings import Settings
from mlcomp.supervisor import run_local
from supervisor_helpers import wait_for

S = TaskStatus
DAGS = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture
def mlcomp(tmp_path, monkeypatch):
    """Invokes ``mlcomp ARGS…`` with MLCOMP_ROOT in tmp_path; returns the click Result."""
    root = tmp_path / "root"
    monkeypatch.setenv("MLCOMP_ROOT", str(root))
    monkeypatch.setenv("MLCOMP_STOP_GRACE", "3")
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=True)

    invoke.root = root
    return invoke


def show(mlcomp, dag_id) -> dict:
    result = mlcomp("dag", "show", dag_id, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie, or one reaped meanwhile, does not)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_bash_example_runs_to_success_alone(mlcomp):
    result = mlcomp("dag", "submit", DAGS / "bash.yml", "--wait")
    assert result.exit_code == 0, result.output
    dag_id = int(result.output.splitlines()[0].removeprefix("DAG ").removesuffix(" submitted"))
    doc = show(mlcomp, dag_id)
    assert doc["status"] == "success"
    tasks = {t["name"]: t for t in doc["tasks"]}
    assert sorted(tasks) == ["prepare", "report", "square"] + [f"square n={i}" for i in range(1, 6)]
    assert all(t["status"] == "success" for t in tasks.values())
    assert tasks["report"]["depends"] == ["square"] and tasks["square n=3"]["parent"] == "square"
    assert f"task {tasks['report']['id']} 'report': success (exit code 0)" in result.output
    assert "best cell" not in result.output  # the cells report no metric: there is no best to name
    for follow in ((), ("--follow",)):  # a finished task's log ends also when followed
        logs = mlcomp("task", "logs", tasks["square n=4"]["id"], *follow)
        assert logs.output == "4 squared is 16\n"
    grid_log = mlcomp("task", "logs", tasks["square"]["id"]).output.splitlines()  # the grid's cells, named
    assert sorted(grid_log) == [f"[square n={n}] {n} squared is {n * n}" for n in range(1, 6)]
    listing = mlcomp("dag", "list")
    assert listing.output.splitlines()[1].split()[:5] == [str(dag_id), "bash", "examples", "success", "8"]
    assert "alive" in mlcomp("computer", "list").output


def test_a_failure_skips_dependents_and_resume_runs_only_what_did_not_succeed(mlcomp, tmp_path):
    flag = tmp_path / "fixed"
    (tmp_path / "flaky.yml").write_text(f"""
info: {{name: flaky, project: tests}}
executors:
  first: {{type: bash, command: echo first}}
  check: {{type: bash, command: test -f {flag}, depends: first}}
  after: {{type: bash, command: echo after, depends: check}}
  last: {{type: bash, command: echo last, depends: after}}
""")
    result = mlcomp("dag", "submit", tmp_path / "flaky.yml", "--wait")
    assert result.exit_code == 1, result.output
    dag_id = int(result.output.splitlines()[0].removeprefix("DAG ").removesuffix(" submitted"))
    tasks = {t["name"]: t for t in show(mlcomp, dag_id)["tasks"]}
    assert [tasks[n]["status"] for n in ("first", "check", "after", "last")] == [
        "success", "failed", "skipped", "skipped"]
    flag.touch()
    result = mlcomp("dag", "resume", dag_id, "--wait")
    assert result.exit_code == 0, result.output
    doc = show(mlcomp, dag_id)
    assert doc["status"] == "success"
    assert [(t["name"], t["attempt"]) for t in doc["tasks"]] == [("first", 1), ("check", 2), ("after", 2), ("last", 2)]


def test_submit_prints_one_id_per_dag_grid_cell_and_errors_name_the_id(mlcomp, tmp_path):
    (tmp_path / "g.yml").write_text("info: {name: g, project: tests}\ngrid: [{seed: [1, 2, 3]}]\n"
                                    "executors:\n  a: {type: bash, command: echo $seed}\n")
    result = mlcomp("dag", "submit", tmp_path / "g.yml")
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == 3
    assert "no mlcomp server serves" in result.stderr  # else the tasks would wait without a word
    assert show(mlcomp, ids[1])["tasks"][0]["status"] == "not_ran"
    stopped = mlcomp("dag", "stop", ids[0])
    assert stopped.stdout == f"dag {ids[0]}: stop requested for 1 task(s)\n"
    again = mlcomp("dag", "stop", ids[0])
    assert isinstance(again.exception, StateError) and str(ids[0]) in str(again.exception)
    missing = mlcomp("task", "resume", 999)
    assert isinstance(missing.exception, NotFoundError) and "task 999" in str(missing.exception)
    assert mlcomp("dag", "resume", ids[0]).stdout == f"dag {ids[0]}: 1 task(s) resumed\n"
    assert mlcomp("db", "upgrade").exit_code == 0
    for args in (("dag", "submit", tmp_path / "g.yml", "--wait", "--gpus", "-1"),
                 ("dag", "resume", ids[0], "--gpus", "0,0")):
        bad_gpus = mlcomp(*args)
        assert bad_gpus.exit_code == 2 and "--gpus" in bad_gpus.output, bad_gpus.output
    (tmp_path / "bad.yml").write_text("info: {name: bad}\nexecutors:\n  a: {type: bash, command: 'true', depends: b}\n")
    rejected = mlcomp("dag", "submit", tmp_path / "bad.yml")
    assert isinstance(rejected.exception, DagError) and "bad.yml" in str(rejected.exception)
    assert len(mlcomp("dag", "list").output.splitlines()) == 4  # header + the 3 DAGs


def test_task_stop_ends_the_process_tree_within_the_grace_period(mlcomp, tmp_path):
    pids = tmp_path / "pids"
    (tmp_path / "sleepy.yml").write_text(f"""
info: {{name: sleepy, project: tests}}
executors:
  nap: {{type: bash, command: 'sleep 60 & echo $$ $! > {pids}.tmp && mv {pids}.tmp {pids}; wait'}}
""")
    settings = Settings.from_env()
    with run_local(settings, []) as local:
        with local.sessionmaker.begin() as session:
            (dag,) = control.submit_dag(session, settings, tmp_path / "sleepy.yml")
            task_id = dag.tasks[0].id
        wait_for(pids.exists)
        processes = [psutil.Process(int(p)) for p in pids.read_text().split()]
        started = time.monotonic()
        result = mlcomp("task", "stop", task_id)
        assert result.output == f"task {task_id}: stopping\n"

        def ended():
            with local.sessionmaker.begin() as session:
                return session.get(Task, task_id).status.finished
        wait_for(ended)
        assert time.monotonic() - started < settings.stop_grace + 2
        assert not any(alive(p) for p in processes)
        with local.sessionmaker.begin() as session:
            assert session.get(Task, task_id).status is S.stopped
    resumed = mlcomp("task", "resume", task_id, "--from", "last")
    assert resumed.output == f"task {task_id}: attempt 2 waiting to run\n"


def test_gpu_requests_on_two_computers_get_disjoint_devices(settings, store, tmp_path):
    from mlcomp.supervisor import Supervisor
    from mlcomp.worker import Worker

    (tmp_path / "gpus.yml").write_text("""
info: {name: gpus, project: tests}
executors:
  one: {type: bash, command: 'echo "$CUDA_VISIBLE_DEVICES"', gpu: 1}
  two: {type: bash, command: 'echo "$CUDA_VISIBLE_DEVICES"', gpu: 2}
  range: {type: bash, command: 'echo "$CUDA_VISIBLE_DEVICES"', gpu: 2-4}
""")
    workers = [Worker(settings, store, name=name, gpus=[0, 1, 2, 3]) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    sup = Supervisor(settings, store, interval=0.1)
    try:
        with store.begin() as session:
            (dag,) = control.submit_dag(session, settings, tmp_path / "gpus.yml")
            dag_id = dag.id
        sup.start()

        def done():
            with store.begin() as session:
                return control.dag_status(session, dag_id).finished
        wait_for(done)
    finally:
        sup.shutdown()
        for worker in workers:
            worker.shutdown()
    with store.begin() as session:
        tasks = session.query(Task).filter_by(dag_id=dag_id).order_by(Task.id).all()
        assert [t.status for t in tasks] == [S.success] * 3
        held = [(t.computer, g) for t in tasks for g in t.gpus]
        assert len(held) == len(set(held)) == 7  # 1 + 2 + 4: the range takes a whole free computer
        for task in tasks:
            (line,) = session.query(LogLine.text).filter_by(task_id=task.id, stream="stdout").all()
            assert line.text == ",".join(map(str, task.gpus))


def test_bad_database_settings_are_user_errors_naming_the_url(mlcomp, monkeypatch):
    from mlcomp.errors import ConfigError

    bad_revision = mlcomp("db", "upgrade", "--revision", "bogus")
    assert isinstance(bad_revision.exception, ConfigError) and "'bogus'" in str(bad_revision.exception)
    monkeypatch.setenv("MLCOMP_DB_URL", "nodb://x")
    unknown = mlcomp("dag", "list")
    assert isinstance(unknown.exception, ConfigError) and "'nodb://x'" in str(unknown.exception)
    monkeypatch.setenv("MLCOMP_DB_URL", "postgresql://someone:secret@127.0.0.1:1/x")  # nothing listens on port 1
    refused = mlcomp("computer", "list")
    assert isinstance(refused.exception, ConfigError), refused.output
    assert "someone:***@127.0.0.1:1/x" in str(refused.exception) and "secret" not in str(refused.exception)


def test_sigterm_to_submit_wait_stops_its_tasks_before_exiting(tmp_path):
    """``dag submit --wait`` runs the tasks in its own worker: ``kill`` must not leave them behind."""
    pid_file = tmp_path / "pid"
    (tmp_path / "nap.yml").write_text(f"info: {{name: nap, project: tests}}\nexecutors:\n"
                                      f"  nap: {{type: bash, command: 'echo $$ > {pid_file}; exec sleep 60'}}\n")
    env = {**os.environ, "MLCOMP_ROOT": str(tmp_path / "root"), "MLCOMP_STOP_GRACE": "3"}
    env.pop("MLCOMP_DB_URL", None)
    process = subprocess.Popen([sys.executable, "-c", "from mlcomp.cli import main; main()", "dag", "submit",
                                str(tmp_path / "nap.yml"), "--wait"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        child = psutil.Process(int(pid_file.read_text()))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        survived = alive(child)
    finally:
        process.kill()
        if pid_file.exists() and psutil.pid_exists(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # a failed run must not leave the sleep behind
    assert process.returncode == 1 and "Aborted!" in output, output
    assert not survived
    with open_store(Settings.from_env({"MLCOMP_ROOT": str(tmp_path / "root")})).begin() as session:
        assert session.get(Task, 1).status is S.stopped


def test_task_resume_from_a_path_takes_only_files_in_the_logdir_or_allowed_folders(mlcomp, tmp_path, monkeypatch):
    (tmp_path / "fails.yml").write_text("info: {name: fails, project: p}\n"
                                        "executors:\n  boom: {type: bash, command: exit 3}\n")
    assert mlcomp("dag", "submit", tmp_path / "fails.yml", "--wait").exit_code == 1
    task_id = show(mlcomp, 1)["tasks"][0]["id"]
    missing = mlcomp("task", "resume", task_id, "--from", "nowhere.pth")
    assert isinstance(missing.exception, ConfigError) and "checkpoint nowhere.pth: no such file" in str(missing.exception)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.pth").write_bytes(b"")
    refused = mlcomp("task", "resume", task_id, "--from", "weights.pth")
    assert isinstance(refused.exception, ConfigError) and "weights.pth' refused: only files" in str(refused.exception)
    logdir = mlcomp.root / "tasks" / str(task_id) / "logdir"
    (logdir / "checkpoints").mkdir(parents=True)
    (logdir / "checkpoints" / "e1.pth").write_bytes(b"")
    assert mlcomp("task", "resume", task_id, "--from", logdir / "checkpoints" / "e1.pth").exit_code == 0
    with open_store(Settings.from_env()).begin() as session:
        assert session.get(Task, task_id).resume_from == "logdir/checkpoints/e1.pth"  # relative to its folder
        session.get(Task, task_id).status = S.failed
    monkeypatch.setenv("MLCOMP_CHECKPOINT_DIRS", str(tmp_path))
    assert mlcomp("task", "resume", task_id, "--from", "weights.pth").exit_code == 0
    with open_store(Settings.from_env()).begin() as session:
        assert session.get(Task, task_id).resume_from == str(tmp_path / "weights.pth")


def test_follow_prints_each_epoch_a_running_task_starts(store):
    from mlcomp.cli.common import follow_dags
    from supervisor_helpers import add_task, make_dag

    with store.begin() as session:
        task = add_task(session, make_dag(session), "train", status=TaskStatus.in_progress,
                        progress={"stage": "main", "epoch": 1, "epochs": 3, "eta": 12.0})
    lines = []

    def echo(line):  # the run goes on while it is followed: epoch 2 (twice: one line), then success
        lines.append(line)
        with store.begin() as session:
            row = session.get(Task, task.id)
            if len(lines) == 2:
                row.progress = {"stage": "main", "epoch": 2, "epochs": 3, "batch": 5}
            elif len(lines) == 3:
                row.status, row.reason = TaskStatus.success, None

    assert follow_dags(store, [task.dag_id], echo, poll=0.01)
    assert lines == [f"task {task.id} 'train': in_progress", f"task {task.id} 'train': stage main epoch 1/3, ETA 12 s",
                     f"task {task.id} 'train': stage main epoch 2/3", f"task {task.id} 'train': success"]


def test_follow_reads_what_changed_and_catches_a_lagging_writer_on_a_full_read(store):
    """Between full reads the follower reads only recent and active tasks; a change stamped with
    a clock far behind (another machine's) is still printed, and the end is decided on a full read."""
    import datetime as dt

    from sqlalchemy import event

    from mlcomp.cli.common import follow_dags
    from mlcomp.db import utcnow
    from supervisor_helpers import add_task, make_dag

    long_ago = utcnow() - dt.timedelta(days=1)
    with store.begin() as session:
        dag = make_dag(session)
        running = add_task(session, dag, "running", status=TaskStatus.in_progress, updated=utcnow())
        waiting = add_task(session, dag, "waiting", updated=long_ago)
        done = [add_task(session, dag, f"done{i}", status=TaskStatus.success, updated=long_ago) for i in range(30)]
    statements = []
    engine = store.kw["bind"]
    listener = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    lines = []

    def echo(line):
        lines.append(line)
        if line == f"task {done[-1].id} 'done29': success":  # the first full read has been printed
            with store.begin() as session:
                session.get(Task, running.id).status = TaskStatus.success
                session.get(Task, running.id).updated = utcnow()
                row = session.get(Task, waiting.id)
                row.status, row.updated = TaskStatus.success, long_ago  # a writer whose clock lags a day

    try:
        assert follow_dags(store, [dag.id], echo, poll=0.05)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert f"task {running.id} 'running': success" in lines and f"task {waiting.id} 'waiting': success" in lines
    reads = [s for s in statements if s.lstrip().startswith("SELECT task.id, task.name")]
    assert any("task.updated >=" in s for s in reads)  # partial reads between the full ones
    assert "task.updated >=" not in reads[-1]  # the end was seen on a full read


def test_follow_prints_why_tasks_wait_when_it_changes_once_per_reason(store):
    from mlcomp.cli.common import follow_dags
    from supervisor_helpers import add_task, make_dag

    no_room = "no computer has room for 1 GPU, 1 CPU, 0 GB (box: 0 GPUs, 2 CPUs, 8 GB free)"
    with store.begin() as session:
        dag = make_dag(session)
        cells = [add_task(session, dag, f"cell{i}", waiting_reason=no_room) for i in range(3)]
    lines = []

    def echo(line):  # the reason changes once, then the cells run and end
        lines.append(line)
        with store.begin() as session:
            rows = [session.get(Task, cell.id) for cell in cells]
            if len(lines) == 1:
                for row in rows:
                    row.waiting_reason = "pinned computer 'box' is not alive (known alive: none)"
            elif len(lines) == 2:
                for row in rows:
                    row.status = TaskStatus.success

    assert follow_dags(store, [dag.id], echo, poll=0.01)
    first = f"task {cells[0].id} 'cell0' and 2 more: waits: "
    assert lines[:2] == [first + no_room, first + "pinned computer 'box' is not alive (known alive: none)"]
    assert lines[2:] == [f"task {cell.id} '{cell.name}': success" for cell in cells]
