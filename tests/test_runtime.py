"""The Embedder on a real exported graph: shapes, order, batching, types and providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gist_onnx import Embedder, ModelFolderError, ProviderError
from gist_onnx.embedder import CPU_MAX_BATCH_TOKENS, CUDA_MAX_BATCH_TOKENS, length_runs, token_cap
from gist_onnx.providers import CPU, CUDA, providers_for

TEXTS = [f"sentence {i} " + "about things " * (i % 7) for i in range(37)]


@pytest.fixture(scope="module")
def embedder(tiny_export: Path) -> Embedder:
    return Embedder(tiny_export, provider="cpu")


def test_shapes_and_dtype(embedder: Embedder) -> None:
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode("one text").shape == (embedder.dim,)
    assert embedder.encode([]).shape == (0, embedder.dim)
    assert (embedder.dim, embedder.max_seq_length) == (64, 512)
    assert embedder.providers == [CPU]


def test_order_and_batch_size_do_not_change_vectors(embedder: Embedder) -> None:
    alone = np.stack([embedder.encode(t) for t in TEXTS])
    for batch_size in (1, 5, 64):
        np.testing.assert_allclose(embedder.encode(TEXTS, batch_size=batch_size), alone, atol=1e-5)
    reversed_ = embedder.encode(TEXTS[::-1], batch_size=8)[::-1]
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)


def test_encode_iter_streams_in_order(embedder: Embedder) -> None:
    chunks = list(embedder.encode_iter(iter(TEXTS), batch_size=4, chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 10, 7]
    np.testing.assert_allclose(np.concatenate(chunks), embedder.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(embedder.encode(t for t in TEXTS), embedder.encode(TEXTS), atol=1e-6)


def test_unnormalized_output_on_request(embedder: Embedder) -> None:
    raw = embedder.encode(TEXTS[:3], normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), embedder.encode(TEXTS[:3]), atol=1e-6
    )


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


def test_precision_choice(tiny_export: Path) -> None:
    assert Embedder(tiny_export).precision == "fp32"  # auto: the faithful graph on CPU
    assert Embedder(tiny_export, precision="int8").precision == "int8"
    with pytest.raises(ModelFolderError, match="has no fp16 graph"):
        Embedder(tiny_export, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        Embedder(tiny_export, precision="int4")


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
def test_cuda_on_a_cpu_only_build_names_the_available_providers(tiny_export: Path) -> None:
    with pytest.raises(ProviderError, match=r"offers only \['.*CPUExecutionProvider'\]"):
        Embedder(tiny_export, provider="cuda")


def test_token_cap_depends_on_the_device(tiny_export: Path) -> None:
    assert Embedder(tiny_export).max_batch_tokens == CPU_MAX_BATCH_TOKENS
    assert token_cap("auto", on_cuda=True) == CUDA_MAX_BATCH_TOKENS  # a GPU wants far larger runs
    assert token_cap(None, on_cuda=False) is None
    assert token_cap(300, on_cuda=True) == 300
    for bad in (0, -5, "512", 2.5):
        with pytest.raises(ValueError, match="max_batch_tokens"):
            token_cap(bad, on_cuda=False)


def test_token_budget_splits_batches_without_changing_vectors(tiny_export: Path) -> None:
    texts = ["word " * n for n in (300, 200, 100, 50, 10, 5, 1, 0)]
    capped = Embedder(tiny_export, max_batch_tokens=256)
    lengths = [len(e.ids) for e in capped._tokenizer.encode(texts)]
    batches = list(length_runs(list(range(len(texts))), lengths, 4, capped.max_batch_tokens))
    assert [len(b) for b in batches] == [1, 1, 2, 4]  # 302 alone (over budget), 202, 102+52, the rest
    assert all(len(b) * lengths[b[0]] <= 256 or len(b) == 1 for b in batches)
    uncapped = Embedder(tiny_export, max_batch_tokens=None)
    np.testing.assert_allclose(
        capped.encode(texts, batch_size=4), uncapped.encode(texts, batch_size=4), atol=1e-5
    )
