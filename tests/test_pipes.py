"""MLComp's pipes and models: a pipe file registers its pipes (refused whole, naming file, line and
key, when anything is wrong); a trained task's checkpoint is named a model; the model runs
through a pipe as a new DAG whose infer task predicts with the model's checkpoint; the CLI, the
models page and its API twin."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from mlcomp import control, model_registry
from mlcomp.cli import cli
from mlcomp.db import (Dag, ModelRun, Pipe, PipeFile, Project, SnapshotBlob, SnapshotFile, Task, TaskDependency,
                       TaskStatus, immediate)
from mlcomp.errors import ConfigError, DagError, ExecutorError, NotFoundError, StateError
from mlcomp.worker.lookup import dependencies, registered_model, resolve_model, task_logdir
from ml_helpers import TINY_CONFIG
from supervisor_helpers import wait_status
from ui_fill import csrf_post, dispose

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN_DAG = """\
info: {name: tiny, project: p, expdir: .}
executors:
  train: {type: train, config: configs/train.yml}
"""

PIPES = """\
info:
  name: tiny_pipes
  project: p
  type: pipe
  expdir: .
pipes:
  test:
    infer:
      type: infer
      dataset: {dataset: SyntheticDataset, num_samples: 40, num_features: 8, num_classes: 3}
      formats: csv
  twice:
    first: {type: infer, dataset: {dataset: SyntheticDataset, num_features: 8, num_classes: 3}}
    second: {type: infer, depends: first, dataset: {dataset: SyntheticDataset, num_features: 8, num_classes: 3}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(textwrap.dedent(text))
    return folder / name


@pytest.fixture
def expdir(tmp_path) -> Path:
    folder = tmp_path / "exp"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "train.yml").write_text(TINY_CONFIG)
    write(folder, "dag.yml", TRAIN_DAG)
    write(folder, "pipe.yml", PIPES)
    return folder


@pytest.fixture
def trained(store, settings, expdir) -> int:
    """The id of a succeeded train task of project ``p``, trained here (no child process)."""
    from mlcomp.runner.config import run_config
    from mlcomp.runner.config_io import load_config

    with store.begin() as session:
        immediate(session)
        task_id = control.submit_dag(session, settings, expdir / "dag.yml")[0].tasks[0].id
    run_config(load_config(expdir / "configs" / "train.yml"), logdir=task_logdir(settings, task_id))
    with store.begin() as session:
        session.get(Task, task_id).status = TaskStatus.success
    return task_id


def submit(store, settings, path):
    with store.begin() as session:
        immediate(session)
        return control.submit_dag(session, settings, path)


def counts(store) -> dict:
    with store() as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Pipe, PipeFile, Project, SnapshotBlob, SnapshotFile)}


def run_infer(store, settings, task_id: int) -> dict:
    """Runs infer task ``task_id`` in this process as its child would: context, inputs, run."""
    from executors.infer import InferExecutor
    from mlcomp.worker.context import WITH_PROJECT, resolve_inputs, task_context

    with store() as session:
        task = session.scalars(select(Task).options(*WITH_PROJECT).where(Task.id == task_id)).one()
        context = resolve_inputs(session, task_context(task, settings), InferExecutor)
    return InferExecutor().run(context)


def test_a_pipe_file_registers_its_pipes_and_runs_nothing(store, settings, expdir):
    assert submit(store, settings, expdir / "pipe.yml") == []
    with store() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0
        pipes = {p["name"]: p for p in model_registry.list_pipes(session)}
        assert {name: p["tasks"] for name, p in pipes.items()} == {"test": ["infer"], "twice": ["first", "second"]}
        files = session.scalars(select(PipeFile.path).where(PipeFile.pipe_id == pipes["test"]["id"])).all()
        assert set(files) == {"configs/train.yml", "dag.yml", "pipe.yml"}


def test_the_digits_example_pipe_file_registers(store, settings):
    submit(store, settings, Path(__file__).resolve().parents[1] / "dags" / "digits_pipes.yml")
    with store() as session:
        pipes = model_registry.list_pipes(session, "examples")
    assert [(p["name"], p["tasks"]) for p in pipes] == [("test", ["infer"]), ("valid", ["infer", "trace"])]


