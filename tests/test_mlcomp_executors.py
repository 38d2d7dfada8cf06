"""MLComp's executors: discovery of a DAG's own types in any module of its folder (only the
declaring module imported), and the built-in types ``click``, ``split``, ``download`` and ``submit``."""
import json
import re
import socket
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from executors import SubmitContext, TaskContext, get_executor, known_types
from executors import kaggle_api
from executors.click import ClickExecutor
from executors.split import SplitExecutor
from executors.submit import SubmitExecutor
from mlcomp.errors import DagError, ExecutorError

MLCOMP_STYLE = '''
from mlcomp.worker.executors import Executor


@Executor.register
class {name}(Executor):
    def work(self):
        return {{"class": "{name}"}}
'''
BROKEN = "raise RuntimeError('this module must never be imported')\n"


def context(tmp_path, task="t") -> SubmitContext:
    return SubmitContext(file=Path("dag.yml"), expdir=tmp_path, dag="d", task=task,
                         path=("executors", task), line_of=lambda path: 7)


class Progress:
    """A Reporter that keeps the progress reports."""

    def __init__(self):
        self.reports = []

    def progress(self, progress):
        self.reports.append(progress)


def task_context(tmp_path, config, data_dir=None, reporter=None) -> TaskContext:
    return TaskContext(1, 1, 1, "t", tmp_path, tmp_path, config=config, data_dir=data_dir, reporter=reporter)


def run(cls, spec, tmp_path, data_dir=None, reporter=None):
    return cls().run(task_context(tmp_path, cls.validate(spec, context(tmp_path)), data_dir, reporter))


# -- discovery --------------------------------------------------------------------------------------
def test_an_executor_in_executor_py_is_found_by_mlcomps_names(write_file, tmp_path):
    write_file("dag/executor.py", MLCOMP_STYLE.format(name="ProgressBar").replace(
        "return", "for _ in self.tqdm(range(4), interval=0):\n            pass\n        return"))
    write_file("dag/__init__.py", BROKEN)  # the folder's own package code is not run either
    for name in ("ProgressBar", "progressbar", "progress_bar"):
        cls = get_executor(name, tmp_path / "dag")
        reporter = Progress()
        assert cls().run(task_context(tmp_path, {}, reporter=reporter)) == {"class": "ProgressBar"}
        assert reporter.reports[-1] == {"stage": "progress", "batch": 4, "batches": 4, "eta": 0.0}
    assert {"ProgressBar", "progressbar", "progress_bar"} <= set(known_types(tmp_path / "dag"))


def test_a_sub_folder_module_imports_relative_and_flat_modules_of_the_dag(write_file, tmp_path):
    write_file("dag/dataset.py", "ROWS = 3\n")
    write_file("dag/executors/__init__.py", "")
    write_file("dag/executors/common.py", "SUFFIX = '!'\n")
    write_file("dag/executors/infer.py", MLCOMP_STYLE.format(name="InferMNIST").replace(
        'return {"class": "InferMNIST"}', 'return {"rows": ROWS, "suffix": SUFFIX}') +
        "from dataset import ROWS\nfrom .common import SUFFIX\n")
    cls = get_executor("infer_mnist", tmp_path / "dag")  # MLComp's to_snake keeps acronyms together
    assert cls().run(task_context(tmp_path, {})) == {"rows": 3, "suffix": "!"}
    assert get_executor("InferMNIST", tmp_path / "dag").user_class is cls.user_class
    assert "dataset" not in sys.modules and not [m for m in sys.modules if m.startswith("mlcomp_dag_")]
    assert get_executor("bash").__module__ == "executors.bash"  # the user's executors/ shadows nothing


def test_this_packages_api_is_found_by_type_name_in_any_module(write_file, tmp_path):
    write_file("dag/tools/tasks.py", "from executors import Executor\n\n\nclass Shout(Executor):\n"
                                     "    type_name: str = 'shout_it'\n")
    assert get_executor("shout_it", tmp_path / "dag").__name__ == "Shout"
    with pytest.raises(ExecutorError, match="unknown executor type 'shout'"):
        get_executor("shout", tmp_path / "dag")  # type_name, not the class name, names it


