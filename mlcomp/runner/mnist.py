"""MNIST as Catalyst 20.05–20.12's ``catalyst.contrib.datasets`` gave it: ``MNIST`` and the
metric-learning splits ``MnistMLDataset`` / ``MnistQGDataset`` (Catalyst 20.08+).

The images come from ``torchvision.datasets.MNIST(root, train, download=...)`` (its ``.data``,
uint8 [N, 28, 28], and ``.targets``) when torchvision imports, else from the raw IDX files of
torchvision's layout (``{root}/MNIST/raw``), which mlcomp reads itself: torchvision's PyPI wheels
do not load with every torch build. Without the files (and, for a download, without a network)
every path ends in one :class:`~mlcomp.errors.ConfigError` naming the folder.
"""
from __future__ import annotations

import gzip
import socket
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np
import torch
from torch.utils.data import Dataset

from mlcomp.errors import ConfigError

__all__ = ["MNIST", "MnistMLDataset", "MnistQGDataset", "read_idx"]

CONNECT_TIMEOUT_S = 5.0
"""How long a download waits to reach one of torchvision's mirrors before it gives up."""

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def read_idx(path: Path) -> np.ndarray:
    """The array of an IDX file (LeCun's MNIST format: zero bytes, a type code, the number of
    dimensions, big-endian int32 sizes, then the data), plain or gzipped (``.gz``).

    Raises:
        ConfigError: the file is not an unsigned-byte IDX file or is truncated.
    """
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ConfigError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">i4", count=ndim, offset=4))
    offset, size = 4 + 4 * ndim, int(np.prod(shape))
    if len(data) - offset != size:
        raise ConfigError(f"{path}: {len(data) - offset} bytes of data for the shape {shape}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def torchvision_mnist() -> tuple[type | None, str]:
    """``(torchvision.datasets.MNIST, "")``, or ``(None, why)`` when torchvision does not import:
    not installed (``ImportError``) or a wheel built for another torch (``RuntimeError``, e.g.
    "operator torchvision::nms does not exist")."""
    try:
        from torchvision.datasets import MNIST as TorchvisionMNIST
    except (ImportError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}"
    return TorchvisionMNIST, ""


def _mirror_hosts(source: type) -> list[tuple[str, int]]:
    """``(host, port)`` of the URLs torchvision's MNIST downloads from (its ``mirrors``, or the
    URLs of its ``resources`` in older releases)."""
    urls = list(getattr(source, "mirrors", None) or [])
    urls += [entry[0] for entry in getattr(source, "resources", None) or [] if isinstance(entry, (tuple, list))]
    hosts = []
    for url in urls:
        parsed = urlparse(url)
        try:
            host = (parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
        except ValueError:  # a port that is not a number: torchvision could not use it either
            continue
        if host[0] and host not in hosts:
            hosts.append(host)
    return hosts


def check_reachable(hosts: list[tuple[str, int]], folder: Path) -> None:
    """Returns when one of ``hosts`` accepts a TCP connection within :data:`CONNECT_TIMEOUT_S`
    (or none is known), so a download without a network fails at once instead of hanging.

    Raises:
        ConfigError: no host answered; the message names ``folder`` and the hosts.
    """
    reasons = []
    for host, port in hosts:
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            return
        except OSError as e:
            reasons.append(f"{host}:{port}: {e}")
    if reasons:
        raise ConfigError(f"{folder}: MNIST files missing and download=True cannot reach torchvision's mirrors "
                          f"({'; '.join(reasons)}); put the files there or download them on a machine with a network")


def _from_torchvision(source: type, root: Path, train: bool, download: bool) -> tuple[Any, Any]:
    """``(data, targets)`` of torchvision's ``source(root, train=train)``: read without a
    download first; with ``download``, downloaded only when that finds no files and a mirror
    answers (:func:`check_reachable`).

    Raises:
        ConfigError: the files are missing (and the download, when asked for, failed).
    """
    folder = root / "MNIST"
    try:
        dataset = source(str(root), train=train, download=False)
    except RuntimeError as e:
        if not download:
            raise ConfigError(f"{folder}: MNIST files missing (torchvision: {e}); put them in {folder}/raw, "
                              "or pass download=True on a machine with a network") from None
        check_reachable(_mirror_hosts(source), folder)
        try:
            dataset = source(str(root), train=train, download=True)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            raise ConfigError(f"{folder}: MNIST files missing and the download failed "
                              f"({type(e).__name__}: {e})") from None
    return dataset.data, dataset.targets


def _raw_file(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _from_raw_files(root: Path, train: bool, download: bool, why_not_torchvision: str) -> tuple[Any, Any]:
    """``(images, labels)`` read from ``{root}/MNIST/raw``.

    Raises:
        ConfigError: a file is missing (the message names the folder and why torchvision was
            not used) or is not a valid IDX file.
    """
    folder, split = root / "MNIST" / "raw", "train" if train else "t10k"
    names = [f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"]
    files = [_raw_file(folder, name) for name in names]
    missing = [name for name, file in zip(names, files) if file is None]
    if missing:
        hint = ("download=True needs torchvision" if download else
                "pass download=True with torchvision installed, on a machine with a network")
        raise ConfigError(f"{folder}: MNIST files missing: {', '.join(missing)} (also looked for .gz); torchvision "
                          f"cannot be imported ({why_not_torchvision}); put the files there, or {hint} "
                          "(pip install 'mlcomp[vision]')")
    return read_idx(files[0]).copy(), read_idx(files[1]).astype(np.int64)


class MNIST(Dataset):
    """MNIST with the arguments and samples of Catalyst 20.05–20.12's and torchvision's ``MNIST``
    (``catalyst.contrib.datasets.MNIST``, ``catalyst.contrib.data.dataset.MNIST``).

    Args:
        root: the folder holding ``MNIST/`` (``~`` expanded).
        train: the 60,000 training images, else the 10,000 test images.
        transform, target_transform: callables applied to the image and to the target.
        download: fetch missing files through torchvision (``pip install mlcomp[vision]``).

    Attributes:
        data: uint8 tensor [N, 28, 28]; targets: int64 tensor [N]; classes: ``"0 - zero"``...

    Sample:
        ``(image, target)``: a uint8 numpy array [28, 28] (or ``transform``'s result) and an int
        (or ``target_transform``'s result).

    Raises:
        ConfigError: the files are missing (the message names the folder and, without
            torchvision, why it could not be imported), no mirror is reachable for a download,
            the download failed, or the files are not valid.
    """

    classes = [f"{digit} - {word}" for digit, word in enumerate(DIGITS)]

    def __init__(self, root: str | Path, train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, download: bool = False):
        self.root, self.train = Path(root).expanduser(), train
        self.transform, self.target_transform = transform, target_transform
        source, why_not = torchvision_mnist()
        data, targets = (_from_torchvision(source, self.root, train, download) if source is not None
                         else _from_raw_files(self.root, train, download, why_not))
        self.data = torch.as_tensor(data, dtype=torch.uint8)
        self.targets = torch.as_tensor(targets, dtype=torch.int64)
        if len(self.data) != len(self.targets):
            raise ConfigError(f"{self.raw_folder}: {len(self.data)} images but {len(self.targets)} labels")

    @property
    def raw_folder(self) -> Path:
        """``{root}/MNIST/raw``."""
        return self.root / "MNIST" / "raw"

    @property
    def class_to_idx(self) -> dict[str, int]:
        """``{class name: index}``."""
        return {name: index for index, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image, target = self.data[index].numpy(), int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


SPLIT_DIGIT = 5
"""Catalyst's metric-learning split: digits below it train, the others are queried."""


class MnistMLDataset(MNIST):
    """The training images of digits 0–4, for metric-learning training (Catalyst 20.08+'s
    ``MnistMLDataset``; query with :class:`MnistQGDataset`).

    Takes :class:`MNIST`'s keyword arguments; ``train`` defaults to True.

    Raises:
        ValueError: ``train=False`` (as in Catalyst: the test images belong to the query set).
    """

    classes = MNIST.classes[:SPLIT_DIGIT]

    def __init__(self, **kwargs: Any):
        if kwargs.setdefault("train", True) is False:
            raise ValueError("MnistMLDataset can be used only for training stage.")
        super().__init__(**kwargs)
        keep = self.targets < SPLIT_DIGIT
        self.data, self.targets = self.data[keep], self.targets[keep]

    def get_labels(self) -> list[int]:
        """Every sample's label, in order (what metric-learning samplers group by)."""
        return self.targets.tolist()


class MnistQGDataset(Dataset):
    """The test images of digits 5–9 cut into queries and a gallery, for metric-learning
    validation (Catalyst 20.08+'s ``MnistQGDataset``): the first ``1 - gallery_fraq`` of the
    samples are queries, the rest the gallery.

    Args:
        root, transform: as :class:`MNIST` (loaded with ``train=False, download=True``).
        gallery_fraq: the gallery's fraction of the samples.

    Sample:
        ``{"features": image, "targets": int, "is_query": bool tensor}``.

    Raises:
        ConfigError: as :class:`MNIST`.
    """

    classes = MNIST.classes[SPLIT_DIGIT:]

    def __init__(self, root: str | Path, transform: Callable | None = None, gallery_fraq: float = 0.2):
        self._mnist = MNIST(root, train=False, download=True, transform=transform)
        keep = self._mnist.targets >= SPLIT_DIGIT
        self._mnist.data, self._mnist.targets = self._mnist.data[keep], self._mnist.targets[keep]
        self.gallery_size = int(gallery_fraq * len(self._mnist))
        self.query_size = len(self._mnist) - self.gallery_size
        self._is_query = torch.arange(len(self._mnist)) < self.query_size

    @property
    def data(self) -> torch.Tensor:
        """The images, uint8 [N, 28, 28]."""
        return self._mnist.data

    @property
    def targets(self) -> torch.Tensor:
        """The labels (5–9), int64 [N]."""
        return self._mnist.targets

    def __len__(self) -> int:
        return len(self._mnist)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target = self._mnist[index]
        return {"features": image, "targets": target, "is_query": self._is_query[index]}
