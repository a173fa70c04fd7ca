"""The HTTP layer: validate, tokenize (off the event loop), queue, answer. The batcher infers.

Routes: ``POST /v1/embeddings`` and ``/embeddings`` (OpenAI), ``POST /embed`` (TEI), ``GET
/health`` (readiness), ``GET /info`` and ``GET /metrics`` (Prometheus). Every error is answered
as OpenAI shapes it, with its own status and one line of text; a 500's traceback goes to the
server's log, never to the client.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tokenizers import Encoding

from gist_onnx.batcher import Batcher, Job, NotAccepting, QueueFull
from gist_onnx.cache import Cached, VectorCache, stack
from gist_onnx.embedder import Embedder
from gist_onnx.pooling import normalize
from gist_onnx.serve.logs import log_request
from gist_onnx.serve.metrics import Metrics
from gist_onnx.serve.protocol import ApiError, openai_response, parse_openai, parse_tei
from gist_onnx.session import TokenBudget

log = logging.getLogger("gist_onnx.serve")
# Threads that tokenize large requests, so the event loop only parses and answers. Two: the Rust
# tokenizer releases the GIL, and more would only compete with the session for the cores.
TOKENIZER_THREADS = 2
# Requests of at most this many characters are tokenized on the event loop, where a short text
# costs less than the hand-off to a thread and back; larger ones on the threads (docs/serving.md
# gives the measurements).
INLINE_TOKENIZE_CHARS = 2048
# A response's vectors are written to JSON this many at a time, with the event loop free between
# slices: 2,048 float vectors in one call held it ~90 ms, and every request that arrived meanwhile
# waited (docs/serving.md). A request of up to 64 texts, the default limit, is one slice.
JSON_SLICE_ROWS = 64


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings (``gist-onnx serve --help`` says what each means)."""

    model_dir: Path
    provider: str = "auto"
    precision: str = "auto"
    api_key: str | None = None
    max_client_batch: int = 64
    max_queue: int = 512
    max_batch_tokens: TokenBudget = "auto"  # padded tokens per session run (the runtime resolves it)
    max_body_bytes: int = 2 * 2**20
    auto_truncate: bool = False
    served_model_name: str | None = None
    batching: bool = True
    threads: int | None = None
    cache_mb: float = 64  # the vector cache's size; 0 turns it off

    def load(self) -> Embedder:
        """The Embedder these settings describe; its session's token budget caps the worker's runs."""
        options = ort.SessionOptions()
        # ONNX Runtime's threads spin for a while after each run, waiting for the next one: an
        # idle server would burn its cores between requests (docs/serving.md, "Idle").
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return Embedder(
            self.model_dir, provider=self.provider, precision=self.precision, threads=self.threads,
            max_batch_tokens=self.max_batch_tokens, session_options=options,
        )  # fmt: skip


