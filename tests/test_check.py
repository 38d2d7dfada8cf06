"""Check mode limits by Catalyst era (mlcomp.runner.check)."""
from __future__ import annotations

import pytest

from mlcomp.runner.check import CATALYST_20_02, CATALYST_20_05, CheckRule, as_check_rule, check_rule


@pytest.mark.parametrize("stages, rule", [
    ({"callbacks_params": {"scheduler": {"callback": "SchedulerCallback", "reduce_metric": "loss"}}},
     CATALYST_20_02),
    ({"train": {"callbacks_params": {"s": {"callback": "SchedulerCallback", "reduce_metric": "loss"}}}},
     CATALYST_20_02),
    ({"state_params": {"num_epochs": 2}, "train": {}}, CATALYST_20_05),  # 20.03-20.05 kept state_params
    ({"train": {"callbacks_params": {"s": {"callback": "SchedulerCallback", "reduced_metric": "loss"}}}},
     CATALYST_20_05),
    ({"train": {"stage_params": {"num_epochs": 2}}}, CATALYST_20_05),
    ({"train": None}, CATALYST_20_05),
    (None, CATALYST_20_05),
])
def test_check_rule_tells_the_era_from_the_scheduler_callbacks_argument_name(stages, rule):
    assert check_rule({"stages": stages}) is rule


def test_catalyst_20_02_counts_epochs_over_the_run():
    """20.02 stopped a stage after an epoch whose run-wide index (from 0) reached 3."""
    assert [CATALYST_20_02.stage_epochs(5, done) for done in (0, 4)] == [4, 1]
    assert [CATALYST_20_02.stage_epochs(2, done) for done in (0, 2)] == [2, 2]
    assert CATALYST_20_02.batches == 4


def test_catalyst_20_05_counts_epochs_per_stage():
    assert [CATALYST_20_05.stage_epochs(5, done) for done in (0, 2, 10)] == [2, 2, 2]
    assert CATALYST_20_05.stage_epochs(1, 0) == 1 and CATALYST_20_05.batches == 3


def test_as_check_rule():
    custom = CheckRule(batches=1, epochs=1)
    assert as_check_rule(custom) is custom and as_check_rule(True) is CATALYST_20_05
    assert as_check_rule(False) is None and as_check_rule(None) is None
