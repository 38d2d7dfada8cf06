"""The computers page: GPUs with usage, CPU and RAM use, heartbeat age, running tasks."""
import datetime as dt

from mlcomp.db import Computer
from ui_fill import app, client, filled, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)


def test_computers_merge_gpu_usage_and_running_tasks(ro_client, ro_filled):
    [box] = ro_client.get("/api/computers").get_json()["computers"]
    assert box["name"] == "box" and box["alive"] is True and box["heartbeat_age"] < 60
    assert box["usage"] == {"cpu": 37.5, "memory": 41.0}
    gpu0, gpu1 = box["gpus"]
    assert (gpu0["utilization"], gpu0["memory_used"], gpu0["task_id"]) == (88, 3 << 30, ro_filled.train)
    assert "utilization" not in gpu1 and gpu1["task_id"] is None
    assert [t["id"] for t in box["tasks"]] == [ro_filled.train]


def test_a_silent_computer_is_shown_as_such(settings, store, client):
    assert settings.heartbeat_ttl == 5.0
    with store.begin() as session:
        session.get(Computer, "box").heartbeat = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    assert client.get("/api/computers").get_json()["computers"][0]["alive"] is False
    html = client.get("/computers").get_data(as_text=True)
    assert 'class="computer silent"' in html and "heartbeat 5m 0s ago" in html


def test_computers_page_shows_gpus_and_tasks(ro_client, ro_filled):
    html = ro_client.get("/computers").get_data(as_text=True)
    assert "Fake GPU" in html and "88%" in html and f'href="/tasks/{ro_filled.train}"' in html
