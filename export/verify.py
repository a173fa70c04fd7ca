"""Verification, part of every export: the runtime's vectors against sentence-transformers'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gist_onnx.errors import ExportError
from gist_onnx.pooling import normalize

# The one place the acceptance thresholds live: min cosine to PyTorch fp32 on the probe set, by graph.
# Both int8 graphs are held alike: static int8, its residual projections in float, kept 0.997 on the
# probes at worst on all-MiniLM-L6-v2 (per-token 0.988; every GEMM static int8 kept 0.978-0.982).
MIN_COSINE = {"fp32": 0.99999, "int8": 0.98, "fp16": 0.999, "int8-openvino": 0.98}

PROBES = [
    "",
    "   ",
    "Hello, world!",
    "How to bake a chocolate cake?",
    "Texts and queries are encoded as they are, with no instruction prefix.",
    "Café crème, naïve résumé, Straße — déjà vu.",
    "機械学習は楽しいです。中文文本也可以嵌入。",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "Emoji 🚀🔥 and symbols ∑ ∫ √ ≠ ±.",
    "UPPER case and lower case should match in an uncased model.",
    "\tTabs,\nnewlines\r\nand  double  spaces.",
    # Longer than any BERT's 512 tokens: exercises truncation on both sides.
    " ".join(f"Sentence number {i} talks about embeddings, ONNX and latency." for i in range(90)),
]


class VerificationError(ExportError):
    """The exported graph's vectors are too far from sentence-transformers'."""


@dataclass(frozen=True)
class Agreement:
    """How close one graph's vectors are to the reference, over the probe set."""

    max_abs_diff: float
    min_cosine: float
    mean_cosine: float


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Max abs difference and min/mean row cosine between two (n, dim) arrays."""
    cosines = (normalize(reference) * normalize(candidate)).sum(axis=1)
    return Agreement(
        max_abs_diff=float(np.abs(reference - candidate).max()),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
    )


def reference_vectors(model_dir: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers on torch fp32, the model card's way."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return model.encode(texts, batch_size=len(texts), convert_to_numpy=True).astype(np.float32)


def verify(
    export_dir: Path,
    reference: np.ndarray,
    graphs: list[str],
    min_cosine: dict[str, float],
) -> dict[str, dict[str, float]]:
    """Encode the probes through the runtime for each graph; raise if any is below threshold.

    Every graph runs on ONNX Runtime's CPU provider, which every machine has; "int8-openvino",
    made for OpenVINO, computes the same int8 arithmetic there. Every graph is checked before
    raising, so one error reports all failures.
    """
    from gist_onnx import Embedder

    results: dict[str, dict[str, float]] = {}
    failures = []
    for graph in graphs:
        # One batch with every probe: padding and truncation are exercised together.
        embedder = Embedder(export_dir, provider="cpu", graph=graph)
        found = agreement(reference, embedder.encode(PROBES, batch_size=len(PROBES)))
        results[graph] = {**found.__dict__, "threshold": min_cosine[graph]}
        if found.min_cosine < min_cosine[graph]:
            failures.append(
                f"{graph}: min cosine {found.min_cosine:.6f} < {min_cosine[graph]} "
                f"(max abs diff {found.max_abs_diff:.2e})"
            )
    if failures:
        raise VerificationError(
            "the exported model does not reproduce sentence-transformers: " + "; ".join(failures)
        )
    return results