def test_unrelated_broken_modules_are_never_imported(write_file, tmp_path):
    write_file("dag/step.py", MLCOMP_STYLE.format(name="Step"))
    write_file("dag/model.py", BROKEN + "class Step:\n    pass\n")  # same name, not an executor
    write_file("dag/sub/heavy.py", BROKEN)
    write_file("dag/syntax.py", "def broken(:\n")
    write_file("dag/data/trap.py", MLCOMP_STYLE.format(name="Trap"))  # data/ is never searched
    assert get_executor("step", tmp_path / "dag")().run(task_context(tmp_path, {})) == {"class": "Step"}
    with pytest.raises(ExecutorError) as info:
        get_executor("trap", tmp_path / "dag")
    assert re.search(r"modules that could not be read: \S*syntax\.py: SyntaxError", str(info.value))


def test_a_type_declared_in_two_modules_is_an_error_naming_both(write_file, tmp_path):
    write_file("dag/a.py", MLCOMP_STYLE.format(name="Prepare"))
    write_file("dag/jobs/b.py", MLCOMP_STYLE.format(name="prepare"))
    with pytest.raises(ExecutorError) as info:
        get_executor("prepare", tmp_path / "dag")
    message = str(info.value)
    assert "executor type 'prepare' is declared in 2 modules" in message
    assert f"{tmp_path / 'dag/a.py'}:6 (class Prepare)" in message
    assert f"{tmp_path / 'dag/jobs/b.py'}:6 (class prepare)" in message


def test_mlcomps_class_names_of_the_builtins_are_the_builtins(tmp_path):
    assert get_executor("Submit", tmp_path) is SubmitExecutor
    assert get_executor("Click", tmp_path / "no such folder") is ClickExecutor


# -- click ------------------------------------------------------------------------------------------
MAIN = '''
import click
from tqdm import tqdm


@click.group()
def base():
    pass


@base.command()
@click.option("--count", type=int, default=100)
@click.option("--name", required=True)
@click.option("--loud", is_flag=True)
def work(count, name, loud):
    for _ in tqdm(range(count), desc="items"):
        pass
    return {"count": count, "name": name.upper() if loud else name}
'''


def test_click_runs_the_command_with_the_tasks_keys_as_its_parameters(write_file, tmp_path):
    write_file("main.py", MAIN)
    spec = {"module": "main", "command": "work", "name": "mnist", "loud": True}
    reporter = Progress()
    assert run(ClickExecutor, spec, tmp_path, reporter=reporter) == {"count": 100, "name": "MNIST"}
    assert reporter.reports[-1] == {"stage": "items", "batch": 100, "batches": 100, "eta": 0.0}  # MLComp's tqdm
    assert run(ClickExecutor, {**spec, "count": 3, "loud": False}, tmp_path) == {"count": 3, "name": "mnist"}


@pytest.mark.parametrize("spec, message", [
    ({"module": "main", "command": "work", "size": 1}, "key 'size': not a parameter of the click command "
                                                       "'work'; its parameters: count, name, loud"),
    ({"module": "main", "command": "click"}, "main:click cannot be resolved"),
    ({"module": "main", "command": "nope"}, "has no attribute 'nope'"),
    ({"module": "main"}, "key 'command': got None; allowed: a click command name"),
])
def test_click_rejects_a_bad_spec_at_submission(write_file, tmp_path, spec, message):
    write_file("main.py", MAIN)
    with pytest.raises(DagError, match=re.escape(message)):
        ClickExecutor.validate(spec, context(tmp_path))


def test_click_usage_errors_fail_the_task_with_clicks_message(write_file, tmp_path):
    write_file("main.py", MAIN)
    with pytest.raises(ExecutorError, match="click command 'work': Missing option '--name'"):
        run(ClickExecutor, {"module": "main", "command": "work"}, tmp_path)


# -- split ------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(rows)))


def test_split_writes_a_stratified_fold_per_row_in_the_data_folder(tmp_path):
    write_csv(tmp_path / "data/train.csv", 20)
    spec = {"variant": "frame", "file": "train.csv", "label": "label"}
    result = run(SplitExecutor, spec, tmp_path, data_dir=tmp_path / "data")
    lines = (tmp_path / "data/fold.csv").read_text().split()
    assert lines[0] == "fold" and len(lines) == 21
    folds = [int(fold) for fold in lines[1:]]
    for fold in range(5):  # each fold holds two rows of each label
        assert sorted(i % 2 for i, f in enumerate(folds) if f == fold) == [0, 0, 1, 1]
    assert result == {"rows": 20, "folds": [4] * 5, "out": str(tmp_path / "data/fold.csv")}
    again = run(SplitExecutor, spec, tmp_path, data_dir=tmp_path / "data")
    assert again == result and (tmp_path / "data/fold.csv").read_text().split() == lines  # seeded


