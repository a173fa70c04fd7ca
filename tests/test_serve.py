"""`gist-onnx serve`: a real server process on a free loopback port, called as clients call it.

Every request here goes to 127.0.0.1 and every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("httpx", reason="the test extra is not installed")
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from gist_onnx import Embedder  # noqa: E402

pytest.importorskip("starlette", reason="the serve extra is not installed")
from gist_onnx.serve import process as serve_process  # noqa: E402
from gist_onnx.serve.process import ServerProcess  # noqa: E402

# A real server process per module and per lifecycle test: the full suite's, not the fast tier's.
pytestmark = pytest.mark.slow
KEY = "test-key-1234"
TEXTS = ["How to bake a chocolate cake?", "The stock market fell today.", "Embeddings map text to vectors."]


@dataclass
class Server:
    """A real server process and a client factory for it."""

    running: ServerProcess

    @property
    def process(self) -> subprocess.Popen:
        return self.running.process

    @property
    def url(self) -> str:
        return self.running.url

    def client(self, key: str | None = KEY, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


def start_server(model: Path, *args: str) -> Server:
    return Server(serve_process.start_server(model, *args, env={"GIST_ONNX_API_KEY": KEY}))


def stop_server(server: Server) -> None:
    server.running.stop()


@pytest.fixture(scope="module")
def server(tiny_export: Path) -> Iterator[Server]:
    running = start_server(tiny_export, "--max-client-batch", "16", "--max-body-bytes", "100000")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def reference(tiny_export: Path) -> Embedder:
    return Embedder(tiny_export, provider="cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openai_client_round_trips_float_and_base64(server: Server, reference: Embedder) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    expected = reference.encode(TEXTS)
    for encoding in ("float", "base64"):  # the official client asks for base64 unless told otherwise
        kwargs = {"encoding_format": encoding} if encoding == "float" else {}
        response = client.embeddings.create(model="gist", input=TEXTS, **kwargs)
        vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
        assert [item.index for item in response.data] == [0, 1, 2]
        assert _cosines(vectors, expected).min() >= 0.99999
        tokens = sum(len(e.ids) for e in reference.tokenize(TEXTS))
        assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
        assert response.model == reference.model_dir.name


def test_raw_openai_wire_format(server: Server, reference: Embedder) -> None:
    with server.client() as client:
        body = client.post("/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert _cosines(vector[None], reference.encode([TEXTS[0]])).min() >= 0.99999


def test_tei_route(server: Server, reference: Embedder) -> None:
    with server.client() as client:
        normalized = np.array(client.post("/embed", json={"inputs": TEXTS}).json(), dtype=np.float32)
        raw = np.array(client.post("/embed", json={"inputs": TEXTS[1], "normalize": False}).json())
    assert normalized.shape == (3, reference.dim)
    np.testing.assert_allclose(normalized, reference.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(raw[0], reference.encode([TEXTS[1]], normalize_embeddings=False)[0], rtol=1e-4)


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "says"),
    [
        ("/v1/embeddings", b"{not json", 400, "invalid_json", "not valid JSON"),
        ("/v1/embeddings", {"model": "x"}, 400, "missing_field", "'input' is required"),
        ("/v1/embeddings", {"input": []}, 400, "empty_input", "empty"),
        ("/v1/embeddings", {"input": ""}, 400, "empty_input", "input[0] is an empty string"),
        (
            "/v1/embeddings",
            {"input": ["ok", None]},
            400,
            "invalid_type",
            "input[1] must be a string, got null",
        ),
        (
            "/v1/embeddings",
            {"input": [1, 2, 3]},
            400,
            "token_ids_not_supported",
            "check_embedding_ctx_length",
        ),
        ("/v1/embeddings", {"input": [[1, 2]]}, 400, "token_ids_not_supported", "Pass the strings"),
        ("/v1/embeddings", {"input": "a", "dimensions": 8}, 400, "invalid_value", "not trained for shorter"),
        (
            "/v1/embeddings",
            {"input": "a", "encoding_format": "int8"},
            400,
            "invalid_value",
            "'float' or 'base64'",
        ),
        ("/v1/embeddings", {"input": ["a"] * 17}, 413, "too_many_inputs", "at most 16"),
        ("/v1/embeddings", {"input": "word " * 600}, 413, "input_too_long", "text 0 is longer"),
        ("/v1/embeddings", {"input": "x" * 200_000}, 413, "body_too_large", "limit"),
        ("/embed", {"inputs": {"a": 1}}, 400, "invalid_type", "'inputs' must be a string or a list"),
        (
            "/embed",
            {"inputs": "a", "normalize": "yes"},
            400,
            "invalid_type",
            "'normalize' must be true or false",
        ),
        ("/nowhere", {}, 404, "not_found", "no route"),
    ],
)
def test_client_errors_are_json_with_their_status(
    server: Server, path: str, body: object, status: int, code: str, says: str
) -> None:
    with server.client() as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and says in error["message"] and error["type"]


def test_truncation_on_request(server: Server, reference: Embedder) -> None:
    long = "word " * 600
    with server.client() as client:
        response = client.post("/embed", json={"inputs": long, "truncate": True})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()[0], reference.encode([long])[0], atol=1e-5)


def test_api_key_guards_the_embedding_routes_only(server: Server) -> None:
    for key in (None, "wrong-key"):
        with server.client(key=key) as client:
            for path in ("/v1/embeddings", "/embed"):
                response = client.post(path, json={"input": "a", "inputs": "a"})
                assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            assert client.get("/info").status_code == 401
            assert client.get("/health").status_code == 200
            assert client.get("/metrics").status_code == 200


def test_info_health_and_metrics(server: Server, reference: Embedder) -> None:
    with server.client() as client:
        client.post("/embed", json={"inputs": TEXTS})
        info = client.get("/info").json()
        metrics = client.get("/metrics").text
    assert info["dim"] == reference.dim and info["max_seq_length"] == reference.max_seq_length
    assert info["precision"] == "fp32" and info["provider"] == "CPUExecutionProvider"
    assert info["limits"]["max_client_batch"] == 16 and info["limits"]["max_queue"] == 512
    assert info["limits"]["max_batch_tokens"] == 512 and info["version"]  # the CPU cap per run
    for name in (
        'gist_onnx_requests_total{route="/embed",status="200"}',
        "gist_onnx_inputs_total",
        "gist_onnx_tokens_total",
        "gist_onnx_queue_inputs",
        "gist_onnx_batch_inputs_bucket",
        "gist_onnx_batch_tokens_bucket",
        "gist_onnx_queue_seconds_bucket",
        "gist_onnx_inference_seconds_bucket",
    ):
        assert name in metrics, name


def test_64_concurrent_clients_each_get_their_own_vector(server: Server, reference: Embedder) -> None:
    texts = [f"client {i} asks about topic number {i * 7 % 13}" for i in range(64)]
    expected = reference.encode(texts)

    def call(i: int) -> np.ndarray:
        with server.client() as client:
            response = client.post("/v1/embeddings", json={"input": texts[i], "encoding_format": "float"})
            return np.array(response.json()["data"][0]["embedding"], dtype=np.float32)

    with ThreadPoolExecutor(64) as pool:
        found = np.stack(list(pool.map(call, range(64))))
    assert _cosines(found, expected).min() >= 0.99999


def test_a_full_queue_answers_429_at_once_with_retry_after(tiny_export: Path) -> None:
    busy = start_server(tiny_export, "--max-queue", "8", "--max-client-batch", "8")
    try:

        def call(i: int) -> httpx.Response:
            # Distinct texts: the vector cache must not answer them.
            texts = [f"request {i}, text {k}: " + "a long text about many things " * 20 for k in range(8)]
            with busy.client() as client:
                return client.post("/embed", json={"inputs": texts, "truncate": True})

        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(call, range(64)))
        statuses = {r.status_code for r in responses}
        assert statuses <= {200, 429} and 429 in statuses and 200 in statuses
        rejected = next(r for r in responses if r.status_code == 429)
        assert int(rejected.headers["retry-after"]) >= 1 and rejected.json()["error"]["code"] == "queue_full"
        with busy.client() as client:  # and it serves normally right after
            assert client.post("/embed", json={"inputs": "after the storm"}).status_code == 200
    finally:
        stop_server(busy)


def _queued_inputs(client: httpx.Client) -> float:
    metrics = client.get("/metrics").text
    return float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("gist_onnx_queue_inputs "))
    )


def test_sigterm_under_load_answers_every_accepted_request(tiny_export: Path, reference: Embedder) -> None:
    draining = start_server(tiny_export, "--shutdown-timeout", "20")
    texts = [f"text number {i}, " + "with some words " * (60 + i % 40) for i in range(24)]
    expected = reference.encode(texts)

    def call(i: int) -> tuple[int, np.ndarray | None]:
        try:
            with draining.client() as client:
                response = client.post("/embed", json={"inputs": [texts[i]] * 16, "truncate": True})
        except httpx.TransportError:  # refused after the listener closed: never accepted
            return -1, None
        vectors = np.array(response.json(), dtype=np.float32) if response.status_code == 200 else None
        return response.status_code, vectors

    with ThreadPoolExecutor(24) as pool, draining.client() as watcher:
        futures = [pool.submit(call, i) for i in range(24)]
        deadline = time.monotonic() + 20
        # Two requests' inputs waiting: at least two were accepted (one may be taken already).
        while _queued_inputs(watcher) < 32 and time.monotonic() < deadline:
            time.sleep(0.01)
        draining.process.send_signal(signal.SIGTERM)  # with work running and queued
        results = [f.result() for f in futures]
    assert draining.process.wait(30) == 0
    assert {status for status, _ in results} <= {200, 503, -1}
    answered = [(i, v) for i, (status, v) in enumerate(results) if status == 200]
    assert len(answered) >= 2, (
        f"fewer than two requests were accepted before the signal: {[s for s, _ in results]}"
    )
    for i, vectors in answered:
        assert _cosines(vectors, np.repeat(expected[i : i + 1], 16, axis=0)).min() >= 0.99999


def test_readiness_turns_503_while_draining(tiny_export: Path) -> None:
    draining = start_server(tiny_export, "--shutdown-timeout", "20")
    try:
        with draining.client() as client, ThreadPoolExecutor(8) as pending:
            # Keep the worker busy, with work queued behind it, so that the drain can be seen;
            # distinct texts, so that the vector cache answers none of them.
            def big(i: int) -> dict:
                return {"inputs": [f"{i}.{k} " + "a long text " * 200 for k in range(64)], "truncate": True}

            jobs = [pending.submit(client.post, "/embed", json=big(i)) for i in range(8)]
            deadline = time.monotonic() + 20
            while (queued := _queued_inputs(client)) < 128 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert queued >= 128, "two requests were never waiting at once"
            draining.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            health = client.get("/health")
            refused = client.post("/embed", json={"inputs": "too late"})
            assert health.status_code == 503 and health.json()["status"] == "draining"
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
            statuses = [job.result().status_code for job in jobs]
        # Accepted requests are answered; the rest were refused at the door, never dropped.
        assert set(statuses) <= {200, 503} and 64 * statuses.count(200) >= queued
    finally:
        assert draining.process.wait(30) == 0


def test_a_500_logs_its_traceback_and_answers_one_line_of_json(overlong_model: Path) -> None:
    failing = start_server(overlong_model, "--log-format", "json")
    try:
        with failing.client() as client:
            broken = client.post("/embed", json={"inputs": "the " * 700, "truncate": True})
            fine = client.post("/embed", json={"inputs": "a short text"})
        assert broken.status_code == 500 and fine.status_code == 200
        error = broken.json()["error"]
        assert error["code"] == "internal" and "\n" not in error["message"]
        assert "Traceback" not in broken.text and "the server's log has the details" in error["message"]
        deadline = time.monotonic() + 10
        while '"status": 500' not in failing.running.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [json.loads(line) for line in failing.running.log_text().splitlines() if line.startswith("{")]
    finally:
        stop_server(failing)
    run_failed = [e for e in lines if e["logger"] == "gist_onnx.batcher" and e["level"] == "error"]
    request_failed = [e for e in lines if e["logger"] == "gist_onnx.serve" and e["level"] == "error"]
    assert run_failed and "Non-zero status code" in run_failed[0]["traceback"]
    assert request_failed and "Traceback" in request_failed[0]["traceback"]
    requests = [e for e in lines if e["logger"] == "gist_onnx.serve.access"]
    assert [(e["route"], e["status"]) for e in requests] == [("/embed", 500), ("/embed", 200)]
    assert requests[1]["inputs"] == 1 and requests[1]["tokens"] > 0
    assert requests[1]["queue_ms"] >= 0 and requests[1]["inference_ms"] > 0


def test_a_text_log_line_per_request(server: Server) -> None:
    with server.client() as client:
        client.post("/v1/embeddings", json={"input": ["one", "two"]})
        client.post("/v1/embeddings", json={"input": []})
    deadline = time.monotonic() + 10
    while "400" not in server.running.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in server.running.log_text().splitlines() if "gist_onnx.serve.access" in line]
    ok = [line for line in lines if "POST /v1/embeddings 200" in line and "inputs=2 " in line]
    assert ok and "tokens=" in ok[-1] and "queue_ms=" in ok[-1] and "inference_ms=" in ok[-1]
    assert any("POST /v1/embeddings 400" in line for line in lines)
    assert not any("uvicorn.access" in line for line in server.running.log_text().splitlines())


def _base64_vectors(client: httpx.Client, texts: list[str]) -> np.ndarray:
    """The server's vectors exactly, as the float32 bytes it sent."""
    response = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
    assert response.status_code == 200, response.text
    return np.stack(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]]
    )


