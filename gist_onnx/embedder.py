"""The runtime: texts → tokens → ONNX Runtime session → pooled, normalized vectors."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding

from gist_onnx.cpu import int8_mismatch
from gist_onnx.errors import ModelFolderError
from gist_onnx.manifest import Manifest, check_file, read_manifest
from gist_onnx.options import PRECISIONS
from gist_onnx.pooling import normalize, pool
from gist_onnx.progress import Progress
from gist_onnx.providers import CUDA, create_session, providers_for
from gist_onnx.tokenize import TextTokenizer

_ort_errors = ort.capi.onnxruntime_pybind11_state
# What ONNX Runtime raises for a file that is not a graph it can build a session from.
_GRAPH_LOAD_ERRORS = (
    _ort_errors.Fail,
    _ort_errors.InvalidProtobuf,
    _ort_errors.InvalidGraph,
    _ort_errors.NotImplemented,
)
# Texts are sorted by length within a chunk of this many, so batches pad little; a chunk is
# also the unit of streaming, which bounds memory for iterators of any length.
DEFAULT_CHUNK_SIZE = 8192
# Cap on padded tokens per session run on the CPU: past it, activations spill out of the CPU
# caches and throughput falls: GIST fp32, short texts at batch 128, 30 → 64 texts/s with this cap.
CPU_MAX_BATCH_TOKENS = 512
# A GPU wants far larger runs, up to a point: on an H100 (GIST, fp16), 512-token texts ran at
# 347 texts/s capped at 512 tokens, 1,821 at batch 32 uncapped, but 1,379 at batch 128 uncapped,
# and 1,887 at batch 128 capped at 16,384 tokens (32 such texts).
CUDA_MAX_BATCH_TOKENS = 16384


def choose_precision(precision: str, manifest: Manifest, on_cuda: bool, model_dir: Path) -> str:
    """The graph a precision setting picks from the folder; ModelFolderError if it lacks one."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        # The most faithful graph the device runs well: fp16 only on a GPU, int8 only on request.
        preference = ("fp16", "fp32") if on_cuda else ("fp32",)
        for candidate in (*preference, *manifest.graphs):
            if candidate in manifest.graphs:
                return candidate
    if precision not in manifest.graphs:
        raise ModelFolderError(
            model_dir,
            f"has no {precision} graph (it has {sorted(manifest.graphs)}); "
            f"export with {'--quantize int8' if precision == 'int8' else '--fp16'} to add one",
        )
    return precision


def token_cap(setting: int | Literal["auto"] | None, on_cuda: bool) -> int | None:
    """The padded-token cap per session run that a ``max_batch_tokens`` setting means."""
    if setting == "auto":
        return CUDA_MAX_BATCH_TOKENS if on_cuda else CPU_MAX_BATCH_TOKENS
    if setting is not None and (not isinstance(setting, int) or setting < 1):
        raise ValueError(f"max_batch_tokens must be 'auto', None or an int >= 1, got {setting!r}")
    return setting


