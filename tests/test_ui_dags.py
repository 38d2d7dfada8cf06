"""The DAG pages and their API twins: list (paging, filters, counts), detail (graph, tasks, YAML,
snapshot), and the DAG stop/resume commands through mlcomp.control."""
import itertools

import plotly.graph_objects as go
import pytest

from mlcomp.db import Task, TaskStatus
from ui_fill import EVIL, app, client, csrf_post, dispose, filled, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)

S = TaskStatus


def test_index_redirects_to_the_dag_list(ro_client):
    response = ro_client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/dags")


def test_dag_list_counts_tasks_by_status_and_derives_status(ro_client, ro_filled):
    body = ro_client.get("/api/dags").get_json()
    assert body["total"] == 2 and body["page"] == 1 and body["pages"] == 1
    by_id = {d["id"]: d for d in body["dags"]}
    assert [d["id"] for d in body["dags"]] == [ro_filled.failed_dag, ro_filled.dag]  # newest first
    assert list(by_id[ro_filled.dag]["counts"].items()) == [  # in life-cycle order, for the bars
        ("not_ran", 1), ("in_progress", 2), ("success", 3), ("failed", 1)]
    assert by_id[ro_filled.dag]["task_count"] == 7 and by_id[ro_filled.dag]["status"] == "in_progress"
    assert by_id[ro_filled.failed_dag]["status"] == "failed" and by_id[ro_filled.failed_dag]["project"] == "other <b>"
    assert by_id[ro_filled.failed_dag]["duration"] == 3.0


@pytest.mark.parametrize("query, expected", [
    ("project=demo", "dag"), ("project=other <b>", "failed_dag"), ("status=failed", "failed_dag"),
    ("status=in_progress", "dag"), ("name=dig", "dag"), ("name=script", "failed_dag"),
    ("status=success", None), ("name=%25", None),
])
def test_dag_list_filters(ro_client, ro_filled, query, expected):
    ids = [d["id"] for d in ro_client.get(f"/api/dags?{query}").get_json()["dags"]]
    assert ids == ([getattr(ro_filled, expected)] if expected else [])


def test_dag_list_pages(ro_client, ro_filled):
    first = ro_client.get("/api/dags?per_page=1").get_json()
    second = ro_client.get("/api/dags?per_page=1&page=2").get_json()
    assert first["pages"] == 2 and [d["id"] for d in first["dags"]] == [ro_filled.failed_dag]
    assert [d["id"] for d in second["dags"]] == [ro_filled.dag]
    assert ro_client.get("/api/dags?per_page=1&page=3").get_json()["dags"] == []


