"""The DAG file format: parsing, service keys, --set overrides, errors with FILE:LINE, graphs."""
import re

import networkx as nx
import pytest

from mlcomp.dag import build_graph, find_cycle, generations, load_spec
from mlcomp.dag.spec import LineMap
from mlcomp.errors import DagError

FULL = """\
info:
  name: digits
  project: examples
  expdir: .
executors:
  prepare:
    type: python
    function: data:prepare
    when: 2020-01-01
  train:
    type: train
    config: configs/train.yml
    depends: prepare
    gpu: "2-4"
    cpu: 3
    memory: 1.5
    distr: true
    single_node: false
    computer: box1
    env: {OMP_NUM_THREADS: 1, MODE: fast}
    retries: 2
    priority: -1
    timeout: 60
  report:
    type: bash
    command: echo done
    depends: [train, prepare]
"""


def test_full_file_parses_service_keys_and_keeps_executor_keys(write_file):
    spec = load_spec(write_file("dag.yml", FULL))
    assert (spec.name, spec.project, spec.expdir) == ("digits", "examples", write_file("x").parent.resolve())
    assert list(spec.tasks) == ["prepare", "train", "report"]
    train = spec.tasks["train"]
    assert (train.type, train.depends, train.gpu_min, train.gpu_max) == ("train", ("prepare",), 2, 4)
    assert (train.cpu, train.memory, train.distr, train.single_node) == (3, 1.5, True, False)
    assert (train.computer, train.retries, train.priority, train.timeout) == ("box1", 2, -1, 60.0)
    assert train.env == {"OMP_NUM_THREADS": "1", "MODE": "fast"}
    assert train.params == {"config": "configs/train.yml"}
    assert spec.tasks["report"].depends == ("train", "prepare")
    # dates stay strings: configs are stored as JSON
    assert spec.tasks["prepare"].params == {"function": "data:prepare", "when": "2020-01-01"}
    assert spec.text == FULL


def test_defaults(write_file):
    spec = load_spec(write_file("dag.yml", "info: {name: n}\nexecutors:\n  a: {type: bash, command: x}\n"))
    a = spec.tasks["a"]
    assert spec.project == "default"
    assert (a.gpu_min, a.gpu_max, a.cpu, a.memory, a.distr, a.single_node) == (0, 0, 1, 0.0, False, True)
    assert (a.computer, a.env, a.retries, a.priority, a.timeout, a.grid, a.depends) == (None, {}, 0, 0, None, None, ())


def task_file(body: str) -> str:
    """A DAG with task ``a`` (bash) on line 4 and task ``b`` whose extra keys are ``body``."""
    return "info:\n  name: n\nexecutors:\n  a:\n    type: bash\n  b:\n    type: bash\n" + body


