"""The supervisor: status transitions, placement of ready tasks on computers, hand-over to workers,
and the embedded supervisor + local worker used by ``mlcomp server`` and ``dag submit --wait``.

Only the names below are public; :mod:`mlcomp.lifecycle` is imported by the worker for
``set_task_status``.
"""
from mlcomp.supervisor.allocate import Free, Placement, free_resources, place
from mlcomp.supervisor.embedded import LocalRun, run_local
from mlcomp.lifecycle import ACTIVE, retry_or_fail, rollup_status, set_task_status
from mlcomp.supervisor.supervisor import Supervisor

__all__ = [
    "ACTIVE", "Free", "LocalRun", "Placement",
    "Supervisor", "free_resources", "place", "retry_or_fail", "rollup_status", "run_local",
    "set_task_status",
]
