"""The torchvision.transforms names Catalyst 20.x's and MLComp's examples use, on PIL images."""
import numbers
import random

import numpy as np
import torch
from PIL import Image


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    """A PIL image or H×W[×C] uint8 array → a float C×H×W tensor in [0, 1]."""

    def __call__(self, pic):
        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return t.float().div(255) if t.dtype == torch.uint8 else t.float()


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = mean, std

    def __call__(self, t):
        mean = torch.as_tensor(self.mean, dtype=t.dtype).reshape(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=t.dtype).reshape(-1, 1, 1)
        return (t - mean) / std


class Lambda:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


def _pair(size):
    return (size, size) if isinstance(size, numbers.Number) else tuple(size)


class Resize:
    def __init__(self, size, interpolation=Image.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, img):
        h, w = _pair(self.size)
        return img.resize((w, h), self.interpolation)


class CenterCrop:
    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, img):
        h, w = self.size
        left, top = (img.width - w) // 2, (img.height - h) // 2
        return img.crop((left, top, left + w, top + h))


class RandomCrop:
    def __init__(self, size, padding=0, **kwargs):
        self.size, self.padding = _pair(size), padding or 0

    def __call__(self, img):
        if self.padding:
            arr = np.array(img)
            pad = [(self.padding, self.padding), (self.padding, self.padding)] + [(0, 0)] * (arr.ndim - 2)
            img = Image.fromarray(np.pad(arr, pad), mode=img.mode)
        h, w = self.size
        top, left = random.randint(0, img.height - h), random.randint(0, img.width - w)
        return img.crop((left, top, left + w, top + h))


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < self.p else img
