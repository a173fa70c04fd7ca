"""The micro-batcher on a real session: what it runs, in which order, and what it never loses.

Core tier. The worker is held between runs by blocking in its ``on_run`` callback (it runs on
the worker thread), so that what waits in the pool at the next choice is known exactly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

from gist_onnx import Embedder
from gist_onnx.batcher import Batcher, Job, NotAccepting, QueueFull, RunStats
from gist_onnx.planning import RUN_OVERHEAD_TOKENS, run_around_oldest

pytestmark = pytest.mark.core
WAIT = 30  # seconds: a bound on every wait, never reached when the code works


class Gate:
    """Holds the worker after each run until released; records every run's size."""

    def __init__(self) -> None:
        self.runs: list[RunStats] = []
        self._open = threading.Event()
        self._open.set()
        self.held = threading.Event()

    def close(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def __call__(self, stats: RunStats) -> None:
        self.runs.append(stats)
        if not self._open.is_set():
            self.held.set()
            assert self._open.wait(WAIT)
            self.held.clear()


@pytest.fixture(scope="module")
def embedder(core_model: Path) -> Embedder:
    return Embedder(core_model, provider="cpu")


@pytest.fixture
def gate() -> Gate:
    return Gate()


def _started(load, gate: Gate, max_queue: int = 512, batching: bool = True) -> Batcher:
    batcher = Batcher(load, max_queue=max_queue, batching=batching, on_run=gate)
    batcher.start()
    assert batcher.wait_ready(WAIT)
    gate.runs.clear()  # forget the warm-up
    return batcher


@pytest.fixture
def batcher(embedder: Embedder, gate: Gate) -> Iterator[Batcher]:
    running = _started(lambda: embedder, gate)
    yield running
    gate.release()
    running.stop()
    running.join(WAIT)


def _hold_after_one_run(batcher: Batcher, embedder: Embedder, gate: Gate) -> Job:
    """Submit a one-text job and hold the worker once it has computed it."""
    gate.close()
    first = batcher.submit(Job(embedder.tokenize(["the first request"]), True))
    assert gate.held.wait(WAIT)
    return first


def test_each_job_gets_its_own_vectors_normalized_as_it_asked(batcher: Batcher, embedder: Embedder) -> None:
    texts = [f"request {i} is about " + "the " * (i * 7 % 40) for i in range(24)]
    jobs = [
        batcher.submit(Job(embedder.tokenize([t, t + " again"]), i % 2 == 0)) for i, t in enumerate(texts)
    ]
    for i, (job, text) in enumerate(zip(jobs, texts)):
        expected = embedder.encode([text, text + " again"], normalize_embeddings=i % 2 == 0)
        np.testing.assert_allclose(job.future.result(WAIT), expected, atol=1e-5)
        assert job.queue_seconds is not None and job.queue_seconds >= 0 and job.inference_seconds > 0


def test_the_oldest_waiting_text_is_always_in_the_next_run(
    batcher: Batcher, embedder: Embedder, gate: Gate
) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    oldest = batcher.submit(Job(embedder.tokenize(["the " * 200]), True))  # long: it pads alone
    shorts = [batcher.submit(Job(embedder.tokenize([f"short {i}"]), True)) for i in range(40)]
    gate.runs.clear()
    gate.release()
    oldest.future.result(WAIT)
    first = gate.runs[0]
    assert first.inputs == 1 and first.tokens == 202  # the old long text went first, alone
    for job in shorts:
        job.future.result(WAIT)
    assert sum(run.inputs for run in gate.runs) == 41 and len(gate.runs) == 2  # the shorts: one run


def test_batching_off_runs_one_request_at_a_time(embedder: Embedder, gate: Gate) -> None:
    batcher = _started(lambda: embedder, gate, batching=False)
    try:
        _hold_after_one_run(batcher, embedder, gate)
        jobs = [batcher.submit(Job(embedder.tokenize(["a", "b", "c"]), True)) for _ in range(3)]
        gate.runs.clear()
        gate.release()
        for job in jobs:
            job.future.result(WAIT)
        assert [run.inputs for run in gate.runs] == [3, 3, 3]
    finally:
        batcher.stop()


def test_a_cancelled_job_is_never_computed(batcher: Batcher, embedder: Embedder, gate: Gate) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    gone = batcher.submit(Job(embedder.tokenize(["nobody waits for me"] * 5), True))
    kept = batcher.submit(Job(embedder.tokenize(["somebody waits"]), True))
    assert gone.future.cancel()
    gate.runs.clear()
    gate.release()
    kept.future.result(WAIT)
    assert sum(run.inputs for run in gate.runs) == 1
    with pytest.raises(CancelledError):
        gone.future.result(0)


def test_a_full_queue_refuses_with_a_retry_estimate(embedder: Embedder, gate: Gate) -> None:
    batcher = _started(lambda: embedder, gate, max_queue=4)
    try:
        _hold_after_one_run(batcher, embedder, gate)
        batcher.submit(Job(embedder.tokenize(["one", "two", "three"]), True))
        with pytest.raises(QueueFull) as refused:
            batcher.submit(Job(embedder.tokenize(["four", "five"]), True))
        assert refused.value.retry_after >= 1 and batcher.full() is False
        batcher.submit(Job(embedder.tokenize(["four"]), True))  # exactly full is fine
        assert batcher.full() and batcher.queued_inputs == 4
    finally:
        gate.release()
        batcher.stop()


def test_drain_refuses_new_work_and_finishes_what_was_accepted(
    batcher: Batcher, embedder: Embedder, gate: Gate
) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    accepted = [batcher.submit(Job(embedder.tokenize([f"accepted {i}"]), True)) for i in range(6)]
    batcher.drain()
    assert not batcher.ready and batcher.draining
    with pytest.raises(NotAccepting):
        batcher.submit(Job(embedder.tokenize(["too late"]), True))
    gate.release()
    for job in accepted:
        assert job.future.result(WAIT).shape == (1, embedder.dim)
    batcher.stop()
    batcher.join(WAIT)
    assert batcher.idle()


def test_a_failing_run_fails_its_requests_only_and_is_logged(
    overlong_model: Path, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = Embedder(overlong_model)
    batcher = _started(lambda: embedder, gate)
    try:
        _hold_after_one_run(batcher, embedder, gate)
        doomed = batcher.submit(Job(embedder.tokenize(["the " * 700, "and a short one"]), True))
        fine = batcher.submit(Job(embedder.tokenize(["a short request"]), True))
        with caplog.at_level(logging.ERROR, logger="gist_onnx.batcher"):
            gate.release()
            with pytest.raises(Exception, match="Non-zero status code"):  # ONNX Runtime's own error
                doomed.future.result(WAIT)
            assert fine.future.result(WAIT).shape == (1, embedder.dim)
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert failed and failed[0].exc_info is not None  # the traceback is in the log
        again = batcher.submit(Job(embedder.tokenize(["the worker lives on"]), True))
        assert again.future.result(WAIT).shape == (1, embedder.dim)
    finally:
        batcher.stop()


def test_a_model_that_fails_to_load_is_reported(tmp_path: Path, gate: Gate) -> None:
    batcher = Batcher(lambda: Embedder(tmp_path), max_queue=8, on_run=gate)
    batcher.start()
    assert not batcher.wait_ready(WAIT)
    assert "manifest.json: is missing" in str(batcher.load_error) and not batcher.ready
    with pytest.raises(NotAccepting):
        batcher.submit(Job([], True))


# -- the choice of run, as pure functions -------------------------------------------------------


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
