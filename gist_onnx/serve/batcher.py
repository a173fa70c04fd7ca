"""Micro-batching: one worker thread owns the session and runs whatever texts are waiting.

Requests arrive tokenized (their token counts are exact) and their texts join a pool bounded by
``max_queue`` texts. Whenever the worker is free it sorts the pool by length, cuts it into runs
of at most ``max_batch_tokens`` padded tokens, and computes the run that holds the oldest text:
no timer, so a lone request starts at once; a busy server batches by itself, each run of texts
of similar length (little padding) and the oldest always served next (no starvation). Texts that
arrive meanwhile join the pool for the next run. A request is answered as soon as its last text
is computed; one whose client left is dropped from the pool, not computed.

Nothing here knows HTTP: the server awaits ``Job.future`` on its event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Encoding

from gist_onnx.embedder import Embedder
from gist_onnx.pooling import normalize

# A session run's fixed cost in tokens' worth: streaming the weights once. GIST fp32 on a 2-core
# CPU: ~1.2 ms a padded token in a run of 32 texts, and a one-text run ~20 ms more than its tokens.
RUN_OVERHEAD_TOKENS = 16


class QueueFull(Exception):
    """The queue holds ``max_queue`` inputs already; ``retry_after`` estimates when it will not."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the queue is full; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The batcher is loading its model or draining for shutdown."""


@dataclass(eq=False)
class Job:
    """One request's texts and where its vectors go."""

    encodings: list[Encoding]
    normalize: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # the client went away: its texts still waiting are dropped
    rows: np.ndarray | None = None  # filled run by run
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.encodings)


@dataclass
class RunStats:
    """What one session run of the worker did, for metrics."""

    inputs: int
    tokens: int  # padded tokens: texts x the run's longest
    queue_seconds: list[float]  # per request started in this run: admitted → first computed
    inference_seconds: float


