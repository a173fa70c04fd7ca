"""An exact vector cache: an LRU of raw pooled vectors, bounded in bytes, keyed by the text.

A text's vector does not depend on its batch mates (ONNX Runtime's CPU provider, fp32 and int8
with per-token scales: ``RuntimeInfo.batch_invariant``), so a cached vector is the one the model
gives that text in any batch. Elsewhere it is the one this process computed first, and another
batch could change its last bits. What is kept is the raw pooled vector with the text's token
count and whether it was truncated: normalization is applied per request, as for a computed
vector, and a request that forbids truncation still gets its 413.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# What an entry costs beside its vector's data and its text: the OrderedDict's slot and the entry
# object (about 160 bytes, by tracemalloc on CPython 3.11) and the array's header (112).
ENTRY_OVERHEAD_BYTES = 280


@dataclass(frozen=True)
class Cached:
    """One text's raw pooled vector (read-only), its token count, and whether it was cut."""

    vector: np.ndarray
    tokens: int
    truncated: bool


@dataclass(frozen=True)
class Lookup:
    """A request's texts and what the cache held for them."""

    texts: list[str]
    found: list[Cached | None]

    @property
    def missing(self) -> list[str]:
        """The texts to compute: each text the cache lacked, once, in order of appearance."""
        return list(dict.fromkeys(t for t, entry in zip(self.texts, self.found) if entry is None))

    def entries(self, computed: dict[str, Cached]) -> list[Cached]:
        """Every text's entry, in order: from the cache, or from ``computed`` (the missing ones)."""
        return [entry if entry is not None else computed[text] for text, entry in zip(self.texts, self.found)]


def stack(entries: list[Cached], dim: int) -> np.ndarray:
    """The entries' raw vectors as one (n, dim) float32 array, to normalize as a computed one."""
    rows = np.empty((len(entries), dim), dtype=np.float32)
    for row, entry in zip(rows, entries):
        row[:] = entry.vector
    return rows


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class VectorCache:
    """Least-recently-used vectors of one model and precision, at most ``max_bytes`` in all.

    ``owner`` names what the vectors came from (a graph's sha256): a cache filled by one model
    refuses another's lookups rather than answer with the wrong vectors. Thread-safe.
    """

    def __init__(self, max_bytes: int, owner: str | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.owner = owner
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    def bind(self, owner: str) -> None:
        """Tie the cache to one model's graph; ValueError if it already holds another's."""
        with self._lock:
            if self.owner is None:
                self.owner = owner
            elif self.owner != owner:
                raise ValueError(
                    f"this cache holds vectors of graph {self.owner[:12]}…, not {owner[:12]}…: "
                    "use one cache per model and precision"
                )

    def lookup(self, texts: list[str]) -> Lookup:
        """What the cache holds for these texts (hits become the most recently used)."""
        return Lookup(list(texts), self.get_many(texts))

    def get_many(self, texts: list[str]) -> list[Cached | None]:
        """Each text's entry, or None; hits become the most recently used."""
        found: list[Cached | None] = []
        with self._lock:
            for text in texts:
                entry = self._entries.get(text)
                if entry is not None:
                    self._entries.move_to_end(text)
                found.append(entry)
            hits = sum(entry is not None for entry in found)
            self._hits += hits
            self._misses += len(found) - hits
        return found

    def put_many(self, texts: list[str], entries: list[Cached]) -> None:
        """Keep these entries, evicting the least recently used until the cache fits."""
        if self.max_bytes == 0:
            return
        with self._lock:
            for text, entry in zip(texts, entries):
                size = _size(text, entry)
                if size > self.max_bytes:
                    continue  # it alone would not fit
                previous = self._entries.pop(text, None)
                if previous is not None:
                    self._bytes -= _size(text, previous)
                # A copy of its own: a row of a request's array would keep the whole array alive.
                vector = np.array(entry.vector, dtype=np.float32)
                vector.flags.writeable = False  # shared between answers: never changed
                self._entries[text] = Cached(vector, entry.tokens, entry.truncated)
                self._bytes += size
            while self._bytes > self.max_bytes:
                old_text, old = self._entries.popitem(last=False)
                self._bytes -= _size(old_text, old)
                self._evictions += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._evictions, len(self._entries), self._bytes, self.max_bytes
            )


def _size(text: str, entry: Cached) -> int:
    return entry.vector.nbytes + sys.getsizeof(text) + ENTRY_OVERHEAD_BYTES
