"""The real all-MiniLM-L6-v2 on real STS-B pairs: parity and quality against sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.data import StsPairs, stsb_spearman
from export.verify import agreement
from gist_onnx import Embedder

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
    assert (embedder.dim, embedder.max_seq_length) == (384, 256)


def test_fp32_matches_pytorch_on_every_stsb_sentence(
    minilm_export: Path, stsb: StsPairs, reference: np.ndarray, torch_spearman: float
) -> None:
    embedder = Embedder(minilm_export, precision="fp32")
    vectors = embedder.encode(stsb.sentences(), batch_size=64)
    found, spearman = agreement(reference, vectors), stsb_spearman(stsb, vectors)
    print(f"\nMiniLM fp32: min cosine {found.min_cosine:.7f}, STS-B Spearman {spearman:.2f} (PyTorch {torch_spearman:.2f})")
    assert found.min_cosine >= 0.99999
    assert abs(spearman - torch_spearman) <= 0.05


def test_int8_keeps_stsb_quality(minilm_export: Path, stsb: StsPairs, reference: np.ndarray, torch_spearman: float) -> None:
    embedder = Embedder(minilm_export, precision="int8")
    vectors = embedder.encode(stsb.sentences(), batch_size=64)
    found, spearman = agreement(reference, vectors), stsb_spearman(stsb, vectors)
    print(f"\nMiniLM int8: min cosine {found.min_cosine:.4f} (mean {found.mean_cosine:.4f}), STS-B Spearman {spearman:.2f} (PyTorch {torch_spearman:.2f})")
    assert found.mean_cosine >= 0.99
    assert abs(spearman - torch_spearman) <= 0.5
