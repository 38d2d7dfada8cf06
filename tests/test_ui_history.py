"""Resource history in the UI (computer and task endpoints, figures), the DAG list's best metric,
overrides, tags and note, and the task page's one-point results and stage/resume marks."""
import datetime as dt
import time

import plotly.graph_objects as go
from sqlalchemy import insert

from mlcomp.db import Dag, Metric, ResourceSample, Task
from ui.series import series_marks
from ui_fill import app, client, csrf_post, filled, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)


def _samples(store, task_id, seconds=300):
    now = int(time.time())
    with store.begin() as session:
        session.execute(insert(ResourceSample), [
            {"computer": "box", "resolution": 0, "time": t, "task_id": task, "gpu": gpu, "utilization": 50.0,
             "memory": 2.0 ** 30} for t in range(now - seconds, now, 5)
            for task, gpu in ((None, None), (task_id, 0), (None, 1), (task_id, None))])


def test_computer_history_names_the_task_holding_each_gpu(client, filled, store):
    _samples(store, filled.train)
    body = client.get("/api/computers/box/resources?window=600&figures=1").get_json()
    assert [s["source"] for s in body["series"]] == ["cpu", "gpu0", "gpu1"]  # not the task's own processes
    cpu, gpu0, gpu1 = body["series"]
    assert len(cpu["x"]) == 60 and set(gpu0["task_id"]) == {filled.train} and set(gpu1["task_id"]) == {None}
    utilization, memory = body["figures"]
    for figure in (utilization, memory):
        go.Figure(figure["figure"])
    assert memory["figure"]["data"][1]["y"][0] == 1.0  # GiB
    assert utilization["figure"]["data"][1]["customdata"][0] == f"task {filled.train}"
    assert client.get("/api/computers/nowhere/resources").status_code == 404
    assert client.get("/api/computers/box/resources?window=10").status_code == 400


def test_task_history_covers_its_run(client, filled, store):
    with store.begin() as session:  # started 10 minutes ago: its raw samples are read
        session.get(Task, filled.train).started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    _samples(store, filled.train)
    body = client.get(f"/api/tasks/{filled.train}/resources").get_json()
    assert [s["source"] for s in body["series"]] == ["task", "gpu0"] and len(body["series"][0]["x"]) == 60
    html = client.get(f"/tasks/{filled.train}").get_data(as_text=True)
    assert f'data-url="/api/tasks/{filled.train}/resources?figures=1"' in html


def test_computers_page_plots_the_chosen_window(ro_client):
    html = ro_client.get("/computers?window=86400").get_data(as_text=True)
    assert 'data-url="/api/computers/box/resources?window=86400&amp;figures=1"' in html and "<b>1 day</b>" in html


def test_dag_list_shows_best_main_metric_overrides_tags_and_note(client, filled, store):
    with store.begin() as session:
        dag = session.get(Dag, filled.dag)
        dag.config += "\n# --set executors.train.args.lr=0.5"
        grid = session.get(Task, filled.grid)
        grid.result = {"best_value": 0.97, "best_task_id": filled.cells[0]}
    answer = csrf_post(client, f"/api/dags/{filled.dag}/meta", json={"tags": "baseline, digits,baseline", "note": " first try "})
    assert answer.get_json() == {"id": filled.dag, "tags": ["baseline", "digits"], "note": "first try"}
    [row] = [d for d in client.get("/api/dags").get_json()["dags"] if d["id"] == filled.dag]
    assert row["overrides"] == {"executors.train.args.lr": "0.5"}
    assert row["best"] == {"metric": "accuracy01", "value": 0.97, "minimize": False}
    assert (row["tags"], row["note"]) == (["baseline", "digits"], "first try")
    html = client.get("/dags").get_data(as_text=True)
    assert ">baseline</a>" in html and "executors.train.args.lr=0.5" in html
    assert [d["id"] for d in client.get("/api/dags?tag=baseline").get_json()["dags"]] == [filled.dag]
    assert client.get("/api/dags?tag=base").get_json()["dags"] == []  # a whole tag, not a part
    assert csrf_post(client, f"/api/dags/{filled.dag}/meta", json={"tags": ["x" * 51]}).status_code == 400
    assert csrf_post(client, f"/api/dags/{filled.dag}/meta", json={"note": 3}).status_code == 400
    assert csrf_post(client, "/api/dags/987654/meta", json={"note": "x"}).status_code == 404


def test_one_point_series_are_values_and_resumes_are_marked(client, filled, store):
    with store.begin() as session:
        session.execute(insert(Metric), [
            {"task_id": filled.train, "name": "accuracy_test", "loader": "test", "kind": "epoch", "step": 0,
             "value": 0.95},
            {"task_id": filled.train, "name": "loss", "loader": "valid", "kind": "epoch", "step": 3, "value": 0.1,
             "attempt": 2, "stage": "finetune"}])
    body = client.get(f"/api/tasks/{filled.train}/metrics?figures=1").get_json()
    assert body["scalars"] == [{"name": "accuracy_test", "kind": "epoch", "value": 0.95, "label": "test"}]
    assert "accuracy_test" not in [f["name"] for f in body["figures"]]
    with store() as session:
        marks = series_marks(session, filled.train)
    assert {(m["kind"], m["step"]) for m in marks} == {("stage", 3), ("resume", 3)}
    [loss] = [f for f in body["figures"] if (f["name"], f["kind"]) == ("loss", "epoch")]
    assert [s["x0"] for s in loss["figure"]["layout"]["shapes"]] == [3, 3]
    go.Figure(loss["figure"])


def test_x_axis_by_epoch_or_wall_time(ro_client, ro_filled):
    url = f"/api/tasks/{ro_filled.train}/metrics?figures=1&name=loss"
    by_step = ro_client.get(url).get_json()
    by_epoch = ro_client.get(url + "&x=epoch").get_json()
    by_time = ro_client.get(url + "&x=time").get_json()
    batch = [s for s in by_epoch["series"] if s["kind"] == "batch"][0]
    assert batch["x"][0] == 0 and all(0 <= x < 3 for x in batch["x"]) and batch["x"] == sorted(batch["x"])
    assert [s["x"] for s in by_epoch["series"] if s["kind"] == "epoch"] == [
        s["x"] for s in by_step["series"] if s["kind"] == "epoch"]  # an epoch point's step is its epoch
    start = dt.datetime.fromisoformat(ro_client.get(f"/api/tasks/{ro_filled.train}").get_json()["started"])
    assert {x for s in by_time["series"] for x in s["x"]} == {(start - dt.timedelta(seconds=6)).timestamp() * 1000}
    assert {f["figure"]["layout"]["xaxis"]["type"] for f in by_time["figures"]} == {"date"}
    assert ro_client.get(url + "&x=hour").status_code == 400