@pytest.mark.parametrize("body, line, fragments", [
    ("    gpu: abc\n", 8, ["task 'b', key 'gpu'", "'abc'", "min-max"]),
    ("    gpu: -1\n", 8, ["key 'gpu'", "-1", "int >= 0"]),
    ("    gpu: '3-1'\n", 8, ["key 'gpu'", "'3-1'"]),
    ("    gpu: true\n", 8, ["key 'gpu'", "True"]),
    ("    cpu: 0\n", 8, ["key 'cpu'", "int >= 1"]),
    ("    memory: -2\n", 8, ["key 'memory'", "GB >= 0"]),
    ("    memory: lots\n", 8, ["key 'memory'", "'lots'"]),
    ("    distr: 'yes'\n", 8, ["key 'distr'", "true or false"]),
    ("    single_node: 1\n", 8, ["key 'single_node'"]),
    ("    computer: ''\n", 8, ["key 'computer'"]),
    ("    env: [A]\n", 8, ["key 'env'", "mapping"]),
    ("    env: {A: [1]}\n", 8, ["key 'env'"]),
    ("    retries: -1\n", 8, ["key 'retries'", "int >= 0"]),
    ("    priority: 1.5\n", 8, ["key 'priority'", "an int"]),
    ("    timeout: 0\n", 8, ["key 'timeout'", "seconds > 0"]),
    ("    parallel: 2\n", 8, ["key 'parallel'", "needs a 'grid'"]),
    ("    gpu: 99999999999999999999\n", 8, ["key 'executors.b.gpu'", "out of range"]),
    ("    gpu: 1e20\n", 8, ["key 'gpu'", "'1e20'", "<= 1024"]),
    ("    gpu: 1.0e+20\n", 8, ["key 'gpu'", "<= 1024"]),
    ("    gpu: '0-99999999999'\n", 8, ["key 'gpu'", "<= 1024"]),
    ("    cpu: 1000000\n", 8, ["key 'cpu'", "<= 65536"]),
    ("    memory: .inf\n", 8, ["key 'executors.b.memory'", "finite"]),
    ("    timeout: 1.0e+12\n", 8, ["key 'timeout'", "<= 1e+09"]),
    ("    priority: 4000000000\n", 8, ["key 'priority'", "2147483647"]),
    ("    depends: c\n", 8, ["task 'b', key 'depends'", "unknown task 'c'", "a, b"]),
    ("    depends: b\n", 8, ["key 'depends'", "itself"]),
    ("    depends: {a: 1}\n", 8, ["key 'depends'", "list of task names"]),
    ("  c:\n    type: grid_search\n    executor: zz\n    grid: {x: [1]}\n", 10, ["task 'c', key 'executor'", "'zz'"]),
    ("  c:\n    type: grid_search\n    executor: a\n", 10, ["key 'executor'", "grid"]),
    ("  c:\n    type: grid_search\n    executor: c\n    grid: {x: [1]}\n", 10, ["key 'executor'", "another task"]),
    ("  c:\n    type: grid_search\n    executor: a\n    gpu: 1\n    lr: 2\n    grid: {x: [1]}\n", 12,
     ["task 'c', key 'lr'", "unknown key for a grid_search task"]),
    ("  c: [1]\n", 8, ["task 'c'", "mapping"]),
    ("  d:\n    command: x\n", 8, ["task 'd', key 'type'", "None"]),
])
def test_bad_service_keys_name_file_line_task_and_key(write_file, body, line, fragments):
    path = write_file("dag.yml", task_file(body))
    with pytest.raises(DagError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("text, line, fragment", [
    ("info:\n  name: [1,\nexecutors: {}\n", 4, "YAML syntax error"),
    ("info: {name: n}\ninfo: {name: m}\nexecutors: {a: {type: bash}}\n", 2, "duplicate key 'info'"),
    ("info: {name: n}\nexecutors: {a: {type: bash}}\nextra: 1\n", 3, "key 'extra': unknown key; allowed: info"),
    ("- 1\n", 1, "expected a mapping"),
    ("info: {project: p}\nexecutors: {a: {type: bash}}\n", 1, "key 'info.name'"),
    ("info: {name: n, expdir: nowhere}\nexecutors: {a: {type: bash}}\n", 1, "key 'info.expdir'"),
    ("info: {name: n, owner: me}\nexecutors: {a: {type: bash}}\n", 1, "key 'owner': unknown key"),
    ("info: {name: n}\nexecutors: {}\n", 2, "non-empty mapping"),
    ("info: 3\nexecutors: {a: {type: bash}}\n", 1, "'info' must be a mapping"),
])
def test_bad_documents(write_file, text, line, fragment):
    path = write_file("dag.yml", text)
    with pytest.raises(DagError, match=re.escape(fragment)) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:{line}:")


def test_yaml_syntax_error_gives_line_and_column(write_file):
    path = write_file("dag.yml", "info:\n  name: n\n  bad: : :\n")
    with pytest.raises(DagError, match=rf"^{re.escape(str(path))}:3:\d+: YAML syntax error"):
        load_spec(path)


def test_libyaml_and_pure_python_loaders_report_the_same_lines(write_file, monkeypatch):
    import yaml

    from mlcomp import yamlfile

    assert issubclass(yamlfile.Loader, yaml.CSafeLoader) or not yaml.__with_libyaml__  # the fast one when built

    class Pure(yaml.SafeLoader):
        yaml_implicit_resolvers = yamlfile.Loader.yaml_implicit_resolvers

    texts = [FULL, "info:\n  name: n\n  bad: : :\n", "info: {name: n}\ninfo: {name: m}\n", "a:\n  - [1,\n"]
    seen = []
    for loader in (yamlfile.Loader, Pure):
        monkeypatch.setattr(yamlfile, "Loader", loader)
        results = []
        for i, text in enumerate(texts):
            try:
                document = yamlfile.read_yaml(write_file(f"d{i}.yml", text), DagError)
                results.append((document.data, dict(document.lines.lines)))
            except DagError as e:
                results.append(str(e).split(": ")[0])  # FILE:LINE[:COL]
        seen.append(results)
    assert seen[0] == seen[1]
    assert seen[0][0][0]["executors"]["prepare"]["when"] == "2020-01-01"  # dates stay strings


def test_cycle_is_named(write_file):
    path = write_file("dag.yml", """\
        info: {name: n}
        executors:
          a: {type: bash, depends: c}
          b: {type: bash, depends: a}
          c: {type: bash, depends: b}
          d: {type: bash, depends: a}
        """)
    with pytest.raises(DagError) as info:
        load_spec(path)
    message = str(info.value)
    assert re.match(rf"{re.escape(str(path))}:[345]: task '[abc]', key 'depends': dependency cycle ", message)
    cycle = message.split("dependency cycle ")[1].split(" → ")
    assert len(cycle) == 4 and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    # run order: each task of the cycle waits for the one before it
    for before, after in zip(cycle, cycle[1:]):
        assert f"{after}: {{type: bash, depends: {before}}}" in path.read_text()


def test_sets_override_by_dotted_path_before_validation(write_file):
    path = write_file("dag.yml", """\
        info: {name: n}
        executors:
          a.b: {type: bash, command: x, gpu: 1}
        """)
    spec = load_spec(path, ["executors.a.b.gpu=2-3", "executors.a.b.command=echo hi", "info.project=q",
                            "executors.a.b.env.X=1", "executors.a.b.depends=[]", "executors.a.b.priority=-3",
                            "executors.a.b.grid=[{x: [1, 2]}]", "executors.a.b.grid.0.x=[3]"])
    task = spec.tasks["a.b"]
    assert task.grid == [{"x": [3]}]
    assert (task.gpu_min, task.gpu_max, task.params["command"], spec.project) == (2, 3, "echo hi", "q")
    assert (task.env, task.depends, task.priority) == ({"X": "1"}, (), -3)
    with pytest.raises(DagError, match=rf"^{re.escape(str(path))}:3: task 'a.b', key 'cpu': got 0; .*"
                                       rf"\(from --set executors.a.b.cpu=0\)$"):
        load_spec(path, ["executors.a.b.cpu=0"])


@pytest.mark.parametrize("item, fragment", [
    ("executors.a.b", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("info.name.x=1", "cannot set 'x' inside str"),
    ("executors.a.b.grid.5=1", "cannot set '5' inside list"),
])
def test_bad_sets(write_file, item, fragment):
    path = write_file("dag.yml", "info: {name: n}\nexecutors:\n  a.b: {type: bash, grid: [{x: [1]}]}\n")
    with pytest.raises(DagError, match=re.escape(fragment)):
        load_spec(path, [item])


def test_grid_search_task_folds_its_template(write_file):
    spec = load_spec(write_file("dag.yml", """\
        info: {name: n}
        executors:
          prep: {type: bash, command: p}
          train: {type: bash, command: echo $lr, depends: prep, gpu: 1}
          search:
            type: grid_search
            executor: train
            parallel: 2
            grid: [{lr: [1, 2]}]
          report: {type: bash, command: r, depends: [train, search]}
        """))
    assert list(spec.tasks) == ["prep", "search", "report"]
    search = spec.tasks["search"]
    assert (search.type, search.params, search.parallel, search.gpu_min) == ("bash", {"command": "echo $lr"}, 2, 1)
    assert (search.depends, search.grid) == (("prep",), [{"lr": [1, 2]}])
    assert spec.tasks["report"].depends == ("search",)


def test_line_map_falls_back_to_the_nearest_ancestor():
    lines = LineMap({(): 1, ("executors",): 5, ("executors", "a"): 6})
    assert lines(("executors", "a", "gpu")) == 6
    assert lines(("executors", "zz")) == 5
    assert lines(("nothing",)) == 1


def test_graph_generations_and_cycles():
    depends = {"prep": [], "train": ["prep"], "infer": ["train"], "trace": ["train"], "other": []}
    graph = build_graph(depends)
    assert generations(graph) == [["prep", "other"], ["train"], ["infer", "trace"]]
    assert find_cycle(depends) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) in (["a", "b"], ["b", "a"])
    with pytest.raises(nx.NetworkXUnfeasible):
        generations(build_graph({"a": ["a"]}))