def test_split_without_a_label_makes_plain_folds_of_its_size(tmp_path):
    write_csv(tmp_path / "data/train.csv", 7)
    result = run(SplitExecutor, {"file": "train.csv", "n_splits": 3, "out": "folds/f.csv"}, tmp_path,
                 data_dir=tmp_path / "data")
    assert result["folds"] == [3, 2, 2] and (tmp_path / "data/folds/f.csv").is_file()


@pytest.mark.parametrize("spec, error, message", [
    ({"file": "train.csv", "label": "target"}, ExecutorError, "no column 'target'; columns: id, label"),
    ({"file": "missing.csv"}, ExecutorError, "missing.csv does not exist"),
    ({"file": "train.csv", "n_splits": 9}, ExecutorError, "(4 rows) cannot be split into 9 folds"),
    ({"file": "../train.csv"}, DagError, "key 'file': got '../train.csv'; allowed: a relative path"),
    ({"file": "train.csv", "n_splits": 1}, DagError, "key 'n_splits': got 1; allowed: an integer of at least 2"),
    ({"file": "train.csv", "variant": "image"}, DagError, "key 'variant': got 'image'; allowed: frame"),
    ({"file": "train.csv", "folds": 3}, DagError, "key 'folds': unknown key for a split task"),
])
def test_split_errors(tmp_path, spec, error, message):
    write_csv(tmp_path / "data/train.csv", 4)
    with pytest.raises(error, match=re.escape(message)):
        run(SplitExecutor, spec, tmp_path, data_dir=tmp_path / "data")


# -- download and submit ----------------------------------------------------------------------------
@pytest.fixture
def no_kaggle_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def kaggle_credentials(tmp_path, monkeypatch):
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle/kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


SPECS = {"download": {"competition": "digit-recognizer"},
         "submit": {"competition": "digit-recognizer", "model_name": "net", "suffix": "test", "column": "Label"}}


def write_submission(tmp_path) -> None:
    (tmp_path / "data/submissions").mkdir(parents=True)
    (tmp_path / "data/submissions/net_test.csv").write_text("ImageId,Label\n1,7\n")


@pytest.mark.usefixtures("no_kaggle_credentials")
@pytest.mark.parametrize("type_name", ["download", "submit"])
def test_kaggle_tasks_without_credentials_fail_at_once_saying_how_to_add_them(tmp_path, type_name):
    write_submission(tmp_path)
    cls = get_executor(type_name)
    with pytest.raises(ExecutorError, match=r"no Kaggle credentials on this machine: put kaggle.json .* in "
                                            + re.escape(str(tmp_path / "home/.kaggle"))):
        run(cls, SPECS[type_name], tmp_path, data_dir=tmp_path / "data")


@pytest.mark.usefixtures("kaggle_credentials")
def test_kaggle_tasks_name_the_missing_client_and_an_unreachable_kaggle(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)
    with pytest.raises(ExecutorError, match=re.escape('the Kaggle client is not installed')):
        kaggle_api.connect()
    fake = type(sys)("kaggle.api.kaggle_api_extended")
    fake.KaggleApi = object
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", fake)
    with socket.socket() as free:  # a port nothing listens on: refused at once
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setattr(kaggle_api, "HOST", ("127.0.0.1", port))
    with pytest.raises(ExecutorError, match=f"Kaggle cannot be reached \\(127.0.0.1:{port}, 1 s\\)"):
        kaggle_api.connect(timeout=1)


class FakeKaggle:
    """Records calls; downloads a zip of one CSV, as Kaggle sends a competition's files."""

    def __init__(self):
        self.calls = []

    def competition_download_files(self, competition, path, quiet):
        self.calls.append(("download", competition))
        with zipfile.ZipFile(Path(path) / f"{competition}.zip", "w") as archive:
            archive.writestr("train.csv", "id,label\n1,a\n")

    def competition_submit(self, file, message, competition):
        self.calls.append(("submit", Path(file).read_text(), message, competition))


