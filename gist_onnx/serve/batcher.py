"""Micro-batching: one worker thread owns the session and embeds whatever is waiting.

Requests arrive tokenized (their token counts are exact), wait in a FIFO queue bounded by inputs,
and whenever the worker is free it takes the waiting jobs in order up to a token budget: no
timer, so a lone request starts at once and a busy server batches by itself. The Embedder sorts
the take by length and cuts it into runs at its padded-token cap, then each job gets its rows
back. A job whose client left before the worker took it is dropped, not computed.

Nothing here knows HTTP: the server awaits ``Job.future`` on its event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Encoding

from gist_onnx.embedder import Embedder
from gist_onnx.pooling import normalize


class QueueFull(Exception):
    """The queue holds ``max_queue`` inputs already; ``retry_after`` estimates when it will not."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the queue is full; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class NotAccepting(Exception):
    """The batcher is loading its model or draining for shutdown."""


@dataclass
class Job:
    """One request's inputs and where its vectors go."""

    encodings: list[Encoding]
    normalize: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # the client went away: skip it if not yet taken

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self.encodings)


@dataclass
class TakeStats:
    """What one take of the worker did, for metrics."""

    inputs: int
    tokens: int
    queue_seconds: list[float]  # per job: enqueued → taken
    inference_seconds: float


class Batcher:
    """A bounded FIFO of jobs and the one thread that embeds them.

    Args:
        load: builds the Embedder; called on the worker thread, which then warms it up.
        max_queue: inputs that may wait (the job being computed does not count).
        max_batch_tokens: token budget of one take (always at least one job); None: four of the
            Embedder's session runs (2,048 tokens on the CPU, 65,536 on CUDA), enough to batch
            fully and small enough that a take returns soon.
        batching: False takes one job at a time (for measuring what batching buys).
        on_take: called with each take's TakeStats (metrics).
    """

    def __init__(
        self,
        load: Callable[[], Embedder],
        max_queue: int,
        max_batch_tokens: int | None,
        batching: bool = True,
        on_take: Callable[[TakeStats], None] | None = None,
    ) -> None:
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.batching = batching
        self.embedder: Embedder | None = None  # set once loaded; read-only afterwards
        self.load_error: BaseException | None = None
        self._load = load
        self._on_take = on_take or (lambda stats: None)
        self._jobs: deque[Job] = deque()
        self._queued_inputs = 0
        self._busy = False
        self._stopping = False
        self._draining = False
        self._ready = threading.Event()
        self._lock = threading.Condition()
        self._rate = 0.0  # inputs per second, smoothed over takes: for Retry-After
        self._thread = threading.Thread(target=self._work, name="gist-onnx-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Loaded, warmed and not draining: what readiness reports."""
        return self._ready.is_set() and not self._draining and self.load_error is None

    @property
    def queued_inputs(self) -> int:
        return self._queued_inputs

    def idle(self) -> bool:
        """Nothing queued and nothing being computed."""
        with self._lock:
            return not self._jobs and not self._busy

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFull or NotAccepting if it cannot be taken now."""
        with self._lock:
            if not self._ready.is_set() or self._draining or self._stopping:
                raise NotAccepting()
            if self._queued_inputs + len(job.encodings) > self.max_queue:
                raise QueueFull(self._retry_after())
            self._jobs.append(job)
            self._queued_inputs += len(job.encodings)
            self._lock.notify()

    def full(self) -> bool:
        """Whether the queue has no room at all: a cheap check before parsing a request."""
        return self._queued_inputs >= self.max_queue

    def retry_after(self) -> float:
        with self._lock:
            return self._retry_after()

    def _retry_after(self) -> float:
        # The time to work through what waits, at the recent rate; at least a second.
        return max(1.0, self._queued_inputs / self._rate) if self._rate > 0 else 1.0

    def drain(self) -> None:
        """Refuse new jobs from now on; queued and running jobs still finish."""
        with self._lock:
            self._draining = True

    def stop(self) -> None:
        """End the worker after the jobs already queued."""
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        try:
            embedder = self._load()
            embedder.encode(["warm up", "a longer text to warm up the session " * 8])
        except BaseException as exc:  # reported by readiness and by the server's log
            self.load_error = exc
            return
        if self.max_batch_tokens is None:
            self.max_batch_tokens = 4 * (embedder.max_batch_tokens or 4096)
        self.embedder = embedder
        self._ready.set()
        while True:
            take = self._next_take()
            if take is None:
                return
            self._run(embedder, take)

    def _next_take(self) -> list[Job] | None:
        """Wait for work; take jobs in order up to the token budget, dropping cancelled ones."""
        with self._lock:
            self._busy = False
            while not self._jobs:
                if self._stopping:
                    return None
                self._lock.wait()
            take: list[Job] = []
            tokens = 0
            while self._jobs:
                job = self._jobs[0]
                if job.cancelled:
                    self._jobs.popleft()
                    self._queued_inputs -= len(job.encodings)
                    continue
                if take and (not self.batching or tokens + job.tokens > self.max_batch_tokens):
                    break
                self._jobs.popleft()
                self._queued_inputs -= len(job.encodings)
                take.append(job)
                tokens += job.tokens
            self._busy = bool(take)
            return take

    def _run(self, embedder: Embedder, take: list[Job]) -> None:
        if not take:
            return
        started = time.perf_counter()
        encodings = [e for job in take for e in job.encodings]
        try:
            # Raw pooled vectors: each job normalizes its own rows as it asked.
            vectors = embedder.embed_tokens(encodings, batch_size=32, normalize_embeddings=False)
        except Exception as exc:  # a failed run fails its jobs, never the worker
            for job in take:
                job.loop.call_soon_threadsafe(_set_exception, job.future, exc)
            return
        elapsed = time.perf_counter() - started
        start = 0
        for job in take:
            rows = vectors[start : start + len(job.encodings)]
            start += len(job.encodings)
            rows = normalize(rows) if job.normalize else rows
            job.loop.call_soon_threadsafe(_set_result, job.future, rows)
        rate = len(encodings) / max(elapsed, 1e-9)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        self._on_take(
            TakeStats(
                len(encodings), sum(j.tokens for j in take), [started - j.enqueued for j in take], elapsed
            )
        )


def _set_result(future: asyncio.Future, rows: np.ndarray) -> None:
    if not future.done():  # the handler may have given up on a client that left
        future.set_result(rows)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
