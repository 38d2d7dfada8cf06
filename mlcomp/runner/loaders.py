"""Loader wrappers (Catalyst 20.x ``BatchLimitLoaderWrapper``).

:class:`BatchLimitLoaderWrapper` yields only the first batches of a loader each time it is
iterated; ``BatchOverfitCallback`` and the runner's check and overfit modes use it to run a few
batches per epoch (overfit mode with ``replay=True``: the very same batches every epoch).
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

from mlcomp.errors import ConfigError

__all__ = ["BatchLimitLoaderWrapper", "resolve_num_batches"]


def resolve_num_batches(num_batches: int | float, loader_len: int | None, name: str = "loader") -> int:
    """How many batches ``num_batches`` means for a loader of ``loader_len`` batches.

    Args:
        num_batches: an int ≥ 1 (that many batches) or a float in (0, 1] (that fraction of the
            loader, rounded down, at least 1).
        loader_len: the loader's length, or ``None`` when it has none (then only ints work).
        name: the loader's name, for messages.

    Returns:
        The number of batches, at most ``loader_len``.

    Raises:
        ConfigError: ``num_batches`` is of the wrong type or range, or a fraction of a loader
            without a length.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, (int, float)):
        raise ConfigError(f"{name}: num_batches should be an int >= 1 or a float in (0, 1], got {num_batches!r}")
    if isinstance(num_batches, int):
        if num_batches < 1:
            raise ConfigError(f"{name}: num_batches should be an int >= 1 or a float in (0, 1], got {num_batches}")
        return num_batches if loader_len is None else min(num_batches, loader_len)
    if not 0.0 < num_batches <= 1.0:
        raise ConfigError(f"{name}: a fraction num_batches should be in (0, 1], got {num_batches}")
    if loader_len is None:
        raise ConfigError(f"{name}: num_batches={num_batches} is a fraction, but the loader has no length; give an int")
    return max(1, int(loader_len * num_batches))


class BatchLimitLoaderWrapper:
    """A loader that yields the first ``num_batches`` batches of ``loader`` on each iteration.

    Attributes other than its own (``dataset``, ``batch_size``, ``sampler``...) are read from the
    wrapped loader, so ``DistributedSampler.set_epoch`` and the like still reach it.

    Args:
        loader: any iterable of batches (a ``DataLoader`` usually).
        num_batches: an int ≥ 1, or a float in (0, 1] for a fraction of ``len(loader)``.
        replay: keep the batches of the first iteration and yield those same batches on every
            later one (even from a shuffling loader); the default reads the loader anew.

    Raises:
        ConfigError: see :func:`resolve_num_batches`.

    Example:
        >>> wrapped = BatchLimitLoaderWrapper(list(range(10)), 0.3)
        >>> len(wrapped), list(wrapped)
        (3, [0, 1, 2])
    """

    def __init__(self, loader: Iterable, num_batches: int | float, replay: bool = False):
        length = len(loader) if hasattr(loader, "__len__") else None
        self.origin = loader
        self.num_batches = resolve_num_batches(num_batches, length, type(loader).__name__)
        self.replay = replay
        self._kept: list | None = None

    def __iter__(self) -> Iterator:
        if not self.replay:
            return itertools.islice(iter(self.origin), self.num_batches)
        if self._kept is None:
            self._kept = list(itertools.islice(iter(self.origin), self.num_batches))
        return iter(self._kept)

    def __len__(self) -> int:
        """``num_batches``, or fewer when a replaying wrapper's loader had fewer batches."""
        return self.num_batches if self._kept is None else len(self._kept)

    def __getattr__(self, name: str) -> Any:
        if name == "origin":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.origin, name)

    def __repr__(self) -> str:
        replay = ", replay=True" if self.replay else ""
        return f"BatchLimitLoaderWrapper({self.origin!r}, num_batches={self.num_batches}{replay})"
