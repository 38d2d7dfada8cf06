"""mlcomp: DAGs of deep-learning tasks, a GPU-aware supervisor, a stage-based runner and a web UI."""

__version__ = "0.1.0"
__all__ = ["__version__"]
