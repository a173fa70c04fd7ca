"""The micro-batcher on a real session: what it runs, in which order, and what it never loses.

Core tier. The worker is held between runs by blocking in its ``on_run`` callback (it runs on
the worker thread), so that what waits in the pool at the next choice is known exactly.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

from gist_onnx import Embedder
from gist_onnx.batcher import Batcher, Job, NotAccepting, QueueFull, RunStats, slice_of
from gist_onnx.planning import PATIENCE, RUN_OVERHEAD_TOKENS, Waiting, choose_run, run_around_oldest

pytestmark = pytest.mark.core
WAIT = 30  # seconds: a bound on every wait, never reached when the code works


class Gate:
    """Holds the worker after each run while closed; records every run's size."""

    def __init__(self) -> None:
        self.runs: list[RunStats] = []
        self._cond = threading.Condition()
        self._passes: int | None = None  # None: open; else runs that may still pass before holding
        self._holds = 0  # times the worker has been held

    def close(self) -> None:
        with self._cond:
            self._passes = 0

    def release(self) -> None:
        with self._cond:
            self._passes = None
            self._cond.notify_all()

    def wait_held(self, holds: int = 1) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._holds >= holds, WAIT), "the worker never ran"

    def step(self) -> None:
        """Let the held worker do one more run, and wait until it is held after it."""
        with self._cond:
            target = self._holds + 1
            self._passes = 1
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: self._holds >= target, WAIT), "the worker never ran"

    def __call__(self, stats: RunStats) -> None:
        with self._cond:
            self.runs.append(stats)
            if self._passes is None:
                return
            self._holds += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._passes is None or self._passes > 0, WAIT)
            if self._passes:
                self._passes -= 1


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
    first = batcher.submit(Job(embedder.tokenize(["the first request"])))
    gate.wait_held()
    return first


def test_each_job_gets_its_own_raw_vectors(batcher: Batcher, embedder: Embedder) -> None:
    texts = [f"request {i} is about " + "the " * (i * 7 % 40) for i in range(24)]
    jobs = [batcher.submit(Job(embedder.tokenize([t, t + " again"]))) for t in texts]
    for job, text in zip(jobs, texts):
        expected = embedder.encode([text, text + " again"], normalize_embeddings=False)
        np.testing.assert_allclose(job.future.result(WAIT), expected, atol=1e-5)
        assert job.queue_seconds is not None and job.queue_seconds >= 0 and job.inference_seconds > 0


def test_the_oldest_waiting_text_is_always_in_the_next_run(
    batcher: Batcher, embedder: Embedder, gate: Gate
) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    oldest = batcher.submit(Job(embedder.tokenize(["the " * 200])))  # long: it pads alone
    shorts = [batcher.submit(Job(embedder.tokenize([f"short {i}"]))) for i in range(40)]
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
        jobs = [batcher.submit(Job(embedder.tokenize(["a", "b", "c"]))) for _ in range(3)]
        gate.runs.clear()
        gate.release()
        for job in jobs:
            job.future.result(WAIT)
        assert [run.inputs for run in gate.runs] == [3, 3, 3]
    finally:
        batcher.stop()


def test_a_cancelled_job_is_never_computed(batcher: Batcher, embedder: Embedder, gate: Gate) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    gone = batcher.submit(Job(embedder.tokenize(["nobody waits for me"] * 5)))
    kept = batcher.submit(Job(embedder.tokenize(["somebody waits"])))
    assert gone.future.cancel()
    gate.runs.clear()
    gate.release()
    kept.future.result(WAIT)
    assert sum(run.inputs for run in gate.runs) == 1
    with pytest.raises(CancelledError):
        gone.future.result(0)


def test_admission_counts_only_the_texts_served_before_a_request(embedder: Embedder, gate: Gate) -> None:
    batcher = _started(lambda: embedder, gate, max_queue=4)
    try:
        _hold_after_one_run(batcher, embedder, gate)
        batcher.submit(Job(embedder.tokenize(["one", "two", "three"])))
        with pytest.raises(QueueFull) as refused:  # as large: it would wait behind those 3
            batcher.submit(Job(embedder.tokenize(["four", "five", "six"])))
        assert refused.value.retry_after >= 1
        singles = [batcher.submit(Job(embedder.tokenize([f"single {i}"]))) for i in range(4)]
        assert not batcher.full() or batcher.queued_inputs == 7  # the 3-text one does not block them
        with pytest.raises(QueueFull):  # four single texts ahead of a fifth: full for its size
            batcher.submit(Job(embedder.tokenize(["one too many"])))
        assert batcher.full() and batcher.queued_inputs == 7
        gate.release()
        for job in singles:
            job.future.result(WAIT)
    finally:
        gate.release()
        batcher.stop()


