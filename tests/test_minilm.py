"""The real all-MiniLM-L6-v2 on real STS-B pairs: parity and quality against sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the export extra is not installed")
from benchmarks.corpus import StsPairs, stsb_spearman  # noqa: E402
from gist_onnx import Embedder  # noqa: E402
from gist_onnx.export.verify import agreement  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def torch_model(minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def reference(torch_model, stsb: StsPairs) -> np.ndarray:
    return torch_model.encode(stsb.sentences(), batch_size=64, convert_to_numpy=True)


@pytest.fixture(scope="module")
def torch_spearman(reference: np.ndarray, stsb: StsPairs) -> float:
    return stsb_spearman(stsb, reference)


def test_manifest_reads_minilm_as_mean_pooled(minilm_export: Path) -> None:
    embedder = Embedder(minilm_export)
    assert (embedder.manifest.pooling, embedder.manifest.normalize) == ("mean", True)
    assert embedder.manifest.output_tokens == "all"  # mean pooling reads every token
    assert (embedder.dim, embedder.max_seq_length) == (384, 256)
    verification = embedder.manifest.verification
    assert verification["thresholds_overridden"] == {}
    assert verification["results"]["fp32"]["min_cosine"] >= 0.99999


@pytest.mark.parametrize(
    ("precision", "min_cosine", "mean_cosine", "spearman_tolerance"),
    # int8 bounds hold with 7-bit weights too (AVX2 preset: min 0.986, mean 0.998, drop 0.05).
    [("fp32", 0.99999, 0.99999, 0.05), ("int8", 0.98, 0.995, 0.3)],
)
def test_vectors_and_stsb_quality_against_pytorch(
    minilm_export: Path, stsb: StsPairs, reference: np.ndarray, torch_spearman: float,
    precision: str, min_cosine: float, mean_cosine: float, spearman_tolerance: float,
) -> None:  # fmt: skip
    vectors = Embedder(minilm_export, precision=precision).encode(stsb.sentences(), batch_size=64)
    found, spearman = agreement(reference, vectors), stsb_spearman(stsb, vectors)
    print(
        f"\nMiniLM {precision}: min cosine {found.min_cosine:.7f} (mean {found.mean_cosine:.7f}), "
        f"STS-B Spearman x100 {spearman:.2f} (PyTorch {torch_spearman:.2f})"
    )
    assert found.min_cosine >= min_cosine and found.mean_cosine >= mean_cosine
    assert abs(spearman - torch_spearman) <= spearman_tolerance


def test_int8_vectors_do_not_depend_on_batch_mates(minilm_export: Path, stsb: StsPairs) -> None:
    # With one activation scale per batch tensor (--int8-scales per-tensor) this measured min 0.989.
    texts = stsb.sentences()[:96]
    int8 = Embedder(minilm_export, precision="int8")
    alone = np.concatenate([int8.encode([text]) for text in texts])
    assert agreement(alone, int8.encode(texts, batch_size=32)).min_cosine >= 0.99999