def length_runs(
    order: Sequence[int], lengths: Sequence[int], batch_size: int | None, budget: int | None
) -> Iterator[list[int]]:
    """Cut a longest-first order into runs of at most ``batch_size`` texts (None: no limit) and at
    most ``budget`` padded tokens (None: no limit); a run always holds at least one text."""
    start = 0
    while start < len(order):
        width = lengths[order[start]]  # the run's longest text sets its padded width
        size = len(order) if batch_size is None else batch_size
        if budget is not None:
            size = max(1, min(size, budget // width))
        yield list(order[start : start + size])
        start += size


def _check_texts(texts: Sequence[object], offset: int = 0) -> None:
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
        provider: "auto" (CUDA when it really works, else CPU), "cpu" or "cuda".
        precision: "auto" (fp16 on CUDA when exported, else fp32), "fp32", "int8" or "fp16".
        threads: ONNX Runtime intra-op threads; None lets it use one per physical core.
        verify_checksums: hash every file at load; False skips only the sha256 (sizes are still
            checked) for cold-start-critical services.
        io_binding: run through ONNX Runtime's I/O binding, inputs copied to the session's device
            explicitly and the output allocated there; None turns it on for CUDA only.
        max_batch_tokens: cap on the padded tokens of one session run; batches of long texts are
            split below ``batch_size`` to keep activations in the CPU caches. "auto" caps at 512
            on the CPU and at 16,384 on CUDA; None never caps.
        session_options: ONNX Runtime's options for the session (profiling, logging, ...);
            ``threads``, when given, sets their intra-op thread count.

    An int8 graph whose weights this CPU cannot multiply exactly (8-bit weights without VNNI)
    loads with a RuntimeWarning; ``int8_mismatch`` keeps its text (None when exact).
    """

    def __init__(
        self,
        model_dir: str | Path,
        provider: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        verify_checksums: bool = True,
        io_binding: bool | None = None,
        max_batch_tokens: int | Literal["auto"] | None = "auto",
        session_options: ort.SessionOptions | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        wants_cuda = providers_for(provider, ort.get_available_providers())[0] == CUDA
        self.precision = choose_precision(precision, self.manifest, wants_cuda, self.model_dir)

        tokenizer_path = check_file(self.model_dir, self.manifest.tokenizer, checksum=verify_checksums)
        self._tokenizer = TextTokenizer(tokenizer_path, self.manifest.max_seq_length)
        if self._tokenizer.vocab_size > self.manifest.vocab_size:
            # Ids past the embedding table would fail (or read garbage) at the first encode.
            raise ModelFolderError(
                tokenizer_path,
                f"has {self._tokenizer.vocab_size} tokens but the graph embeds only "
                f"{self.manifest.vocab_size}: the tokenizer belongs to another model",
            )

        graph = self.manifest.graphs[self.precision]
        graph_path = check_file(self.model_dir, graph.record, checksum=verify_checksums)
        options = session_options or ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = create_session(graph_path, provider, options)
        except _GRAPH_LOAD_ERRORS as exc:
            raise ModelFolderError(graph_path, f"is not a loadable ONNX graph: {exc}") from exc
        self._input_names = [i.name for i in self._session.get_inputs()]
        unknown = set(self._input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ModelFolderError(graph_path, f"declares inputs this runtime cannot feed: {unknown}")
        self._output_name = self.manifest.output
        on_cuda = self.providers[0] == CUDA
        self._device = "cuda" if on_cuda else "cpu"
        self._io_binding = on_cuda if io_binding is None else io_binding
        self.max_batch_tokens = token_cap(max_batch_tokens, on_cuda)
        # An int8 graph exported for a VNNI CPU still runs elsewhere, on saturating kernels.
        self.int8_mismatch = None if on_cuda or not graph.weight_bits else int8_mismatch(graph.weight_bits)
        if self.int8_mismatch:
            warnings.warn(f"{graph_path}: {self.int8_mismatch}", RuntimeWarning, stacklevel=2)

    @property
    def dim(self) -> int:
        """Length of each embedding."""
        return self.manifest.embedding_dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated."""
        return self.manifest.max_seq_length

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really runs on, in order."""
        return self._session.get_providers()

    def encode(
        self,
        sentences: str | Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Embed texts into a float32 array of shape (n, dim); a single str gives shape (dim,).

        ``normalize_embeddings=None`` follows the model's sentence-transformers config (GIST
        normalizes); True or False overrides it.
        """
        if isinstance(sentences, str):
            return self.encode([sentences], batch_size, normalize_embeddings)[0]
        if isinstance(sentences, Sequence):
            _check_texts(sentences)  # a bad item fails before any work is done
        total = len(sentences) if isinstance(sentences, Sequence) else None
        progress = Progress("embedding", total, enabled=show_progress_bar)
        chunks = []
        already_checked = isinstance(sentences, Sequence)
        for chunk in self._encode_chunks(
            sentences, batch_size, normalize_embeddings, DEFAULT_CHUNK_SIZE, checked=already_checked
        ):
            chunks.append(chunk)
            progress.update(len(chunk))
        progress.close()
        if not chunks:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks)

    def encode_iter(
        self,
        sentences: Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[np.ndarray]:
        """Embed a stream of texts chunk by chunk, yielding (len(chunk), dim) arrays in order.

        Memory stays bounded by ``chunk_size`` texts, however long the stream.
        """
        return self._encode_chunks(sentences, batch_size, normalize_embeddings, chunk_size, checked=False)

    def _encode_chunks(
        self,
        sentences: Iterable[str],
        batch_size: int,
        normalize_embeddings: bool | None,
        chunk_size: int,
        checked: bool,
    ) -> Iterator[np.ndarray]:
        if batch_size < 1 or chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be at least 1")
        should_normalize = self.manifest.normalize if normalize_embeddings is None else normalize_embeddings
        iterator = iter(sentences)
        offset = 0
        while chunk := list(islice(iterator, chunk_size)):
            if not checked:
                _check_texts(chunk, offset)
            yield self._encode_chunk(chunk, batch_size, should_normalize)
            offset += len(chunk)

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Tokenize texts as ``encode`` does (truncated to ``max_seq_length``): the first stage of
        encode, for callers that need token counts before embedding (a server's admission)."""
        _check_texts(texts)
        return self._tokenize(texts)

    def embed_tokens(
        self, encodings: Sequence[Encoding], batch_size: int = 32, normalize_embeddings: bool | None = None
    ) -> np.ndarray:
        """Embed texts ``tokenize`` made: (len(encodings), dim) float32, in their order."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        should_normalize = self.manifest.normalize if normalize_embeddings is None else normalize_embeddings
        return self._embed(encodings, batch_size, should_normalize)

    def _tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        # sentence-transformers lower-cases before tokenizing when the model says do_lower_case.
        return self._tokenizer.encode([t.lower() for t in texts] if self.manifest.lowercase else texts)

    def _encode_chunk(self, texts: list[str], batch_size: int, should_normalize: bool) -> np.ndarray:
        return self._embed(self._tokenize(texts), batch_size, should_normalize)

    def _embed(self, encodings: Sequence[Encoding], batch_size: int, should_normalize: bool) -> np.ndarray:
        # Longest first: batches of similar length pad little, and the largest batch comes first.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids), reverse=True)
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        lengths = [len(e.ids) for e in encodings]
        for rows in length_runs(order, lengths, batch_size, self.max_batch_tokens):
            feeds = self._tokenizer.pad([encodings[i] for i in rows], self._input_names)
            hidden = self._run(feeds)
            tokens = 1 if self.manifest.output_tokens == "first" else feeds["input_ids"].shape[1]
            if hidden.shape[1:] != (tokens, self.dim):
                raise RuntimeError(
                    f"the graph returned {hidden.shape}, expected (batch, {tokens}, {self.dim})"
                )
            pooled = pool(hidden, feeds["attention_mask"], self.manifest.pooling)
            out[rows] = normalize(pooled) if should_normalize else pooled
        return out

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not self._io_binding:
            return self._session.run([self._output_name], feeds)[0]
        # One binding per call: an IOBinding is not safe to share between threads, and a new one
        # costs microseconds. ONNX Runtime's device arena reuses the buffers across batches.
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self._device, 0))
        binding.bind_output(self._output_name, self._device, 0)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether it is longer than ``max_seq_length`` tokens and gets cut."""
        _check_texts(texts)
        return [bool(e.overflowing) for e in self._tokenize(texts)]

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine-similarity matrix between the rows of ``a`` and of ``b``."""
        a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
        return normalize(a2) @ normalize(b2).T
