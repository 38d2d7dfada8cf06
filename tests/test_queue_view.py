"""Seeing the queue: ``mlcomp queue`` (table and JSON), the ``/queue`` page and its JSON twin,
each project's GPU-hours (:mod:`mlcomp.usage`) against hand-computed numbers, and the task
page's preemptions."""
import dataclasses
import datetime as dt
import json

import plotly.graph_objects as go
import pytest
from click.testing import CliRunner
from openapi_schema_validator import OAS31Validator

from mlcomp.cli import cli
from mlcomp.db import Attempt, Dag, Preemption, Project, Task, TaskStatus
from mlcomp.supervisor import Supervisor
from mlcomp.supervisor.queue import queue
from mlcomp.usage import gpu_hours, window_start
from supervisor_helpers import T0, Clock, RecordingBus, add_computer, add_task, make_dag
from ui import plots
from ui.api import openapi
from ui_fill import dispose

S = TaskStatus
NOW = T0 + dt.timedelta(minutes=30)  # 2026-01-01 12:30 UTC


def at(hours: float) -> dt.datetime:
    """``hours`` after 2026-01-01 00:00 UTC (negative: the day before)."""
    return dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=hours)


def attempt(session, task, number, started, finished=None, status=S.success, gpus=(0,), computer="a"):
    session.add(Attempt(task_id=task.id, number=number, status=status, computer=computer, gpus=list(gpus),
                        started=started, finished=finished))


@pytest.fixture
def used(store):
    """Attempts of projects p and q around the day's window (13:00 the day before to now, 12:30)."""
    with store.begin() as session:
        dag = make_dag(session)
        other = Dag(name="other", project=Project(name="q"), config="")
        session.add(other)
        edge = add_task(session, dag, "edge", status=S.success, attempt=1)
        attempt(session, edge, 1, at(-11.75), at(-10.5), gpus=(0, 1))  # 12:15–13:30 the day before, 2 GPUs
        running = add_task(session, dag, "running", status=S.in_progress)
        attempt(session, running, 1, at(11.75), status=S.in_progress, gpus=(1,))  # 11:45 to now
        preempted = add_task(session, dag, "preempted", status=S.not_ran, attempt=2)
        attempt(session, preempted, 1, at(8), at(8.5), status=S.paused)  # paused at 08:30, then waits again
        attempt(session, preempted, 2, None, status=S.not_ran)
        session.add(Preemption(task_id=preempted.id, attempt=1, by_task_id=running.id, requested=at(8.4),
                               paused=at(8.5), resumed=None))
        old = add_task(session, dag, "old", status=S.success)
        attempt(session, old, 1, at(-24 * 8), at(-24 * 8 + 1))  # before both windows
        cpu = add_task(session, other, "cpu", status=S.success)
        attempt(session, cpu, 1, at(7), at(8), gpus=())
        gang = add_task(session, other, "gang", status=S.success, attempt=2, placement={"parts": [
            {"computer": "a", "gpus": [0, 1], "first_rank": 0}, {"computer": "b", "gpus": [3], "first_rank": 2}]})
        attempt(session, gang, 1, at(9), at(9.5), status=S.failed)  # its record is gone: rank 0's GPU only
        attempt(session, gang, 2, at(10), at(10 + 1 / 3), gpus=(0, 1))  # 3 GPUs for 20 minutes
    return store


def test_gpu_hours_per_hour_clip_attempts_to_the_window_and_count_running_ones_to_now(used):
    with used.begin() as session:
        day = gpu_hours(session, NOW, "day")
    assert day.start == at(-11) and day.bucket == 3600  # 24 clock hours, the last one so far
    p, q = day.projects["p"], day.projects["q"]
    assert set(day.projects) == {"p", "q"} and len(p) == len(q) == 24
    expected_p = {0: 1.0, 19: 0.5, 22: 0.25, 23: 0.5}  # edge clipped at 13:00; paused at 08:30; running to 12:30
    expected_q = {20: 0.5, 21: 1.0}  # the gang's old attempt (1 GPU), its last attempt (3 GPUs)
    assert p == pytest.approx([expected_p.get(i, 0.0) for i in range(24)])
    assert q == pytest.approx([expected_q.get(i, 0.0) for i in range(24)])
    body = day.as_dict()
    assert body["buckets"][0] == at(-11).isoformat() and body["buckets"][-1] == at(12).isoformat()
    assert body["total"] == pytest.approx({"p": 2.25, "q": 1.5})