def test_registering_a_pipe_again_replaces_it(store, settings, expdir):
    submit(store, settings, expdir / "pipe.yml")
    write(expdir, "pipe.yml", PIPES.replace("  twice:", "  other:").replace("formats: csv", "formats: npy"))
    submit(store, settings, expdir / "pipe.yml")
    with store() as session:
        pipes = {p.name: p for p in session.scalars(select(Pipe))}
    assert sorted(pipes) == ["other", "test", "twice"]
    assert pipes["test"].tasks[0]["config"]["formats"] == ["npy"]


def test_a_model_runs_through_a_pipe_with_its_own_checkpoint(store, settings, expdir, trained):
    submit(store, settings, expdir / "pipe.yml")
    with store.begin() as session:
        immediate(session)
        model = model_registry.add_model(session, settings, "tiny-v1", trained)
        checkpoint = Path(model.checkpoint)
    assert checkpoint == settings.models_dir / "p" / "tiny-v1_weight.pth" and checkpoint.is_file()
    best = task_logdir(settings, trained) / "checkpoints" / "best.pth"
    assert checkpoint.read_bytes() == best.read_bytes()
    _zero_weights(best)  # as if a later attempt wrote another model: the model keeps its copy
    with store.begin() as session:
        immediate(session)
        dag = model_registry.start_model(session, "tiny-v1", "test")
        dag_id, infer_id = dag.id, dag.tasks[0].id
        assert (dag.name, [t.name for t in dag.tasks]) == ("test tiny-v1", ["infer"])
        assert session.scalar(select(ModelRun.model_id).where(ModelRun.dag_id == dag_id)) == model.id
        assert session.scalar(select(func.count()).select_from(SnapshotFile).where(SnapshotFile.dag_id == dag_id)) == 3
    result = run_infer(store, settings, infer_id)
    assert (result["source_task"], result["source_name"], result["checkpoint"]) == (trained, "tiny-v1",
                                                                                   str(checkpoint))
    assert result["metrics"]["infer_accuracy"] > 0.9  # zero weights predict one class: about a third
    assert Path(result["paths"]["infer predictions"]).is_file()


def test_registration_and_start_on_both_stores(any_store, settings, expdir):
    with any_store.begin() as session:
        immediate(session)
        assert control.submit_dag(session, settings, expdir / "pipe.yml") == []
        project = session.scalar(select(Project).where(Project.name == "p"))
        train = Task(dag=Dag(name="d", project=project, config=""), name="train", type="train",
                     status=TaskStatus.success)
        session.add(train)
        session.flush()
        best = task_logdir(settings, train.id) / "checkpoints" / "best.pth"
        best.parent.mkdir(parents=True)
        best.write_bytes(b"weights")
        model_registry.add_model(session, settings, "m", train.id)
        dag = model_registry.start_model(session, "m", "twice", project="p")
        dag_id, second = dag.id, dag.tasks[1]
        assert [t.name for t in dag.tasks] == ["first", "second"]
    with any_store() as session:
        assert [t.id for t in dependencies(session, second.id)] == [second.id - 1]
        assert session.scalar(select(func.count()).select_from(SnapshotFile).where(SnapshotFile.dag_id == dag_id)) == 3
        assert registered_model(session, settings, second.id).checkpoint == settings.models_dir / "p" / "m_weight.pth"


MLCOMP_EXECUTOR = """\
from mlcomp.worker.executors import Executor


@Executor.register
class ValidTiny(Executor):
    def __init__(self, model_name):
        self.model_name = model_name

    @classmethod
    def _from_config(cls, executor, config, additional_info):
        return cls(executor["model_name"])

    def work(self):
        return {"model": self.model_name}
"""


