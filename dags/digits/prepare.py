"""The digits pipeline's first step: scikit-learn's 8x8 handwritten digits split into train,
valid and test ``.npz`` files (``x``: float32 ``[N, 1, 8, 8]`` in [0, 1]; ``y``: int64 labels).

Run by the DAG's ``prepare`` task (a ``python`` task) it writes into the project's data folder,
``$MLCOMP_DATA_DIR``; the train configs read the files from there (``${MLCOMP_DATA_DIR}/train.npz``).
Alone: ``python prepare.py [OUT]``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["prepare", "SPLITS"]

SPLITS = ("train", "valid", "test")


def prepare(out: str | None = None, valid_size: float = 0.15, test_size: float = 0.15, seed: int = 42) -> dict:
    """Splits the digits (stratified by label, ``sklearn.model_selection.train_test_split``) and
    writes ``train.npz``, ``valid.npz`` and ``test.npz`` into ``out`` (default
    ``$MLCOMP_DATA_DIR``, else ``./data``).

    Returns:
        ``{"paths": {split: absolute path}, "sizes": {split: rows}}``: the task's result.

    Raises:
        ValueError: the fractions leave no training data.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if valid_size <= 0 or test_size <= 0 or valid_size + test_size >= 1:
        raise ValueError(f"valid_size={valid_size}, test_size={test_size}: each must be > 0 and their sum < 1")
    folder = Path(out or os.environ.get("MLCOMP_DATA_DIR") or "data")
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    x_train, x_valid, y_train, y_valid = train_test_split(
        x_rest, y_rest, test_size=valid_size / (1 - test_size), stratify=y_rest, random_state=seed)
    parts = {"train": (x_train, y_train), "valid": (x_valid, y_valid), "test": (x_test, y_test)}
    paths = {}
    for split, (features, labels) in parts.items():
        paths[split] = str((folder / f"{split}.npz").resolve())
        np.savez(paths[split], x=features, y=labels)
    print(f"digits: {', '.join(f'{s} {len(parts[s][1])}' for s in SPLITS)} rows written to {folder}")
    return {"paths": paths, "sizes": {split: len(parts[split][1]) for split in SPLITS}}


if __name__ == "__main__":
    prepare(sys.argv[1] if len(sys.argv) > 1 else None)
