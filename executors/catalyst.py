"""The ``catalyst`` task type of MLComp's DAG files: a ``train`` task written the MLComp way.

```yaml
executors:
  train:
    type: catalyst
    args:                          # catalyst-dl run's arguments
      config: configs/catalyst.yml # or configs: [a.yml, b.yml]; relative to the expdir
      expdir: src                  # optional: the config's args.expdir (relative to the expdir)
      seed: 7                      # optional; also check, verbose
    params:                        # optional overrides (dotted or nested keys)
      stages.main.stage_params.num_epochs: 3
    trace: models/digits.pth       # optional: TorchScript of the best checkpoint, written after training
                                   #   (a grid cell writes it inside its own task folder)
    grid:
      - lr: [0.001, 0.01]
```

It is validated and run exactly as a ``train`` task (:class:`executors.train.TrainExecutor`):
the ``args`` become the train task's ``config`` and the config's ``args``, ``trace`` names a file
relative to the task's working folder (its code copy, where ``models/`` links to the project's
models folder), as MLComp wrote it; in a grid each cell writes it inside its own task folder
(:func:`trace_path`), and every write is atomic (a temporary file, then a rename). An ``args``
key mlcomp does not honour (``logdir``: the task's logdir is mlcomp's) is an error.
"""
from __future__ import annotations

from pathlib import Path

from executors.base import SubmitContext, TaskContext
from executors.registry import register
from executors.train import TrainExecutor
from mlcomp.outcome import Success, TaskOutcome

__all__ = ["CatalystExecutor", "ARGS", "trace_path"]

ARGS = ("config", "configs", "expdir", "seed", "check", "verbose")
"""The ``args`` keys honoured (those of ``catalyst-dl run`` that make sense inside a task)."""
KEYS = ("args", "params", "trace")


def trace_path(task: TaskContext, trace: str) -> Path:
    """Where the ``trace`` file of ``task`` goes: relative to the task's code copy (so
    ``models/x.pth`` lands in the project's models folder through the ``models/`` link, as in
    MLComp), or an absolute path; for a grid cell or a search trial (``task.grid_cell`` set) inside
    the task's own folder instead (``<task folder>/models/x.pth``; an absolute path keeps only its
    file name), since the cells would otherwise all write the same file."""
    path = Path(trace)
    if task.grid_cell is not None:
        return task.folder / (path.name if path.is_absolute() else path)
    return path if path.is_absolute() else task.code_dir / path


@register
class CatalystExecutor(TrainExecutor):
    """MLComp's ``type: catalyst``: a train task with Catalyst's ``args``, ``params`` and an
    optional ``trace`` file (see the module docstring)."""

    type_name = "catalyst"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Turns ``args`` into a train task's ``config`` and config overrides, then validates
        it as :meth:`TrainExecutor.validate` does.

        Raises:
            DagError: an unknown key, an ``args`` key not honoured, no config, or anything
                :meth:`TrainExecutor.validate` rejects.
        """
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a catalyst task; allowed: {', '.join(KEYS)}")
        args = spec.get("args")
        if not isinstance(args, dict):
            raise ctx.error("args", f"got {args!r}; allowed: a mapping with config (or configs) and optionally "
                                    f"{', '.join(ARGS[2:])}")
        refused = sorted(set(args) - set(ARGS))
        if refused:
            raise ctx.error(f"args.{refused[0]}", f"not honoured by mlcomp (the task's logdir and resume are "
                                                  f"mlcomp's); allowed: {', '.join(ARGS)}")
        configs = args.get("configs") or args.get("config")
        if not configs:
            raise ctx.error("args", "no config: give args.config (a file) or args.configs (a list)")
        overrides = {f"args.{key}": args[key] for key in ("seed", "check", "verbose") if key in args}
        if "expdir" in args:
            overrides["args.expdir"] = str((ctx.expdir / str(args["expdir"])).resolve())
        trace = spec.get("trace")
        if trace is not None and not (isinstance(trace, str) and trace.strip() and ".." not in Path(trace).parts):
            raise ctx.error("trace", f"got {trace!r}; allowed: a file path relative to the task's folder "
                                     f"(no '..') or an absolute path")
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise ctx.error("params", f"got {params!r}; allowed: a mapping of config keys (dotted or nested) to values")
        config = super().validate({"config": configs, "params": {**overrides, **params}}, ctx)
        return {**config, "trace": trace}

    def run(self, task: TaskContext) -> TaskOutcome:
        """Trains as a train task; then, when it succeeded, with ``trace``, exports the best
        checkpoint's model to TorchScript at :func:`trace_path` (atomically) and adds it to the result."""
        outcome = super().run(task)
        if not isinstance(outcome, Success) or outcome.result is None:  # stopped, paused, or not rank 0's computer
            return outcome
        result, trace = outcome.result, task.config.get("trace")
        if trace and result.get("checkpoints", {}).get("best"):
            from mlcomp.runner.trace import trace_logdir

            path = trace_logdir(task.folder / result["logdir"], "best", out=trace_path(task, trace))
            print(f"mlcomp catalyst: traced the best checkpoint to {path}", flush=True)
            result["paths"] = {**result.get("paths", {}), "traced model": str(path)}
        return outcome
