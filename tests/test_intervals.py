"""The bootstrap intervals that the serving benchmark's tail figures carry (benchmarks.measure)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.measure import block_interval, percentile_interval


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99))


def test_a_percentile_interval_brackets_the_estimate_and_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(7)
    few, many = rng.exponential(20.0, 300), rng.exponential(20.0, 30_000)
    for samples in (few, many):
        low, high = percentile_interval(samples, 99)
        assert low <= np.percentile(samples, 99) <= high
    (few_low, few_high), (many_low, many_high) = percentile_interval(few, 99), percentile_interval(many, 99)
    assert (many_high - many_low) < (few_high - few_low) / 3  # ~sqrt(100) in theory


def test_a_percentile_interval_of_equal_samples_is_a_point_and_of_none_an_error() -> None:
    assert percentile_interval([5.0] * 50, 99) == (5.0, 5.0)
    with pytest.raises(ValueError):
        percentile_interval([], 99)


def test_a_block_interval_keeps_the_sides_of_a_block_paired() -> None:
    # Side b is twice side a, block by block, and blocks differ a lot: drawn together, every
    # resample's ratio is exactly 2; drawn apart, the ratio would wander with the blocks.
    rng = np.random.default_rng(3)
    a_blocks = [rng.exponential(scale, 200) for scale in (5, 10, 20, 40, 80, 160)]
    blocks = [(a, 2 * a) for a in a_blocks]
    assert block_interval(blocks, lambda a, b: _p99(b) / _p99(a)) == pytest.approx((2.0, 2.0))
    assert block_interval([(a, a) for a in a_blocks], lambda a, b: _p99(a) / _p99(b)) == (1.0, 1.0)


def test_a_block_interval_is_wider_than_an_independent_one_when_blocks_differ() -> None:
    # Ten blocks whose levels differ (a machine whose speed drifts): the median's uncertainty is
    # that of ten draws, not of the thousands of samples that independent draws would assume.
    rng = np.random.default_rng(5)
    blocks = [(level + rng.normal(0, 1, 500),) for level in rng.uniform(0, 100, 10)]
    merged = np.concatenate([b[0] for b in blocks])
    median = lambda values: float(np.median(values))  # noqa: E731
    block_low, block_high = block_interval(blocks, median)
    low, high = percentile_interval(merged, 50)
    assert block_low <= median(merged) <= block_high
    assert (block_high - block_low) > 5 * (high - low)
