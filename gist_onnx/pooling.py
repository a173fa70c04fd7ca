"""Pure functions that turn token states into one unit vector per text."""

from __future__ import annotations

import numpy as np

# sentence-transformers' Normalize module clamps the norm at 1e-12 (torch's F.normalize default).
NORM_EPS = 1e-12


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool (batch, seq, dim) token states into (batch, dim), ignoring padding.

    ``mode`` is one of "cls" (first token; GIST's), "mean" or "max" over real tokens. For "cls"
    the states may be the first token's alone (batch, 1, dim), as a graph that computes only it
    returns them.
    """
    batch, seq = attention_mask.shape
    if mode == "cls" and hidden.ndim == 3 and hidden.shape[0] == batch and 1 <= hidden.shape[1] <= seq:
        return hidden[:, 0, :]
    if hidden.ndim != 3 or hidden.shape[:2] != attention_mask.shape:
        raise ValueError(
            f"expected token states (batch, seq, dim) matching the mask {attention_mask.shape}, "
            f"got {hidden.shape}"
        )
    mask = attention_mask[:, :, None].astype(hidden.dtype)
    if mode == "mean":
        counts = np.maximum(mask.sum(axis=1), 1e-9)
        return (hidden * mask).sum(axis=1) / counts
    if mode == "max":
        # Padding must never win the max, whatever sign the real states have.
        return np.where(mask > 0, hidden, np.finfo(hidden.dtype).min).max(axis=1)
    raise ValueError(f"unknown pooling mode {mode!r}; expected cls, mean or max")


def normalize(vectors: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Scale each row to unit L2 norm; a zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)
