"""Accumulators (Mean, Sum, List) and RNG seeding/capture."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mlcomp.runner.accumulators import List, Mean, Sum
from mlcomp.runner.seed import get_rng_state, set_global_seed, set_rng_state


def test_mean_is_weighted_and_stays_a_tensor_until_compute():
    mean = Mean()
    mean.update(torch.tensor(1.0), 16)
    mean.update(torch.tensor(4.0), 8)
    mean.update(2, 8)
    assert isinstance(mean.total, torch.Tensor) and mean.total.dtype == torch.float64
    assert mean.compute() == pytest.approx((16 + 32 + 16) / 32)
    mean.reset()
    with pytest.raises(ValueError, match="no value was added"):
        mean.compute()


def test_sum_of_vectors_and_numbers():
    total = Sum()
    total.update(torch.tensor([1.0, 2.0]), 2)
    total.update(torch.tensor([0.5, 0.5]))
    assert torch.equal(total.compute(), torch.tensor([2.5, 4.5], dtype=torch.float64))
    numbers = Sum()
    numbers.update(3)
    numbers.update(0.5, 4)
    assert numbers.compute() == 5.0


def test_list_concatenates_and_stacks():
    values = List()
    values.update(torch.tensor([1, 2]))
    values.update(torch.tensor([3]))
    assert torch.equal(values.compute(), torch.tensor([1, 2, 3]))
    scalars = List()
    for v in (1.0, 2.0):
        scalars.update(torch.tensor(v))
    assert torch.equal(scalars.compute(), torch.tensor([1.0, 2.0]))
    plain = List()
    plain.update("a")
    assert plain.compute() == ["a"]


@pytest.mark.parametrize("kind", [Mean, Sum, List])
def test_state_dict_round_trip_continues_identically(kind):
    values = [torch.tensor(float(v)) / 3 for v in range(6)]
    whole, first = kind(), kind()
    for v in values:
        whole.update(v, 2)
    for v in values[:3]:
        first.update(v, 2)
    state = first.state_dict()
    first.update(torch.tensor(100.0))  # a saved state does not change afterwards
    second = kind()
    second.load_state_dict(state)
    for v in values[3:]:
        second.update(v, 2)
    result, expected = second.compute(), whole.compute()
    assert torch.equal(result, expected) if isinstance(result, torch.Tensor) else result == expected


def test_load_state_dict_names_missing_keys():
    with pytest.raises(KeyError, match=r"missing keys \['weight'\]"):
        Mean().load_state_dict({"total": 1.0})


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_and_rng_state_round_trip():
    set_global_seed(3)
    first = draw()
    set_global_seed(3)
    assert draw() == first
    state = get_rng_state()
    after = draw()
    draw()
    set_rng_state(state)
    assert draw() == after
    assert set(state) == {"python", "numpy", "torch", "cuda"}