def _metric(client: httpx.Client, name: str) -> float:
    lines = client.get("/metrics").text.splitlines()
    return float(next(line.split()[1] for line in lines if line.startswith(name + " ")))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_cached_vector_is_bit_identical_to_the_computed_one(tiny_export: Path, precision: str) -> None:
    cached = start_server(tiny_export, "--precision", precision)
    uncached = start_server(tiny_export, "--precision", precision, "--cache-mb", "0")
    try:
        with cached.client() as client, uncached.client() as plain:
            alone = _base64_vectors(client, ["the query"])  # computed alone
            inside = _base64_vectors(client, ["first", "the query", "a much longer text " * 30])
            assert np.array_equal(inside[1], alone[0])  # answered from the cache, inside a batch
            mixed = _base64_vectors(client, ["x", "two three four five six", "y"])  # inside a batch
            assert np.array_equal(_base64_vectors(client, ["two three four five six"])[0], mixed[1])
            # 7 tokens (4k + 3): computed again by a server with no cache, in one run beside a text
            # one token longer (docs/serving.md, "Why no batch changes a bit").
            again = _base64_vectors(plain, ["two three four five six seven", "two three four five six"])
            assert np.array_equal(again[1], mixed[1])
            assert _metric(client, "gist_onnx_cache_hits_total") == 2
            assert _metric(client, "gist_onnx_cache_misses_total") == 6
            assert (
                _metric(client, "gist_onnx_cache_entries") == 6
                and _metric(client, "gist_onnx_cache_bytes") > 0
            )
            raw = client.post("/embed", json={"inputs": "the query", "normalize": False}).json()[0]
            assert raw == pytest.approx(
                plain.post("/embed", json={"inputs": "the query", "normalize": False}).json()[0], abs=0
            )  # the raw vector from the cache, normalized per request only
            assert np.array_equal(_base64_vectors(plain, ["the query"]), alone)  # same as no cache
            assert client.get("/info").json()["cache"]["max_bytes"] == 64 * 2**20
            assert client.get("/info").json()["batch_invariant"]  # what makes the cache exact
            assert plain.get("/info").json()["cache"]["max_bytes"] == 0
            assert _metric(plain, "gist_onnx_cache_hits_total") == 0
    finally:
        stop_server(cached)
        stop_server(uncached)


