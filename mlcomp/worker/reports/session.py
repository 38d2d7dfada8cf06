"""The collector of a task's reports (an MLComp-API executor's ``self.session``)."""
from __future__ import annotations

__all__ = ["ReportSession"]


class ReportSession:
    """What a report builder is given as ``session``: MLComp passed its database session, into
    which builders wrote report rows; here each builder adds itself on ``create_base`` and the
    executor reads their :meth:`summaries` into the task's result."""

    def __init__(self):
        self.builders: list = []

    def add(self, builder) -> None:
        """Keeps ``builder`` (an object with ``name`` and ``summary()``), once."""
        if builder not in self.builders:
            self.builders.append(builder)

    def summaries(self) -> dict:
        """``{builder name: its summary()}``; a later builder of the same name wins."""
        return {builder.name: builder.summary() for builder in self.builders}