class EmbeddingService:
    """The state the routes share: configuration, batcher, metrics, requests in flight."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.cache = VectorCache(int(config.cache_mb * 2**20))
        self.metrics = Metrics(self.cache)
        self.in_flight = 0
        self.batcher = Batcher(
            config.load, max_queue=config.max_queue, batching=config.batching, on_run=self.metrics.observe_run
        )
        self._tokenizers = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="gist-onnx-tokenize")

    @property
    def model_name(self) -> str:
        return self.config.served_model_name or self.config.model_dir.name

    def start(self) -> None:
        self.batcher.start()

    def close(self) -> None:
        self.batcher.stop()
        self._tokenizers.shutdown(wait=False)

    def idle(self) -> bool:
        return self.in_flight == 0 and self.batcher.idle()

    # -- routes ---------------------------------------------------------------------------------

    async def openai(self, request: Request) -> Response:
        return await self._embed(request, "openai")

    async def tei(self, request: Request) -> Response:
        return await self._embed(request, "tei")

    async def health(self, request: Request) -> Response:
        if self.batcher.load_error is not None:
            message = f"the model failed to load: {self.batcher.load_error}"
            return _error(ApiError(503, message, "load_failed", "server_error"))
        if not self.batcher.ready:
            return _json({"status": "draining" if self.batcher.draining else "loading"}, 503)
        return _json({"status": "ok"})

    async def info(self, request: Request) -> Response:
        self._authorize(request)
        from gist_onnx import __version__

        embedder = self.batcher.embedder
        if embedder is None:
            raise ApiError(503, "the model is still loading", "loading", "server_error")
        resolved = embedder.info.to_dict()
        del resolved["model_dir"]  # nothing in a response names a file
        limits = {k: v for k, v in asdict(self.config).items() if k.startswith("max_")}
        limits["max_batch_tokens"] = embedder.info.max_batch_tokens
        cache = self.cache.stats()
        return _json(
            {
                "model": self.model_name,
                **resolved,
                "provider": embedder.info.providers[0],
                "cache": {"max_bytes": cache.max_bytes, "bytes": cache.bytes, "entries": cache.entries},
                "limits": {
                    **limits,
                    "auto_truncate": self.config.auto_truncate,
                    "batching": self.config.batching,
                },
                "version": __version__,
            }
        )

    async def prometheus(self, request: Request) -> Response:
        self.metrics.queue_inputs.set(self.batcher.queued_inputs)
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    # -- the embedding path -----------------------------------------------------------------------

    async def _embed(self, request: Request, route: str) -> Response:
        self._authorize(request)
        batcher = self.batcher
        if not batcher.ready:
            raise ApiError(503, "the server is loading or shutting down", "unavailable", "server_error")
        if batcher.full():  # before reading the body: overload is answered at once
            raise self._queue_full(batcher.retry_after())
        embedder = batcher.embedder
        if embedder is None:  # ready implies loaded
            raise RuntimeError("the batcher is ready without an embedder")
        body = await self._read_json(request)
        if route == "openai":
            parsed = parse_openai(body, embedder.dim, self.config.max_client_batch)
        else:
            parsed = parse_tei(body, self.config.max_client_batch)
        truncate = self.config.auto_truncate if parsed.truncate is None else parsed.truncate
        self.cache.bind(embedder.info.vectors_of)
        lookup = self.cache.lookup(parsed.texts)
        for index, entry in enumerate(lookup.found):
            if entry is not None and entry.truncated and not truncate:
                raise _too_long(index, embedder)
        computed = await self._compute(request, embedder, lookup.missing, truncate, parsed.texts)
        if computed is None:
            return Response(status_code=499)  # nobody is listening; for the log only
        entries = lookup.entries(computed)
        rows = stack(entries, embedder.dim)
        vectors = normalize(rows) if embedder.info.normalizes(parsed.normalize) else rows
        tokens = sum(entry.tokens for entry in entries)
        self.metrics.inputs.inc(len(entries))
        self.metrics.tokens.inc(tokens)
        if route == "openai":
            response = openai_response(vectors, self.model_name, tokens, parsed.base64)
            response["data"] = await _json_array(response["data"])
            return _json(response)
        return _json(await _json_array(vectors))

    async def _compute(
        self, request: Request, embedder: Embedder, texts: list[str], truncate: bool, asked: list[str]
    ) -> dict[str, Cached] | None:
        """The texts the cache lacked, computed by the batcher and kept in the cache; None if the
        client left first. ``asked`` is the whole request, for the index an error names."""
        if not texts:
            return {}
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            encodings = self._tokenize(embedder, texts, truncate, asked)
        else:
            encodings = await asyncio.get_running_loop().run_in_executor(
                self._tokenizers, self._tokenize, embedder, texts, truncate, asked
            )
        job = Job(encodings)
        request.state.job = job  # for the request's log line
        try:
            self.batcher.submit(job)
        except QueueFull as full:
            raise self._queue_full(full.retry_after) from None
        except NotAccepting:
            raise ApiError(503, "the server is shutting down", "unavailable", "server_error") from None
        rows = await _wait_unless_gone(request, job)
        if rows is None:
            return None
        computed = {
            t: Cached(row, len(e.ids), bool(e.overflowing)) for t, row, e in zip(texts, rows, encodings)
        }
        self.cache.put_many(texts, list(computed.values()))
        return computed

    def _authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "invalid_api_key",
                "authentication_error",
            )

    async def _read_json(self, request: Request) -> object:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the body is {declared} bytes; the limit is {limit}", "body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over the limit of {limit} bytes", "body_too_large")
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", "invalid_json") from None

    def _tokenize(
        self, embedder: Embedder, texts: list[str], truncate: bool, asked: list[str]
    ) -> list[Encoding]:
        """The texts' encodings, or the ApiError a client must see (on a tokenizer thread when
        the texts are long); an error names the text's index in the request, ``asked``."""
        try:
            encodings = embedder.tokenize(texts)
        except ValueError as exc:  # a lone surrogate
            raise ApiError(400, _renumbered(str(exc), texts, asked), "invalid_text") from None
        if not truncate:
            for text, encoding in zip(texts, encodings):
                if encoding.overflowing:
                    raise _too_long(asked.index(text), embedder)
        return encodings

    def _queue_full(self, retry_after: float) -> ApiError:
        self.metrics.rejected.labels(reason="queue_full").inc()
        return ApiError(
            429,
            f"the server is at capacity ({self.config.max_queue} inputs queued); retry later",
            "queue_full",
            "rate_limit_error",
            headers={"Retry-After": str(math.ceil(retry_after))},
        )