def test_executors_written_for_mlcomp_get_its_model_keys(store, settings, expdir, trained):
    (expdir / "executors.py").write_text(MLCOMP_EXECUTOR)
    pipe = write(expdir, "mlcomp.yml", """\
        info: {name: mlcomp_pipes, project: p, type: pipe, expdir: .}
        pipes:
          valid:
            valid: {type: valid_tiny, suffix: valid}
            infer: {type: infer, dataset: {dataset: SyntheticDataset, num_features: 8, num_classes: 3}}
        """)
    submit(store, settings, pipe)
    with store.begin() as session:
        immediate(session)
        model = model_registry.add_model(session, settings, "m", trained)
        configs = {t.name: t.executor_config for t in model_registry.start_model(session, "m", "valid").tasks}
    assert configs["valid"] == {"suffix": "valid", "model_id": model.id, "model_name": "m"}
    assert "model_name" not in configs["infer"]  # infer checks its keys: it gets the model as TaskContext.model


def test_the_worker_runs_the_pipe_dag_with_the_model(store, settings, expdir, trained):
    from mlcomp.supervisor import run_local

    submit(store, settings, expdir / "pipe.yml")
    with store.begin() as session:
        immediate(session)
        model = model_registry.add_model(session, settings, "m", trained, which="last")
        dag = model_registry.start_model(session, "m", "test")
        dag_id, infer_id = dag.id, dag.tasks[0].id
    with run_local(settings, [], sessionmaker=store, interval=0.2, dag_ids=[dag_id]):
        infer = wait_status(store, infer_id, TaskStatus.success, TaskStatus.failed)
    assert infer.status is TaskStatus.success, infer.reason
    assert (infer.result["source_task"], infer.result["checkpoint"]) == (trained, model.checkpoint)


def _zero_weights(checkpoint: Path) -> None:
    import torch

    state = torch.load(checkpoint, weights_only=True)
    state["model_state_dict"] = {k: torch.zeros_like(v) for k, v in state["model_state_dict"].items()}
    torch.save(state, checkpoint)


def test_a_dag_not_started_for_a_model_still_takes_its_train_dependency(store, settings, expdir, trained):
    with store.begin() as session:
        immediate(session)
        model_registry.add_model(session, settings, "m", trained)
        train = session.get(Task, trained)
        infer = Task(dag_id=train.dag_id, name="infer", type="infer")
        session.add(infer)
        session.flush()
        session.add(TaskDependency(task_id=infer.id, depend_id=trained))
        session.flush()
        source = resolve_model(session, settings, infer.id)
    assert source.checkpoint == task_logdir(settings, trained) / "checkpoints" / "best.pth"


def test_model_add_refuses_a_bad_name_a_task_that_is_not_a_succeeded_train_run_and_a_taken_name(
        store, settings, expdir, trained):
    with store.begin() as session:
        immediate(session)
        with pytest.raises(ConfigError, match="model name 'a b'"):
            model_registry.add_model(session, settings, "a b", trained)
        with pytest.raises(NotFoundError, match="task 999"):
            model_registry.add_model(session, settings, "m", 999)
        bash = Task(dag_id=session.get(Task, trained).dag_id, name="bash", type="bash", status=TaskStatus.success)
        session.add(bash)
        session.flush()
        with pytest.raises(ExecutorError, match="is a bash task; a model comes from a train task"):
            model_registry.add_model(session, settings, "m", bash.id)
        session.get(Task, trained).status = TaskStatus.failed
        with pytest.raises(ExecutorError, match="is failed, not success"):
            model_registry.add_model(session, settings, "m", trained)
        session.get(Task, trained).status = TaskStatus.success
        with pytest.raises(ConfigError):
            model_registry.add_model(session, settings, "m", trained, which="nothing.pth")
        session.get(Task, trained).type = "catalyst"  # MLComp's train task
        model_registry.add_model(session, settings, "m", trained)
        with pytest.raises(StateError, match="already has a model 'm'"):
            model_registry.add_model(session, settings, "m", trained)
        with pytest.raises(NotFoundError, match="pipe 'test' does not exist .* its pipes: none"):
            model_registry.start_model(session, "m", "test")


