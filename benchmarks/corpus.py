"""Real, human-labelled text: STS-B pairs for quality, and the texts every speed figure embeds.

The STS-B file ships in ``benchmarks/data/stsb`` with its licence; ``GIST_ONNX_STSB`` or a
script's ``--stsb`` flag names another copy.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import numpy as np

from gist_onnx.pooling import normalize

STSB_PATH = Path(__file__).resolve().parent / "data" / "stsb" / "stsb-train.tsv"


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


def load_stsb(path: Path | None = None) -> StsPairs:
    """Read the GLUE-layout STS-B TSV (sentence1, sentence2 and score in columns 8-10).

    ``path`` defaults to ``GIST_ONNX_STSB`` if set, else the copy inside the repository.
    """
    path = path or Path(os.environ.get("GIST_ONNX_STSB") or STSB_PATH)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: it ships in benchmarks/data/stsb/; is the checkout complete?"
        )
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


@dataclass(frozen=True)
class Workload:
    """A set of texts to embed: how many, how long, and at which batch sizes."""

    texts: int
    token_budget: int | None  # None: single STS-B sentences; else sentences joined up to this
    batch_sizes: tuple[int, ...]


def workload_texts(
    workloads: dict[str, Workload], sentences: list[str], tokenizer_path: Path
) -> dict[str, list[str]]:
    """Each workload's texts: STS-B sentences in a fixed shuffle, joined into passages where asked."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    shuffled = fixed_shuffle(sentences)
    texts = {}
    for name, workload in workloads.items():
        if workload.token_budget is None:
            texts[name] = shuffled[: workload.texts]
        else:
            texts[name] = passages(shuffled, count, workload.token_budget, workload.texts)
    return texts


def fixed_shuffle(sentences: list[str]) -> list[str]:
    """The same permutation every run: every genre of STS-B, not just the first file's captions."""
    order = np.random.default_rng(0).permutation(len(sentences))
    return [sentences[i] for i in order]


def token_lengths(texts: list[str], tokenizer_path: Path, max_len: int) -> list[int]:
    """Real tokens per text as the model sees them: special tokens in, truncated."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_len)
    return [len(e.ids) for e in tokenizer.encode_batch(texts)]
