"""Prometheus metrics of the server, in a registry of its own (nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gist_onnx.batcher import RunStats

# Seconds from a millisecond (an idle server) to a minute (a long queue on a CPU).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Requests by route and status, inputs and tokens, the queue, and each run's size and time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gist_onnx_requests", "HTTP requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "gist_onnx_request_seconds", "Time to answer a request", ["route"], buckets=_SECONDS, registry=r
        )
        self.inputs = Counter("gist_onnx_inputs", "Texts embedded", registry=r)
        self.tokens = Counter("gist_onnx_tokens", "Tokens embedded (special tokens in)", registry=r)
        self.rejected = Counter("gist_onnx_rejected", "Requests refused for capacity", ["reason"], registry=r)
        self.queue_inputs = Gauge("gist_onnx_queue_inputs", "Texts waiting for the worker", registry=r)
        self.batch_inputs = Histogram(
            "gist_onnx_batch_inputs", "Texts per session run",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r,
        )  # fmt: skip
        self.batch_tokens = Histogram(
            "gist_onnx_batch_tokens", "Padded tokens per session run",
            buckets=(16, 64, 256, 512, 1024, 2048, 4096, 16384, 65536), registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "gist_onnx_queue_seconds",
            "Time from admission to a request's first run",
            buckets=_SECONDS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "gist_onnx_inference_seconds", "Time of one session run", buckets=_SECONDS, registry=r
        )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_seconds.labels(route=route).observe(seconds)

    def observe_run(self, run: RunStats) -> None:
        """Called on the worker thread after each session run (prometheus_client is thread-safe)."""
        self.batch_inputs.observe(run.inputs)
        self.batch_tokens.observe(run.tokens)
        self.inference_seconds.observe(run.inference_seconds)
        for waited in run.queue_seconds:
            self.queue_seconds.observe(waited)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