def test_a_cached_text_too_long_for_a_request_that_forbids_truncation_is_still_413(server: Server) -> None:
    long = "truncate me " * 300
    with server.client() as client:
        assert client.post("/embed", json={"inputs": long, "truncate": True}).status_code == 200
        refused = client.post("/embed", json={"inputs": ["fine", long]})
    assert refused.status_code == 413 and "text 1 is longer" in refused.json()["error"]["message"]


def test_a_2048_text_request_while_small_ones_are_answered_first(tiny_export: Path) -> None:
    big_server = start_server(tiny_export, "--max-client-batch", "2048", "--max-queue", "64")
    passages = [f"passage {i} about " + "many things " * (10 + i % 7) for i in range(2048)]
    try:
        with ThreadPoolExecutor(5) as pool, big_server.client(timeout=120) as client:
            big = pool.submit(client.post, "/embed", json={"inputs": passages})
            deadline = time.monotonic() + 30
            while _queued_inputs(client) < 100 and not big.done() and time.monotonic() < deadline:
                time.sleep(0.005)

            def singles(worker: int) -> list[tuple[int, float]]:
                answered = []
                with big_server.client() as own:
                    for i in range(10):
                        response = own.post("/embed", json={"inputs": f"worker {worker} asks question {i}"})
                        answered.append((response.status_code, time.monotonic()))
                return answered

            small = [pool.submit(singles, w) for w in range(4)]
            small_results = [r for f in small for r in f.result()]
            big_response = big.result()
            big_done = time.monotonic()
        assert big_response.status_code == 200 and len(big_response.json()) == 2048
        assert {status for status, _ in small_results} == {200}  # none refused behind the big one
        assert max(at for _, at in small_results) < big_done  # and all answered before it finished
    finally:
        stop_server(big_server)


def test_serve_is_not_imported_by_the_runtime() -> None:
    code = (
        "import sys, gist_onnx, gist_onnx.cli\n"
        "gist_onnx.cli.build_parser()\n"
        "print([m for m in ('starlette', 'uvicorn', 'orjson', 'prometheus_client') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
