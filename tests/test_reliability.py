"""Hard inputs, streaming, threads, processes and memory: never a crash, never a wrong vector."""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gist_onnx import Embedder

pytestmark = pytest.mark.core

HARD_TEXTS = {
    "empty": "",
    "blank": " \t\n ",
    "nul": "before\x00after",
    "controls": "".join(chr(c) for c in range(1, 32)),
    "emoji": "🚀🔥👩‍👩‍👧‍👦🏳️‍🌈",
    "rtl": "שלום עולם مرحبا بالعالم",
    "combining": "e\u0301a\u0300o\u0308" * 20 + "\u0301\u0301\u0301",
    "zero-width": "a\u200bb\u200cc\u200dd\ufeff",
    "huge": "lorem ipsum dolor sit amet " * 4000,  # ~100 KB
    "private-use": "\ue000\uf8ff\U000f0000",
}


@pytest.fixture(scope="module")
def embedder(core_model: Path) -> Embedder:
    return Embedder(core_model, provider="cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_hard_texts_give_finite_unit_vectors_that_do_not_depend_on_batch_mates(embedder: Embedder) -> None:
    texts = list(HARD_TEXTS.values())
    together = embedder.encode(texts, batch_size=len(texts))
    assert together.shape == (len(texts), embedder.dim) and np.isfinite(together).all()
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.stack([embedder.encode(text) for text in texts])
    assert _cosines(alone, together).min() >= 0.99999
    assert embedder.truncated(texts) == [name == "huge" for name in HARD_TEXTS]


def test_lone_surrogate_is_a_clear_error_naming_the_index(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="text 1 cannot be tokenized"):
        embedder.encode(["fine", "bad \ud800 surrogate", "fine"])
    assert embedder.encode(["still fine"]).shape == (1, embedder.dim)  # the embedder is unharmed


def test_non_str_in_a_stream_is_named_by_its_position(embedder: Embedder) -> None:
    stream = itertools.chain(("text" for _ in range(10)), [42])
    with pytest.raises(TypeError, match="text 10 is int"):
        list(embedder.encode_iter(stream, chunk_size=4))


def test_a_million_texts_stream_lazily(embedder: Embedder) -> None:
    consumed = 0

    def million():
        nonlocal consumed
        for i in range(1_000_000):
            consumed += 1
            yield f"text {i}"

    chunks = embedder.encode_iter(million(), chunk_size=1000)
    first = [next(chunks) for _ in range(3)]
    assert [c.shape for c in first] == [(1000, embedder.dim)] * 3
    assert consumed <= 3000  # only what was asked for was read: memory is bounded by a chunk


def test_int8_vectors_do_not_depend_on_batch_mates(core_model: Path) -> None:
    # Per-token activation scales: a text's int8 vector is the same alone and in a padded batch
    # with very different texts. (A tiny random model has no outlier activations, so one scale
    # per tensor passes here too; test_minilm checks the real model, where it does not.)
    int8 = Embedder(core_model, precision="int8")
    texts = ["a short one", "word " * 400, "🚀 " * 50, "Another, medium-length sentence about nothing."]
    alone = np.stack([int8.encode(t) for t in texts])
    assert _cosines(alone, int8.encode(texts, batch_size=4)).min() >= 0.99999


def test_eight_threads_share_one_embedder(embedder: Embedder) -> None:
    texts = [f"thread test {i} " + "x " * (i % 50) for i in range(64)]
    serial = embedder.encode(texts, batch_size=8)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda i: embedder.encode(texts[i::8], batch_size=3), range(8)))
    threaded = np.empty_like(serial)
    for i, part in enumerate(parts):
        threaded[i::8] = part
    np.testing.assert_allclose(threaded, serial, atol=1e-5)


def _embed_in_child(folder: str, queue: multiprocessing.Queue) -> None:
    queue.put(Embedder(folder).encode(["from a child process"]))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_worker_processes_build_their_own_embedder(core_model: Path, embedder: Embedder, method: str) -> None:
    embedder.encode(["the parent has used its tokenizer's thread pool"] * 64)
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_embed_in_child, args=(str(core_model), queue))
    child.start()
    vector = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_allclose(vector[0], embedder.encode("from a child process"), atol=1e-5)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow  # 10,000 runs
def test_ten_thousand_batches_of_varying_length_keep_memory_bounded(core_model: Path) -> None:
    embedder = Embedder(core_model, provider="cpu")
    rng = np.random.default_rng(0)
    # Texts of 2 to ~300 tokens; batches of 1 to 3 of them, so batches keep changing shape.
    pool = [" ".join(["alpha beta gamma"] * int(n)) for n in rng.integers(0, 100, size=256)]

    def batch() -> list[str]:
        return [pool[i] for i in rng.integers(0, len(pool), size=rng.integers(1, 4))]

    for _ in range(500):  # let the allocator reach its working size
        embedder.encode(batch(), batch_size=4)
    settled = _rss_mib()
    for _ in range(9500):
        embedder.encode(batch(), batch_size=4)
    grown = _rss_mib() - settled
    print(f"\nRSS after 500 batches {settled:.0f} MiB, grew {grown:.1f} MiB over 9,500 more")
    assert grown < 40
