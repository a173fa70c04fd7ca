"""The Embedder on committed model folders: vectors, shapes, order, batching, stages, resolution.

Core tier: numpy, tokenizers and onnxruntime only (``python -m pytest -m core``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gist_onnx import Embedder, ModelFolderError, ProviderError, RuntimeInfo, VectorCache
from gist_onnx.manifest import GraphRecord
from gist_onnx.options import MAX_BATCH_TOKENS
from gist_onnx.planning import plan_runs
from gist_onnx.pooling import normalize
from gist_onnx.providers import CPU, CUDA, providers_for
from gist_onnx.session import batch_invariant, token_budget
from gist_onnx.tokenize import batch_invariant_width
from tests.conftest import MODELS, core_reference

pytestmark = pytest.mark.core
TEXTS = [f"sentence {i} " + "about things " * (i % 7) for i in range(37)]


@pytest.fixture(scope="module")
def embedder(core_model: Path) -> Embedder:
    return Embedder(core_model, provider="cpu")


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((normalize(a) * normalize(b)).sum(axis=1).min())


@pytest.mark.parametrize(
    ("name", "precision", "at_least"),
    [("cls", "fp32", 0.99999), ("cls", "int8", 0.98), ("mean", "fp32", 0.99999), ("mean", "int8", 0.98)],
)
def test_vectors_match_sentence_transformers_without_torch(
    name: str, precision: str, at_least: float
) -> None:
    texts, reference = core_reference(name)
    found = Embedder(Path(__file__).parent / "models" / name, precision=precision).encode(texts)
    assert _min_cosine(found, reference) >= at_least
    if precision == "fp32":  # the model's own normalization, or none, as sentence-transformers does
        np.testing.assert_allclose(
            np.linalg.norm(found, axis=1), np.linalg.norm(reference, axis=1), rtol=1e-4
        )


def test_shapes_and_dtype(embedder: Embedder) -> None:
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode("one text").shape == (embedder.dim,)
    assert embedder.encode([]).shape == (0, embedder.dim)
    assert (embedder.dim, embedder.max_seq_length) == (32, 512)
    assert embedder.providers == [CPU]


def test_order_and_batch_size_do_not_change_vectors(embedder: Embedder) -> None:
    alone = np.stack([embedder.encode(t) for t in TEXTS])
    for batch_size in (1, 5, 64):
        np.testing.assert_allclose(embedder.encode(TEXTS, batch_size=batch_size), alone, atol=1e-5)
    reversed_ = embedder.encode(TEXTS[::-1], batch_size=8)[::-1]
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "precision"), [("cls", "fp32"), ("cls", "int8"), ("mean", "fp32"), ("mean", "int8")]
)
def test_a_vector_does_not_depend_on_its_batch_mates_bit_for_bit(name: str, precision: str) -> None:
    """Every length against every run width past it: the cache and the bulk job rely on it."""
    embedder = Embedder(MODELS / name, precision=precision)
    assert embedder.info.batch_invariant  # what the info promises, this test holds it to
    texts = embedder.tokenize(["the " * n for n in range(1, 30)])  # 3 to 31 tokens
    for i, text in enumerate(texts):
        alone = embedder.embed_run([text])[0]
        for longer in texts[i + 1 : i + 6]:  # widths 1 to 5 tokens past its own
            beside = embedder.embed_run([longer, text, texts[0]])[1]
            assert np.array_equal(beside, alone), (len(text.ids), len(longer.ids))


def test_batch_invariance_is_promised_only_where_it_is_tested() -> None:
    def graph(precision: str, activations: str | None = None) -> GraphRecord:
        quantization = {"activations": activations} if activations else None
        return GraphRecord(f"{precision}.onnx", precision, 1, "0" * 64, quantization=quantization)

    assert batch_invariant("cpu", graph("fp32")) and batch_invariant("cpu", graph("int8", "per-token"))
    assert not batch_invariant("cpu", graph("int8", "per-tensor"))  # scales follow the batch
    assert not batch_invariant("cpu", graph("int8", "static")) and not batch_invariant("cpu", graph("fp16"))
    for device in ("openvino", "cuda"):  # kernels chosen by the run's shape
        assert not batch_invariant(device, graph("fp32"))


def test_batch_invariant_width() -> None:
    assert [batch_invariant_width(n, 512) for n in (2, 3, 4, 5, 6, 7, 8, 511, 512)] == [
        2, 4, 4, 5, 6, 8, 8, 512, 512
    ]  # fmt: skip
    assert batch_invariant_width(127, 127) == 127  # never past the model's length


def test_the_width_rule_keeps_runs_within_the_token_budget(core_model: Path, core_mean_model: Path) -> None:
    # Texts of 3 tokens run 4 wide in a first-token graph: a budget of 48 padded tokens holds 12
    # of them, not the 16 that their own length would allow. A mean-pooled graph pads nothing.
    for folder, width in ((core_model, 4), (core_mean_model, 3)):
        embedder = Embedder(folder, max_batch_tokens=48)
        encodings = embedder.tokenize(["a"] * 40)
        assert {len(e.ids) for e in encodings} == {3}
        assert embedder.padded_length(3) == width
        runs = embedder.plan(encodings, batch_size=64)
        assert max(len(run) for run in runs) == 48 // width, folder


def test_encode_iter_streams_in_order(embedder: Embedder) -> None:
    chunks = list(embedder.encode_iter(iter(TEXTS), batch_size=4, chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 10, 7]
    np.testing.assert_allclose(np.concatenate(chunks), embedder.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(embedder.encode(t for t in TEXTS), embedder.encode(TEXTS), atol=1e-6)


def test_unnormalized_output_on_request(embedder: Embedder, core_mean_model: Path) -> None:
    raw = embedder.encode(TEXTS[:3], normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(normalize(raw), embedder.encode(TEXTS[:3]), atol=1e-6)
    mean = Embedder(core_mean_model)  # a model without a Normalize module: raw by default
    assert not mean.info.normalize
    assert not np.allclose(np.linalg.norm(mean.encode(TEXTS[:3]), axis=1), 1.0)
    np.testing.assert_allclose(
        np.linalg.norm(mean.encode(TEXTS[:3], normalize_embeddings=True), axis=1), 1, atol=1e-5
    )


def test_the_stages_compose_into_encode(embedder: Embedder) -> None:
    encodings = embedder.tokenize(TEXTS)
    runs = embedder.plan(encodings, batch_size=8)
    assert sorted(i for run in runs for i in run) == list(range(len(TEXTS)))
    out = np.empty((len(TEXTS), embedder.dim), dtype=np.float32)
    for run in runs:
        out[run] = embedder.embed_run([encodings[i] for i in run])  # pooled, not yet normalized
    np.testing.assert_allclose(normalize(out), embedder.encode(TEXTS, batch_size=8), atol=1e-6)


def test_similarity_is_the_cosine_matrix(embedder: Embedder) -> None:
    a, b = embedder.encode(TEXTS[:3]), embedder.encode(TEXTS[3:5])
    assert embedder.similarity(a, b).shape == (3, 2)
    np.testing.assert_allclose(embedder.similarity(a, a).diagonal(), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.similarity(a, b), a @ b.T, atol=1e-6)


def test_non_str_items_fail_before_any_work(embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="text 2 is NoneType"):
        embedder.encode(["a", "b", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="text 1 is bytes"):
        embedder.encode(["a", b"b"])  # type: ignore[list-item]


def test_truncation_is_reported(embedder: Embedder) -> None:
    assert embedder.truncated(["short", "word " * 600]) == [False, True]


def test_precision_choice(core_model: Path, core_mean_model: Path) -> None:
    assert Embedder(core_model).precision == "fp32"  # auto on the CPU: the faithful graph
    assert Embedder(core_model, precision="int8").precision == "int8"
    assert Embedder(core_model, provider="cpu", precision="fp16").precision == "fp16"  # asked for
    with pytest.raises(ModelFolderError, match="has no fp16 graph"):
        Embedder(core_mean_model, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        Embedder(core_model, precision="int4")


def test_info_holds_what_was_resolved(embedder: Embedder, core_model: Path) -> None:
    info = embedder.info
    assert isinstance(info, RuntimeInfo)
    assert (info.device, info.providers, info.precision) == ("cpu", (CPU,), "fp32")
    assert (info.pooling, info.normalize, info.dim, info.max_seq_length) == ("cls", True, 32, 512)
    assert info.max_batch_tokens == MAX_BATCH_TOKENS["cpu"] and info.int8_mismatch is None
    assert info.normalizes() and not info.normalizes(False)
    assert info.to_dict()["providers"] == [CPU] and info.to_dict()["model_dir"] == str(core_model)
    with pytest.raises(AttributeError):
        info.precision = "int8"  # type: ignore[misc]  # frozen: resolved once


def test_provider_resolution() -> None:
    assert providers_for("auto", [CPU]) == [CPU]
    assert providers_for("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert providers_for("cpu", [CUDA, CPU]) == [CPU]
    assert providers_for("cuda", [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(ProviderError, match="onnxruntime-gpu is not installed"):
        providers_for("cuda", [CPU])
    with pytest.raises(ProviderError, match="provider must be one of"):
        providers_for("tpu", [CPU])


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="needs a CPU-only onnxruntime")
def test_cuda_on_a_cpu_only_build_names_the_available_providers(core_model: Path) -> None:
    # The list names whatever this build offers (a registered OpenVINO plugin adds its own after
    # the CPU's), so the message is checked for the CPU provider and the fix, not for the order.
    offered = r"offers only \[[^]]*'CPUExecutionProvider'[^]]*\]\. .*gist-onnx\[gpu\]"
    with pytest.raises(ProviderError, match=offered):
        Embedder(core_model, provider="cuda")


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="needs a CPU-only onnxruntime")
def test_cuda_offered_but_not_starting_loads_the_cpu_graph(
    core_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ONNX Runtime is made to offer CUDA; the CPU-only build then starts the session on the CPU,
    # as onnxruntime-gpu does when the CUDA libraries are missing.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.warns(RuntimeWarning, match="offered but did not start"):
        fallen_back = Embedder(core_model, provider="auto")
    info = fallen_back.info
    assert (info.device, info.providers, info.precision) == ("cpu", (CPU,), "fp32")  # not fp16
    assert info.max_batch_tokens == MAX_BATCH_TOKENS["cpu"]
    np.testing.assert_allclose(fallen_back.encode(TEXTS), Embedder(core_model, provider="cpu").encode(TEXTS))
    with pytest.raises(ProviderError, match="provider='cuda' was asked for, but the session runs on"):
        Embedder(core_model, provider="cuda")


def test_token_budget_depends_on_the_device() -> None:
    assert token_budget("auto", "cpu") == MAX_BATCH_TOKENS["cpu"]
    assert token_budget("auto", "cuda") == MAX_BATCH_TOKENS["cuda"]  # a GPU wants far larger runs
    assert token_budget("auto", "openvino") == MAX_BATCH_TOKENS["openvino"] > MAX_BATCH_TOKENS["cpu"]
    assert token_budget(None, "cpu") is None
    assert token_budget(300, "cuda") == 300
    for bad in (0, -5, "512", 2.5, True):
        with pytest.raises(ValueError, match="max_batch_tokens"):
            token_budget(bad, "cpu")  # type: ignore[arg-type]


def test_plan_runs_sorts_and_cuts_once() -> None:
    lengths = [302, 3, 102, 202, 52, 12, 7, 2]
    runs = plan_runs(lengths, batch_size=4, budget=256)
    assert runs == [[0], [3], [2, 4], [5, 6, 1, 7]]  # 302 alone (over budget), 202, 102+52, the rest
    assert plan_runs(lengths, batch_size=None, budget=None) == [[0, 3, 2, 4, 5, 6, 1, 7]]
    assert plan_runs([5, 5, 5], batch_size=2, budget=None) == [[0, 1], [2]]  # ties keep their order
    assert plan_runs([], batch_size=2, budget=10) == []


def test_token_budget_splits_runs_without_changing_vectors(core_model: Path) -> None:
    texts = ["the " * n for n in (300, 200, 100, 50, 10, 5, 1, 0)]  # n + 2 tokens each
    capped = Embedder(core_model, max_batch_tokens=256)
    runs = capped.plan(capped.tokenize(texts), batch_size=4)
    assert [len(run) for run in runs] == [1, 1, 2, 4]
    uncapped = Embedder(core_model, max_batch_tokens=None)
    assert uncapped.plan(uncapped.tokenize(texts), batch_size=4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    np.testing.assert_allclose(
        capped.encode(texts, batch_size=4), uncapped.encode(texts, batch_size=4), atol=1e-5
    )


def test_encode_with_a_cache_returns_the_very_vectors_computed_before(
    embedder: Embedder, core_model: Path
) -> None:
    cache = VectorCache(max_bytes=2**20)
    first = embedder.encode(TEXTS[:5], cache=cache)
    again = embedder.encode([TEXTS[3], "something new", TEXTS[0]], cache=cache)
    assert np.array_equal(again[0], first[3]) and np.array_equal(again[2], first[0])
    np.testing.assert_allclose(again[1], embedder.encode("something new"), atol=1e-6)
    raw = embedder.encode(
        TEXTS[:2], normalize_embeddings=False, cache=cache
    )  # stored raw, normalized per call
    np.testing.assert_allclose(normalize(raw), first[:2], atol=1e-7)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (4, 6, 6)
    with pytest.raises(ValueError, match="one cache per model and precision"):
        Embedder(core_model, precision="int8").encode("x", cache=cache)


def test_the_cache_stays_within_its_bytes(embedder: Embedder) -> None:
    one = embedder.dim * 4 + 400  # a vector, its text and the bookkeeping, roughly
    cache = VectorCache(max_bytes=3 * one)
    embedder.encode([f"text {i}" for i in range(10)], cache=cache)
    stats = cache.stats()
    assert stats.bytes <= 3 * one and stats.entries == 3 and stats.evictions == 7
    embedder.encode(["text 9"], cache=cache)  # the most recent survived
    assert cache.stats().hits == 1
    assert VectorCache(0).stats().max_bytes == 0
    off = VectorCache(0)
    embedder.encode(["a", "b"], cache=off)
    assert off.stats().entries == 0
