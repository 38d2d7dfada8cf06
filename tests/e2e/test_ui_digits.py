"""The digits pipeline in a browser: a real supervisor and worker in this process train the
digits CNN; the page shows the run live, Stop stops it (the runner writes last_full.pth), Resume
starts attempt 2 from that checkpoint, and the task finishes with its epoch axis continuing."""
import shutil
import time
from pathlib import Path

import pytest

from mlcomp import control
from mlcomp.db import Task, TaskStatus
from mlcomp.supervisor import run_local
from ui.series import metric_series

pytestmark = pytest.mark.slow

DIGITS = Path(__file__).resolve().parents[2] / "dags" / "digits"
EPOCHS = 2 + 20  # warm-up + main: long enough to press Stop while it trains


def _submit(store, settings, tmp_path) -> tuple[int, int]:
    expdir = shutil.copytree(DIGITS, tmp_path / "digits")  # the expdir is the file's folder: no path in the YAML
    dag_file = expdir / "digits-e2e.yml"
    dag_file.write_text(f"""
info: {{name: digits-e2e, project: e2e}}
executors:
  prepare: {{type: python, function: "prepare:prepare"}}
  train:
    type: train
    config: [configs/train.yml, configs/pipeline.yml]
    params: {{stages.main.stage_params.num_epochs: {EPOCHS - 2}, stages.main.scheduler_params.T_max: {EPOCHS - 2}}}
    depends: prepare
""")
    with store.begin() as session:
        [dag] = control.submit_dag(session, settings, dag_file)
        train = next(t for t in dag.tasks if t.name == "train")
        return dag.id, train.id


def _wait_until_training(store, task_id: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store() as session:
            if session.get(Task, task_id).progress:  # the runner has reported a batch
                return
        time.sleep(0.05)
    pytest.fail(f"task {task_id} did not start training within {timeout} s")


def test_stop_and_resume_a_training_task_from_the_browser(page, live_server, store, settings, tmp_path, screenshot):
    dag_id, train_id = _submit(store, settings, tmp_path)
    with run_local(settings, gpus=[], sessionmaker=store, interval=0.2):
        page.goto(f"{live_server()}/dags")  # the DAG list, then the digits DAG and its graph
        page.wait_for_selector(f'tr[data-dag="{dag_id}"]')
        screenshot(page, "dags")
        page.click(f'tr[data-dag="{dag_id}"] a:text-is("digits-e2e")')
        page.wait_for_selector("#graph .main-svg")
        assert page.locator("#graph .textpoint").count() >= 2  # prepare and train
        screenshot(page, "dag")
        _wait_until_training(store, train_id)
        page.click(f'tr[data-task="{train_id}"] a:text-is("train")')
        page.wait_for_selector("#task-status .status-in_progress")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f'button[data-url="/api/tasks/{train_id}/stop"]')
        page.wait_for_selector("#task-status .status-stopped", timeout=60_000)  # the page reloads itself
        page.wait_for_selector("#metrics .plot .main-svg")
        screenshot(page, "task_stopped")
        with store() as session:
            stopped_at = max(s["x"][-1] for s in metric_series(session, [train_id], name="loss", kind="epoch"))
        assert stopped_at < EPOCHS

        page.click(f'button[data-url="/api/tasks/{train_id}/resume"]')
        page.wait_for_selector("#task-status .status-success", timeout=120_000)
        screenshot(page, "task_resumed")
    with store() as session:
        task = session.get(Task, train_id)
        assert (task.status, task.attempt) == (TaskStatus.success, 2)
        [valid] = metric_series(session, [train_id], name="loss", kind="epoch", max_points=2000)[1:]
    assert valid["loader"] == "valid" and valid["x"] == list(range(1, EPOCHS + 1))  # no gap, no restart
