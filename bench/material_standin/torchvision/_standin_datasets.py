"""Random-image stand-ins for torchvision's MNIST-family and CIFAR datasets (no download)."""
import os
import zlib

import numpy as np
import torch
from PIL import Image


def _size(train: bool, test_default: int) -> int:
    name = "MATERIAL_STANDIN_TRAIN" if train else "MATERIAL_STANDIN_TEST"
    return int(os.environ.get(name, 1024 if train else test_default))


def _images(key: str, n: int, shape: tuple, num_classes: int):
    """``n`` uint8 images of ``shape`` (H, W[, C]) and labels: noise plus a label-placed patch."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    labels = rng.integers(0, num_classes, size=n)
    data = rng.integers(0, 48, size=(n,) + shape, dtype=np.uint8)
    h, w = shape[0], shape[1]
    cells = int(np.ceil(np.sqrt(num_classes)))
    ph, pw = max(h // cells, 1), max(w // cells, 1)
    for c in range(num_classes):
        r, q = divmod(c, cells)
        data[labels == c, r * ph:(r + 1) * ph, q * pw:(q + 1) * pw] = 255
    return data, labels


class _Base(torch.utils.data.Dataset):
    shape = (28, 28)
    mode = "L"
    classes = [str(i) for i in range(10)]
    test_size = 10000

    def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False,
                 **kwargs):
        self.root = root
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        n = _size(train, self.test_size)
        self._data, self._labels = _images(f"{type(self).__name__}-{train}", n, self.shape,
                                           len(self.classes))

    def __len__(self):
        return len(self._labels)

    def _item(self, img, target):
        img = Image.fromarray(np.asarray(img), mode=self.mode)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}


class MNIST(_Base):
    """``data``: uint8 tensor N×28×28; ``targets``: int64 tensor, as torchvision's MNIST."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data = torch.from_numpy(self._data)
        self.targets = torch.from_numpy(self._labels.astype(np.int64))

    @property
    def train_data(self):
        return self.data

    @property
    def train_labels(self):
        return self.targets

    test_data, test_labels = train_data, train_labels

    def __getitem__(self, index):
        return self._item(self.data[index].numpy(), int(self.targets[index]))


class FashionMNIST(MNIST):
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]


class KMNIST(MNIST):
    pass


class EMNIST(MNIST):
    def __init__(self, root=None, split="balanced", **kwargs):
        self.split = split
        super().__init__(root, **kwargs)


class CIFAR10(_Base):
    """``data``: uint8 array N×32×32×3; ``targets``: a list of ints, as torchvision's CIFAR10."""

    shape = (32, 32, 3)
    mode = "RGB"
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    test_size = 1000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data = self._data
        self.targets = [int(t) for t in self._labels]

    def __getitem__(self, index):
        return self._item(self.data[index], self.targets[index])


class CIFAR100(CIFAR10):
    classes = [f"class{i}" for i in range(100)]
