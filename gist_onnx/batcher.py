"""Micro-batching: one worker thread owns the session and runs whatever texts are waiting.

Requests arrive tokenized (their token counts are exact) and wait as jobs. Whenever the worker is
free it takes the next run (gist_onnx.planning.choose_run): no timer, so a lone request starts at
once, and a busy worker batches by itself. Requests with the fewest texts left go first, so a
request's wait depends on its own size, not on the size of those that came before it; a request
larger than a slice is cut into slices, so a small one never waits behind more than one slice;
the oldest texts shape each run, so a text is not passed over again and again for newer ones of a
luckier length; and the oldest request leads a run whenever a few in a row passed it over, so
none starves.
Admission follows the same order: a request is refused (QueueFull) only if the texts that would be
served before it, with its own, exceed ``max_queue``. A job's future gets its raw pooled vectors as
soon as its last text is computed (normalizing is the caller's, per request); a cancelled job's
waiting texts are dropped, not computed.

Nothing here knows HTTP or asyncio: a server awaits ``asyncio.wrap_future(job.future)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Encoding

from gist_onnx.embedder import Embedder
from gist_onnx.options import SLICE_TOKENS
from gist_onnx.planning import Waiting, choose_run, longest_first

log = logging.getLogger(__name__)
WARM_UP_TEXTS = ["warm up", "a longer text to warm up the session " * 8]


class QueueFull(Exception):
    """The queue holds ``max_queue`` inputs already; ``retry_after`` estimates when it will not."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the queue is full; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The batcher is loading its model or draining for shutdown."""


@dataclass(eq=False)
class Job:
    """One request's texts, where its raw pooled vectors go, and how long it waited and ran."""

    encodings: list[Encoding]
    future: Future = field(default_factory=Future)  # (n, dim) float32 rows, or the run's error
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when its first text's run began
    inference_seconds: float = 0.0  # the runs that computed its texts, added up
    rows: np.ndarray | None = field(default=None, repr=False)  # filled run by run
    remaining: int = field(init=False)  # texts not yet computed
    lengths: list[int] = field(init=False, repr=False)  # each text's tokens
    pending: list[int] = field(init=False, repr=False)  # texts not yet taken, longest first
    passed_over: int = 0  # runs in a row that took none of its texts

    def __post_init__(self) -> None:
        self.remaining = len(self.encodings)
        self.lengths = [len(e.ids) for e in self.encodings]  # once: .ids builds a list each time
        self.pending = longest_first(self.lengths)

    @property
    def queue_seconds(self) -> float | None:
        """From admission to its first run; None while it waits."""
        return None if self.started is None else self.started - self.enqueued

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


@dataclass
class RunStats:
    """What one session run of the worker did, for metrics."""

    inputs: int
    tokens: int  # padded tokens: texts x the run's width
    queue_seconds: list[float]  # per request started in this run: admitted → first computed
    inference_seconds: float


