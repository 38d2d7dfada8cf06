"""The stage-based training runner (Catalyst 20.x style): experiments, runners, callbacks.

Heavy optional parts (tensorboard, sklearn, yaml, the config experiment) are imported lazily:
``registry`` and ``ConfigExperiment`` load on first access.
"""
import importlib

from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder, CallbackScope
from mlcomp.runner.callbacks import *  # noqa: F401,F403 (the shipped callbacks, listed below)
from mlcomp.runner.callbacks import __all__ as _callbacks
from mlcomp.runner.experiment import Experiment
from mlcomp.runner.runner import EXIT_STOPPED, Runner, RunStopped
from mlcomp.runner.simple import SimpleExperiment
from mlcomp.runner.supervised import SupervisedRunner

__all__ = [
    "Experiment",
    "ConfigExperiment",
    "SimpleExperiment",
    "Runner",
    "SupervisedRunner",
    "Callback",
    "CallbackOrder",
    "CallbackNode",
    "CallbackScope",
    "registry",
    "RunStopped",
    "EXIT_STOPPED",
    *_callbacks,
]


def __getattr__(name):
    """``registry`` and ``ConfigExperiment`` are imported on first use (PEP 562)."""
    if name == "registry":
        return importlib.import_module("mlcomp.runner.registry")
    if name == "ConfigExperiment":
        return importlib.import_module("mlcomp.runner.config_experiment").ConfigExperiment
    raise AttributeError(f"module 'mlcomp.runner' has no attribute {name!r}")
