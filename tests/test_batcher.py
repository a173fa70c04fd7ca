"""The server's choice of run: pure functions, no server process (so the fast tier runs them)."""

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")

from gist_onnx.serve.batcher import RUN_OVERHEAD_TOKENS, run_around_oldest  # noqa: E402


def test_each_run_holds_the_oldest_text_in_a_window_of_similar_lengths() -> None:
    lengths = [12, 60, 11, 12, 13, 58, 12, 11, 10, 59, 12]  # text 0 is the oldest
    run = run_around_oldest(list(range(len(lengths))), lengths, budget=64)
    assert 0 in run and max(lengths[k] for k in run) * len(run) <= 64
    assert all(lengths[k] < 20 for k in run)  # the 60-token texts wait for a run of their own
    long_first = run_around_oldest(list(range(len(lengths))), [60, *lengths[1:]], budget=128)
    assert 0 in long_first and all(lengths[k] >= 58 or k == 0 for k in long_first)
    assert run_around_oldest([0], [600], budget=64) == [0]  # over the budget alone: still served


def test_a_run_stops_growing_where_padding_costs_more_than_another_run() -> None:
    # Four 20-token texts and twenty 5-token ones fit one run of 512 padded tokens, but padding
    # the short ones to 20 costs 300 tokens, far more than a second run's overhead.
    lengths = [20, 20, 20, 20] + [5] * 20
    assert 300 > RUN_OVERHEAD_TOKENS
    assert sorted(run_around_oldest(list(range(24)), lengths, budget=512)) == [0, 1, 2, 3]
    # The short ones, once the oldest, go together: one run of all twenty.
    assert sorted(run_around_oldest(list(range(20)), [5] * 20, budget=512)) == list(range(20))
    # Texts of the oldest's length join it up to the budget, whatever shorter ones wait.
    assert len(run_around_oldest(list(range(40)), [16] * 30 + [4] * 10, budget=256)) == 16
