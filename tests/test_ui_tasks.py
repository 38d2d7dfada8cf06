"""The task page and its API: details, logs after a cursor, downsampled metrics, checkpoint
downloads confined to the task's folder, stop and resume (from a checkpoint)."""
import os

import plotly.graph_objects as go
import pytest

from mlcomp.db import Task, TaskStatus
from ui_fill import BATCH_POINTS, EVIL, app, client, csrf_post, filled, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)

S = TaskStatus


def test_task_api_shows_placement_progress_checkpoints_and_metric_names(ro_client, ro_filled):
    body = ro_client.get(f"/api/tasks/{ro_filled.train}").get_json()
    assert (body["status"], body["computer"], body["gpus"], body["attempt"]) == ("in_progress", "box", [0], 1)
    assert body["progress"]["eta"] == 95.0 and body["progress"]["batch_percent"] == 25.0
    assert body["progress"]["epoch_percent"] == pytest.approx(66.7)
    assert body["depends"] == [{"id": ro_filled.prepare, "name": "prepare", "status": "success"}]
    assert [d["id"] for d in body["dependents"]] == [ro_filled.infer]
    assert len(body["checkpoints"]) == 1  # the latest record of each file
    assert body["checkpoints"][0] | {"created": None} == {
        "id": ro_filled.checkpoint, "attempt": 1, "path": "checkpoints/best.pth", "stage": "main", "epoch": 2,
        "metric": 0.93, "size": 70, "created": None}
    assert {(m["name"], m["kind"], m["points"]) for m in body["metrics"]} == {
        ("loss", "epoch", 6), ("accuracy01", "epoch", 6), ("loss", "batch", BATCH_POINTS)}
    assert [a["number"] for a in body["attempts"]] == [1]


def test_waiting_reason_result_and_grid_children(ro_client, ro_filled):
    assert ro_client.get(f"/api/tasks/{ro_filled.infer}").get_json()["waiting_reason"] == "waits for train"
    assert ro_client.get(f"/api/tasks/{ro_filled.prepare}").get_json()["result"] == {"rows": 1797}
    assert ro_client.get(f"/api/tasks/{ro_filled.grid}").get_json()["children"] == {"success": 2, "failed": 1}
    html = ro_client.get(f"/tasks/{ro_filled.infer}").get_data(as_text=True)
    assert "Waiting: waits for train" in html


def test_logs_tail_and_cursor(ro_client, ro_filled):
    tail = ro_client.get(f"/api/tasks/{ro_filled.train}/logs?limit=2").get_json()
    assert [line["text"] for line in tail["lines"]] == ["epoch line 299", EVIL] and tail["more"] is False
    first = ro_client.get(f"/api/tasks/{ro_filled.train}/logs?after=0&limit=100").get_json()
    assert len(first["lines"]) == 100 and first["more"] is True and first["lines"][0]["text"] == "epoch line 0"
    rest = ro_client.get(f"/api/tasks/{ro_filled.train}/logs?after={first['last']}&limit=1000").get_json()
    assert len(rest["lines"]) == 201 and rest["more"] is False
    again = ro_client.get(f"/api/tasks/{ro_filled.train}/logs?after={rest['last']}").get_json()
    assert again["lines"] == [] and again["last"] == rest["last"]


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=5001"])
def test_logs_reject_bad_cursor(ro_client, ro_filled, query):
    response = ro_client.get(f"/api/tasks/{ro_filled.train}/logs?{query}")
    assert response.status_code == 400 and query.split("=")[0] in response.get_json()["error"]["message"]


def test_task_page_escapes_log_text_and_shows_buttons(ro_client, ro_filled):
    html = ro_client.get(f"/tasks/{ro_filled.train}").get_data(as_text=True)
    assert EVIL not in html and "&lt;script&gt;alert(" in html
    assert f'data-url="/api/tasks/{ro_filled.train}/stop"' in html
    assert "epoch line 101" in html and "epoch line 100<" not in html  # the last 200 lines only


def test_metrics_downsample_batch_series_and_keep_epoch_series(ro_client, ro_filled):
    body = ro_client.get(f"/api/tasks/{ro_filled.train}/metrics?figures=1").get_json()
    series = {(s["name"], s["kind"], s["loader"]): s for s in body["series"]}
    batch = series[("loss", "batch", "train")]
    assert batch["points"] == BATCH_POINTS and len(batch["x"]) == 2000
    assert batch["x"][0] == 0 and batch["x"][-1] == BATCH_POINTS - 1 and batch["x"] == sorted(batch["x"])
    assert series[("loss", "epoch", "valid")]["x"] == [1, 2, 3]
    assert series[("loss", "epoch", "train")]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    figures = {(f["name"], f["kind"]): f["figure"] for f in body["figures"]}
    assert [t["name"] for t in figures[("loss", "epoch")]["data"]] == ["train", "valid"]
    for figure in figures.values():
        go.Figure(figure)


