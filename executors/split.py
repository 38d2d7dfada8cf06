"""The ``split`` task type: MLComp's ``Split``, which gives every row of a CSV file of the project's
data folder a fold number and writes them to ``fold.csv`` there.

```yaml
executors:
  split:
    type: split
    variant: frame       # MLComp's one variant: the rows of a CSV file
    file: train.csv      # in the project's data folder
    label: label         # optional: the column to stratify by (sklearn's StratifiedKFold);
                         #   without it the folds are plain shuffled KFold ones
    n_splits: 5          # optional, default 5
    seed: 0              # optional, default 0 (MLComp's)
    out: fold.csv        # optional, default fold.csv (MLComp's), in the data folder
    depends: download
```

The output has one column, ``fold``, and one line per row of ``file`` in its order, as MLComp's
``stratified_k_fold`` wrote it, so a dataset reads ``fold.csv`` beside ``train.csv`` and keeps the
rows whose fold is (or is not) the validation one. The task's result holds the row count and the
rows per fold.
"""
from __future__ import annotations

import csv
from pathlib import Path

from executors.base import Executor, SubmitContext, TaskContext
from executors.datafiles import data_folder, relative_path
from executors.registry import register
from mlcomp.errors import ExecutorError

__all__ = ["SplitExecutor", "assign_folds"]

KEYS = ("variant", "file", "label", "n_splits", "seed", "out")
VARIANTS = ("frame",)


def assign_folds(labels: list[str] | None, rows: int, n_splits: int, seed: int) -> list[int]:
    """The fold (0 … ``n_splits`` − 1) of each of ``rows`` rows: stratified by ``labels`` with
    sklearn's ``StratifiedKFold``, or ``KFold`` without labels; shuffled with ``seed``.

    Raises:
        ValueError: sklearn's, e.g. fewer rows than folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if labels is not None else KFold)(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = [0] * rows
    for fold, (_, valid) in enumerate(splitter.split(range(rows), labels)):
        for row in valid:
            folds[row] = fold
    return folds


@register
class SplitExecutor(Executor):
    """Writes the fold of every row of a CSV file (see the module docstring)."""

    type_name = "split"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks the keys and fills in the defaults; the file is read only when the task runs
        (the task before it usually downloads it).

        Raises:
            DagError: an unknown key, an unknown variant, a missing or climbing ``file`` or
                ``out``, a ``label`` that is not a string, ``n_splits`` below 2 or a ``seed``
                that is not an integer.
        """
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a split task; allowed: {', '.join(KEYS)}")
        config = {"variant": spec.get("variant", "frame"), "label": spec.get("label"),
                  "n_splits": spec.get("n_splits", 5), "seed": spec.get("seed", 0),
                  "file": relative_path(ctx, "file", spec.get("file")),
                  "out": relative_path(ctx, "out", spec.get("out", "fold.csv"))}
        if config["variant"] not in VARIANTS:
            raise ctx.error("variant", f"got {config['variant']!r}; allowed: {', '.join(VARIANTS)}")
        if config["label"] is not None and not isinstance(config["label"], str):
            raise ctx.error("label", f"got {config['label']!r}; allowed: a column name")
        if type(config["n_splits"]) is not int or config["n_splits"] < 2:
            raise ctx.error("n_splits", f"got {config['n_splits']!r}; allowed: an integer of at least 2")
        if type(config["seed"]) is not int:
            raise ctx.error("seed", f"got {config['seed']!r}; allowed: an integer")
        return config

    def run(self, task: TaskContext) -> dict:
        """Reads ``file``, assigns the folds and writes ``out`` (both in the data folder).

        Raises:
            ExecutorError: the file is missing, has no ``label`` column, or cannot be split
                into ``n_splits`` folds.
        """
        config, folder = task.config, data_folder(task)
        count, labels = _read(folder / config["file"], config["label"])
        try:
            folds = assign_folds(labels, count, config["n_splits"], config["seed"])
        except ValueError as e:
            raise ExecutorError(f"split: {config['file']} ({count} rows) cannot be split into "
                                f"{config['n_splits']} folds: {e}") from None
        out = folder / config["out"]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as stream:
            csv.writer(stream).writerows([["fold"], *([fold] for fold in folds)])
        print(f"mlcomp split: {count} rows of {config['file']} in {config['n_splits']} folds -> {out}", flush=True)
        return {"rows": count, "folds": [folds.count(k) for k in range(config["n_splits"])], "out": str(out)}


def _read(path: Path, label: str | None) -> tuple[int, list[str] | None]:
    """The number of rows of the CSV file ``path`` and their ``label`` values (None without a
    label); only that column is kept, so a wide file (MNIST's 785 columns) costs little memory."""
    try:
        with open(path, newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, [])
            if label is None:
                return sum(1 for _ in reader), None
            if label not in header:
                raise ExecutorError(f"split: {path.name} has no column {label!r}; columns: {', '.join(header)}")
            column = header.index(label)
            labels = [row[column] for row in reader]
            return len(labels), labels
    except FileNotFoundError:
        raise ExecutorError(f"split: {path} does not exist (is the task that writes it a dependency?)") from None
