"""torchvision.utils.make_grid, as the GAN example uses it (a B×C×H×W batch → one C×H×W grid)."""
import math

import torch


def make_grid(tensor, nrow=8, padding=2, normalize=False, pad_value=0.0, **kwargs):
    if isinstance(tensor, (list, tuple)):
        tensor = torch.stack(list(tensor))
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.size(1) == 1:
        tensor = tensor.repeat(1, 3, 1, 1)
    if normalize:
        tensor = (tensor - tensor.min()) / (tensor.max() - tensor.min()).clamp(min=1e-5)
    n = tensor.size(0)
    xmaps = min(nrow, n)
    ymaps = int(math.ceil(n / xmaps))
    h, w = tensor.size(2) + padding, tensor.size(3) + padding
    grid = tensor.new_full((3, h * ymaps + padding, w * xmaps + padding), pad_value)
    for k in range(n):
        y, x = divmod(k, xmaps)
        grid[:, y * h + padding:(y + 1) * h, x * w + padding:(x + 1) * w] = tensor[k]
    return grid
