"""Sampling through Optuna from the stored trials only: seeded sequences, independent seeds, the
history reaching TPE, a grid without repeats, values inside their distributions."""
from __future__ import annotations

import math

import pytest

from mlcomp.search.sampler import PastTrial, sample
from mlcomp.search.space import distributions, parse_space

SPACE = parse_space({"lr": {"loguniform": [0.0001, 0.1]}, "width": {"choice": [8, 16, 32]},
                     "dropout": {"uniform": [0.0, 0.5]}, "batch_size": {"int": [16, 128]}},
                    lambda path, message: ValueError(message))


def sequence(sampler: str, seed: int, n: int, space=SPACE, value=lambda params: params["lr"]) -> list[dict]:
    """``n`` trials sampled one at a time, each told (as the store would replay it) before the next."""
    past = []
    for _ in range(n):
        params, attrs = sample(space, sampler, seed, False, past)
        past.append(PastTrial(params, attrs, {1: value(params)}, "complete", value(params)))
    return [p.params for p in past]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_seed_gives_the_same_sequence_and_another_seed_another(sampler):
    first = sequence(sampler, 0, 12)
    assert first == sequence(sampler, 0, 12)
    other = sequence(sampler, 1, 12)
    assert not any(a == b for a in first for b in other)  # seed 1 is not seed 0 shifted
    dists = distributions(SPACE)
    for params in first:
        assert all(dists[name]._contains(dists[name].to_internal_repr(value)) for name, value in params.items())
        assert isinstance(params["batch_size"], int) and params["width"] in (8, 16, 32)


def test_tpe_learns_from_the_history_it_is_given():
    """With the value rewarding a low learning rate, TPE's draws after its start-up trials lean
    there; random draws do not."""
    def low_lr(params):
        return -math.log10(params["lr"])

    tpe = sequence("tpe", 0, 30, value=low_lr)[10:]
    random = sequence("random", 0, 30, value=low_lr)[10:]
    assert sum(math.log10(p["lr"]) for p in tpe) < sum(math.log10(p["lr"]) for p in random)


def test_the_grid_sampler_visits_every_point_once():
    space = parse_space({"width": {"choice": [8, 16, 32]}, "depth": {"int": [1, 2]}}, lambda p, m: ValueError(m))
    drawn = sequence("grid", 5, 6, space=space, value=lambda params: float(params["width"]))
    assert sorted((p["width"], p["depth"]) for p in drawn) == [(w, d) for w in (8, 16, 32) for d in (1, 2)]


def test_an_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'"):
        sample(SPACE, "cmaes", 0, False, [])
