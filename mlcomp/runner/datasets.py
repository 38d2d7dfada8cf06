"""Small built-in datasets, registered as defaults of ``registry.Dataset``.

Every dataset returns one sample as a dict of tensors, the runner's batch format:
``{"features": ..., "targets": ...}`` unless told otherwise; MNIST and its metric-learning
splits (:mod:`mlcomp.runner.mnist`) keep the samples of torchvision's and Catalyst's MNIST.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mlcomp.errors import ConfigError
from mlcomp.runner.mnist import MNIST, MnistMLDataset, MnistQGDataset

__all__ = ["DigitsDataset", "MNIST", "MnistMLDataset", "MnistQGDataset", "NpzDataset", "SyntheticDataset",
           "split_indices"]

SPLITS = ("train", "valid", "test")


def split_indices(n: int, split: str, *, seed: int = 42, valid_size: float = 0.2,
                  test_size: float = 0.1) -> np.ndarray:
    """Indices of ``split`` in a seeded random permutation of ``range(n)``.

    The permutation is cut into ``test`` (first ``test_size`` of the samples), ``valid`` (next
    ``valid_size``) and ``train`` (the rest), so the three splits are disjoint and cover ``n``.

    Raises:
        ConfigError: ``split`` is not train/valid/test, or the fractions leave no training data.
    """
    if split not in SPLITS:
        raise ConfigError(f"split: unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if valid_size < 0 or test_size < 0 or valid_size + test_size >= 1:
        raise ConfigError(f"valid_size={valid_size}, test_size={test_size}: each must be >= 0 "
                          "and their sum < 1")
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_valid = int(round(n * test_size)), int(round(n * valid_size))
    bounds = {"test": (0, n_test), "valid": (n_test, n_test + n_valid), "train": (n_test + n_valid, n)}
    start, stop = bounds[split]
    return np.sort(order[start:stop])


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # heavy import, only when the data is used

    data = load_digits()
    images = torch.as_tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.as_tensor(data.target, dtype=torch.int64)


class _TensorDictDataset(Dataset):
    """Samples ``{key: tensor[i]}`` of equal-length tensors."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self.tensors = dict(tensors)
        self._len = len(next(iter(self.tensors.values())))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


class DigitsDataset(_TensorDictDataset):
    """The 1,797 scikit-learn 8×8 handwritten digits (``sklearn.datasets.load_digits``), split by
    a seed into train / valid / test (see :func:`split_indices`). No download is needed.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        seed: seed of the split's permutation (the same seed gives the same split everywhere).
        valid_size, test_size: fractions of all samples in the valid and test splits.

    Sample:
        ``{"features": float32 [1, 8, 8] in [0, 1], "targets": int64 scalar in 0..9}``.

    Raises:
        ConfigError: bad split name or fractions.
    """

    def __init__(self, split: str = "train", seed: int = 42, valid_size: float = 0.2, test_size: float = 0.1):
        images, targets = _digits()
        index = torch.as_tensor(split_indices(len(targets), split, seed=seed, valid_size=valid_size,
                                              test_size=test_size))
        super().__init__({"features": images[index], "targets": targets[index]})
        self.split = split


class NpzDataset(_TensorDictDataset):
    """Samples from the arrays of a NumPy ``.npz`` file, one sample per row of the first axis.

    Args:
        path: the ``.npz`` file.
        keys: which arrays to return: ``None`` for all, a list of array names, or a mapping
            ``{array name: sample key}`` to rename them (e.g. ``{"x": "features", "y": "targets"}``).
        split, seed, valid_size, test_size: when ``split`` is given, only that split's rows
            (see :func:`split_indices`); ``None`` keeps every row.

    Floating arrays become float32 tensors, integer arrays int64, booleans stay bool.

    Raises:
        ConfigError: the file is missing or not an ``.npz`` archive, a key is not in it, or the
            arrays differ in length.
    """

    def __init__(self, path: str | Path, keys: Sequence[str] | Mapping[str, str] | None = None,
                 split: str | None = None, seed: int = 42, valid_size: float = 0.2, test_size: float = 0.1):
        path = Path(path)
        arrays = self._load(path)
        names = dict(keys) if isinstance(keys, Mapping) else {k: k for k in (keys or arrays)}
        missing = sorted(set(names) - set(arrays))
        if missing:
            raise ConfigError(f"{path}: no arrays {missing}; the file has {sorted(arrays)}")
        lengths = {name: len(arrays[name]) for name in names}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"{path}: arrays differ in length: {lengths}")
        tensors = {out: self._to_tensor(arrays[name]) for name, out in names.items()}
        if split is not None:
            n = next(iter(lengths.values()))
            index = torch.as_tensor(split_indices(n, split, seed=seed, valid_size=valid_size,
                                                  test_size=test_size))
            tensors = {key: value[index] for key, value in tensors.items()}
        super().__init__(tensors)

    @staticmethod
    def _load(path: Path) -> dict[str, np.ndarray]:
        if not path.is_file():
            raise ConfigError(f"{path}: no such .npz file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable .npz archive ({e})") from None

    @staticmethod
    def _to_tensor(array: np.ndarray) -> torch.Tensor:
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        elif np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(array))


class SyntheticDataset(_TensorDictDataset):
    """Random Gaussian blobs, one per class: a learnable classification set for tests and
    benchmarks that needs no files.

    Args:
        num_samples: rows.
        num_features: size of each feature vector.
        num_classes: number of blobs (targets ``0..num_classes-1``).
        seed: seed of the data; the same seed gives the same data.
        noise: standard deviation of the samples around their class centre.

    Sample:
        ``{"features": float32 [num_features], "targets": int64 scalar}``.
    """

    def __init__(self, num_samples: int = 512, num_features: int = 16, num_classes: int = 2,
                 seed: int = 0, noise: float = 1.0):
        generator = torch.Generator().manual_seed(seed)
        centres = 2.0 * torch.randn(num_classes, num_features, generator=generator)
        targets = torch.randint(num_classes, (num_samples,), generator=generator)
        features = centres[targets] + noise * torch.randn(num_samples, num_features, generator=generator)
        super().__init__({"features": features, "targets": targets})
