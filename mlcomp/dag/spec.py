"""A DAG's YAML file → a validated :class:`DagSpec`, with the line of every key for errors.

The format is MLComp's: ``info`` (``name``, ``project``, ``expdir``), ``executors`` (task name →
spec) and an optional DAG-level ``grid``; or, for a pipe file (MLComp's ``info: {type: pipe}``),
``pipes`` (pipe name → task name → spec), named templates registered rather than run
(:mod:`mlcomp.dag.pipe`). A task's service keys (:data:`SERVICE_KEYS`) are checked
here; its other keys are the executor's, checked by its ``validate`` at submission. Every error is a
:class:`~mlcomp.errors.DagError` whose message starts with ``FILE:LINE:``.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mlcomp.configkit import PathError, set_path, split_path
from mlcomp.dag.graph import find_cycle
from mlcomp.errors import DagError
from mlcomp.kinds import TaskKind
from mlcomp.names import control_character, name_problem
from mlcomp.yamlfile import LineMap, parse_yaml, read_yaml

__all__ = ["DagSpec", "TaskSpec", "LineMap", "SERVICE_KEYS", "load_spec", "apply_sets"]

SERVICE_KEYS = ("type", "depends", "gpu", "cpu", "memory", "distr", "single_node", "computer", "env",
                "retries", "priority", "timeout", "grid", "parallel", "search", "preemptible")
TOP_KEYS = ("info", "executors", "grid", "pipes")
INFO_KEYS = ("name", "project", "expdir", "layout", "type", "priority")
"""``layout`` names MLComp's report layout; it is accepted (a string) so MLComp's DAG files run
unchanged, and unused: the UI draws every metric a task reports."""
PIPE = "pipe"
"""``info.type`` of a pipe file (MLComp's); a file with ``pipes:`` is one without saying so."""
MAX_NAME = 200
_RANGE = re.compile(r"^(\d+)-(\d+)$")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One entry of ``executors:`` with its service keys checked.

    ``gpu_min``/``gpu_max`` come from ``gpu`` (an int n is n-n); ``memory`` is in GB, ``timeout``
    in seconds. ``params`` holds the executor-specific keys, ``grid`` the raw task-level grid
    (expanded by :mod:`mlcomp.search.grid`) found at ``grid_path``; ``path`` is where the spec sits.
    """

    name: str
    type: str
    path: tuple
    params: dict
    depends: tuple[str, ...] = ()
    gpu_min: int = 0
    gpu_max: int = 0
    cpu: int = 1
    memory: float = 0.0
    distr: bool = False
    single_node: bool = True
    computer: str | None = None
    env: dict = dataclasses.field(default_factory=dict)
    retries: int = 0
    priority: int = 0
    timeout: float | None = None
    preemptible: bool | None = None  # None: the executor's default (mlcomp.dag.submit)
    grid: Any = None
    grid_path: tuple = ()
    parallel: int | None = None
    search: Any = None  # the raw ``search:`` block (checked by mlcomp.search.spec at submission)


@dataclasses.dataclass(frozen=True)
class DagSpec:
    """A parsed and checked DAG file; ``tasks`` keep the file's order, ``text`` is the YAML as
    written, ``expdir`` is absolute. A pipe file has no ``tasks`` and its ``pipes`` (pipe name →
    tasks, each checked as ``executors`` are) in the file's order."""

    file: Path
    text: str
    name: str
    project: str
    expdir: Path
    tasks: dict[str, TaskSpec]
    lines: LineMap
    grid: Any = None
    pipes: dict[str, dict[str, TaskSpec]] = dataclasses.field(default_factory=dict)

    def error(self, path: Sequence, message: str) -> DagError:
        """A DagError ``"FILE:LINE: message"`` for the key at ``path``."""
        return DagError(f"{self.file}:{self.lines(path)}: {message}")


def load_spec(path: str | Path, sets: Iterable[str] = ()) -> DagSpec:
    """Reads, overrides (``--set executors.train.gpu=2``) and validates the DAG file ``path``.

    Raises:
        DagError: YAML syntax, duplicate or unknown keys, bad ``info``, a bad service key value,
            an unknown or self dependency, a dependency cycle (named ``a → b → a``), a bad
            ``--set`` or a bad ``grid_search`` template.
    """
    file, sets = Path(path), tuple(sets)
    document = read_yaml(file, DagError, "DAG file")
    text, lines = document.text, document.lines
    data = apply_sets(document.data, sets, file)
    where = _Where(file, lines, sets)
    if not isinstance(data, dict):
        raise where.error((), None, "expected a mapping with 'info' and 'executors'")
    _no_unknown(where, data, TOP_KEYS, ())
    name, project, expdir = _info(where, data.get("info"), file)
    priority = _info_priority(where, data["info"])
    if data["info"].get("type") == PIPE or "pipes" in data:
        return DagSpec(file=file, text=text, name=name, project=project, expdir=expdir, tasks={}, lines=lines,
                       pipes=_pipes(where, data, priority))
    tasks = _tasks(where, data.get("executors"), ("executors",), priority)
    return DagSpec(file=file, text=text, name=name, project=project, expdir=expdir, tasks=tasks,
                   lines=lines, grid=data.get("grid"))


def _tasks(where: _Where, raw_tasks: Any, path: tuple, priority: int = 0) -> dict[str, TaskSpec]:
    """The tasks of the mapping at ``path`` (``executors``, or a pipe's), checked; ``priority`` is
    the file's ``info.priority``, the default of a task without its own."""
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        raise where.error(path, None, f"'{'.'.join(path)}' must be a non-empty mapping of task name to spec, "
                                      f"got {raw_tasks!r}")
    tasks = {task.name: task for task in (_task(where, n, spec, path, priority) for n, spec in raw_tasks.items())}
    _check_depends(where, tasks)
    tasks = _grid_search_templates(where, tasks)
    _check_acyclic(where, tasks)
    return tasks


def _pipes(where: _Where, data: dict, priority: int = 0) -> dict[str, dict[str, TaskSpec]]:
    """The pipes of a pipe file (MLComp's ``pipes:``): a non-empty mapping of pipe names to tasks;
    the file has neither ``executors`` nor a DAG-level ``grid``."""
    for key in ("executors", "grid"):
        if key in data:
            raise where.error((key,), None, f"a pipe file (info.type: {PIPE}) registers 'pipes' and runs nothing; "
                                            f"move '{key}' to a DAG file", key=key)
    raw = data.get("pipes")
    if not isinstance(raw, dict) or not raw:
        raise where.error(("pipes",), None, f"'pipes' must be a non-empty mapping of pipe name to its executors, "
                                            f"got {raw!r}", key="pipes")
    for name in raw:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or control_character(name):
            raise where.error(("pipes", str(name)), None, f"pipe name {name!r}: allowed: a non-empty string of at "
                                                          f"most {MAX_NAME} characters, no control characters",
                              key="pipes")
    return {name: _tasks(where, tasks, ("pipes", name), priority) for name, tasks in raw.items()}


def apply_sets(data: Any, sets: Iterable[str], file: Path) -> Any:
    """``data`` with each ``KEY=VALUE`` of ``sets`` applied by dotted path
    (:func:`mlcomp.configkit.set_path`: a task name with dots matches as a whole, ``grid.0.lr``
    indexes a list, a mapping merges into a mapping); values are parsed as YAML (``2`` → int,
    ``a`` → str).

    Raises:
        DagError: an item has no ``=`` or holds a control character (a VALUE may hold tabs and
            line breaks), its KEY has an empty part or more than
            :data:`mlcomp.configkit.MAX_PARTS` parts, or its path goes through a value that is not a
            mapping.
    """
    for item in sets:
        key, sep, raw = str(item).partition("=")
        character = control_character(key) or control_character(raw, "\t\n\r")  # the store refuses NUL
        if character:
            raise DagError(f"{file}:1: --set {item!r}: control character {character}; allowed: a KEY without "
                           f"control characters, a VALUE without ones other than tabs and line breaks")
        if not sep or not key.strip():
            raise DagError(f"{file}:1: --set {item!r}: expected KEY=VALUE with a dotted KEY, "
                           f"e.g. executors.train.gpu=2")
        try:
            parts = split_path(key.strip())
        except PathError as e:
            raise DagError(f"{file}:1: --set: {e}") from None
        try:
            value = parse_yaml(raw, f"--set {item}", DagError).data
        except DagError:
            value = raw
        data = {} if data is None else data
        try:
            set_path(data, parts, value)
        except PathError as e:
            raise DagError(f"{file}:1: --set {item!r}: {e}") from None
    return data


@dataclasses.dataclass(frozen=True)
class _Where:
    file: Path
    lines: LineMap
    sets: tuple[str, ...] = ()

    def error(self, path: Sequence, task: str | None, message: str, key: str | None = None) -> DagError:
        parts = []
        if task is not None:
            parts.append(f"task {task!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        prefix = ", ".join(parts) + ": " if parts else ""
        dotted = ".".join(map(str, path))
        for item in self.sets:
            key = item.partition("=")[0].strip()
            if dotted == key or dotted.startswith(key + "."):
                message += f" (from --set {item})"
        return DagError(f"{self.file}:{self.lines(path)}: {prefix}{message}")


def _no_unknown(where: _Where, data: dict, allowed: Sequence[str], path: tuple, task: str | None = None) -> None:
    for key in data:
        if key not in allowed:
            raise where.error(path + (key,), task, f"unknown key; allowed: {', '.join(allowed)}", key=str(key))


def _info(where: _Where, info: Any, file: Path) -> tuple[str, str, Path]:
    if not isinstance(info, dict):
        raise where.error(("info",), None, f"'info' must be a mapping with name, project and expdir, got {info!r}")
    _no_unknown(where, info, INFO_KEYS, ("info",))
    name, project = info.get("name"), info.get("project", "default")
    for key, value in (("name", name), ("project", project)):
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
            raise where.error(("info", key), None, f"got {value!r}; allowed: a non-empty string of at most "
                                                   f"{MAX_NAME} characters", key=f"info.{key}")
        problem = name_problem(value)
        if problem:  # the project is also a folder name (data/, models/): no '/', '..', controls
            raise where.error(("info", key), None, f"got {value!r}; {problem}", key=f"info.{key}")
    if info.get("type", PIPE) != PIPE:
        raise where.error(("info", "type"), None, f"got {info['type']!r}; allowed: {PIPE} (a file of pipes), or "
                                                  f"no type (a DAG)", key="info.type")
    if not isinstance(info.get("layout", ""), str):
        raise where.error(("info", "layout"), None, f"got {info['layout']!r}; allowed: a layout name (a string)",
                          key="info.layout")
    raw = info.get("expdir", ".")
    expdir = (file.parent / str(raw)).resolve()
    if not isinstance(raw, str) or not expdir.is_dir():
        raise where.error(("info", "expdir"), None, f"got {raw!r}, which is not a folder ({expdir}); allowed: "
                                                    f"a folder relative to the DAG file's folder", key="info.expdir")
    return name, project, expdir


def _info_priority(where: _Where, info: dict) -> int:
    """``info.priority``: the default priority of the file's tasks (0 when absent)."""
    field, check, allowed = CHECKS["priority"]
    value = info.get("priority")
    if value is None:
        return 0
    try:
        return check(value)
    except ValueError:
        raise where.error(("info", "priority"), None, f"got {value!r}; allowed: {allowed}",
                          key="info.priority") from None


MAX_GPUS = 1024
MAX_CPUS = 65536
MAX_INT32 = 2 ** 31 - 1  # the store's integer columns
MAX_SECONDS = 1e9  # ~31 years
MAX_GB = 1e9


def _gpu(value):
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GPUS:
        return value, value
    match = _RANGE.match(value) if isinstance(value, str) else None
    if match and int(match[1]) <= int(match[2]) <= MAX_GPUS:
        return int(match[1]), int(match[2])
    raise ValueError


def _int(minimum: int, maximum: int) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ValueError
        return value
    return check


def _number(maximum: float, positive=False) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= maximum or (
                positive and value == 0):
            raise ValueError
        return float(value)
    return check


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError
    return value


def _computer(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


def _env(value):
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in value.items()):
        raise ValueError
    return {k: str(v) for k, v in value.items()}


# key -> (field of TaskSpec, check returning the stored value or raising ValueError, what is allowed)
CHECKS = {
    "gpu": (("gpu_min", "gpu_max"), _gpu, f'an int >= 0 and <= {MAX_GPUS} or a "min-max" range string such as "1-2"'),
    "cpu": ("cpu", _int(1, MAX_CPUS), f"an int >= 1 and <= {MAX_CPUS}"),
    "memory": ("memory", _number(MAX_GB), f"a number of GB >= 0 and <= {MAX_GB:g}"),
    "distr": ("distr", _bool, "true or false"),
    "single_node": ("single_node", _bool, "true or false"),
    "computer": ("computer", _computer, "a computer name"),
    "env": ("env", _env, "a mapping of variable names to strings or numbers"),
    "retries": ("retries", _int(0, 1000), "an int >= 0 and <= 1000"),
    "priority": ("priority", _int(-MAX_INT32, MAX_INT32), f"an int from {-MAX_INT32} to {MAX_INT32}"),
    "timeout": ("timeout", _number(MAX_SECONDS, positive=True), f"a number of seconds > 0 and <= {MAX_SECONDS:g}"),
    "parallel": ("parallel", _int(1, MAX_INT32), f"an int >= 1 and <= {MAX_INT32} (cells of the grid run at once)"),
    "preemptible": ("preemptible", _bool, "true or false (may a task of higher priority pause it)"),
}


def _task(where: _Where, name: Any, raw: Any, parent: tuple = ("executors",), priority: int = 0) -> TaskSpec:
    path = parent + (str(name),)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or control_character(name):
        raise where.error(path, None, f"task name {name!r}: allowed: a non-empty string of at most {MAX_NAME} "
                                      f"characters, no control characters")
    if not isinstance(raw, dict):
        raise where.error(path, name, f"the task's spec must be a mapping with at least 'type', got {raw!r}")
    type_name = raw.get("type")
    if not isinstance(type_name, str) or not type_name.strip():
        raise where.error(path + ("type",), name, f"got {type_name!r}; allowed: an executor type name",
                          key="type")
    fields: dict[str, Any] = {"priority": priority}
    for key, (field, check, allowed) in CHECKS.items():
        if key not in raw or raw[key] is None:
            continue
        try:
            value = check(raw[key])
        except ValueError:
            raise where.error(path + (key,), name, f"got {raw[key]!r}; allowed: {allowed}", key=key) from None
        fields.update(zip(field, value) if isinstance(field, tuple) else {field: value}.items())
    if "parallel" in fields and raw.get("grid") is None and type_name != TaskKind.GRID:
        raise where.error(path + ("parallel",), name, "'parallel' needs a 'grid' on the same task", key="parallel")
    if raw.get("search") is not None and (raw.get("grid") is not None or type_name == TaskKind.GRID):
        raise where.error(path + ("search",), name, "a task has either a 'grid' or a 'search', not both",
                          key="search")
    return TaskSpec(name=name, type=type_name, path=path, depends=_depends(where, path, raw.get("depends")),
                    params={k: v for k, v in raw.items() if k not in SERVICE_KEYS},
                    grid=raw.get("grid"), grid_path=path + ("grid",), search=raw.get("search"), **fields)


def _depends(where: _Where, path: tuple, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise where.error(path + ("depends",), path[-1], f"got {value!r}; allowed: a task name or a list "
                                                         f"of task names", key="depends")
    return tuple(dict.fromkeys(items))


def _check_depends(where: _Where, tasks: dict[str, TaskSpec]) -> None:
    for task in tasks.values():
        for dep in task.depends:
            if dep == task.name:
                raise where.error(task.path + ("depends",), task.name, "a task cannot depend on itself",
                                  key="depends")
            if dep not in tasks:
                raise where.error(task.path + ("depends",), task.name, f"unknown task {dep!r}; tasks in this "
                                  f"file: {', '.join(tasks)}", key="depends")


def _check_acyclic(where: _Where, tasks: dict[str, TaskSpec]) -> None:
    cycle = find_cycle({task.name: task.depends for task in tasks.values()})
    if cycle:
        order = list(tasks)
        start = min(range(len(cycle)), key=lambda i: order.index(cycle[i]))
        cycle = cycle[start:] + cycle[:start]  # from the cycle's first task in the file
        first = tasks[cycle[0]]
        raise where.error(first.path + ("depends",), first.name,
                          f"dependency cycle {' → '.join(cycle + [cycle[0]])}", key="depends")


def _grid_search_templates(where: _Where, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
    """Folds each ``type: grid_search`` task with ``executor: NAME`` into NAME's spec: the result
    is NAME's executor and resources under the grid_search task's name, grid and ``parallel``;
    tasks that depended on NAME depend on the grid search instead."""
    renamed: dict[str, str] = {}
    for search in [task for task in tasks.values() if task.type == TaskKind.GRID]:
        template_name = search.params.get("executor")
        template = tasks.get(template_name) if isinstance(template_name, str) else None
        problem = None
        extra = sorted(set(search.params) - {"executor"})
        if extra:
            raise where.error(search.path + (extra[0],), search.name, "unknown key for a grid_search task; allowed: "
                              "executor, grid, parallel, depends (the template gives the rest)", key=extra[0])
        if template is None or template is search:
            problem = f"'executor' must name another task of this file as the template, got {template_name!r}"
        elif template.type == TaskKind.GRID or template_name in renamed:
            problem = f"task {template_name!r} is already a grid search or another's template"
        elif search.grid is None or template.grid is not None:
            problem = "give the grid on the grid_search task and none on its template"
        if problem:
            raise where.error(search.path + ("executor",), search.name, problem, key="executor")
        renamed[template_name] = search.name
        tasks[search.name] = dataclasses.replace(
            template, name=search.name, grid=search.grid, grid_path=search.grid_path,
            parallel=search.parallel or template.parallel,
            depends=tuple(dict.fromkeys(template.depends + search.depends)),
        )
    tasks = {name: task for name, task in tasks.items() if name not in renamed}
    for name, task in tasks.items():
        deps = tuple(dict.fromkeys(renamed.get(dep, dep) for dep in task.depends if renamed.get(dep, dep) != name))
        tasks[name] = dataclasses.replace(task, depends=deps)
    return tasks