BAD = [  # (what is wrong, text replaced, its replacement, the start of the error after the file's path)
    ("unknown key", "formats: csv\n", "formats: csv\n      bogus: 1\n", "pipe.yml:12: task 'infer', key 'bogus'"),
    ("unknown type", "type: infer\n", "type: no_such_type\n", "pipe.yml:9: task 'infer', key 'type'"),
    ("unknown dependency", "depends: first", "depends: nothing",
     "pipe.yml:14: task 'second', key 'depends': unknown task 'nothing'"),
    ("bad info.type", "type: pipe", "type: pipeline", "pipe.yml:4: key 'info.type': got 'pipeline'"),
    ("executors", "pipes:\n", "executors: {a: {type: bash, command: 'true'}}\npipes:\n",
     "pipe.yml:6: key 'executors': a pipe file"),
    ("empty pipe", "  test:\n    infer:", "  test: {}\n  unused:\n    infer:", "pipe.yml:7: 'pipes.test' must be"),
]


@pytest.mark.parametrize("old, new, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_pipe_file_is_refused_naming_file_line_and_key_and_writes_nothing(
        store, settings, expdir, old, new, message):
    submit(store, settings, expdir / "pipe.yml")  # a registration before: the refusal changes nothing
    before = counts(store)
    assert old in PIPES
    write(expdir, "pipe.yml", PIPES.replace(old, new, 1))
    with pytest.raises(DagError) as refused:
        submit(store, settings, expdir / "pipe.yml")
    assert str(refused.value).startswith(f"{expdir / message}")
    assert counts(store) == before


@pytest.fixture
def mlcomp(settings, monkeypatch):
    """Invokes ``mlcomp ARGS…`` on the ``settings`` root; returns the click Result."""
    monkeypatch.setenv("MLCOMP_ROOT", str(settings.root))
    monkeypatch.setenv("MLCOMP_DB_URL", settings.db_url)
    return lambda *args: CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def test_the_cli_adds_lists_and_starts_models_and_lists_pipes(store, settings, expdir, trained, mlcomp):
    registered = mlcomp("dag", "submit", expdir / "pipe.yml")
    assert registered.exit_code == 0 and "pipes registered" in registered.output
    assert ["test", "infer"] == mlcomp("model", "pipes").output.splitlines()[1].split()[1:4:2]
    added = mlcomp("model", "add", "tiny", "--task", trained, "--which", "last")
    assert added.exit_code == 0 and "tiny_weight.pth" in added.output, added.output
    listed = mlcomp("model", "list", "--project", "p").output.splitlines()
    assert listed[1].split()[1:7] == ["tiny", "p", str(trained), "train", "last", "0"]
    started = mlcomp("model", "start", "tiny", "--pipe", "twice")
    assert started.exit_code == 0, started.output
    with store() as session:
        names = session.scalars(select(Task.name).where(Task.dag_id == int(started.stdout))).all()
    assert names == ["first", "second"]
    missing = mlcomp("model", "start", "nothing", "--pipe", "test")
    assert isinstance(missing.exception, NotFoundError) and "model 'nothing' does not exist" in str(missing.exception)


def test_the_models_page_its_twin_and_the_start_command(store, settings, expdir, trained):
    from ui import create_app

    submit(store, settings, expdir / "pipe.yml")
    with store.begin() as session:
        immediate(session)
        model_id = model_registry.add_model(session, settings, "tiny", trained).id
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    page = client.get("/models")
    assert page.status_code == 200 and b'data-url="/api/models/%d/start"' % model_id in page.data
    twin = client.get("/api/models?project=p").get_json()
    assert [(m["name"], m["pipes"], m["runs"]) for m in twin["models"]] == [("tiny", ["test", "twice"], 0)]
    assert [p["name"] for p in twin["pipes"]] == ["test", "twice"]
    assert client.post(f"/api/models/{model_id}/start", json={"pipe": "test"}).status_code == 403  # no CSRF token
    started = csrf_post(client, f"/api/models/{model_id}/start", json={"pipe": "test"})
    assert started.status_code == 200
    body = started.get_json()
    assert (body["name"], [t["name"] for t in body["tasks"]]) == ("test tiny", ["infer"])
    assert csrf_post(client, f"/api/models/{model_id}/start", json={"pipe": "nothing"}).status_code == 404
    assert csrf_post(client, "/api/models/999/start", json={"pipe": "test"}).status_code == 404
    assert csrf_post(client, f"/api/models/{model_id}/start", json={"pipe": 3}).status_code == 400
    assert client.get("/api/models").get_json()["models"][0]["runs"] == 1
    dispose(app)