class Batcher:
    """The pool of waiting texts and the one thread that embeds them.

    Args:
        load: builds the Embedder; called on the worker thread, which then warms it up.
        max_queue: texts that may wait (those being computed do not count).
        max_batch_tokens: padded tokens of one session run (always at least one text); None:
            the Embedder's own cap (512 on the CPU, 16,384 on CUDA).
        batching: False computes one request at a time (for measuring what batching buys).
        on_run: called with each run's RunStats (metrics).
    """

    def __init__(
        self,
        load: Callable[[], Embedder],
        max_queue: int,
        max_batch_tokens: int | None,
        batching: bool = True,
        on_run: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.batching = batching
        # None until the worker has loaded and warmed it: readiness and /info report that state.
        self.embedder: Embedder | None = None
        self.load_error: BaseException | None = None
        self._load = load
        self._on_run = on_run or (lambda stats: None)
        self._pool: list[tuple[Job, int]] = []  # (request, index of its text), oldest first
        self._busy = False
        self._stopping = False
        self._draining = False
        self._ready = threading.Event()
        self._lock = threading.Condition()
        self._rate = 0.0  # texts per second, smoothed over runs: for Retry-After
        self._thread = threading.Thread(target=self._work, name="gist-onnx-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Loaded, warmed and not draining: what readiness reports."""
        return self._ready.is_set() and not self._draining and self.load_error is None

    @property
    def queued_inputs(self) -> int:
        return len(self._pool)

    def idle(self) -> bool:
        """Nothing waiting and nothing being computed."""
        with self._lock:
            return not self._pool and not self._busy

    def submit(self, job: Job) -> None:
        """Add a request's texts to the pool; QueueFull or NotAccepting if it cannot be taken now."""
        with self._lock:
            if not self._ready.is_set() or self._draining or self._stopping:
                raise NotAccepting()
            # An empty pool takes any request (the client batch limit bounds it), so a request
            # larger than the queue is not refused forever.
            if self._pool and len(self._pool) + len(job.encodings) > self.max_queue:
                raise QueueFull(self._retry_after())
            self._pool += [(job, index) for index in range(len(job.encodings))]
            self._lock.notify()

    def full(self) -> bool:
        """Whether the pool has no room at all: a cheap check before parsing a request."""
        return len(self._pool) >= self.max_queue

    def retry_after(self) -> float:
        with self._lock:
            return self._retry_after()

    def _retry_after(self) -> float:
        # The time to work through what waits, at the recent rate; at least a second.
        return max(1.0, len(self._pool) / self._rate) if self._rate > 0 else 1.0

    def drain(self) -> None:
        """Refuse new requests from now on; texts waiting or running still finish."""
        with self._lock:
            self._draining = True

    def stop(self) -> None:
        """End the worker once the pool is empty."""
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        _yield_to_the_event_loop()
        try:
            embedder = self._load()
            embedder.encode(["warm up", "a longer text to warm up the session " * 8])
        except BaseException as exc:  # reported by readiness and by the server's log
            self.load_error = exc
            return
        if self.max_batch_tokens is None:
            self.max_batch_tokens = embedder.max_batch_tokens
        self.embedder = embedder
        self._ready.set()
        while (run := self._next_run()) is not None:
            self._compute(embedder, run)

    def _next_run(self) -> list[tuple[Job, int]] | None:
        """Wait for texts; take the run of similar lengths that holds the oldest one."""
        with self._lock:
            self._busy = False
            while True:
                self._pool = [(job, i) for job, i in self._pool if not job.cancelled]
                if self._pool:
                    break
                if self._stopping:
                    return None
                self._lock.wait()
            if self.batching:
                candidates = list(range(len(self._pool)))
            else:  # one request at a time: the oldest request's texts only
                oldest = self._pool[0][0]
                candidates = [k for k, (job, _) in enumerate(self._pool) if job is oldest]
            lengths = [len(job.encodings[i].ids) for job, i in self._pool]
            run = run_around_oldest(candidates, lengths, self.max_batch_tokens or 0)
            taken = set(run)
            chosen = [self._pool[k] for k in run]
            self._pool = [item for k, item in enumerate(self._pool) if k not in taken]
            self._busy = True
            return chosen

    def _compute(self, embedder: Embedder, run: list[tuple[Job, int]]) -> None:
        started = time.perf_counter()
        encodings = [job.encodings[i] for job, i in run]
        try:
            # Raw pooled vectors: each request normalizes its own rows as it asked.
            vectors = embedder.embed_tokens(encodings, batch_size=len(run), normalize_embeddings=False)
        except Exception as exc:  # a failed run fails its requests, never the worker
            for job in {job for job, _ in run}:
                job.cancelled = True  # its other texts are not computed
                job.loop.call_soon_threadsafe(_set_exception, job.future, exc)
            return
        elapsed = time.perf_counter() - started
        first_runs = []
        for (job, i), vector in zip(run, vectors):
            if job.rows is None:
                job.rows = np.empty((len(job.encodings), embedder.dim), dtype=np.float32)
                first_runs.append(started - job.enqueued)
            job.rows[i] = vector
            job.remaining -= 1
            if job.remaining == 0:
                rows = normalize(job.rows) if job.normalize else job.rows
                job.loop.call_soon_threadsafe(_set_result, job.future, rows)
        rate = len(run) / max(elapsed, 1e-9)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        width = max(len(e.ids) for e in encodings)
        self._on_run(RunStats(len(run), width * len(run), first_runs, elapsed))


def _yield_to_the_event_loop() -> None:
    """Run this thread, and the ONNX Runtime threads it creates, at a lower priority than the
    HTTP event loop: admitting a request, refusing one with 429 and answering health checks take
    microseconds, and must not wait behind a session run that holds every core."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)  # Linux: per thread
    except (AttributeError, OSError):  # other systems: the default priority
        pass


def run_around_oldest(candidates: list[int], lengths: list[int], budget: int) -> list[int]:
    """The run that holds text 0 (the oldest) and computes the most real tokens per unit of cost.

    A run costs its padded tokens (its texts x its longest) plus a fixed overhead. Among the
    windows of the length-sorted candidates that hold text 0 and fit ``budget`` padded tokens,
    of every start and size, the best by that measure: so a run is as large as padding allows,
    runs are of similar lengths, and the oldest text is always in the next one. ``budget`` only
    caps a run; the cost decides its size.
    """
    order = sorted(candidates, key=lambda k: (-lengths[k], k))  # longest first, then oldest first
    oldest = order.index(0)
    best, best_score = [order[oldest]], -1.0
    head = 0  # real tokens of order[start : oldest + 1], the part every window from start holds
    for start in range(oldest, -1, -1):
        width = lengths[order[start]]  # the window's longest text sets its padded width
        most = max(1, budget // width)
        if oldest - start + 1 > most:
            break  # windows starting further up cannot reach the oldest text
        head += width
        end, real = oldest + 1, head
        score = real / (width * (end - start) + RUN_OVERHEAD_TOKENS)
        # Texts come shortest last, so each one added is worth less than the one before: grow
        # the window while the next text still raises the score, then stop.
        while end < len(order) and end - start < most:
            grown = (real + lengths[order[end]]) / (width * (end + 1 - start) + RUN_OVERHEAD_TOKENS)
            if grown < score:
                break
            real, end, score = real + lengths[order[end]], end + 1, grown
        if score > best_score:
            best, best_score = order[start:end], score
    return best


def _set_result(future: asyncio.Future, rows: np.ndarray) -> None:
    if not future.done():  # the handler may have given up on a client that left
        future.set_result(rows)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
