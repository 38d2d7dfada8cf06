import torch.nn as nn


class TinyNet(nn.Module):
    """An encoder and a head: the second stage freezes the encoder."""

    def __init__(self, in_features: int = 4, hidden: int = 8, classes: int = 2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, features):
        return self.head(self.encoder(features))
