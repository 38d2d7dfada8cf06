"""ASHA's bookkeeping against the paper's promotion rule in a simulated run, and the median
stopping rule against hand-computed cases (pure functions: no training, no store)."""
from __future__ import annotations

import heapq
import math
import random

import pytest

from mlcomp.search.asha import RungRecord, promotion, rung_epochs
from mlcomp.search.median import median_stop


@pytest.mark.parametrize("grace, eta, max_epochs, expected", [
    (1, 3, 9, [1, 3, 9]), (1, 3, 10, [1, 3, 9, 10]), (2, 2, 10, [2, 4, 8, 10]), (5, 3, 5, [5]), (1, 4, 3, [1, 3]),
])
def test_rung_epochs(grace, eta, max_epochs, expected):
    assert rung_epochs(grace, eta, max_epochs) == expected


@pytest.mark.parametrize("args", [(0, 3, 9), (1, 1, 9), (4, 3, 3)])
def test_rung_epochs_rejects_bad_settings(args):
    with pytest.raises(ValueError):
        rung_epochs(*args)


class PaperASHA:
    """Algorithm 2 of Li et al. (MLSys 2020) written as in the paper: rungs are lists of
    (configuration, loss), and a configuration is promoted from rung k at most once."""

    def __init__(self, eta: int, top: int):
        self.eta, self.top = eta, top
        self.rungs = {k: [] for k in range(top + 1)}
        self.promoted = {k: set() for k in range(top + 1)}

    def get_job(self):
        for k in reversed(range(self.top)):
            ranked = sorted(self.rungs[k], key=lambda item: (item[1], item[0]))  # lowest loss first
            candidates = ranked[:math.floor(len(ranked) / self.eta)]
            promotable = [theta for theta, _ in candidates if theta not in self.promoted[k]]
            if promotable:
                self.promoted[k].add(promotable[0])
                return promotable[0], k + 1
        return None  # draw a new configuration for rung 0

    def report(self, theta, k, loss):
        self.rungs[k].append((theta, loss))


def fake_loss(quality: float, epoch: int, rng: random.Random) -> float:
    """A learning curve: better configurations (lower quality) end lower; noisy."""
    return quality + 2.0 * math.exp(-epoch / 3) + rng.gauss(0, 0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asha_promotions_follow_the_paper_in_an_asynchronous_run_of_100_trials(seed):
    rng = random.Random(seed)
    eta, epochs = 3, rung_epochs(1, 3, 27)  # rungs at 1, 3, 9 and 27 epochs
    top, workers, budget = len(epochs) - 1, 4, 100
    paper = PaperASHA(eta, top)
    records, paused, quality, target = [], set(), {}, {}
    running, clock, started, decisions = [], 0.0, 0, 0

    def launch(trial, rung):
        # asynchronous arrivals: each job's duration is proportional to its epochs, jittered
        done_at = clock + (epochs[rung] - (epochs[rung - 1] if rung else 0)) * rng.uniform(0.5, 2.0)
        heapq.heappush(running, (done_at, trial, rung))

    while True:
        while len(running) < workers:
            decision = promotion(records, paused, eta, top, minimize=True)
            assert decision == paper.get_job()
            decisions += 1
            if decision is not None:
                trial, rung = decision
                paused.discard(trial)
            elif started < budget:
                trial, rung = started, 0
                quality[trial], started = rng.uniform(0, 1), started + 1
            else:
                break
            target[trial] = rung
            launch(trial, rung)
        if not running:
            break
        clock, trial, rung = heapq.heappop(running)
        loss = fake_loss(quality[trial], epochs[rung], rng)
        records.append(RungRecord(trial, rung, loss))
        paper.report(trial, rung, loss)
        if rung < top:
            paused.add(trial)

    assert started == budget and decisions > budget
    mispromoted = 0
    for k in range(top):
        # at the end the top ⌊n_k / η⌋ of every rung went up (with, asynchronously, a few trials
        # promoted early that later fell out of the top: the paper's "mispromotions"), and every
        # promoted trial reported at the next rung
        ranked = sorted((r for r in records if r.rung == k), key=lambda r: (r.value, r.trial))
        best = {r.trial for r in ranked[:len(ranked) // eta]}
        assert best <= paper.promoted[k] == {r.trial for r in records if r.rung == k + 1}
        mispromoted += len(paper.promoted[k] - best)
    assert mispromoted, "the arrivals were not asynchronous enough to test early promotions"
    assert sum(r.rung == top for r in records) >= 1


def test_asha_promotes_from_the_highest_rung_first_and_ignores_running_trials():
    records = [RungRecord(t, 0, v) for t, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]
    records += [RungRecord(0, 1, 0.05), RungRecord(1, 1, 0.5), RungRecord(5, 1, 0.9)]
    # rung 1 has 3 records: its best (trial 0) goes to rung 2 before anything from rung 0
    assert promotion(records, {0, 1, 2, 3, 4, 5}, 3, 2, minimize=True) == (0, 2)
    # trial 0 is not paused (running): rung 1 has no other candidate in its top 1; rung 0's top
    # 2 are trials 0 and 1, both promoted already (not paused), so nothing
    assert promotion(records, {2, 3, 4}, 3, 2, minimize=True) is None
    # maximizing, rung 0's top 2 are trials 5 and 4
    assert promotion([r for r in records if r.rung == 0], {4}, 3, 2, minimize=False) == (4, 1)
    # a NaN value ranks last
    assert promotion([RungRecord(0, 0, math.nan), RungRecord(1, 0, 1.0), RungRecord(2, 0, 2.0)], {0, 1, 2}, 3, 1,
                     minimize=True) == (1, 1)


@pytest.mark.parametrize("history, others, minimize, grace, expected", [
    # running averages at epoch 2: 0.8, 0.3, 0.7 → median 0.7; best 0.6 is worse
    ([0.5, 0.6], [[0.7, 0.9], [0.2, 0.4], [0.6, 0.8]], False, 1, True),
    ([0.5, 0.75], [[0.7, 0.9], [0.2, 0.4], [0.6, 0.8]], False, 1, False),
    ([0.7, 0.6], [[0.7, 0.9], [0.2, 0.4], [0.6, 0.8]], False, 1, False),  # equal to the median: kept
    # minimizing: averages 0.9 and 0.3 → median 0.6
    ([0.9, 0.5], [[1.0, 0.8], [0.4, 0.2]], True, 1, False),
    ([0.9, 0.7], [[1.0, 0.8], [0.4, 0.2]], True, 1, True),
    ([0.9, 0.7], [[1.0, 0.8], [0.4, 0.2]], True, 3, False),  # within the grace epochs
    ([0.9, 0.7], [[0.1]], True, 1, False),  # no other trial reached epoch 2
    ([0.9, 0.7, 0.65], [[0.1, 0.1], [0.2, 0.2, 0.2, 0.2]], True, 1, True),  # only the trial at epoch 3 counts
    ([5.0], [], True, 1, False),
])
def test_median_rule_against_hand_computed_cases(history, others, minimize, grace, expected):
    assert median_stop(history, others, minimize, grace) is expected