def test_download_extracts_the_competitions_files_and_submit_sends_the_models_file(tmp_path, monkeypatch):
    api = FakeKaggle()
    monkeypatch.setattr(kaggle_api, "connect", lambda: api)
    result = run(get_executor("download"), {**SPECS["download"], "output": "mnist"}, tmp_path,
                 data_dir=tmp_path / "data")
    assert result == {"competition": "digit-recognizer", "files": ["train.csv"]}
    assert sorted(p.name for p in (tmp_path / "data/mnist").iterdir()) == ["train.csv"]  # the zip is gone
    write_submission(tmp_path)
    result = run(get_executor("Submit"), SPECS["submit"], tmp_path)
    assert result["file"] == "data/submissions/net_test.csv"
    assert api.calls[1] == ("submit", "ImageId,Label\n1,7\n", "mlcomp: d / t", "digit-recognizer")


@pytest.mark.parametrize("spec, message", [
    ({"competition": "c"}, "key 'file': no file to submit: give file, or model_name"),
    ({"competition": "c", "file": "x.csv", "submit_type": "kernel"}, "key 'submit_type': got 'kernel'"),
    ({"file": "x.csv"}, "key 'competition': got None"),
])
def test_submit_rejects_a_bad_spec_at_submission(tmp_path, spec, message):
    with pytest.raises(DagError, match=re.escape(message)):
        SubmitExecutor.validate(spec, context(tmp_path))


KAGGLE_DAG = '''
info: {name: kaggle, project: mlx, expdir: .}
executors:
  fetch: {type: download, competition: digit-recognizer}
  folds: {type: split, variant: frame, label: label, file: train.csv, depends: fetch}
  send: {type: Submit, competition: digit-recognizer, model_name: net, suffix: test, column: Label, depends: folds}
'''


@pytest.mark.usefixtures("no_kaggle_credentials")
def test_mlcomps_kaggle_dag_form_is_accepted_at_submission_without_credentials(write_file, tmp_path):
    from mlcomp.dag.spec import load_spec
    from mlcomp.dag.submit import plan

    tasks = {task.name: task for task in plan(load_spec(write_file("kaggle.yml", KAGGLE_DAG)))[0].tasks}
    assert tasks["fetch"].config == {"competition": "digit-recognizer", "output": "."}
    assert tasks["folds"].config["n_splits"] == 5 and tasks["send"].type == "Submit"
    assert tasks["send"].config["file"] == "data/submissions/net_test.csv"


# -- a DAG of them, end to end ----------------------------------------------------------------------
DAG = '''
info:
  name: mlcomp-executors
  project: mlx
  expdir: .
executors:
  make:
    type: Click
    module: main
    command: make
    rows: 12
  count:
    type: count_labels
    depends: make
'''
MAKE = '''
import click


@click.command()
@click.option("--rows", type=int, default=1)
def make(rows):
    with open("data/train.csv", "w") as out:
        out.write("id,label\\n" + "".join(f"{i},{i % 3}\\n" for i in range(rows)))
'''
COUNT = '''
from collections import Counter

from mlcomp.worker.executors import Executor


@Executor.register
class CountLabels(Executor):
    def work(self):
        with open("data/train.csv") as rows:
            return dict(Counter(line.strip().split(",")[1] for line in list(rows)[1:]))
'''


def test_a_dag_of_click_and_a_sub_folder_executor_runs_to_success(write_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    from mlcomp.cli import cli

    write_file("dag/dag.yml", DAG)
    write_file("dag/main.py", MAKE)
    write_file("dag/jobs/count.py", COUNT)
    write_file("dag/notebooks/scratch.py", BROKEN)
    result = CliRunner().invoke(cli, ["dag", "submit", str(tmp_path / "dag/dag.yml"), "--wait"])
    assert result.exit_code == 0, result.output
    dag_id = re.search(r"\d+", result.output.splitlines()[0]).group()
    shown = json.loads(CliRunner().invoke(cli, ["dag", "show", dag_id, "--json"]).output)
    assert {task["name"]: task["result"] for task in shown["tasks"]}["count"] == {"0": 4, "1": 4, "2": 4}
    assert (tmp_path / "root/data/mlx/train.csv").is_file()  # data/ of the task's folder is the project's
