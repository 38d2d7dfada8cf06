"""Running tasks on one computer: the worker, its task processes, the reporter, GPU detection and
parsing. Other packages import only these names.

Names are loaded on first use (PEP 562), so the task child (``python -m mlcomp.worker.child``)
does not import the worker or psutil.
"""
from __future__ import annotations

import importlib

__all__ = ["Worker", "Reporter", "detect_gpus", "parse_gpus"]

_WHERE = {
    "Worker": "mlcomp.worker.worker",
    "Reporter": "mlcomp.worker.report",
    "detect_gpus": "mlcomp.worker.gpus",
    "parse_gpus": "mlcomp.worker.gpus",
}


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__():
    return sorted(__all__)
