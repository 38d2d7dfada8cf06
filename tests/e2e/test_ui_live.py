"""Live pages in a real browser: a zoom survives the metric refresh, the smoothing slider redraws
the lines over their faint raw values, a status change updates the page in place (no
navigation), one run keeps one colour across the compare figures, and the computer and task
pages plot the resource history."""
import time

import pytest
from sqlalchemy import insert

from mlcomp.db import Checkpoint, Metric, ResourceSample, Task, TaskStatus
from ui_fill import filled  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
LOSS = '[data-key="metrics-loss-epoch"]'


def _navigations(page) -> list[str]:
    """The URLs the main frame navigates to from now on."""
    seen: list[str] = []
    page.on("framenavigated", lambda frame: seen.append(frame.url) if frame == page.main_frame else None)
    return seen


def test_zoom_and_page_survive_live_updates_without_navigation(page, live_server, filled, store):
    page.goto(f"{live_server()}/tasks/{filled.train}")
    page.wait_for_selector(f"{LOSS} .main-svg")
    navigations = _navigations(page)
    page.locator(LOSS).scroll_into_view_if_needed()
    box = page.locator(f"{LOSS} .nsewdrag").first.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.1, y)  # a drag zooms the x axis, as a person would
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
    page.mouse.up()
    zoomed = page.evaluate(f"document.querySelector('{LOSS}').layout.xaxis.range")
    assert 1 < zoomed[0] < zoomed[1] < 3  # the curves run from epoch 1 to 3

    with store.begin() as session:  # the task goes on: epoch 4, a new checkpoint, then it stops
        session.execute(insert(Metric), [{"task_id": filled.train, "name": "loss", "loader": loader, "stage": "main",
                                          "epoch": 4, "step": 4, "kind": "epoch", "value": 0.2} for loader in
                                         ("train", "valid")])
        session.add(Checkpoint(task_id=filled.train, path="checkpoints/epoch4.pth", stage="main", epoch=4, size=9))
    page.wait_for_function(f"document.querySelector('{LOSS}').data.some((t) => t.x.includes(4))")
    page.wait_for_selector("text=checkpoints/epoch4.pth")
    with store.begin() as session:
        task = session.get(Task, filled.train)
        task.status, task.reason = TaskStatus.stopped, "stopped on request"
    page.wait_for_selector("#task-status .status-stopped")
    assert "stopped on request" in page.locator(".reason").inner_text()
    assert page.evaluate(f"document.querySelector('{LOSS}').layout.xaxis.range") == zoomed
    assert navigations == []  # every change arrived in place


def test_smoothing_redraws_lines_over_their_faint_raw_values(page, live_server, filled):
    page.goto(f"{live_server()}/tasks/{filled.train}")
    page.wait_for_selector(f"{LOSS} .main-svg")
    lines = f"document.querySelector('{LOSS}').data"
    raw = page.evaluate(f"{lines}.map((t) => t.y)")
    page.locator('#plot-controls [name="smoothing"]').fill("0.8")
    page.wait_for_function(f"{lines}.length === {2 * len(raw)}")
    drawn = page.evaluate(f"{lines}.map((t) => ({{y: t.y, opacity: t.opacity, legend: t.showlegend}}))")
    faint, smoothed = drawn[0::2], drawn[1::2]
    assert [t["y"] for t in faint] == raw and all(t["opacity"] == 0.25 and t["legend"] is False for t in faint)
    first = raw[0]  # TensorBoard's debiased EMA: the first point is kept, the next pulled towards it
    expected = (0.8 * 0.2 * first[0] + 0.2 * first[1]) / (1 - 0.8 ** 2)
    assert smoothed[0]["y"][0] == pytest.approx(first[0]) and smoothed[0]["y"][1] == pytest.approx(expected)
    page.locator('#plot-controls [name="logy"]').check()
    page.wait_for_function(f"document.querySelector('{LOSS}').layout.yaxis.type === 'log'")
    page.locator('#plot-controls [name="x"]').select_option("time")  # curves fetched again, by wall time
    page.wait_for_function(f"document.querySelector('{LOSS}').layout.xaxis.type === 'date'")


def test_one_run_has_one_colour_across_the_compare_figures(page, live_server, filled, screenshot):
    page.goto(f"{live_server()}/compare?tasks={','.join(map(str, filled.cells))}")
    page.wait_for_selector(".plot .main-svg")
    traces = page.evaluate("""Array.from(document.querySelectorAll('.plot')).flatMap((el) =>
        el.data.filter((t) => t.showlegend !== false).map((t) => [t.name, t.line.color, t.line.dash]))""")
    colours: dict[str, set] = {}
    for name, colour, dash in traces:
        run, loader = name.rsplit(" · ", 1)
        colours.setdefault(run, set()).add(colour)
        assert dash == {"train": "solid", "valid": "dash"}[loader]
    assert len(colours) == 3 and all(len(c) == 1 for c in colours.values())
    assert len({c.pop() for c in colours.values()}) == 3  # and no two runs share one
    assert page.locator("ul.compared .swatch").count() == 3 and page.locator("table.summary tbody tr").count() > 0
    screenshot(page, "compare")


def test_resource_plots_show_the_history(page, live_server, filled, store, screenshot):
    now = int(time.time())
    with store.begin() as session:
        task = session.get(Task, filled.train)
        task.started = task.started.fromtimestamp(now - 600, tz=task.started.tzinfo)
        session.execute(insert(ResourceSample), [
            {"computer": "box", "resolution": 0, "time": t, "task_id": holder, "gpu": gpu,
             "utilization": 40 + 30 * ((t // 60) % 2), "memory": 2.0 ** 32}
            for t in range(now - 590, now, 5) for holder, gpu in ((None, None), (filled.train, 0), (filled.train, None))])
    base = live_server()
    page.goto(f"{base}/computers?window=600")
    page.wait_for_selector("#resources-1 .plot .main-svg")
    points = page.evaluate("document.querySelector('#resources-1 .plot').data.map((t) => [t.name, t.x.length])")
    assert [name for name, _ in points] == ["CPU / RAM", "GPU 0"] and min(n for _, n in points) > 100
    screenshot(page, "computers")
    page.goto(f"{base}/tasks/{filled.train}")
    page.wait_for_selector("#resources .plot .main-svg")
    names = page.evaluate("document.querySelector('#resources .plot').data.map((t) => t.name)")
    assert names == ["task processes", "GPU 0"]