@pytest.mark.parametrize("query", ["page=0", "page=x", "per_page=501", "status=done"])
def test_dag_list_rejects_bad_arguments(ro_client, query):
    response = ro_client.get(f"/api/dags?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.get_json()["error"]["message"]


def test_dag_list_page_escapes_names(ro_client, ro_filled):
    html = ro_client.get("/dags").get_data(as_text=True)
    assert EVIL not in html and "&lt;script&gt;" in html
    assert f'href="/dags/{ro_filled.dag}"' in html and "status-in_progress" in html


def test_dag_detail_has_tasks_dependencies_yaml_and_files(ro_client, ro_filled):
    body = ro_client.get(f"/api/dags/{ro_filled.dag}").get_json()
    tasks = {t["name"]: t for t in body["tasks"]}
    assert tasks["train"]["depends"] == [ro_filled.prepare] and tasks["infer"]["depends"] == [ro_filled.train]
    assert tasks["train"]["gpus"] == [0] and tasks["train"]["computer"] == "box"
    assert body["config"].startswith("info:") and body["source"] == "dags/digits.yml"
    assert [f["path"] for f in body["files"]] == ["configs/train.yml", "train.py", "weights.bin"]


def test_dag_graph_folds_a_grid_into_one_node_laid_out_by_generation(ro_client, ro_filled):
    graph = ro_client.get(f"/api/dags/{ro_filled.dag}").get_json()["graph"]
    go.Figure(graph)  # a valid plotly figure
    nodes = {i: (x, label) for trace in graph["data"][1:]
             for i, x, label in zip(trace["customdata"], trace["x"], trace["text"])}
    assert set(nodes) == {ro_filled.prepare, ro_filled.train, ro_filled.infer, ro_filled.grid}  # cells folded
    assert nodes[ro_filled.grid][1] == "search (3 cells)"
    assert [nodes[i][0] for i in (ro_filled.prepare, ro_filled.train, ro_filled.infer, ro_filled.grid)] == [0, 1, 2, 1]
    colours = {trace["name"]: trace["marker"]["color"] for trace in graph["data"][1:]}
    assert set(colours) == {"success", "in_progress", "not_ran"} and len(set(colours.values())) == 3


def test_dag_detail_summarises_cells_on_their_parent_and_pages_them(ro_client, ro_filled):
    body = ro_client.get(f"/api/dags/{ro_filled.dag}").get_json()
    tasks = {t["id"]: t for t in body["tasks"]}
    assert set(tasks) == {ro_filled.prepare, ro_filled.train, ro_filled.infer, ro_filled.grid}  # the DAG's own tasks
    assert tasks[ro_filled.grid]["cells"] == {"success": 2, "failed": 1} and tasks[ro_filled.grid]["cell_count"] == 3
    assert "cells" not in tasks[ro_filled.train]
    cells = body["cells"]
    assert [t["id"] for t in cells["tasks"]] == ro_filled.cells and cells["total"] == 3 and cells["pages"] == 1
    assert all(t["parent_id"] == ro_filled.grid and t["depends"] == [] for t in cells["tasks"])
    second = ro_client.get(f"/api/dags/{ro_filled.dag}?per_page=2&page=2").get_json()["cells"]
    assert [t["id"] for t in second["tasks"]] == ro_filled.cells[2:] and (second["page"], second["pages"]) == (2, 2)
    failed = ro_client.get(f"/api/dags/{ro_filled.dag}?cell_status=failed").get_json()["cells"]
    assert [t["id"] for t in failed["tasks"]] == [ro_filled.cells[1]] and failed["status"] == "failed"
    assert ro_client.get(f"/api/dags/{ro_filled.dag}?page=9").get_json()["cells"]["tasks"] == []


@pytest.mark.parametrize("query", ["page=0", "per_page=501", "cell_status=done"])
def test_dag_detail_rejects_bad_cell_arguments(ro_client, ro_filled, query):
    response = ro_client.get(f"/api/dags/{ro_filled.dag}?{query}")
    assert response.status_code == 400 and query.split("=")[0] in response.get_json()["error"]["message"]


def test_dag_page_renders_one_page_of_cells_with_a_pager(ro_client, ro_filled):
    html = ro_client.get(f"/dags/{ro_filled.dag}?per_page=2").get_data(as_text=True)
    assert f'data-task="{ro_filled.grid}"' in html and "3 cells" in html
    assert all(f'data-task="{c}"' in html for c in ro_filled.cells[:2]) and f'data-task="{ro_filled.cells[2]}"' not in html
    assert f'href="/dags/{ro_filled.dag}?per_page=2&amp;page=2#cells"' in html and "page 1 of 2" in html
    assert f'data-watch="/api/dags/{ro_filled.dag}?per_page=2"' in html
    html = ro_client.get(f"/dags/{ro_filled.dag}?per_page=2&page=2").get_data(as_text=True)
    assert f'data-task="{ro_filled.cells[2]}"' in html and f'data-task="{ro_filled.cells[0]}"' not in html


def test_dag_page_links_keep_query_arguments_but_not_url_for_options(ro_client, ro_filled):
    html = ro_client.get(f"/dags/{ro_filled.dag}?per_page=2&dag_id=5&_external=1&_anchor=x").get_data(as_text=True)
    assert f'data-watch="/api/dags/{ro_filled.dag}?per_page=2"' in html
    assert f'href="/dags/{ro_filled.dag}?per_page=2&amp;page=2#cells"' in html and "http://" not in html


def test_dag_page_of_a_dag_without_cells_has_no_cell_table(ro_client, ro_filled):
    html = ro_client.get(f"/dags/{ro_filled.failed_dag}").get_data(as_text=True)
    assert 'id="cells"' not in html and 'data-region="tasks"' in html


def test_dag_page_highlights_yaml_and_escapes(ro_client, ro_filled):
    html = ro_client.get(f"/dags/{ro_filled.dag}").get_data(as_text=True)
    assert 'class="highlight"' in html and "<i>yaml</i>" not in html and "&lt;i&gt;yaml" in html
    assert 'id="graph"' in html and f'/grid/{ro_filled.grid}' in html


def test_snapshot_file_is_highlighted_and_escaped(ro_client, ro_filled):
    html = ro_client.get(f"/dags/{ro_filled.dag}/files/train.py").get_data(as_text=True)
    assert 'class="highlight"' in html and "<b>not html</b>" not in html
    body = ro_client.get(f"/api/dags/{ro_filled.dag}/files/configs/train.yml").get_json()
    assert body["text"].startswith("stages:") and body["binary"] is False
    assert ro_client.get(f"/api/dags/{ro_filled.dag}/files/weights.bin").get_json()["text"] is None


def test_unknown_dag_and_file_are_404_json_on_the_api_and_html_on_pages(ro_client, ro_filled):
    response = ro_client.get("/api/dags/999")
    assert response.status_code == 404
    assert response.get_json()["error"] == {"status": 404, "type": "NotFoundError", "message": "DAG 999 does not exist"}
    page = ro_client.get("/dags/999")
    assert page.status_code == 404 and page.mimetype == "text/html" and "DAG 999 does not exist" in page.get_data(as_text=True)
    missing = ro_client.get(f"/api/dags/{ro_filled.dag}/files/nope.py")
    assert missing.status_code == 404 and "nope.py" in missing.get_json()["error"]["message"]


def test_stop_dag_stops_unfinished_tasks_through_control(app, client, filled):
    response = csrf_post(client, f"/api/dags/{filled.dag}/stop")
    assert response.status_code == 200
    changed = {t["id"]: t["status"] for t in response.get_json()["tasks"]}
    assert changed[filled.train] == "stopping" and changed[filled.infer] == "stopped"
    with app.extensions["mlcomp_store"]() as session:
        assert session.get(Task, filled.train).status is S.stopping
        assert session.get(Task, filled.prepare).status is S.success


def test_resume_dag_resumes_failed_and_skipped(app, client, filled):
    response = csrf_post(client, f"/api/dags/{filled.failed_dag}/resume")
    assert response.status_code == 200
    with app.extensions["mlcomp_store"]() as session:
        broken, skipped = session.get(Task, filled.broken), session.get(Task, filled.skipped)
        assert (broken.status, broken.attempt) == (S.not_ran, 2) and skipped.status is S.not_ran


def test_dag_commands_report_state_errors_and_unknown_ids(client, filled):
    conflict = csrf_post(client, f"/api/dags/{filled.failed_dag}/stop")
    assert conflict.status_code == 409 and conflict.get_json()["error"]["type"] == "StateError"
    assert csrf_post(client, "/api/dags/999/resume").status_code == 404


def test_on_change_hook_runs_after_commit(settings, filled):
    from ui import create_app

    calls = []
    app = create_app(settings, {"TESTING": True, "MLCOMP_ON_CHANGE": lambda: calls.append(1)})
    assert csrf_post(app.test_client(), f"/api/dags/{filled.dag}/stop").status_code == 200
    assert calls == [1]
    dispose(app)


def test_sql_dag_status_matches_rollup_status_for_every_combination(any_store):
    """Every combination of statuses, a task paused by a preemption (counted as queued) among them."""
    from mlcomp.db import Dag, Project
    from mlcomp.lifecycle import counted_status, rollup_status
    from ui.queries import list_dags

    members = [(status, False) for status in S] + [(S.paused, True)]  # (status, preempted)
    combos = list(itertools.chain.from_iterable(itertools.combinations(members, n) for n in range(len(members) + 1)))
    with any_store.begin() as session:
        project = Project(name="p")
        urgent = Task(name="urgent", type="bash", status=S.in_progress)
        session.add(Dag(name="urgent", project=project, config="", tasks=[urgent]))
        session.flush()
        dags = [Dag(name=f"d{i}", project=project, config="",
                    tasks=[Task(name=f"{status.value}{' preempted' * preempted}", type="bash", status=status,
                                preempted_by=urgent.id if preempted else None) for status, preempted in combo])
                for i, combo in enumerate(combos)]
        session.add_all(dags)
        session.flush()
        expected = {dag.id: rollup_status(counted_status(*member) for member in combo).value
                    for dag, combo in zip(dags, combos)} | {urgent.dag_id: S.in_progress.value}
    with any_store() as session:
        for status in S:
            found = list_dags(session, status=status.value, per_page=len(expected))["dags"]
            assert {d["id"] for d in found} == {i for i, s in expected.items() if s == status.value}, status
            assert all(d["status"] == status.value for d in found)