def test_gpu_hours_per_day_over_the_week(used):
    with used.begin() as session:
        week = gpu_hours(session, NOW, "week")
    assert week.start == at(-24 * 6) and week.bucket == 86400
    assert week.projects["p"] == pytest.approx([0, 0, 0, 0, 0, 2.5, 1.25])  # edge whole: 1.25 h × 2 GPUs
    assert week.projects["q"] == pytest.approx([0, 0, 0, 0, 0, 0, 1.5])


def test_windows_are_aligned_and_unknown_ones_refused(store):
    assert window_start(NOW, 3600, 24) == at(-11)
    with store.begin() as session, pytest.raises(ValueError, match="window 'month': expected one of day, week"):
        gpu_hours(session, NOW, "month")


def test_gpu_hours_figure_is_a_valid_plotly_figure(used):
    with used.begin() as session:
        figure = plots.gpu_hours(gpu_hours(session, NOW, "day").as_dict())
    go.Figure(figure)
    assert [trace["name"] for trace in figure["data"]] == ["p", "q"]
    assert figure["data"][0]["y"][0] == 1.0 and figure["layout"]["barmode"] == "stack"


# -- the queue: CLI and UI ---------------------------------------------------------------------
@pytest.fixture
def waiting(settings, store):
    """Three GPU tasks waiting on a computer whose one GPU is busy: task ids, oldest first."""
    with store.begin() as session:
        add_computer(session, "a", gpus=1)
        dag = make_dag(session, "train")
        other = Dag(name="side <b>", project=Project(name="q"), config="")
        session.add(other)
        session.flush()
        busy, dag_ids = add_task(session, dag, "busy", gpu_min=1, gpu_max=1).id, (dag.id, other.id)
    assert Supervisor(settings, store, RecordingBus(), now=Clock()).tick() == [(busy, "a")]
    with store.begin() as session:
        dag, other = (session.get(Dag, i) for i in dag_ids)
        ids = [add_task(session, dag, "low", gpu_min=1, gpu_max=1).id,
               add_task(session, other, "other", gpu_min=1, gpu_max=1, priority=1).id,
               add_task(session, dag, "high", gpu_min=1, gpu_max=1, priority=5).id]
    return ids


def entries(settings, store) -> list[dict]:
    with store.begin() as session:
        return [dataclasses.asdict(e) for e in queue(session, settings, NOW)]


@pytest.fixture
def mlcomp(settings, monkeypatch):
    """Runs ``mlcomp ARGS…`` on the store of ``settings``; returns the click Result."""
    monkeypatch.setenv("MLCOMP_ROOT", str(settings.root))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    return lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_queue_lists_each_waiting_task_once_in_order(settings, store, waiting):
    rows = entries(settings, store)
    assert sorted(e["task_id"] for e in rows) == sorted(waiting)
    assert [e["position"] for e in rows] == [1, 2, 3]
    by_name = {e["task"]: e for e in rows}
    assert by_name["high"]["position"] < by_name["low"]["position"]  # priority first within a project
    assert (by_name["other"]["project"], by_name["other"]["dag"], by_name["other"]["priority"]) == ("q", "side <b>", 1)
    assert by_name["low"]["request"].startswith("1 GPU") and by_name["low"]["reason"]


