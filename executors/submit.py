"""The ``submit`` task type: MLComp's ``Submit``, which sends a predictions file to a Kaggle
competition.

```yaml
executors:
  submit:
    type: submit                  # MLComp's DAG files write `type: Submit`; both work
    competition: digit-recognizer
    file: data/submissions/net_test.csv   # relative to the task's working folder, or, as MLComp:
    model_name: net               #   data/submissions/{model_name}_{suffix}.csv
    suffix: test
    message: first try            # optional; default "mlcomp: <DAG> / <task>"
    depends: infer
```

It uses the official ``kaggle`` client through :func:`executors.kaggle_api.connect`, so a
machine without credentials, without the client or without a route to Kaggle fails at once,
saying which. MLComp's ``submit_type: file`` is what runs; its ``kernel`` submission (uploading
folders as a dataset and pushing a notebook) is not provided and is refused at submission.
``column`` (a key of MLComp's DAG files that its executor never read) and ``predict_column`` (the
column its kernel submission's notebook wrote) are accepted and ignored.
"""
from __future__ import annotations

from executors import kaggle_api
from executors.base import Executor, SubmitContext, TaskContext
from executors.datafiles import relative_path
from executors.registry import register
from mlcomp.errors import ExecutorError

__all__ = ["SubmitExecutor"]

KEYS = ("competition", "file", "model_name", "suffix", "message", "submit_type", "column",
        "predict_column")
SUBMISSIONS = "data/submissions"
"""Where MLComp's infer executors wrote ``{model_name}_{suffix}.csv``, in the working folder."""


def _default_file(spec: dict, ctx: SubmitContext) -> str:
    name = "_".join(str(spec[key]) for key in ("model_name", "suffix") if spec.get(key) is not None)
    if not name:
        raise ctx.error("file", "no file to submit: give file, or model_name (and suffix) as MLComp did")
    return f"{SUBMISSIONS}/{name}.csv"


@register
class SubmitExecutor(Executor):
    """Submits a file to a Kaggle competition (see the module docstring)."""

    type_name = "submit"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks the keys and resolves the file's path; credentials and the client are checked
        when the task runs (on the worker, which may be another machine).

        Raises:
            DagError: an unknown key, no ``competition``, no file, a path that climbs out, or
                ``submit_type`` other than ``file``.
        """
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a submit task; allowed: {', '.join(KEYS)}")
        competition = spec.get("competition")
        if not (isinstance(competition, str) and competition.strip()):
            raise ctx.error("competition", f"got {competition!r}; allowed: a Kaggle competition's name")
        if spec.get("submit_type", "file") != "file":
            raise ctx.error("submit_type", f"got {spec['submit_type']!r}; allowed: file (MLComp's kernel "
                                           f"submission is not provided)")
        file = relative_path(ctx, "file", spec["file"]) if "file" in spec else _default_file(spec, ctx)
        message = spec.get("message") or f"mlcomp: {ctx.dag} / {ctx.task}"
        return {"competition": competition, "file": file, "message": str(message)}

    def run(self, task: TaskContext) -> dict:
        """Submits the file (relative to the task's working folder, its code copy).

        Raises:
            ExecutorError: the file is missing, or as :func:`executors.kaggle_api.connect`.
        """
        config = task.config
        path = task.code_dir / config["file"]
        if not path.is_file():
            raise ExecutorError(f"submit: {config['file']} does not exist in the task's working folder "
                                f"(is the task that writes it a dependency?)")
        api = kaggle_api.connect()
        api.competition_submit(str(path), config["message"], config["competition"])
        print(f"mlcomp submit: {config['file']} -> {config['competition']}", flush=True)
        return dict(config)