def test_a_small_request_does_not_wait_behind_a_big_one(
    batcher: Batcher, embedder: Embedder, gate: Gate
) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    big = batcher.submit(Job(embedder.tokenize([f"passage {i} " + "the " * 20 for i in range(30)])))
    small = batcher.submit(Job(embedder.tokenize(["a quick question"])))
    gate.runs.clear()
    gate.release()
    small.future.result(WAIT)
    big.future.result(WAIT)
    assert small.started < big.started  # it came second and went first
    assert gate.runs[0].inputs == 1  # alone: the big request's texts do not join a small one's run
    # While another request waited, the big one ran in slices (64 padded tokens on the CPU).
    assert max(run.tokens for run in gate.runs[1:3]) <= slice_of("cpu", embedder.info.max_batch_tokens) == 64


def test_a_big_request_is_never_starved_by_a_stream_of_small_ones(
    batcher: Batcher, embedder: Embedder, gate: Gate
) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    big = batcher.submit(Job(embedder.tokenize([f"passage {i} " + "the " * 20 for i in range(12)])))
    smalls = []
    runs = 0
    while not big.future.done() and runs < 60:  # two new single texts before every run
        smalls += [batcher.submit(Job(embedder.tokenize([f"query {len(smalls) + k}"]))) for k in range(2)]
        gate.step()
        runs += 1
    assert big.future.done(), f"{runs} runs passed and the big request was not finished"
    # The oldest request leads at least one run in every PATIENCE + 1, each a slice of its texts.
    per_slice = max(1, slice_of("cpu", embedder.info.max_batch_tokens) // max(big.lengths))
    assert runs <= (PATIENCE + 1) * -(-12 // per_slice) + 1
    gate.release()
    for job in smalls:
        job.future.result(WAIT)


def test_drain_refuses_new_work_and_finishes_what_was_accepted(
    batcher: Batcher, embedder: Embedder, gate: Gate
) -> None:
    _hold_after_one_run(batcher, embedder, gate)
    accepted = [batcher.submit(Job(embedder.tokenize([f"accepted {i}"]))) for i in range(6)]
    batcher.drain()
    assert not batcher.ready and batcher.draining
    with pytest.raises(NotAccepting):
        batcher.submit(Job(embedder.tokenize(["too late"])))
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
        doomed = batcher.submit(Job(embedder.tokenize(["the " * 700, "and a short one"])))
        fine = batcher.submit(Job(embedder.tokenize(["a short request"])))
        with caplog.at_level(logging.ERROR, logger="gist_onnx.batcher"):
            gate.release()
            with pytest.raises(Exception, match="Non-zero status code"):  # ONNX Runtime's own error
                doomed.future.result(WAIT)
            assert fine.future.result(WAIT).shape == (1, embedder.dim)
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert failed and failed[0].exc_info is not None  # the traceback is in the log
        again = batcher.submit(Job(embedder.tokenize(["the worker lives on"])))
        assert again.future.result(WAIT).shape == (1, embedder.dim)
    finally:
        batcher.stop()


def test_a_model_that_fails_to_load_is_reported(tmp_path: Path, gate: Gate) -> None:
    batcher = Batcher(lambda: Embedder(tmp_path), max_queue=8, on_run=gate)
    batcher.start()
    assert not batcher.wait_ready(WAIT)
    assert "manifest.json: is missing" in str(batcher.load_error) and not batcher.ready
    with pytest.raises(NotAccepting):
        batcher.submit(Job([]))


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


def test_the_run_is_led_by_the_request_with_fewest_texts_left() -> None:
    waiting = [Waiting([40] * 30), Waiting([12]), Waiting([14, 13])]  # arrival order
    run = choose_run(waiting, budget=512, slice_tokens=128)
    assert (1, 0) in run and all(r != 0 for r, _ in run)  # the big one does not join
    assert choose_run([Waiting([12]), Waiting([12])], 512, 128)[0] == (0, 0)  # equals: oldest first


def test_a_slice_bounds_waiting_in_tokens_whatever_the_budget() -> None:
    # OpenVINO's budget is 4x the CPU's, its tokens no cheaper in time by as much: the same slice.
    assert slice_of("cpu", 512) == slice_of("openvino", 2048) == 64 and slice_of("cuda", 16384) == 2048
    assert slice_of("cpu", 48) == 48 and slice_of("cpu", None) is None  # within a smaller budget


def test_a_big_lead_runs_a_slice() -> None:
    big = Waiting([40] * 30)
    sliced = choose_run([big], budget=512, slice_tokens=128)
    assert len(sliced) == 3 and all(r == 0 for r, _ in sliced)  # 3 x 40 padded tokens <= 128
    assert len(choose_run([big], budget=512, slice_tokens=None)) == 12  # unsliced: the whole budget
    assert choose_run([Waiting([300, 40])], 512, 128) == [(0, 0)]  # a text over the slice: alone


def test_the_oldest_leads_once_it_has_been_passed_over_patience_times() -> None:
    waiting = [Waiting([40] * 30, passed_over=PATIENCE), Waiting([12])]
    run = choose_run(waiting, budget=512, slice_tokens=128)
    assert (0, 0) in run and sum(40 for r, _ in run if r == 0) <= 128
    waiting = [Waiting([40] * 30, passed_over=PATIENCE - 1), Waiting([12])]
    assert choose_run(waiting, budget=512, slice_tokens=128) == [(1, 0)]


def test_the_newest_texts_jump_no_older_text_left_out() -> None:
    # The oldest (12 tokens) runs alone: 40-token texts cannot share a run of 64 padded tokens.
    # Four new 12-token texts would fit beside it, but older texts wait: they wait their turn.
    waiting = [Waiting([12])] + [Waiting([40])] * 11 + [Waiting([12])] * 4
    assert choose_run(waiting, budget=64, slice_tokens=None) == [(0, 0)]
    anyone = choose_run(waiting, budget=64, slice_tokens=None, shaping=len(waiting), filling_share=1.0)
    assert len(anyone) == 5  # without the rule they would have jumped the queue
    # With no older text left out they jump nobody, and join: a burst goes in one run.
    burst = [Waiting([12])] * 5
    assert choose_run(burst, budget=64, slice_tokens=None) == [(r, 0) for r in range(5)]


def test_a_closed_loop_of_64_clients_has_a_short_tail_for_little_padding() -> None:
    """64 clients, each sending its next text when the last is answered, simulated on choose_run
    with its own cost model (a run costs its padded tokens plus RUN_OVERHEAD_TOKENS)."""

    def closed_loop(choose) -> tuple[float, float]:  # p99 / p50 of the waits; real tokens per cost
        rng = random.Random(0)
        new_text = lambda: min(60, max(5, int(rng.lognormvariate(2.6, 0.5))))  # noqa: E731 (~STS-B)
        queue = [[0.0, new_text(), 0] for _ in range(64)]  # arrived at, tokens, passed over
        now, waits, real, cost = 0.0, [], 0, 0
        for _ in range(2000):
            taken = {r for r, _ in choose([Waiting([t], p) for _, t, p in queue], 512, 64)}
            run_cost = RUN_OVERHEAD_TOKENS + len(taken) * max(queue[r][1] for r in taken)
            now, cost = now + run_cost, cost + run_cost
            for r, item in enumerate(queue):
                item[2] = 0 if r in taken else item[2] + 1
            waits += [now - queue[r][0] for r in taken]
            real += sum(queue[r][1] for r in taken)
            queue = [item for r, item in enumerate(queue) if r not in taken]
            queue += [[now, new_text(), 0] for _ in taken]
        waits = waits[len(waits) // 10 :]  # from the steady state
        return float(np.percentile(waits, 99) / np.percentile(waits, 50)), real / cost

    tail, efficiency = closed_loop(choose_run)
    anyone = functools.partial(choose_run, shaping=1 << 30, filling_share=1.0)  # any text may join
    anyone_tail, anyone_efficiency = closed_loop(anyone)
    assert anyone_tail > 2.5 and tail < 2.0  # texts of a luckier length no longer jump the old ones
    assert efficiency > 0.94 * anyone_efficiency  # for a little more padding (here 0.81 vs 0.85)
