"""The ``trace`` task type: a TorchScript file of the train run it depends on (the best cell of a
grid search), written into the task's folder and returned as the task's artifact.

```yaml
executors:
  trace:
    type: trace
    depends: train
    checkpoint: best        # best (default), last, a file name in checkpoints/, a path
    mode: eval              # or train
    method_name: forward
    requires_grad: false
    script: false           # torch.jit.script instead of torch.jit.trace
```

The work is :func:`mlcomp.runner.trace.trace_logdir` on the source run's logdir; the file is
opened again with :func:`~mlcomp.runner.trace.load_traced` before the task succeeds.
"""
from __future__ import annotations

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register

__all__ = ["TraceExecutor", "KEYS"]

KEYS = ("checkpoint", "mode", "method_name", "requires_grad", "script")
MODES = ("eval", "train")


@register
class TraceExecutor(Executor):
    """Exports the dependency's model to TorchScript. Config keys: :data:`KEYS`."""

    type_name = "trace"

    @classmethod
    def model_checkpoint(cls, config: dict) -> str:
        """The checkpoint named by the ``checkpoint`` key (``best`` by default) of the train run
        it depends on, resolved into ``TaskContext.model``."""
        return config.get("checkpoint", "best")

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks the keys and their kinds; fills the defaults.

        Raises:
            DagError: an unknown key or a value of the wrong kind.
        """
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a trace task; allowed: {', '.join(KEYS)}")
        config = {"checkpoint": spec.get("checkpoint", "best"), "mode": spec.get("mode", "eval"),
                  "method_name": spec.get("method_name", "forward"),
                  "requires_grad": spec.get("requires_grad", False), "script": spec.get("script", False)}
        for key in ("checkpoint", "method_name"):
            if not isinstance(config[key], str) or not config[key].strip():
                raise ctx.error(key, f"got {config[key]!r}; allowed: a non-empty string")
        if config["mode"] not in MODES:
            raise ctx.error("mode", f"got {config['mode']!r}; allowed: {', '.join(MODES)}")
        for key in ("requires_grad", "script"):
            if not isinstance(config[key], bool):
                raise ctx.error(key, f"got {config[key]!r}; allowed: true or false")
        return config

    def run(self, task: TaskContext) -> dict | None:
        """Traces, checks the file loads, returns its path and the model's source.

        Raises:
            ExecutorError: no train run to take the model from.
            ConfigError: the checkpoint is missing or the model cannot be exported.
        """
        from mlcomp.runner.trace import load_traced, trace_logdir, trace_name

        config = task.config
        source = task.model
        name = source.checkpoint.name.removesuffix(".pth")
        out = task.folder / "trace" / trace_name(name, config["mode"], config["method_name"], config["requires_grad"])
        path = trace_logdir(source.logdir, source.checkpoint, method_name=config["method_name"], mode=config["mode"],
                            requires_grad=config["requires_grad"], out=out, script=config["script"])
        load_traced(path)
        print(f"mlcomp trace: {path}", flush=True)
        return {"paths": {"traced model": str(path)}, **source.describe()}
