"""Contiguous stage partitions: cover every block once, non-empty, balanced where asked."""
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallel.partition import balanced_partition, make_partition, stage_costs, uniform_partition


def assert_valid(partition, n_layer, n_stages):
    assert partition.n_stages == n_stages
    assert partition.ranges[0].start == 0 and partition.ranges[-1].stop == n_layer
    for a, b in zip(partition.ranges, partition.ranges[1:]):
        assert a.stop == b.start  # contiguous, no gap, no overlap
    assert all(len(r) >= 1 for r in partition.ranges)


@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_uniform_is_valid_and_even(nl_p):
    n_layer, p = nl_p
    part = uniform_partition(n_layer, p)
    assert_valid(part, n_layer, p)
    sizes = [len(r) for r in part.ranges]
    assert max(sizes) - min(sizes) <= 1


costs_and_stages = st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=9).flatmap(
    lambda c: st.tuples(st.just(c), st.integers(1, len(c)), st.floats(0, 50), st.floats(0, 50)))


@given(costs_and_stages)
def test_balanced_is_valid_and_optimal(args):
    costs, p, first, last = args
    part = balanced_partition(costs, p, first, last)
    assert_valid(part, len(costs), p)
    best = max(stage_costs(part, costs, first, last))
    for cuts in itertools.combinations(range(1, len(costs)), p - 1):  # brute force over every split
        bounds = (0,) + cuts + (len(costs),)
        other = type(part)(tuple(range(a, b) for a, b in zip(bounds, bounds[1:])))
        assert best <= max(stage_costs(other, costs, first, last)) + 1e-9


def test_params_balancing_moves_blocks_away_from_heavy_head():
    part = make_partition("params", 4, 2, [1, 1, 1, 1], first_extra=0, last_extra=2)
    assert [len(r) for r in part.ranges] == [3, 1]
    assert "stage 1: block 3 (+ final norm, head, loss)" in part.describe()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="between 1 and n_layer=4"):
        uniform_partition(4, 5)
    with pytest.raises(ValueError, match="unknown partition method 'random'"):
        make_partition("random", 4, 2)
    with pytest.raises(ValueError, match="needs one cost per block"):
        make_partition("time", 4, 2, [1, 2])


def test_json_round_trip():
    part = uniform_partition(7, 3)
    assert type(part).from_json(part.to_json()) == part
