"""The runtime: texts → tokens → planned session runs → pooled, normalized vectors.

Each stage is public, so the server's worker and the bulk job compose the same ones ``encode``
does: ``tokenize`` → ``plan`` (gist_onnx.planning) → ``embed_run`` (one session run, pooled) →
``normalize`` (gist_onnx.pooling).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding

from gist_onnx.cache import Cached, VectorCache, stack
from gist_onnx.errors import ModelFolderError
from gist_onnx.manifest import check_file, read_manifest
from gist_onnx.planning import plan_runs
from gist_onnx.pooling import normalize, pool
from gist_onnx.progress import Progress
from gist_onnx.session import RuntimeInfo, TokenBudget, open_session, resolve
from gist_onnx.tokenize import TextTokenizer, batch_invariant_width

# Texts are sorted by length within a chunk of this many, so batches pad little; a chunk is
# also the unit of streaming, which bounds memory for iterators of any length.
DEFAULT_CHUNK_SIZE = 8192


def check_texts(texts: Sequence[object], offset: int = 0) -> None:
    """TypeError naming the first item that is not a str (its index counted from ``offset``)."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"text {offset + index} is {type(text).__name__}, not str; "
                "every item passed to encode must be a str"
            )


class Embedder:
    """Embeds texts with a model folder written by ``gist-onnx export``.

    Args:
        model_dir: the exported folder (it holds ``manifest.json``).
        provider: "auto" (CUDA when it really starts, else CPU), "cpu", "cuda" or "openvino".
        precision: "auto" (fp16 on CUDA when exported, bf16 under OpenVINO on CPUs with AMX,
            else fp32), "fp32", "int8", "fp16" or "bf16". The graph is chosen for the device
            the session really got: int8 under OpenVINO runs the folder's "int8-openvino" graph.
        threads: ONNX Runtime intra-op threads; None lets it use one per physical core.
        verify_checksums: hash every file at load; False skips only the sha256 (sizes are still
            checked) for cold-start-critical services.
        io_binding: run through ONNX Runtime's I/O binding, inputs copied to the session's device
            explicitly and the output allocated there; None turns it on for CUDA only.
        max_batch_tokens: cap on the padded tokens of one session run; batches of long texts are
            split below ``batch_size``. "auto" takes the device's cap (options.MAX_BATCH_TOKENS);
            None never caps.
        session_options: ONNX Runtime's options for the session (profiling, logging, ...);
            ``threads``, when given, sets their intra-op thread count.
        graph: a graph of the manifest by name ("int8-openvino", ...), run on ``provider`` instead
            of the one ``precision`` chooses for the device (export verification checks every
            graph on the CPU provider this way).

    ``info`` says what was resolved: device, precision, token budget, pooling, normalization. An
    int8 graph whose weights this CPU cannot multiply exactly (8-bit weights without VNNI) loads
    with a RuntimeWarning, and ``info.int8_mismatch`` keeps its text.
    """

    def __init__(
        self,
        model_dir: str | Path,
        provider: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        verify_checksums: bool = True,
        io_binding: bool | None = None,
        max_batch_tokens: TokenBudget = "auto",
        session_options: ort.SessionOptions | None = None,
        graph: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self._tokenizer = self._load_tokenizer(verify_checksums)
        options = session_options or ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self._session, precision, device, graph = open_session(
            self.model_dir, self.manifest, provider, precision, options, verify_checksums, graph
        )
        self.info: RuntimeInfo = resolve(
            self.model_dir, self.manifest, self._session, precision, device, graph, max_batch_tokens
        )
        self._input_names = [i.name for i in self._session.get_inputs()]
        # A first-token graph's last layer runs a one-row product whose rounding would follow the
        # run's width: its runs are padded to a width that rounds alike for every text.
        self._first_token = self.manifest.output_tokens == "first"
        self._io_binding = device == "cuda" if io_binding is None else io_binding
        if self.info.int8_mismatch:
            path = self.model_dir / self.manifest.graphs[graph].file
            warnings.warn(f"{path}: {self.info.int8_mismatch}", RuntimeWarning, stacklevel=2)

    def _load_tokenizer(self, checksum: bool) -> TextTokenizer:
        path = check_file(self.model_dir, self.manifest.tokenizer, checksum=checksum)
        tokenizer = TextTokenizer(path, self.manifest.max_seq_length)
        if tokenizer.vocab_size > self.manifest.vocab_size:
            # Ids past the embedding table would fail (or read garbage) at the first encode.
            raise ModelFolderError(
                path,
                f"has {tokenizer.vocab_size} tokens but the graph embeds only "
                f"{self.manifest.vocab_size}: the tokenizer belongs to another model",
            )
        return tokenizer

    @property
    def dim(self) -> int:
        """Length of each embedding."""
        return self.info.dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated."""
        return self.info.max_seq_length

    @property
    def precision(self) -> str:
        """The precision of the graph the session runs."""
        return self.info.precision

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really runs on, in order."""
        return list(self.info.providers)

    # -- the stages ---------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Stage 1: tokenize as ``encode`` does (truncated to ``max_seq_length``); a non-str item
        or a text that cannot be encoded is named by its index."""
        check_texts(texts)
        return self._tokenize(texts)

    def plan(self, encodings: Sequence[Encoding], batch_size: int | None = None) -> list[list[int]]:
        """Stage 2: the session runs for these texts, longest first, within ``batch_size`` texts
        and the resolved token budget per run (gist_onnx.planning.plan_runs)."""
        lengths = [self.padded_length(len(e.ids)) for e in encodings]
        return plan_runs(lengths, batch_size, self.info.max_batch_tokens)

    def padded_length(self, tokens: int) -> int:
        """The width a text of ``tokens`` tokens takes in a run: one more where the first-token
        rule pads it (gist_onnx.tokenize.batch_invariant_width). Never smaller for a longer text,
        so a run's width is its longest text's: what planners count against the token budget."""
        return batch_invariant_width(tokens, self.max_seq_length) if self._first_token else tokens

    def embed_run(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """Stage 3: one session run over these texts, as given: pooled (n, dim) float32 vectors,
        not normalized."""
        feeds = self._tokenizer.pad(encodings, self._input_names, batch_invariant=self._first_token)
        hidden = self._run(feeds)
        tokens = 1 if self._first_token else feeds["input_ids"].shape[1]
        if hidden.shape[1:] != (tokens, self.dim):
            raise RuntimeError(f"the graph returned {hidden.shape}, expected (batch, {tokens}, {self.dim})")
        return pool(hidden, feeds["attention_mask"], self.info.pooling)

    def embed_tokens(
        self, encodings: Sequence[Encoding], batch_size: int = 32, normalize_embeddings: bool | None = None
    ) -> np.ndarray:
        """Stages 2-4 over texts ``tokenize`` made: (len(encodings), dim) float32, in their order."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for rows in self.plan(encodings, batch_size):
            out[rows] = self.embed_run([encodings[i] for i in rows])
        return normalize(out) if self.info.normalizes(normalize_embeddings) else out

    # -- sentence-transformers' interface ------------------------------------------------------------

    def encode(
        self,
        sentences: str | Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        show_progress_bar: bool = False,
        cache: VectorCache | None = None,
    ) -> np.ndarray:
        """Embed texts into a float32 array of shape (n, dim); a single str gives shape (dim,).

        ``normalize_embeddings=None`` follows the model's sentence-transformers config (GIST
        normalizes); True or False overrides it. With a ``cache`` (gist_onnx.VectorCache), texts
        it holds are not computed again, and their vectors are the very ones computed before.
        """
        if isinstance(sentences, str):
            return self.encode([sentences], batch_size, normalize_embeddings, cache=cache)[0]
        if cache is not None:
            return self._encode_cached(list(sentences), batch_size, normalize_embeddings, cache)
        total = None
        if isinstance(sentences, Sequence):
            check_texts(sentences)  # a bad item fails before any work is done
            total = len(sentences)
        progress = Progress("embedding", total, enabled=show_progress_bar)
        chunks = []
        for chunk in self.encode_iter(sentences, batch_size, normalize_embeddings):
            chunks.append(chunk)
            progress.update(len(chunk))
        progress.close()
        return np.concatenate(chunks) if chunks else np.empty((0, self.dim), dtype=np.float32)

    def encode_iter(
        self,
        sentences: Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[np.ndarray]:
        """Embed a stream of texts chunk by chunk, yielding (len(chunk), dim) arrays in order.

        Memory stays bounded by ``chunk_size`` texts, however long the stream. A non-str item is
        named by its position in the stream, before its chunk is embedded.
        """
        if batch_size < 1 or chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be at least 1")
        return self._chunks(iter(sentences), batch_size, normalize_embeddings, chunk_size)

    def _chunks(
        self, texts: Iterator[str], batch_size: int, normalize_embeddings: bool | None, chunk_size: int
    ) -> Iterator[np.ndarray]:
        offset = 0
        while chunk := list(islice(texts, chunk_size)):
            check_texts(chunk, offset)
            yield self.embed_tokens(self._tokenize(chunk), batch_size, normalize_embeddings)
            offset += len(chunk)

    def _encode_cached(
        self, texts: list[str], batch_size: int, normalize_embeddings: bool | None, cache: VectorCache
    ) -> np.ndarray:
        check_texts(texts)
        cache.bind(self.info.vectors_of)
        lookup = cache.lookup(texts)
        missing = lookup.missing
        encodings = self._tokenize(missing)
        raw = self.embed_tokens(encodings, batch_size, normalize_embeddings=False)
        computed = {t: Cached(v, len(e.ids), bool(e.overflowing)) for t, v, e in zip(missing, raw, encodings)}
        cache.put_many(missing, list(computed.values()))
        rows = stack(lookup.entries(computed), self.dim)
        return normalize(rows) if self.info.normalizes(normalize_embeddings) else rows

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether it is longer than ``max_seq_length`` tokens and gets cut."""
        return [bool(e.overflowing) for e in self.tokenize(texts)]

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine-similarity matrix between the rows of ``a`` and of ``b``."""
        a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
        return normalize(a2) @ normalize(b2).T

    # -- inside -------------------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        # sentence-transformers lower-cases before tokenizing when the model says do_lower_case.
        return self._tokenizer.encode([t.lower() for t in texts] if self.manifest.lowercase else texts)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        output = self.manifest.output
        if not self._io_binding:
            return self._session.run([output], feeds)[0]
        # One binding per call: an IOBinding is not safe to share between threads, and a new one
        # costs microseconds. ONNX Runtime's device arena reuses the buffers across batches.
        device = "cuda" if self.info.device == "cuda" else "cpu"
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
        binding.bind_output(output, device, 0)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