class Batcher:
    """The waiting requests and the one thread that embeds them.

    Args:
        load: builds the Embedder; called on the worker thread, which then warms it up. Its
            resolved ``info.max_batch_tokens`` caps every run.
        max_queue: texts that may wait ahead of a request, its own included (those being
            computed do not count); a request larger than that is taken when nothing waits.
        batching: False computes one request at a time, oldest first (to measure what batching
            buys).
        on_run: called on the worker thread with each run's RunStats (metrics).
    """

    def __init__(
        self,
        load: Callable[[], Embedder],
        max_queue: int,
        batching: bool = True,
        on_run: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.max_queue = max_queue
        self.batching = batching
        # None until the worker has loaded and warmed it: readiness and /info report that state.
        self.embedder: Embedder | None = None
        self.load_error: BaseException | None = None
        self._load = load
        self._on_run = on_run or (lambda stats: None)
        self._jobs: list[Job] = []  # requests with texts not yet taken, oldest first
        self._busy = False
        self._stopping = False
        self._draining = False
        self._ready = threading.Event()
        self._lock = threading.Condition()
        self._rate = 0.0  # texts per second, smoothed over runs: for Retry-After
        self._thread = threading.Thread(target=self._work, name="gist-onnx-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded and warm (True) or failed to load (False)."""
        self._ready.wait(timeout)
        return self._ready.is_set() and self.load_error is None

    @property
    def ready(self) -> bool:
        """Loaded, warmed and not draining: what readiness reports."""
        return self._ready.is_set() and not self._draining and self.load_error is None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def queued_inputs(self) -> int:
        """Texts waiting, not yet taken by a run."""
        return sum(len(job.pending) for job in list(self._jobs))

    def idle(self) -> bool:
        """Nothing waiting and nothing being computed."""
        with self._lock:
            return not self._jobs and not self._busy

    def submit(self, job: Job) -> Job:
        """Queue a request's texts; QueueFull or NotAccepting if it cannot be taken now."""
        with self._lock:
            if not self.ready or self._stopping:
                raise NotAccepting()
            ahead = self._ahead(len(job.encodings))
            # An empty queue takes any request (the client batch limit bounds it), so a request
            # larger than the queue is not refused forever.
            if ahead and ahead + len(job.encodings) > self.max_queue:
                raise QueueFull(self._retry_after(ahead))
            self._jobs.append(job)
            self._lock.notify()
        return job

    def full(self) -> bool:
        """Whether even a one-text request would be refused now: a cheap check before parsing."""
        with self._lock:
            return self._ahead(1) + 1 > self.max_queue

    def retry_after(self, texts: int = 1) -> float:
        """Seconds until a request of ``texts`` texts would likely be taken."""
        with self._lock:
            return self._retry_after(self._ahead(texts))

    def _ahead(self, texts: int) -> int:
        # Texts that would be served before a request of this size: those of requests no larger.
        return sum(len(job.pending) for job in self._jobs if len(job.pending) <= texts)

    def _retry_after(self, ahead: int) -> float:
        # The time to work through what waits ahead, at the recent rate; at least a second.
        return max(1.0, ahead / self._rate) if self._rate > 0 else 1.0

    def drain(self) -> None:
        """Refuse new requests from now on; texts waiting or running still finish."""
        with self._lock:
            self._draining = True

    def stop(self) -> None:
        """End the worker once nothing waits."""
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the worker thread --------------------------------------------------------------------------

    def _work(self) -> None:
        _lower_priority()
        try:
            embedder = self._load()
            embedder.encode(WARM_UP_TEXTS)
        except BaseException as exc:  # reported by readiness and by the server's log
            log.exception("the model failed to load")
            self.load_error = exc
            self._ready.set()
            return
        self.embedder = embedder
        self._ready.set()
        while (run := self._next_run(embedder)) is not None:
            self._compute(embedder, run)

    def _next_run(self, embedder: Embedder) -> list[tuple[Job, int]] | None:
        """Wait for texts; take the next run (gist_onnx.planning.choose_run) out of the queue."""
        with self._lock:
            self._busy = False
            while True:
                # A done future (cancelled by its caller, or failed) needs no more texts computed.
                self._jobs = [job for job in self._jobs if job.pending and not job.future.done()]
                if self._jobs:
                    break
                if self._stopping:
                    return None
                self._lock.wait()
            jobs = self._jobs if self.batching else self._jobs[:1]
            budget = embedder.info.max_batch_tokens
            slice_tokens = slice_of(embedder.info.device, budget) if self.batching else None
            # Counted as padded, so a run's padded tokens stay within the budget and its slice.
            width = embedder.padded_length
            views = [Waiting([width(job.lengths[i]) for i in job.pending], job.passed_over) for job in jobs]
            chosen = [(jobs[r], jobs[r].pending[k]) for r, k in choose_run(views, budget, slice_tokens)]
            taken = {id(job) for job, _ in chosen}
            for job in self._jobs:
                job.passed_over = 0 if id(job) in taken else job.passed_over + 1
            indices = {(id(job), i) for job, i in chosen}
            for job in jobs:
                job.pending = [i for i in job.pending if (id(job), i) not in indices]
            self._busy = True
            return chosen

    def _compute(self, embedder: Embedder, run: list[tuple[Job, int]]) -> None:
        started = time.perf_counter()
        jobs = list(dict.fromkeys(job for job, _ in run))
        first_runs = [started - job.enqueued for job in jobs if job.started is None]
        for job in jobs:
            job.started = started if job.started is None else job.started
        try:
            vectors = embedder.embed_run([job.encodings[i] for job, i in run])
        except Exception as exc:  # a failed run fails its requests, never the worker
            log.exception("a run of %d texts failed; its %d requests get the error", len(run), len(jobs))
            for job in jobs:
                _fail(job, exc)  # its texts still waiting are then dropped
            return
        elapsed = time.perf_counter() - started
        for job in jobs:
            job.inference_seconds += elapsed
        for (job, i), vector in zip(run, vectors):
            if job.rows is None:
                job.rows = np.empty((len(job.encodings), embedder.dim), dtype=np.float32)
            job.rows[i] = vector
            job.remaining -= 1
            if job.remaining == 0:
                _finish(job, job.rows)
        rate = len(run) / max(elapsed, 1e-9)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        width = embedder.padded_length(max(job.lengths[i] for job, i in run))
        self._on_run(RunStats(len(run), width * len(run), first_runs, elapsed))


def slice_of(device: str, budget: int | None) -> int | None:
    """The padded tokens of a big request's slice: a request whose remaining texts exceed it runs
    in slices of that size, so a text arriving meanwhile waits for one slice at most (the device's
    ``options.SLICE_TOKENS``, within the run budget; None, no slices, where runs are uncapped)."""
    return None if budget is None else min(SLICE_TOKENS[device], budget)


def _finish(job: Job, rows: np.ndarray) -> None:
    if job.future.set_running_or_notify_cancel():  # False: the caller gave up on it
        job.future.set_result(rows)


def _fail(job: Job, exc: BaseException) -> None:
    if job.future.set_running_or_notify_cancel():
        job.future.set_exception(exc)


def _lower_priority() -> None:
    """Run this thread, and the ONNX Runtime threads it creates, at a lower priority than the
    thread that submits work: a server's event loop admits a request, refuses one with 429 and
    answers health checks in microseconds, and must not wait behind a run that holds every core."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)  # Linux: per thread
    except (AttributeError, OSError):  # other systems: the default priority
        pass
