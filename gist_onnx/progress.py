"""A dependency-free progress bar on stderr (the runtime keeps its dependencies to three)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts items done out of an optional total and redraws at most ten times a second."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        unit: str = "texts",
    ) -> None:
        self.label = label
        self.unit = unit
        self.total = total
        self.done = 0
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-9)
        of_total = f"/{self.total} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and 0 < self.done < self.total and rate > 0:
            eta = f", ETA {_duration((self.total - self.done) / rate)}"
        line = f"\r{self.label}: {self.done}{of_total} {self.unit}, {rate:.1f} {self.unit}/s{eta}"
        self._stream.write(line)
        self._stream.flush()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
