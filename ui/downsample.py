"""Server-side downsampling of long metric series, so a 100,000-point batch curve reaches the
browser as at most a few thousand points that still show its shape.

Largest-Triangle-Three-Buckets (S. Steinarsson, "Downsampling Time Series for Visual
Representation", MSc thesis, University of Iceland, 2013): the first and last points are kept; the
points between are cut into ``n - 2`` buckets, and from each bucket the point forming the largest
triangle with the point kept from the previous bucket and the mean of the next bucket is kept.
"""
from __future__ import annotations

import numpy as np

__all__ = ["lttb"]


def lttb(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Downsamples the series ``(x, y)`` to ``n`` points with LTTB.

    Args:
        x: shape ``[N]``, increasing (steps).
        y: shape ``[N]``, the values.
        n: the number of points wanted, ≥ 3.

    Returns:
        ``(x', y')`` of shape ``[min(N, n)]``: a subset of the input points, in order; the input
        itself when ``N <= n``.

    Raises:
        ValueError: ``n < 3`` or ``x`` and ``y`` differ in length.
    """
    if n < 3:
        raise ValueError(f"lttb: n must be at least 3, got {n}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"lttb: x and y differ in shape: {x.shape} vs {y.shape}")
    size = len(x)
    if size <= n:
        return x, y
    # bucket b (0..n-3) covers the middle points edges[b]:edges[b+1]
    edges = np.linspace(1, size - 1, n - 1).astype(np.int64)
    sums_x = np.add.reduceat(x[1:size - 1], edges[:-1] - 1)
    sums_y = np.add.reduceat(y[1:size - 1], edges[:-1] - 1)
    counts = np.diff(edges)
    mean_x = np.append(sums_x / counts, x[-1])  # the "next bucket" average; the last is the end
    mean_y = np.append(sums_y / counts, y[-1])
    keep = np.empty(n, dtype=np.int64)
    keep[0], keep[-1] = 0, size - 1
    ax, ay = x[0], y[0]
    for b in range(n - 2):
        lo, hi = edges[b], edges[b + 1]
        bx, by = x[lo:hi], y[lo:hi]
        area = np.abs((ax - mean_x[b + 1]) * (by - ay) - (ax - bx) * (mean_y[b + 1] - ay))
        pick = lo + int(area.argmax())
        keep[b + 1] = pick
        ax, ay = x[pick], y[pick]
    return x[keep], y[keep]
