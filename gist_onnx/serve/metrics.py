"""Prometheus metrics of the server, in a registry of its own (nothing global)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gist_onnx.batcher import RunStats
from gist_onnx.cache import VectorCache

# Seconds from a millisecond (an idle server) to a minute (a long queue on a CPU).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class CacheCollector(Collector):
    """The vector cache's counters, read from the cache at each scrape."""

    def __init__(self, cache: VectorCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self.cache.stats()
        for name, value, about in (
            ("hits", stats.hits, "Texts answered from the vector cache"),
            ("misses", stats.misses, "Texts the vector cache did not hold"),
            ("evictions", stats.evictions, "Vectors dropped from the cache to stay within its size"),
        ):
            yield CounterMetricFamily(f"gist_onnx_cache_{name}", about, value=value)
        yield GaugeMetricFamily("gist_onnx_cache_bytes", "Bytes the vector cache holds", value=stats.bytes)
        yield GaugeMetricFamily("gist_onnx_cache_entries", "Vectors the cache holds", value=stats.entries)
        yield GaugeMetricFamily("gist_onnx_cache_max_bytes", "The vector cache's size", value=stats.max_bytes)


class Metrics:
    """Requests by route and status, inputs and tokens, the queue, each run's size and time, and
    the vector cache."""

    def __init__(self, cache: VectorCache) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(CacheCollector(cache))
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
