"""Sharp inputs (issue 23): deep ``--set`` paths, control characters in names, queries and paths,
project names that climb out of the root, commands longer than one argv string may be, and names
that would break the CLI's tables. Wall-clock limits here are only hang guards; speed is not
asserted."""
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlcomp.cli import cli
from mlcomp.configkit import MAX_PARTS, PathError, set_path, split_path
from mlcomp.dag.spec import load_spec
from mlcomp.db import Dag, Project, Task, TaskStatus, open_store
from mlcomp.errors import DagError
from mlcomp.names import shown
from mlcomp.settings import Settings
from mlcomp.worker.launch import link_project_folders
from mlcomp.worker.process import command_through_file
from ui_fill import csrf_post, dispose, fill

HANG_GUARD_S = 20  # below the SQLite busy timeout (30 s), so waiting for the write lock fails too
MLCOMP = str(Path(sys.executable).parent / "mlcomp")
DAG = ("info: {name: sharp, project: tests}\n"
       "executors:\n  a: {type: python, function: 'code:main'}\n")


@pytest.fixture
def root(tmp_path):
    """``(folder, env)``: a DAG file ``dag.yml`` whose python task takes any keyword, and the
    environment of a fresh MLCOMP_ROOT next to it."""
    (tmp_path / "code.py").write_text("def main(**kwargs):\n    return kwargs\n")
    (tmp_path / "dag.yml").write_text(DAG)
    env = {**os.environ, "MLCOMP_ROOT": str(tmp_path / "root")}
    env.pop("MLCOMP_DB_URL", None)
    return tmp_path, env


