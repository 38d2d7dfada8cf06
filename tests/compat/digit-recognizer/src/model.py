import torch.nn as nn


class Mlp(nn.Sequential):
    def __init__(self, hidden: int = 8):
        super().__init__(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))
