"""The ``download`` task type: MLComp's ``Download``, which fetches a Kaggle competition's files
into the project's data folder.

```yaml
executors:
  download:
    type: download
    competition: digit-recognizer
    output: .            # optional: a folder inside the project's data folder (default: the folder)
```

It uses the official ``kaggle`` client (``pip install "mlcomp[kaggle]"``) through
:func:`executors.kaggle_api.connect`, which fails at once, saying why, on a machine without
credentials, without the client or without a route to Kaggle. The archive Kaggle sends is
extracted and removed, so the next task (a ``split`` of ``train.csv``) finds the files
themselves. The task's result lists the files.
"""
from __future__ import annotations

import zipfile

from executors import kaggle_api
from executors.base import Executor, SubmitContext, TaskContext
from executors.datafiles import data_folder, relative_path
from executors.registry import register

__all__ = ["DownloadExecutor"]

KEYS = ("competition", "output")


@register
class DownloadExecutor(Executor):
    """Downloads a Kaggle competition's files (see the module docstring)."""

    type_name = "download"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks the keys; credentials and the client are checked when the task runs (on the
        worker, which may be another machine).

        Raises:
            DagError: an unknown key, no ``competition``, an ``output`` that climbs out.
        """
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a download task; allowed: {', '.join(KEYS)}")
        competition = spec.get("competition")
        if not (isinstance(competition, str) and competition.strip()):
            raise ctx.error("competition", f"got {competition!r}; allowed: a Kaggle competition's name")
        return {"competition": competition, "output": relative_path(ctx, "output", spec.get("output", "."))}

    def run(self, task: TaskContext) -> dict:
        """Downloads the competition's files into the data folder and extracts the archives.

        Raises:
            ExecutorError: as :func:`executors.kaggle_api.connect`.
        """
        api = kaggle_api.connect()
        folder = data_folder(task) / task.config["output"]
        folder.mkdir(parents=True, exist_ok=True)
        before = set(folder.iterdir())
        api.competition_download_files(task.config["competition"], path=str(folder), quiet=True)
        for archive in sorted(set(folder.glob("*.zip")) - before):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(folder)
            archive.unlink()
        files = sorted(str(path.relative_to(folder)) for path in set(folder.iterdir()) - before)
        print(f"mlcomp download: {task.config['competition']} -> {folder}: {', '.join(files)}", flush=True)
        return {"competition": task.config["competition"], "files": files}
