"""Texts → token ids, truncated to the model's length, padded per batch into int64 arrays."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from gist_onnx.errors import ModelFolderError


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

    def pad(self, encodings: Sequence[Encoding], input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Pad encodings to their longest into the int64 arrays the graph declares."""
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        width = int(lengths.max())
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
