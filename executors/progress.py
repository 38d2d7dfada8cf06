"""A tqdm bar that also reports its progress to the task (MLComp's ``Executor.tqdm``, whose
``TqdmWrapper`` wrote the bar's position to the task row for the UI).

The ``click`` type puts it in place of the command module's ``tqdm`` (as MLComp did), and
MLComp-API executors get it from ``self.tqdm(...)``.
"""
from __future__ import annotations

import math
import time

from tqdm import tqdm

from executors.base import Reporter

__all__ = ["ReportingTqdm"]


class ReportingTqdm(tqdm):
    """A :class:`tqdm.tqdm` that sends ``{stage: desc, batch, batches, eta}`` (ETA in seconds)
    to ``reporter`` when the bar moves, at most every ``interval`` seconds, and when it closes.

    Args:
        reporter: the task's :class:`~executors.base.Reporter`, or None to only draw the bar.
        interval: seconds between reports (MLComp's ``interval``).
        *args, **kwargs: tqdm's.
    """

    def __init__(self, *args, reporter: Reporter | None = None, interval: float = 1.0, **kwargs):
        self._reporter, self._interval, self._reported = reporter, interval, -math.inf
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        """tqdm's ``update``, then a report if ``interval`` seconds passed since the last."""
        displayed = super().update(n)
        if time.monotonic() - self._reported >= self._interval:
            self._report()
        return displayed

    def close(self) -> None:
        """Reports the final position, then closes the bar."""
        if not self.disable:
            self._report()
        super().close()

    def _report(self) -> None:
        if self._reporter is None:
            return
        self._reported = time.monotonic()
        rate = self.format_dict.get("rate") or (self.n / max(time.time() - self.start_t, 1e-9))
        eta = (self.total - self.n) / rate if self.total and rate else None
        self._reporter.progress({"stage": self.desc or "progress", "batch": self.n, "batches": self.total,
                                 "eta": eta})
