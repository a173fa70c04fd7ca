"""Planning session runs: the one place that orders texts by length and cuts them into runs.

A run's cost is its padded tokens (its texts x its longest) plus a fixed overhead. ``plan_runs``
plans a whole batch for ``encode``; ``run_around_oldest`` picks the next run for the server's
worker from whatever texts wait. Both return indices into the lengths they were given.
"""

from __future__ import annotations

from collections.abc import Sequence

# A session run's fixed cost in tokens' worth (streaming the weights once), calibrated on GIST
# fp32 on a 2-core CPU; docs/serving.md gives the fit.
RUN_OVERHEAD_TOKENS = 16


def longest_first(lengths: Sequence[int], candidates: Sequence[int] | None = None) -> list[int]:
    """Indices sorted longest first; ties keep their order (oldest first)."""
    indices = range(len(lengths)) if candidates is None else candidates
    return sorted(indices, key=lambda k: (-lengths[k], k))


def run_size(width: int, limit: int | None, budget: int | None) -> int:
    """How many texts of padded ``width`` one run may hold: ``limit`` texts and ``budget`` padded
    tokens at most (None: no limit), and always at least one."""
    size = limit if limit is not None else 1 << 62
    if budget is not None:
        size = min(size, budget // max(width, 1))
    return max(1, size)


def plan_runs(lengths: Sequence[int], batch_size: int | None, budget: int | None) -> list[list[int]]:
    """Cut texts of these token lengths into runs: longest first, each run at most ``batch_size``
    texts and ``budget`` padded tokens (None: no limit); every text in exactly one run."""
    order = longest_first(lengths)
    runs, start = [], 0
    while start < len(order):
        size = run_size(lengths[order[start]], batch_size, budget)  # the first is the run's longest
        runs.append(order[start : start + size])
        start += size
    return runs


def run_around_oldest(candidates: list[int], lengths: list[int], budget: int | None) -> list[int]:
    """The run that holds candidate 0 (the oldest) and computes the most real tokens per unit of cost.

    Among the windows of the length-sorted candidates that hold text 0 and fit ``budget`` padded
    tokens, of every start and size, the best by that measure: so a run is as large as padding
    allows, runs are of similar lengths, and the oldest text is always in the next one. ``budget``
    only caps a run; the cost decides its size.
    """
    order = longest_first(lengths, candidates)
    oldest = order.index(0)
    best, best_score = [order[oldest]], -1.0
    head = 0  # real tokens of order[start : oldest + 1], the part every window from start holds
    for start in range(oldest, -1, -1):
        width = lengths[order[start]]  # the window's longest text sets its padded width
        most = run_size(width, None, budget)
        if oldest - start + 1 > most:
            break  # windows starting further up cannot reach the oldest text
        head += width
        end, real = oldest + 1, head
        score = real / (width * (end - start) + RUN_OVERHEAD_TOKENS)
        # Texts come shortest last, so each one added is worth less than the one before: grow
        # the window while the next text still raises the score, then stop.
        while end < len(order) and end - start < most:
            grown = (real + lengths[order[end]]) / (width * (end + 1 - start) + RUN_OVERHEAD_TOKENS)
            if grown < score:
                break
            real, end, score = real + lengths[order[end]], end + 1, grown
        if score > best_score:
            best, best_score = order[start:end], score
    return best