def test_metrics_filters(ro_client, ro_filled):
    body = ro_client.get(f"/api/tasks/{ro_filled.train}/metrics?name=loss&kind=batch&max_points=100").get_json()
    assert [(s["name"], s["kind"], len(s["x"])) for s in body["series"]] == [("loss", "batch", 100)]
    assert "figures" not in body
    assert ro_client.get(f"/api/tasks/{ro_filled.train}/metrics?kind=step").status_code == 400
    assert ro_client.get(f"/api/tasks/{ro_filled.train}/metrics?max_points=2001").status_code == 400
    assert ro_client.get("/api/tasks/999/metrics").status_code == 404


def test_checkpoint_download(ro_client, ro_filled):
    with ro_client.get(f"/tasks/{ro_filled.train}/files/checkpoints/best.pth") as response:
        assert response.status_code == 200 and response.data == b"weights" * 10
        assert "attachment" in response.headers["Content-Disposition"]


@pytest.mark.parametrize("path", ["../1/checkpoints/best.pth", "checkpoints/../../x", "%2e%2e/secret",
                                  "checkpoints/%2e%2e/%2e%2e/secret", "/etc/passwd", "checkpoints/..%2fsecret"])
def test_download_refuses_paths_out_of_the_task_folder(client, filled, settings, path):
    (settings.tasks_dir / "secret").write_text("secret")
    response = client.get(f"/tasks/{filled.train}/files/{path}", follow_redirects=True)
    assert response.status_code in (403, 404) and b"secret" != response.data


@pytest.mark.parametrize("path, status", [("/etc/passwd", 403), ("a/../../x", 403), ("..", 403), ("nope", 404),
                                          ("checkpoints", 404)])
def test_confined_path_refuses(tmp_path, path, status):
    from ui.errors import ApiError
    from ui.security import confined_path

    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ApiError) as error:
        confined_path(tmp_path, path)
    assert error.value.status == status and repr(path) in str(error.value)


def test_download_refuses_a_symlink_out(client, filled, settings, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, settings.tasks_dir / str(filled.train) / "link.pth")
    response = client.get(f"/tasks/{filled.train}/files/link.pth")
    assert response.status_code == 403 and b"secret" not in response.data


def test_download_of_a_missing_file_or_task_is_404(ro_client, ro_filled):
    assert ro_client.get(f"/tasks/{ro_filled.train}/files/checkpoints/none.pth").status_code == 404
    assert ro_client.get("/tasks/999/files/checkpoints/best.pth").status_code == 404


def test_stop_task_then_stop_again_is_a_conflict(app, client, filled):
    response = csrf_post(client, f"/api/tasks/{filled.train}/stop")
    assert response.status_code == 200 and response.get_json()["tasks"][0]["status"] == "stopping"
    again = csrf_post(client, f"/api/tasks/{filled.train}/stop")
    assert again.status_code == 409 and str(filled.train) in again.get_json()["error"]["message"]
    assert csrf_post(client, "/api/tasks/999/stop").status_code == 404


def test_resume_from_a_checkpoint_of_the_task(app, client, filled):
    with app.extensions["mlcomp_store"].begin() as session:  # the run was stopped
        session.get(Task, filled.train).status = S.stopped
    response = csrf_post(client, f"/api/tasks/{filled.train}/resume", json={"checkpoint": filled.checkpoint})
    assert response.status_code == 200 and response.get_json()["tasks"][0]["attempt"] == 2
    with app.extensions["mlcomp_store"]() as session:
        task = session.get(Task, filled.train)
        assert task.status is S.not_ran
        assert task.resume_from == "checkpoints/best.pth"  # relative to the task's folder


def test_resume_from_last_and_bad_requests(app, client, filled):
    assert csrf_post(client, f"/api/tasks/{filled.broken}/resume", json={"from": "last"}).status_code == 200
    with app.extensions["mlcomp_store"]() as session:
        assert session.get(Task, filled.broken).resume_from == "last"
    assert csrf_post(client, f"/api/tasks/{filled.prepare}/resume").status_code == 409  # succeeded
    assert csrf_post(client, f"/api/tasks/{filled.skipped}/resume", json={"checkpoint": filled.checkpoint}).status_code == 404
    assert csrf_post(client, f"/api/tasks/{filled.skipped}/resume", json={"checkpoint": "x"}).status_code == 400
    for from_ in ("/etc/passwd", "../../x.pth", "checkpoints/best.pth", 5):  # outside its logdir, or not a path
        response = csrf_post(client, f"/api/tasks/{filled.broken}/resume", json={"from": from_})
        assert response.status_code == 400 and response.get_json()["error"]["message"]
    assert csrf_post(client, f"/api/tasks/{filled.skipped}/resume", data="[1]",
                 content_type="application/json").status_code == 400


def test_unknown_task_is_404(ro_client):
    assert ro_client.get("/api/tasks/999").get_json()["error"]["message"] == "task 999 does not exist"
    assert ro_client.get("/tasks/999").status_code == 404
    assert ro_client.get("/api/tasks/999/logs").status_code == 404
