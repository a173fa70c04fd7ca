"""Planning session runs: the one place that orders texts by length and cuts them into runs.

A run's cost is its padded tokens (its texts x its longest) plus a fixed overhead. ``plan_runs``
plans a whole batch for ``encode``; ``choose_run`` picks the batcher's next run from the requests
that wait, fairly, and ``run_around`` sizes a run around one text with the cost model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A session run's fixed cost in tokens' worth (streaming the weights once), calibrated on GIST
# fp32 on a 2-core CPU; docs/serving.md gives the fit.
RUN_OVERHEAD_TOKENS = 16
# Runs in a row that may pass over the oldest waiting request before it leads one.
PATIENCE = 4
# A run's lengths are chosen among its lead and the oldest few other requests; texts of the older
# part of the queue then fill it. So a text that has waited is not passed over again and again for
# texts of a luckier length that just came, and the newest quarter waits its turn (unless the run
# holds every older text: then it jumps nobody). With 64 clients the p99/p50 of a closed loop
# falls from about 3 to 1.7 for ~4% fewer tokens per unit of cost (docs/serving.md, "How it
# batches").
SHAPING_REQUESTS = 8
FILLING_SHARE = 0.75


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


def run_around(head: int, candidates: Sequence[int], lengths: Sequence[int], budget: int | None) -> list[int]:
    """The run that holds text ``head`` and computes the most real tokens per unit of cost.

    Among the windows of the length-sorted candidates that hold ``head`` and fit ``budget``
    padded tokens, of every start and size, the best by that measure: so a run is as large as
    padding allows and its texts are of similar lengths. ``budget`` only caps a run; the cost
    decides its size. Ties in length keep the candidates' order.
    """
    order = sorted(candidates, key=lambda k: -lengths[k])  # stable: ties keep the candidates' order
    at = order.index(head)
    best, best_score = [order[at]], -1.0
    held = 0  # real tokens of order[start : at + 1], the part every window from start holds
    for start in range(at, -1, -1):
        width = lengths[order[start]]  # the window's longest text sets its padded width
        most = run_size(width, None, budget)
        if at - start + 1 > most:
            break  # windows starting further up cannot reach the head
        held += width
        end, real = at + 1, held
        score = _score(real, width, end - start)
        # Texts come shortest last, so each one added is worth less than the one before: grow
        # the window while the next text still raises the score, then stop.
        while end < len(order) and end - start < most:
            grown = _score(real + lengths[order[end]], width, end + 1 - start)
            if grown < score:
                break
            real, end, score = real + lengths[order[end]], end + 1, grown
        if score > best_score:
            best, best_score = order[start:end], score
    return best


def fill_run(
    run: Sequence[int], extra: Sequence[int], lengths: Sequence[int], budget: int | None
) -> list[int]:
    """Texts of ``extra`` that join ``run`` without widening it or lowering its real tokens per
    unit of cost, longest first (ties keep their order), within ``budget`` padded tokens."""
    width = max(lengths[k] for k in run)
    most = run_size(width, None, budget)
    real, size = sum(lengths[k] for k in run), len(run)
    joined = []
    for k in sorted((k for k in extra if lengths[k] <= width), key=lambda k: -lengths[k]):
        if size >= most or _score(real + lengths[k], width, size + 1) < _score(real, width, size):
            break  # shortest last: once one lowers the score, every later one does
        joined.append(k)
        real, size = real + lengths[k], size + 1
    return joined


def _score(real: int, width: int, size: int) -> float:
    """Real tokens per unit of cost of a run of ``size`` texts padded to ``width``."""
    return real / (width * size + RUN_OVERHEAD_TOKENS)


def run_around_oldest(candidates: list[int], lengths: list[int], budget: int | None) -> list[int]:
    """``run_around`` the oldest text, candidate 0."""
    return run_around(0, candidates, lengths, budget)


@dataclass(frozen=True)
class Waiting:
    """A request as the scheduler sees it: the token lengths of its texts not yet taken, longest
    first, and how many runs in a row have passed it over."""

    lengths: Sequence[int]
    passed_over: int = 0

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


def choose_run(
    waiting: Sequence[Waiting],
    budget: int | None,
    slice_tokens: int | None,
    patience: int = PATIENCE,
    shaping: int = SHAPING_REQUESTS,
    filling_share: float = FILLING_SHARE,
) -> list[tuple[int, int]]:
    """The next run, as (request, text) pairs; ``waiting`` is in arrival order, oldest first.

    The run is built around one request's longest text: the request with the fewest texts left
    (the oldest among equals), so a request waits for the requests smaller than it, not for the
    ones that came first; but the oldest request once ``patience`` runs in a row passed it over,
    so none starves. Other requests whose remaining work fits ``slice_tokens`` join when the cost
    model says so. A request larger than that never joins another's run, and a run it leads
    holds at most ``slice_tokens`` padded tokens, so a text that arrives meanwhile waits for at
    most one slice. ``slice_tokens=None`` never slices: every run may take ``budget``.

    Only the ``shaping`` oldest of those small requests shape the run around the lead; then the
    texts of the oldest ``filling_share`` of them fill it where they fit (``fill_run``), and
    those of the newest only if that left no older text out.
    """
    if not waiting:
        return []
    lead = 0
    if waiting[0].passed_over < patience:
        lead = min(range(len(waiting)), key=lambda r: (len(waiting[r].lengths), r))
    small = [r for r, w in enumerate(waiting) if slice_tokens is None or w.tokens <= slice_tokens]
    big = slice_tokens is not None and waiting[lead].tokens > slice_tokens
    cap = slice_tokens if big else budget
    # The lead's texts in a run around its longest are a prefix of its list: no more than a run
    # of its shortest could hold (so a request of thousands of texts costs little to consider).
    lead_lengths = waiting[lead].lengths
    prefix = run_size(lead_lengths[-1], None, cap) if lead_lengths else 0
    others = [r for r in small if r != lead]
    older = max(shaping, round(len(others) * filling_share))

    def texts_of(requests: Sequence[int]) -> list[tuple[int, int]]:
        return [(r, k) for r in requests for k in range(len(waiting[r].lengths))]

    pairs = [(lead, k) for k in range(min(len(lead_lengths), prefix))] + texts_of(others[:shaping])
    shaped = len(pairs)
    pairs += texts_of(others[shaping:older])
    filled = len(pairs)
    pairs += texts_of(others[older:])
    lengths = [waiting[r].lengths[k] for r, k in pairs]
    run = run_around(0, range(shaped), lengths, cap)
    run += fill_run(run, range(shaped, filled), lengths, cap)
    if len(run) == filled:  # no older text left out: the newest jump nobody, and join where they fit
        run += fill_run(run, range(filled, len(pairs)), lengths, cap)
    return sorted(pairs[i] for i in run)
