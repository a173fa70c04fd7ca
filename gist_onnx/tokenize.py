"""Texts → token ids, truncated to the model's length, padded per batch into int64 arrays."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from gist_onnx.errors import ModelFolderError


def batch_invariant_width(longest: int, max_seq_length: int) -> int:
    """The width to pad a run to, its longest text being ``longest`` tokens, so that a first-token
    graph gives every text the same vector bit for bit whatever its batch mates.

    The last layer of such a graph multiplies one query row by the run's values (ONNX Runtime's
    one-row kernel on x86, MLAS's SgemmKernelM1Avx, on every AVX CPU). That kernel sums the
    products in groups of 4, then a group of 2, then one, and padding adds exact zeros: a text of
    4k + 3 tokens run at exactly its own width comes out as (g + (x + y)) + z, and at any wider
    width as g + ((x + y) + z), which rounds differently in the last bit. Every other length sums
    the same at every width. So a run whose width is 3 past a multiple of 4 takes one more padded
    token (not past the model's length, where a text cannot grow).
    """
    return longest + 1 if longest % 4 == 3 and longest < max_seq_length else longest


class TextTokenizer:
    """A `tokenizers` tokenizer set up the way sentence-transformers calls it.

    Texts are truncated to ``max_seq_length`` tokens, special tokens included. Padding is done
    here rather than by the tokenizer so that texts can be sorted by length first: each batch is
    then padded only to its own longest member.
    """

    def __init__(self, path: Path, max_seq_length: int) -> None:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on a bad file
            raise ModelFolderError(path, f"is not a readable tokenizers file ({exc})") from exc
        padding = tokenizer.padding
        pad_id = padding["pad_id"] if padding else tokenizer.token_to_id("[PAD]")
        self.pad_id: int = pad_id if pad_id is not None else 0
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_seq_length)
        self._tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Tokenize texts (in parallel, in Rust); a text that cannot be encoded is named by index."""
        try:
            return self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        except Exception:  # find the culprit so the error can name it
            for index, text in enumerate(texts):
                try:
                    self._tokenizer.encode(text)
                except Exception as exc:
                    raise ValueError(f"text {index} cannot be tokenized: {exc}") from exc
            raise

    def pad(
        self, encodings: Sequence[Encoding], input_names: Sequence[str], batch_invariant: bool = False
    ) -> dict[str, np.ndarray]:
        """Pad encodings to their longest (``batch_invariant``: to `batch_invariant_width` of it)
        into the int64 arrays the graph declares."""
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        width = int(lengths.max())
        if batch_invariant:
            width = batch_invariant_width(width, self.max_seq_length)
        real = np.arange(width)[None, :] < lengths[:, None]
        ids = np.full(real.shape, self.pad_id, dtype=np.int64)
        # Boolean assignment fills row-major, the order of the concatenated id lists.
        ids[real] = np.fromiter(
            chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum())
        )
        arrays = {
            "input_ids": ids,
            "attention_mask": real.astype(np.int64),
            # Single-sentence input: segment 0 everywhere, as BERT's tokenizer gives.
            "token_type_ids": np.zeros_like(ids),
        }
        return {name: arrays[name] for name in input_names}
