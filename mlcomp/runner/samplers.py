"""Samplers Catalyst 20.x configs name in ``data_params.samplers_params``
(``catalyst.data.sampler``). Randomness comes from numpy's global generator, which the runner
seeds every epoch, so runs repeat and resume exactly."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BalanceClassSampler", "MiniEpochSampler"]


class BalanceClassSampler(Sampler):
    """Draws the same number of samples of every class each epoch, shuffled (Catalyst's
    ``BalanceClassSampler``).

    Args:
        labels: the class of every sample of the dataset (ints or strings).
        mode: ``"downsampling"`` (as many per class as the rarest class has), ``"upsampling"``
            (as many as the most frequent has; rarer classes are drawn with replacement) or an
            int (that many per class).

    Raises:
        ValueError: no labels, or an unknown mode.
    """

    def __init__(self, labels: Sequence, mode: str | int = "downsampling"):
        if len(labels) == 0:
            raise ValueError("BalanceClassSampler: labels is empty")
        self.by_class: dict = defaultdict(list)
        for index, label in enumerate(labels):
            self.by_class[label.item() if hasattr(label, "item") else label].append(index)
        counts = [len(indices) for indices in self.by_class.values()]
        if isinstance(mode, int) and not isinstance(mode, bool) and mode > 0:
            self.per_class = mode
        elif mode in ("downsampling", "upsampling"):
            self.per_class = min(counts) if mode == "downsampling" else max(counts)
        else:
            raise ValueError(f"BalanceClassSampler: mode {mode!r}; allowed: downsampling, upsampling or an int > 0")

    def __iter__(self) -> Iterator[int]:
        indices: list[int] = []
        for label in sorted(self.by_class, key=str):
            pool = self.by_class[label]
            indices += np.random.choice(pool, self.per_class, replace=self.per_class > len(pool)).tolist()
        np.random.shuffle(indices)
        return iter(indices)

    def __len__(self) -> int:
        return self.per_class * len(self.by_class)


class MiniEpochSampler(Sampler):
    """Splits one pass over a dataset into several epochs of ``mini_epoch_len`` samples
    (Catalyst's ``MiniEpochSampler``): epoch 1 takes the first ``mini_epoch_len`` indices, epoch 2
    the next, and so on, wrapping around; the last mini-epoch takes the rest unless ``drop_last``.

    The runner tells it the epoch (``set_epoch``, as for a ``DistributedSampler``), so which part
    of the data an epoch sees depends on the epoch alone and survives a resume.

    Args:
        data_len: the dataset's length.
        mini_epoch_len: samples per epoch.
        drop_last: drop the remainder shorter than ``mini_epoch_len``.
        shuffle: ``None`` (in order), ``"per_epoch"`` (one permutation per pass over the data) or
            ``"per_mini_epoch"`` (a new permutation every epoch).

    Raises:
        ValueError: non-positive lengths or an unknown ``shuffle``.
    """

    def __init__(self, data_len: int, mini_epoch_len: int, drop_last: bool = False, shuffle: str | None = None):
        if int(data_len) < 1 or int(mini_epoch_len) < 1:
            raise ValueError(f"MiniEpochSampler: data_len {data_len} and mini_epoch_len {mini_epoch_len} must be > 0")
        if shuffle not in (None, "per_epoch", "per_mini_epoch"):
            raise ValueError(f"MiniEpochSampler: shuffle {shuffle!r}; allowed: per_epoch, per_mini_epoch or null")
        self.data_len, self.mini_epoch_len, self.shuffle = int(data_len), int(mini_epoch_len), shuffle
        self.steps = self.data_len // self.mini_epoch_len
        remainder = self.data_len - self.steps * self.mini_epoch_len > 0
        self.divider = 1 if self.steps == 0 else self.steps + (remainder and not drop_last)
        self.epoch = 1
        self._pass_seed = int(np.random.randint(2**31))

    def set_epoch(self, epoch: int) -> None:
        """The 1-based epoch of the stage whose part of the data the next iteration yields."""
        self.epoch = int(epoch)

    def _indices(self, cycle: int) -> np.ndarray:
        size = max(self.data_len, self.mini_epoch_len)
        if self.shuffle is None:
            return np.arange(size) % self.data_len
        rng = np.random if self.shuffle == "per_mini_epoch" else np.random.RandomState(self._pass_seed + cycle)
        if self.data_len < self.mini_epoch_len:
            return rng.choice(self.data_len, self.mini_epoch_len, replace=True)
        return rng.permutation(self.data_len)

    def __iter__(self) -> Iterator[int]:
        cycle, part = divmod(self.epoch - 1, self.divider)
        indices = self._indices(cycle)
        start = part * self.mini_epoch_len
        stop = len(indices) if part == self.steps else start + self.mini_epoch_len
        return iter(indices[start:stop].tolist())

    def __len__(self) -> int:
        return self.mini_epoch_len
