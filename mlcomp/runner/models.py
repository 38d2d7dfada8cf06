"""Small built-in models for examples and tests, registered as defaults of ``registry.Model``.

Both take a batch of images or feature vectors and return class logits ``[batch, num_classes]``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SimpleNet", "DigitsCNN"]


class SimpleNet(nn.Module):
    """A multilayer perceptron over flattened inputs (Catalyst 20.x examples' ``SimpleNet``).

    Args:
        in_features: size of one flattened sample (64 for the 8×8 digits).
        hidden: width of each hidden layer; an int or a list of ints (one per layer).
        num_classes: number of output logits.
        dropout: dropout probability after each hidden layer (0 disables it).

    Shapes:
        input ``[batch, *]`` with ``prod(*) == in_features``; output ``[batch, num_classes]``.

    Raises:
        ValueError: a size is not positive or ``dropout`` is outside ``[0, 1)``.
    """

    def __init__(self, in_features: int = 64, hidden: int | list[int] = 128, num_classes: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        if min([in_features, num_classes, *widths]) <= 0:
            raise ValueError(f"SimpleNet: sizes must be positive, got in_features={in_features}, "
                             f"hidden={hidden}, num_classes={num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"SimpleNet: dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip([in_features, *widths], widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1] if widths else in_features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, num_classes]`` of ``features`` ``[batch, *]``."""
        return self.net(features)


class DigitsCNN(nn.Module):
    """A small convolutional network for 8×8 single-channel images (the digits example).

    Two 3×3 convolution blocks (``width`` then ``2 * width`` channels, batch norm, ReLU), a 2×2
    max-pool between them, global average pooling and a linear classifier.

    Args:
        width: channels of the first block; the grid-search knob of the example.
        num_classes: number of output logits.
        in_channels: channels of the input image.
        dropout: dropout probability before the classifier (0 disables it).

    Shapes:
        input ``[batch, in_channels, H, W]`` (H, W ≥ 2; 8×8 for the digits); output
        ``[batch, num_classes]``.

    Raises:
        ValueError: a size is not positive or ``dropout`` is outside ``[0, 1)``.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.0):
        super().__init__()
        if min(width, num_classes, in_channels) <= 0:
            raise ValueError(f"DigitsCNN: sizes must be positive, got width={width}, "
                             f"num_classes={num_classes}, in_channels={in_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DigitsCNN: dropout must be in [0, 1), got {dropout}")
        self.features = nn.Sequential(
            *self._block(in_channels, width),
            nn.MaxPool2d(2),
            *self._block(width, 2 * width),
            nn.AdaptiveMaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width * 4, num_classes))

    @staticmethod
    def _block(channels_in: int, channels_out: int) -> list[nn.Module]:
        return [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, num_classes]`` of images ``[batch, in_channels, H, W]``."""
        return self.head(self.features(features))
