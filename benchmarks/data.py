"""Real, human-labelled text from ../shared/data: STS-B pairs for quality, and corpora for speed."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import numpy as np

from gist_onnx.pooling import normalize

STSB_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "stsb-train.tsv"


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with their human similarity score (0 to 5)."""

    first: list[str]
    second: list[str]
    scores: np.ndarray

    def head(self, n: int | None) -> StsPairs:
        """The first ``n`` pairs (all of them for None)."""
        return self if n is None else StsPairs(self.first[:n], self.second[:n], self.scores[:n])

    def sentences(self) -> list[str]:
        """Every distinct sentence, in first-seen order: the short-text corpus."""
        return list(dict.fromkeys(self.first + self.second))


def load_stsb(path: Path = STSB_PATH) -> StsPairs:
    """Read the GLUE-layout STS-B TSV (sentence1, sentence2 and score in columns 8-10)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the shared data folder sits beside the checkout")
    first, second, scores = [], [], []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            first.append(row[7])
            second.append(row[8])
            scores.append(float(row[9]))
    return StsPairs(first, second, np.asarray(scores))


def stsb_spearman(pairs: StsPairs, vectors: np.ndarray) -> float:
    """Spearman correlation x100 between the pairs' cosine similarity and the human scores.

    ``vectors`` holds one row per text of ``pairs.sentences()``, in that order.
    """
    from scipy.stats import spearmanr

    index = {text: row for row, text in enumerate(pairs.sentences())}
    unit = normalize(vectors)
    a = unit[[index[t] for t in pairs.first]]
    b = unit[[index[t] for t in pairs.second]]
    return float(spearmanr((a * b).sum(axis=1), pairs.scores).statistic * 100)


def passages(
    sentences: list[str], count_tokens: Callable[[list[str]], list[int]], budget: int, n: int
) -> list[str]:
    """Join consecutive sentences into ``n`` passages of at most ``budget`` tokens each.

    The sentences are reused from the start if they run out.
    """
    if not sentences:
        raise ValueError("no sentences to build passages from")
    out: list[str] = []
    current: list[str] = []
    used = 0
    for sentence, length in cycle(zip(sentences, count_tokens(sentences))):
        if current and used + length > budget:
            out.append(" ".join(current))
            if len(out) == n:
                return out
            current, used = [], 0
        current.append(sentence)
        used += length
    raise AssertionError("unreachable: cycle() never ends")
