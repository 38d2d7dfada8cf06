"""DAG files: YAML spec → validated model → grid expansion → graph; code snapshots; submission.

The supervisor, worker, CLI and UI use only these names.
"""
from mlcomp.dag.graph import build_graph, find_cycle, generations, task_graph
from mlcomp.dag.snapshot import SnapshotCache, collect, list_files, materialize, read_file
from mlcomp.dag.spec import SERVICE_KEYS, DagSpec, TaskSpec, load_spec
from mlcomp.dag.submit import DagPlan, TaskPlan, plan, submit
from mlcomp.search.grid import Cell, expand_grid  # grid expansion lives with the search kinds

__all__ = [
    "build_graph", "find_cycle", "generations", "task_graph",
    "Cell", "expand_grid",
    "SnapshotCache", "collect", "list_files", "materialize", "read_file",
    "SERVICE_KEYS", "DagSpec", "TaskSpec", "load_spec",
    "DagPlan", "TaskPlan", "plan", "submit",
]