def test_cli_prints_the_queue_as_a_table_and_as_json(settings, store, waiting, mlcomp, monkeypatch):
    monkeypatch.setattr("mlcomp.cli.queue.utcnow", lambda: NOW)
    expected = entries(settings, store)
    result = mlcomp("queue", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"queue": expected}
    lines = mlcomp("queue").output.splitlines()
    assert lines[0].split() == ["position", "task_id", "task", "dag", "project", "priority", "request", "reason"]
    assert [int(line.split()[1]) for line in lines[1:]] == [e["task_id"] for e in expected]
    assert lines[1].split()[:3] == ["1", str(expected[0]["task_id"]), expected[0]["task"]]


def test_cli_says_when_no_task_waits(store, mlcomp):
    assert mlcomp("queue").output == "No task waits.\n"


def test_cli_prints_each_projects_gpu_hours(used, mlcomp, monkeypatch):
    monkeypatch.setattr("mlcomp.cli.queue.utcnow", lambda: NOW)
    result = mlcomp("queue", "--usage")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[1].split()
    assert (first[0], first[2]) == ("1", "preempted")  # it waits to run again
    usage = result.output.split("GPU-hours\n", 1)[1].splitlines()
    assert [line.split() for line in usage] == [["project", "last", "day", "last", "week"],
                                                ["p", "2.25", "3.75"], ["q", "1.50", "1.50"]]
    doc = json.loads(mlcomp("queue", "--json", "--usage").output)
    assert set(doc["usage"]) == {"day", "week"} and doc["usage"]["day"]["bucket"] == 3600


@pytest.fixture
def client(settings, store):
    from ui import create_app

    app = create_app(settings, {"TESTING": True})
    yield app.test_client()
    dispose(app)


def documented(body: dict, path: str) -> None:
    """Checks ``body`` against the schema ``ui/openapi.json`` gives the answer of GET ``path``."""
    doc = openapi()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": doc["components"]}).validate(body)


def test_the_queue_page_and_its_json_twin(settings, store, waiting, client):
    body = client.get("/api/queue").get_json()
    rows = body["queue"]
    assert [r["task_id"] for r in rows] == [e["task_id"] for e in entries(settings, store)]
    assert set(rows[0]) == {"position", "task_id", "task", "dag_id", "dag", "project", "priority", "request",
                            "status", "reason"}
    assert body["usage"]["day"]["bucket"] == 3600 and body["usage"]["week"]["bucket"] == 86400
    documented(body, "/api/queue")
    response = client.get("/queue")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for row in rows:
        assert f'<a href="/tasks/{row["task_id"]}">#{row["task_id"]} {row["task"]}</a>' in html
    assert "side &lt;b&gt;" in html and "side <b>" not in html
    assert 'id="gpu-hours-day"' in html and 'id="gpu-hours-week"' in html
    assert '<a href="/queue">Queue</a>' in client.get("/dags").get_data(as_text=True)


def test_an_empty_queue_says_so(client):
    assert client.get("/api/queue").get_json()["queue"] == []
    assert "No task waits." in client.get("/queue").get_data(as_text=True)


def test_the_task_page_lists_its_preemptions(used, client):
    with used.begin() as session:
        preempted, running = (session.query(Task).filter_by(name=name).one().id for name in ("preempted", "running"))
    [row] = client.get(f"/api/tasks/{preempted}").get_json()["preemptions"]
    documented(client.get(f"/api/tasks/{preempted}").get_json(), "/api/tasks/{task_id}")
    assert row == {"attempt": 1, "by": {"id": running, "name": "running"}, "requested": at(8.4).isoformat(),
                   "paused": at(8.5).isoformat(), "resumed": None}
    html = client.get(f"/tasks/{preempted}").get_data(as_text=True)
    assert "<h2>Preemptions</h2>" in html and f'<a href="/tasks/{running}">#{running} running</a>' in html
    assert "2026-01-01 08:24:00" in html and "2026-01-01 08:30:00" in html
    assert client.get(f"/api/tasks/{running}").get_json()["preemptions"] == []
