"""Placement: GPUs by index, ranges, CPUs, memory, pins, and the reasons a task waits."""
from types import SimpleNamespace

import pytest

from mlcomp.gang import Part
from mlcomp.supervisor.allocate import Free, Placement, describe_request, free_resources, place


def computer(name, gpus=4, cpu=8, memory=32.0):
    return SimpleNamespace(name=name, gpus=[{"index": i} for i in range(gpus)], cpu=cpu, memory=memory)


def task(gpu=0, gpu_max=None, cpu=1, memory=0.0, pin=None, on=None, gpus=()):
    return SimpleNamespace(gpu_min=gpu, gpu_max=gpu if gpu_max is None else gpu_max, cpu=cpu, memory=memory,
                           computer_pin=pin, computer=on, gpus=list(gpus))


def test_free_resources_subtract_active_tasks_only_on_their_computer():
    free = free_resources([computer("a"), computer("b")], [
        task(cpu=2, memory=4, on="a", gpus=[1, 3]), task(cpu=1, on="gone", gpus=[0])])
    assert free["a"] == Free("a", [0, 2], 6, 28.0)
    assert free["b"] == Free("b", [0, 1, 2, 3], 8, 32.0)


def test_one_two_and_a_range_on_two_computers_get_disjoint_indices():
    free = free_resources([computer("a"), computer("b")], [])
    one, two, ranged = place(task(1), free), place(task(2), free), place(task(2, 4), free)
    assert one == Placement("a", [0])
    assert two == Placement("a", [1, 2])  # a still has 3 free, the first that fits
    assert ranged == Placement("b", [0, 1, 2, 3])  # b offers 4, a only 1
    assert place(task(2, 4), free) == "no computer has room for 2-4 GPUs, 1 CPU, 0 GB " \
        "(a: 1 GPU, 6 CPUs, 32 GB free; b: 0 GPUs, 7 CPUs, 32 GB free)"
    assert place(task(1, 4), free) == Placement("a", [3])


def test_never_over_allocates_cpu_or_memory():
    free = free_resources([computer("a", gpus=0, cpu=2, memory=3)], [])
    assert isinstance(place(task(cpu=1, memory=2), free), Placement)
    assert isinstance(place(task(cpu=1, memory=2), free), str)
    assert isinstance(place(task(cpu=1), free), Placement)
    assert place(task(cpu=1), free).startswith("no computer has room for 0 GPUs, 1 CPU")


def test_a_pin_is_kept():
    free = free_resources([computer("a"), computer("b")], [])
    assert place(task(1, pin="b"), free) == Placement("b", [0])
    assert place(task(1, pin="c"), free) == "pinned computer 'c' is not alive (known alive: a, b)"


def gang(gpu, gpu_max=None, cpu=1, memory=0.0):
    """A distributed task that may span computers (distr: true, single_node: false)."""
    spread = task(gpu, gpu_max, cpu, memory)
    spread.distr, spread.single_node = True, False
    return spread


def test_a_gang_fits_on_one_computer_when_one_has_room():
    free = free_resources([computer("a"), computer("b")], [])
    assert place(gang(3), free) == Placement("a", [0, 1, 2])


def test_a_gang_is_spread_over_the_fewest_computers_largest_first_in_one_placement():
    free = free_resources([computer("a", gpus=1), computer("b", gpus=3), computer("c", gpus=2)], [])
    where = place(gang(5), free)
    assert where == Placement("b", [0, 1, 2], (Part("b", (0, 1, 2), 0), Part("c", (0, 1), 3)))
    assert free["a"].gpus == [0] and free["b"].gpus == [] and free["c"].gpus == []
    assert free["b"].cpu == free["c"].cpu == 7  # the task's CPUs on each computer


def test_a_ranged_gang_takes_up_to_its_maximum():
    free = free_resources([computer("a", gpus=2), computer("b", gpus=2)], [])
    assert place(gang(3, 8), free).parts == (Part("a", (0, 1), 0), Part("b", (0, 1), 2))


def test_a_gang_that_does_not_fit_waits_and_takes_nothing():
    free = free_resources([computer("a", gpus=1), computer("b", gpus=1, cpu=1)], [])
    before = {name: (list(f.gpus), f.cpu) for name, f in free.items()}
    reason = place(gang(2, cpu=2), free)  # b has a GPU but not the 2 CPUs each part needs
    assert reason.startswith("no computers together have room for 2 GPUs, 2 CPUs, 0 GB per computer")
    assert {name: (list(f.gpus), f.cpu) for name, f in free.items()} == before
    assert isinstance(place(task(2), free), str)  # without single_node: false no spreading at all


def test_free_resources_take_every_part_of_a_gang():
    held = task(cpu=2, memory=1, on="a", gpus=[0])
    held.placement = {"parts": [{"computer": "a", "gpus": [0], "first_rank": 0},
                                {"computer": "b", "gpus": [1, 2], "first_rank": 1}]}
    free = free_resources([computer("a"), computer("b")], [held])
    assert free["a"] == Free("a", [1, 2, 3], 6, 31.0) and free["b"] == Free("b", [0, 3], 6, 31.0)


def test_no_computer_alive():
    assert "no computer is alive" in place(task(), {})


@pytest.mark.parametrize("request_,words", [
    (task(0), "0 GPUs, 1 CPU, 0 GB"), (task(1, cpu=2, memory=1.5), "1 GPU, 2 CPUs, 1.5 GB"),
    (task(2, 4), "2-4 GPUs, 1 CPU, 0 GB")])
def test_describe_request(request_, words):
    assert describe_request(request_) == words


def test_a_gang_record_names_each_computer_part_and_the_group_it_joins():
    from mlcomp import gang as g

    spread = [Part("a", (0, 1), 0), Part("b", (3,), 2)]
    record = g.record(spread, "10.0.0.1")
    assert g.parts(record) == spread and record["world_size"] == 3
    assert g.computers_of("a", record) == ["a", "b"] and g.computers_of("a", None) == ["a"]
    assert g.part_of("b", "a", [0, 1], record) == Part("b", (3,), 2)
    assert g.part_of("c", "a", [0, 1], record) is None
    assert g.part_of("a", "a", [5], None) == Part("a", (5,), 0)  # one computer: the whole task
    group = g.rank_group({**record, "master_port": 29501}, spread[1])
    assert g.group_from_env(g.group_env(group)) == {"world_size": 3, "first_rank": 2,
                                                    "master_addr": "10.0.0.1", "master_port": 29501}
    assert g.group_from_env({}) is None


def test_rendezvous_ports():
    from mlcomp import gang as g

    assert g.parse_ports("29500-29599") == (29500, 29599) and g.parse_ports("7000") == (7000, 7000)
    for bad in ("x-1", "10-5", "0-3", "1-70000"):
        with pytest.raises(ValueError):
            g.parse_ports(bad)
    assert g.pick_port(range(100, 105), used={100}, bindable=lambda p: p != 101) == 102
    assert g.pick_port(range(100, 102), used={100}, bindable=lambda p: False) is None