def _submit(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([MLCOMP, "dag", "submit", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)


# -- --set paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [3000, 10000])
def test_a_deep_set_path_is_refused_at_once_with_exit_2(root, levels):
    folder, env = root
    key = "executors.a." + ".".join(f"k{i}" for i in range(levels - 2))
    done = _submit(env, folder / "dag.yml", "--set", f"{key}=1")
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr.strip()
    assert message.startswith(f"Error: {folder / 'dag.yml'}:1: --set: "), message[:500]
    assert f"{levels} parts" in message and f"at most {MAX_PARTS}" in message, message[:500]
    assert "Traceback" not in message and "RecursionError" not in message and len(message) < 1000


def test_a_64_level_set_path_still_works(root):
    folder, env = root
    keys = [f"k{i}" for i in range(MAX_PARTS - 2)]
    done = _submit(env, folder / "dag.yml", "--set", f"executors.a.{'.'.join(keys)}=7")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(folder / "root" / "mlcomp.db") as connection:
        (config,) = connection.execute("SELECT executor_config FROM task").fetchone()
    node = json.loads(config)["kwargs"]
    for key in keys:
        node = node[key]
    assert node == 7


def test_a_refused_set_path_does_not_wait_for_the_write_lock(root):
    folder, env = root
    assert _submit(env, folder / "dag.yml").returncode == 0  # the store exists
    holder = sqlite3.connect(folder / "root" / "mlcomp.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock meanwhile
    try:
        done = _submit(env, folder / "dag.yml", "--set", "executors..a=1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 2, done.stderr
    assert "empty part" in done.stderr and "database is locked" not in done.stderr


def test_split_path_limits_parts_of_strings_and_sequences():
    assert len(split_path(".".join(["k"] * MAX_PARTS))) == MAX_PARTS
    for key in (".".join(["k"] * (MAX_PARTS + 1)), ["k"] * 100_000, iter(["k"] * (MAX_PARTS + 1))):
        with pytest.raises(PathError, match=f"at most {MAX_PARTS}"):
            split_path(key)
    config = {"a.b": {"c": 1}, "a": {"x": 2}}  # a dotted key still matches as a whole
    assert set_path(config, "a.b.c", 3) == ("a.b", "c") and config == {"a.b": {"c": 3}, "a": {"x": 2}}


@pytest.mark.parametrize("item, fragment", [
    ("executors.a.k\x00=1", r"'\x00'"), ("executors.a\nb=1", r"'\n'"), ("executors.a.k=v\x1b[2J", r"'\x1b'"),
])
def test_a_set_item_with_a_control_character_is_refused(root, item, fragment):
    folder, _ = root
    with pytest.raises(DagError, match="control character") as error:
        load_spec(folder / "dag.yml", [item])
    assert str(error.value).startswith(f"{folder / 'dag.yml'}:1: --set") and fragment in str(error.value)


# -- project and DAG names --------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("project", "../x"), ("project", "../../../../tmp/x"), ("project", "a/b"), ("project", ".hidden"),
    ("project", ".."), ("name", "a\nb"), ("name", "evil\u202eexe.sh"), ("name", "nul\x00"), ("project", "a..b"),
])
def test_an_unsafe_project_or_dag_name_is_refused(tmp_path, key, value):
    info = {"name": "ok", "project": "ok", key: value}
    path = tmp_path / "dag.yml"
    path.write_text(f"info:\n  name: {json.dumps(info['name'])}\n  project: {json.dumps(info['project'])}\n"
                    f"executors:\n  a: {{type: bash, command: 'true'}}\n")
    with pytest.raises(DagError) as error:
        load_spec(path)
    line = 2 if key == "name" else 3
    assert str(error.value).startswith(f"{path}:{line}: key 'info.{key}': got {value!r}; allowed: letters"), \
        str(error.value)


@pytest.mark.parametrize("name", ["digits", "mnist-simple", "digit-recognizer", "my project v1.2", "_x", "Проект"])
def test_ordinary_names_are_accepted(tmp_path, name):
    path = tmp_path / "dag.yml"
    path.write_text(f"info: {{name: {name}, project: {name}}}\nexecutors:\n  a: {{type: bash, command: 'true'}}\n")
    spec = load_spec(path)
    assert (spec.name, spec.project) == (name, name)


def test_a_task_name_with_a_control_character_is_refused(tmp_path):
    path = tmp_path / "dag.yml"
    path.write_text('info: {name: d}\nexecutors:\n  "a\\x00b": {type: bash, command: "true"}\n')
    with pytest.raises(DagError, match="no control characters"):
        load_spec(path)


def test_a_stored_project_that_climbs_out_gets_no_links(tmp_path):
    settings = Settings(root=tmp_path / "root", db_url=f"sqlite:///{tmp_path / 'root' / 'mlcomp.db'}")
    code = tmp_path / "code"
    code.mkdir()
    for project in ("../../outside", "..", "a/b"):
        with pytest.raises(ValueError, match="not a folder name"):
            link_project_folders(code, settings, project)
    assert not (tmp_path / "outside").exists() and not (code / "data").exists()
    link_project_folders(code, settings, "fine")
    assert (code / "data").resolve() == (Path(settings.data_dir) / "fine").resolve()


# -- the UI ---------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ui(request, tmp_path):
    """``(client, ids)``: the UI over a filled SQLite or PostgreSQL store."""
    from ui import create_app

    url = (f"sqlite:///{tmp_path / 'mlcomp' / 'mlcomp.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    settings = Settings(root=tmp_path / "mlcomp", db_url=url)
    store = open_store(settings)
    with store.begin() as session:
        ids = fill(session, settings)
    app = create_app(settings, {"TESTING": True})
    yield app.test_client(), ids
    dispose(app)
    store.kw["bind"].dispose()


def test_a_control_character_in_a_query_form_or_url_name_is_a_400(ui):
    client, ids = ui
    gets = ["/api/dags?name=a%00b", "/api/dags?project=%00", "/dags?tag=x%0Ay", f"/api/tasks/{ids.train}/metrics?name=%00",
            f"/compare?tasks={ids.train}&name=%00", f"/api/dags/{ids.dag}/files/train%00.py",
            f"/tasks/{ids.train}/files/a%00b", "/api/models?project=a%00"]
    for url in gets:
        response = client.get(url)
        assert response.status_code == 400, (url, response.status_code)
        if url.startswith("/api/"):
            assert "control character" in response.get_json()["error"]["message"], url
    posts = [(f"/api/dags/{ids.dag}/meta", {"data": {"note": "a\x00b"}}),
             (f"/api/dags/{ids.dag}/meta", {"json": {"tags": ["x\x00"]}}),
             (f"/api/tasks/{ids.train}/resume", {"json": {"from": "a\x00b"}})]
    for url, body in posts:
        response = csrf_post(client, url, **body)
        assert response.status_code == 400, (url, body, response.status_code)
        assert "control character" in response.get_json()["error"]["message"]
    note = csrf_post(client, f"/api/dags/{ids.dag}/meta", json={"note": "two\nlines\tand a tab"})
    assert note.status_code == 200 and note.get_json()["note"] == "two\nlines\tand a tab"


# -- long commands ---------------------------------------------------------------------------------
def test_a_bash_task_with_a_200_kib_command_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("MLCOMP_STOP_GRACE", "3")
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    command = "x=" + "a" * (200 << 10) + "; echo long ${#x}"
    (tmp_path / "long.yml").write_text(f"info: {{name: long, project: tests}}\nexecutors:\n"
                                       f"  a: {{type: bash, command: '{command}'}}\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["dag", "submit", str(tmp_path / "long.yml"), "--wait"])
    assert result.exit_code == 0, result.output[-2000:]
    dag_id = result.output.splitlines()[0].removeprefix("DAG ").removesuffix(" submitted")
    (task,) = json.loads(runner.invoke(cli, ["dag", "show", dag_id, "--json"]).output)["tasks"]
    assert task["status"] == "success"
    assert runner.invoke(cli, ["task", "logs", str(task["id"])]).output == f"long {200 << 10}\n"


def test_only_a_long_bash_string_goes_through_a_file(tmp_path):
    short = ["bash", "-c", "echo hi"]
    assert command_through_file(short, tmp_path) == short
    exec_form = ["printf", "%s", "a" * (200 << 10)]
    assert command_through_file(exec_form, tmp_path) == exec_form
    long = "echo " + "é" * (40 << 10)  # 40 Ki characters, 80 KiB: bytes count
    argv = command_through_file(["bash", "-c", long], tmp_path)
    assert argv == ["bash", str(tmp_path / "command.sh")] and (tmp_path / "command.sh").read_text() == long


# -- CLI tables ------------------------------------------------------------------------------------
def test_tables_show_names_with_a_newline_or_bidi_override_escaped(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    with open_store(Settings.from_env()).begin() as session:  # rows written before names were checked
        dag = Dag(name="dag\u202egnp.exe", project=Project(name="p\nq"), config="")
        session.add_all([Task(dag=dag, name=name, type="bash", status=TaskStatus.not_ran)
                         for name in ("line\nbreak", "right\u202eto left")])
        session.flush()
        dag_id = dag.id
    runner = CliRunner()
    for args, lines in ((["dag", "show", str(dag_id)], 4), (["dag", "list"], 2)):  # (a title,) a header, rows
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "\u202e" not in result.output and len(result.output.splitlines()) == lines, result.output
    shown_ = runner.invoke(cli, ["dag", "show", str(dag_id)]).output
    assert "line\\nbreak" in shown_ and "right\\u202eto left" in shown_
    assert "dag\\u202egnp.exe" in runner.invoke(cli, ["dag", "list"]).output
    assert shown("é ok") == "é ok" and shown("a\tb\x00") == "a\\tb\\x00"
