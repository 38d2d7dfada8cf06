"""DAGs as networkx graphs: an edge ``a → b`` means ``a`` must finish before ``b`` starts.

Used to reject cycles at submission (naming the cycle), to order tasks, and by the UI to lay out a
DAG by topological generations.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp.db import Task, TaskDependency

if TYPE_CHECKING:  # networkx (about 10 MiB and 0.2 s) is imported by the functions that build graphs:
    import networkx as nx  # the worker imports this package but never builds one

__all__ = ["build_graph", "find_cycle", "generations", "task_graph"]


def build_graph(depends: Mapping[Hashable, Iterable[Hashable]]) -> nx.DiGraph:
    """The graph of ``{task: [tasks it depends on]}``: one node per task (in mapping order), an
    edge from each dependency to its dependent. Unknown dependencies become nodes."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(depends)
    graph.add_edges_from((dep, task) for task, deps in depends.items() for dep in deps)
    return graph


def find_cycle(depends: Mapping[Hashable, Iterable[Hashable]]) -> list | None:
    """A dependency cycle as the list of its tasks in run order (``[a, b]`` for ``a → b → a``),
    or ``None`` when the tasks form a DAG (networkx ``find_cycle``)."""
    import networkx as nx

    try:
        edges = nx.find_cycle(build_graph(depends))
    except nx.NetworkXNoCycle:
        return None
    return [source for source, _target in edges]


def generations(graph: nx.DiGraph) -> list[list]:
    """Nodes by topological generation (a node's generation is one more than its latest
    dependency's), each generation in node order; the UI's columns.

    Raises:
        networkx.NetworkXUnfeasible: the graph has a cycle.
    """
    import networkx as nx

    order = {node: i for i, node in enumerate(graph.nodes)}
    return [sorted(generation, key=order.__getitem__) for generation in nx.topological_generations(graph)]


def task_graph(session: Session, dag_id: int) -> nx.DiGraph:
    """The stored DAG ``dag_id`` as a graph of task ids with node attributes ``name``, ``type``,
    ``status`` (a :class:`mlcomp.db.TaskStatus`) and ``parent_id`` (a grid cell's grid search)."""
    import networkx as nx

    tasks = session.scalars(select(Task).where(Task.dag_id == dag_id).order_by(Task.id)).all()
    graph = nx.DiGraph()
    for task in tasks:
        graph.add_node(task.id, name=task.name, type=task.type, status=task.status, parent_id=task.parent_id)
    rows = session.execute(select(TaskDependency.depend_id, TaskDependency.task_id)
                           .join(Task, Task.id == TaskDependency.task_id).where(Task.dag_id == dag_id)).all()
    graph.add_edges_from(rows)
    return graph
