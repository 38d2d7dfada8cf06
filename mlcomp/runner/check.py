"""Check mode (``--check``): how many batches and epochs a quick trial run makes, by Catalyst era.

Catalyst changed its check mode between releases, and CI scripts written for one era count on
it (a metric file with so many epochs, a loader seen so many times):

- **20.02** (``Runner._run_loader`` / ``_run_stage``): a loader stops after its 4th batch; a
  stage stops after an epoch whose run-wide index (counted from 0 over all stages) is 3 or
  more, so at most 4 epochs over the run, and every stage runs at least one.
- **20.05 and later** (``CheckRunCallback``'s defaults): a loader stops after its 3rd batch, a
  stage after its 2nd epoch. (20.03 and 20.04 stopped after 2 batches; they are not told apart.)

:func:`check_rule` tells the era from the config: a config whose callbacks give
``reduce_metric`` (SchedulerCallback's argument in 20.02, renamed ``reduced_metric`` in 20.03) is
checked as 20.02; any other as 20.05 and later. Every config Catalyst 20.02's CI ran with
``--check`` names it (its stages step a scheduler on the main metric); a 20.02 config without a
scheduler callback is checked with the later counts.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

__all__ = ["CheckRule", "CATALYST_20_02", "CATALYST_20_05", "CHECK_BATCHES", "CHECK_EPOCHS", "check_rule",
           "as_check_rule"]


class CheckRule(NamedTuple):
    """Limits of a check run.

    Attributes:
        batches: batches per loader.
        epochs: epochs per stage, or, with ``run_wide``, epochs of the whole run.
        run_wide: ``epochs`` counts over all stages (20.02), each stage running at least one.
    """

    batches: int
    epochs: int
    run_wide: bool = False

    def stage_epochs(self, num_epochs: int, epochs_done: int) -> int:
        """The epochs a stage configured for ``num_epochs`` runs after ``epochs_done`` epochs of
        earlier stages."""
        limit = max(1, self.epochs - epochs_done) if self.run_wide else self.epochs
        return min(num_epochs, limit)


CATALYST_20_02 = CheckRule(batches=4, epochs=4, run_wide=True)
"""Catalyst 20.02's check: 4 batches per loader, 4 epochs over the run."""
CATALYST_20_05 = CheckRule(batches=3, epochs=2)
"""Catalyst 20.05–20.12's ``CheckRunCallback`` defaults: 3 batches per loader, 2 epochs per stage."""
CHECK_BATCHES, CHECK_EPOCHS = CATALYST_20_05.batches, CATALYST_20_05.epochs
"""The default check (``check=True``): batches per loader and epochs per stage."""


def check_rule(config: Mapping) -> CheckRule:
    """The check rule of ``config``'s era (see the module docstring)."""
    return CATALYST_20_02 if "reduce_metric" in _keys(config.get("stages")) else CATALYST_20_05


def _keys(node) -> set:
    """Every mapping key in ``node``, at any depth."""
    if isinstance(node, Mapping):
        return {str(key) for key in node} | {k for value in node.values() for k in _keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _keys(value)}
    return set()


def as_check_rule(check: bool | CheckRule | None) -> CheckRule | None:
    """``check`` as a rule: a :class:`CheckRule` as it is, a true value as 20.05's, else None."""
    if isinstance(check, CheckRule):
        return check
    return CATALYST_20_05 if check else None