async def _wait_unless_gone(request: Request, job: Job) -> np.ndarray | None:
    """The job's vectors, or None if the client disconnected first (the job is then cancelled)."""
    result = asyncio.wrap_future(job.future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if result in done:
        return result.result()
    result.cancel()  # cancels the job's future too: its waiting texts are dropped
    return None


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect, whenever it comes.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _too_long(index: int, embedder: Embedder) -> ApiError:
    return ApiError(
        413,
        f"text {index} is longer than the model's {embedder.max_seq_length} tokens; "
        "shorten it, or ask for truncation ('truncate': true, or serve with --auto-truncate)",
        "input_too_long",
    )


def _renumbered(message: str, texts: list[str], asked: list[str]) -> str:
    """The tokenizer's "text N ..." error, N counted in the whole request rather than its misses."""
    head, _, rest = message.partition(" ")
    number, _, tail = rest.partition(" ")
    if head != "text" or not number.isdigit():
        return message
    return f"text {asked.index(texts[int(number)])} {tail}"


async def _json_array(items: Sequence[object] | np.ndarray) -> orjson.Fragment:
    """``items`` as a JSON array, written JSON_SLICE_ROWS at a time with the event loop free
    between slices; the same bytes as one ``orjson.dumps`` of them all."""
    parts = []
    for start in range(0, len(items), JSON_SLICE_ROWS):
        if start:
            await asyncio.sleep(0)  # let the requests that arrived meanwhile be admitted
        written = orjson.dumps(items[start : start + JSON_SLICE_ROWS], option=orjson.OPT_SERIALIZE_NUMPY)
        parts.append(written[1:-1])  # the slice's items, without its brackets
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


def _json(content: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error(error: ApiError) -> Response:
    return _json(error.body(), error.status, error.headers)


def _internal_error(exc: Exception) -> ApiError:
    message = f"internal error ({type(exc).__name__}); the server's log has the details"
    return ApiError(500, message, "internal", "server_error")


def create_app(service: EmbeddingService) -> Starlette:
    """The ASGI app for a service: every request counted and logged, every error answered as JSON."""

    def logged(
        route: str, handler: Callable[[Request], Awaitable[Response]], level: int = logging.INFO
    ) -> Callable:
        async def endpoint(request: Request) -> Response:
            service.in_flight += 1
            started = time.perf_counter()
            try:
                response = await handler(request)
            except ApiError as error:
                response = _error(error)
            except Exception as exc:  # a bug or a failed run: the traceback to the log, one line out
                log.exception("%s %s failed", request.method, route)
                response = _error(_internal_error(exc))
            finally:
                service.in_flight -= 1
            seconds = time.perf_counter() - started
            service.metrics.observe_request(route, response.status_code, seconds)
            job: Job | None = getattr(request.state, "job", None)
            log_request(
                request.method, route, response.status_code, seconds, level,
                inputs=len(job.encodings) if job else None, tokens=job.tokens if job else None,
                queue_ms=_ms(job.queue_seconds) if job else None,
                inference_ms=_ms(job.inference_seconds) if job and job.started else None,
            )  # fmt: skip
            return response

        return endpoint

    routes = [
        Route("/v1/embeddings", logged("/v1/embeddings", service.openai), methods=["POST"]),
        Route("/embeddings", logged("/embeddings", service.openai), methods=["POST"]),
        Route("/embed", logged("/embed", service.tei), methods=["POST"]),
        # Probes come every few seconds: their lines are DEBUG, unless they fail.
        Route("/health", logged("/health", service.health, logging.DEBUG), methods=["GET"]),
        Route("/info", logged("/info", service.info), methods=["GET"]),
        Route("/metrics", service.prometheus, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return _error(ApiError(status, f"no route {request.method} {request.url.path}", "not_found"))

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)


__all__ = ["EmbeddingService", "ServeConfig", "create_app"]
