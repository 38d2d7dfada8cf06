"""The UI in a real browser, against a real waitress server over a filled store: browse the DAG
list, a DAG (graph), a task (metric curves, live log), stop a running task and see its status
change; the grid, compare and computers pages render their figures."""
import pytest

from mlcomp.db import Computer, LogLine, Task, TaskStatus, utcnow
from ui_fill import EVIL, filled  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_browse_to_a_running_task_and_stop_it(page, live_server, filled, store, screenshot):
    base = live_server()
    page.goto(base + "/dags")
    page.wait_for_selector(f'tr[data-dag="{filled.dag}"]')
    assert page.locator(f'tr[data-dag="{filled.failed_dag}"] td').nth(2).inner_text() == "bash " + EVIL

    page.click("text=digits")
    page.wait_for_selector("#graph .main-svg")
    assert page.locator("#graph .textpoint").count() >= 4  # node labels drawn by plotly

    page.click(f'tr[data-task="{filled.train}"] a:text-is("train")')
    page.wait_for_selector("#metrics .plot .main-svg")
    assert page.locator("#metrics .plot").count() == 3  # loss/epoch, accuracy01/epoch, loss/batch
    assert EVIL in page.locator("#log").inner_text()  # shown as text, not run
    assert "ETA" in page.locator("#progress").inner_text()
    screenshot(page, "task")

    dialogs = []

    def on_dialog(dialog):  # an alert() run by a log line would land here
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    hostile = 'a line written later <script>alert(1)</script><img src=x onerror="alert(2)">'
    with store.begin() as session:  # the task prints while the page is open: polled, no reload
        session.add(LogLine(task_id=filled.train, text=hostile))
    page.wait_for_function("document.getElementById('log').innerText.includes('a line written later')")
    assert hostile in page.locator("#log").inner_text()  # the appended line is text too
    assert page.locator("#log script, #log img").count() == 0 and not dialogs
    page.remove_listener("dialog", on_dialog)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f'button[data-url="/api/tasks/{filled.train}/stop"]')
    page.wait_for_selector("#task-status .status-stopping")
    with store() as session:
        assert session.get(Task, filled.train).status is TaskStatus.stopping


def test_grid_compare_and_computers_pages_render(page, live_server, filled, store, screenshot):
    base = live_server()
    page.goto(f"{base}/grid/{filled.grid}")
    page.wait_for_selector("#parcoords .main-svg")
    assert page.locator("table.leaderboard tbody tr").count() == 3
    screenshot(page, "grid")

    page.click("text=Compare the cells' curves")
    page.wait_for_selector(".plot .main-svg")
    assert page.locator(".plot").count() == 2  # accuracy01 and loss (test_ui_live shoots this page)

    with store.begin() as session:  # the worker's heartbeat
        session.get(Computer, "box").heartbeat = utcnow()
    page.goto(f"{base}/computers")
    page.wait_for_selector("table.gpus")
    assert "Fake GPU" in page.content() and page.locator(".computer.alive").count() == 1


def test_resume_a_failed_dag_from_the_list(page, live_server, filled, store):
    page.goto(live_server() + "/dags")
    page.click(f'tr[data-dag="{filled.failed_dag}"] button:text-is("Resume")')
    page.wait_for_selector(f'tr[data-dag="{filled.failed_dag}"] .badge.status-not_ran')
    with store() as session:
        assert session.get(Task, filled.broken).attempt == 2
