"""`python -m benchmarks.studies.open_loop`: how short an open loop's tail can be on this engine.

The serve benchmark offers single short texts at Poisson times, at 25% and 50% of the 64-client
peak it measured, and the serve goal asks for a p99 of at most 4x the idle p50 at 50%. This study
asks what any batcher could reach at those loads with this CPU's run costs. At each load the
server's batcher runs in process (the serve benchmark's 1,024 STS-B sentences, no HTTP), and a
run's cost is fitted on its own runs (a fixed part plus a part per padded token: this machine's
speed moves by tens of percent within minutes, so the fit must come from the same minutes). The
same kind of arrivals then go through one simulated worker with that cost, under four policies:

- one at a time: first come, first served, no batching;
- every waiting text: each run takes what waits, oldest first, within the token budget, padded
  to its longest;
- the planner: ``gist_onnx.planning.choose_run``, called as the server's batcher calls it (its
  simulated tail beside the real batcher's checks the simulation);
- padding-free: every waiting text on an engine that computed no padding. A bound, not a design
  here: ONNX Runtime's CPU kernels compute the padded batch.

The loads and the idle p50 come from a committed serve report (``--serve-report``, default
OUT/serve.json) for the same CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import log
from benchmarks.corpus import fixed_shuffle, load_stsb, token_lengths
from gist_onnx.batcher import RunStats, slice_of
from gist_onnx.planning import Waiting, choose_run

SHARES = ("25%", "50%")
SEEDS = 3
SIMULATED_SECONDS = 2000.0
REAL_SECONDS = 40.0  # as long as the serve benchmark's open loop at 50%
# Takes the requests of one run, as indices into the waiting list (one text each, oldest first).
Policy = Callable[[Sequence[Waiting]], list[int]]


@dataclass(frozen=True)
class RunCost:
    """A session run's seconds: ``fixed_s`` plus ``per_token_s`` per (padded) token."""

    fixed_s: float
    per_token_s: float

    def __call__(self, tokens: int) -> float:
        return self.fixed_s + self.per_token_s * tokens


def fit_run_cost(runs: Sequence[RunStats]) -> RunCost:
    """Least squares of the runs' seconds on their padded tokens."""
    per_token, fixed = np.polyfit([r.tokens for r in runs], [r.inference_seconds for r in runs], 1)
    return RunCost(float(fixed), float(per_token))


def every_waiting_text(waiting: Sequence[Waiting], budget: int) -> list[int]:
    """The oldest texts that fit ``budget`` padded tokens together (at least one)."""
    taken, widest = [0], waiting[0].lengths[0]
    for r in range(1, len(waiting)):
        widest_then = max(widest, waiting[r].lengths[0])
        if widest_then * (len(taken) + 1) > budget:
            break
        taken.append(r)
        widest = widest_then
    return taken


def policies(budget: int, slice_tokens: int) -> dict[str, Policy]:
    """The simulated policies, by name (padding-free is every waiting text on another cost)."""
    return {
        "one_at_a_time": lambda waiting: [0],
        "every_waiting_text": lambda waiting: every_waiting_text(waiting, budget),
        "planner": lambda waiting: [r for r, _ in choose_run(waiting, budget, slice_tokens)],
    }


def simulate(
    policy: Policy, lengths: Sequence[int], rate: float, cost: RunCost, seconds: float, seed: int,
    padded: bool = True,
) -> dict[str, float]:  # fmt: skip
    """One worker serving Poisson arrivals (``rate`` a second for ``seconds``) of single texts
    drawn from ``lengths``; each run costs ``cost`` of its padded tokens (or real ones).

    Returns the p50, p99 and mean of arrival-to-answer seconds (the first tenth dropped: warm-up),
    the mean texts per run and the share of time the worker computed.
    """
    rng = np.random.default_rng(seed)
    count = int(rate * seconds)
    arrivals = np.cumsum(rng.exponential(1 / rate, count))
    texts = rng.choice(np.asarray(lengths), count)
    now, arrived, busy = 0.0, 0, 0.0
    queue: list[list[int]] = []  # [text, runs that passed it over], oldest first
    answered, run_sizes = np.empty(count), []
    while arrived < count or queue:
        if not queue:
            now = max(now, arrivals[arrived])
        while arrived < count and arrivals[arrived] <= now:
            queue.append([arrived, 0])
            arrived += 1
        taken = set(policy([Waiting([int(texts[t])], passed) for t, passed in queue]))
        run = [queue[r][0] for r in sorted(taken)]
        widths = texts[run]
        spent = cost(len(run) * int(widths.max()) if padded else int(widths.sum()))
        now, busy = now + spent, busy + spent
        answered[run] = now
        run_sizes.append(len(run))
        queue = [[t, passed + 1] for r, (t, passed) in enumerate(queue) if r not in taken]
    waits = (answered - arrivals)[count // 10 :]
    return {
        "p50_s": float(np.percentile(waits, 50)),
        "p99_s": float(np.percentile(waits, 99)),
        "mean_s": float(np.mean(waits)),
        "texts_per_run": float(np.mean(run_sizes)),
        "busy_share": busy / now,
    }


def simulated(
    lengths: Sequence[int], rate: float, cost: RunCost, budget: int, seconds: float = SIMULATED_SECONDS
) -> dict[str, dict[str, float]]:
    """Each policy's figures at ``rate``, the medians over SEEDS seeds (the same arrivals for all)."""
    runs = {name: (policy, True) for name, policy in policies(budget, slice_of("cpu", budget)).items()}
    runs["padding_free"] = (lambda waiting: every_waiting_text(waiting, 1 << 30), False)
    results = {}
    for name, (policy, padded) in runs.items():
        seeds = [simulate(policy, lengths, rate, cost, seconds, seed, padded) for seed in range(SEEDS)]
        results[name] = {key: float(np.median([s[key] for s in seeds])) for key in seeds[0]}
    return results


def committed_serve(path: Path) -> dict[str, dict[str, float]]:
    """Per precision, what the serve report measured: the 64-client peak, the server's idle p50
    and the open loops' p99 through the server and in process."""
    report = json.loads(path.read_text())
    figures = {}
    for precision, result in report["precisions"].items():
        server, in_process = result["server"], result["in_process"]
        figures[precision] = {
            "peak_texts_per_s": server["closed_64"]["texts_per_s"],
            "idle_p50_ms": server["idle"]["server_p50_ms"],
        }
        for where, phases in (("server", server), ("in_process", in_process)):
            for share in SHARES:
                if f"open_{share}" in phases:
                    figures[precision][f"{where}_{share}_p99_ms"] = phases[f"open_{share}"]["p99_ms"]
    return figures


def measure(folder: Path, serve: dict[str, dict[str, float]], texts: list[str], real_seconds: float) -> dict:
    """Per precision and load: the real batcher in process, a run cost fitted on its own runs, and
    the simulated policies on that cost."""
    from benchmarks.serve import open_loop_in_process
    from gist_onnx import Embedder

    lengths = token_lengths(texts, folder / "tokenizer.json", 512)
    results: dict[str, Any] = {}
    for precision, committed in serve.items():
        budget = Embedder(folder, provider="cpu", precision=precision).info.max_batch_tokens
        loads = {}
        for share in SHARES:
            rate = committed["peak_texts_per_s"] * float(share.rstrip("%")) / 100
            log(f"[{precision}] {share} of the peak ({rate:.1f}/s): the real batcher, then simulating")
            runs: list[RunStats] = []
            real = open_loop_in_process(folder, "cpu", precision, rate, texts, real_seconds, runs.append)
            figures, cost = real.summary(), fit_run_cost(runs)
            loads[share] = {
                "rate_per_s": rate,
                "real_batcher": {
                    "p50_ms": figures["p50_ms"],
                    "p99_ms": figures["p99_ms"],
                    "texts_per_run": float(np.mean([r.inputs for r in runs])),
                    "busy_share": sum(r.inference_seconds for r in runs) / real.seconds,
                },
                "run_cost": {"fixed_ms": cost.fixed_s * 1e3, "per_token_ms": cost.per_token_s * 1e3},
                "simulated": simulated(lengths, rate, cost, budget),
            }
        results[precision] = {"max_batch_tokens": budget, "committed_serve": committed, "loads": loads}
    return results


def markdown(results: dict[str, Any]) -> str:
    names = ("one_at_a_time", "every_waiting_text", "planner", "padding_free")
    lines = [
        "# How short an open loop's tail can be",
        "",
        f"`python -m benchmarks.studies.open_loop` on {results['cpu']}; {results['created']}. Random "
        "weights, GIST-Embedding-v0's exact architecture. Loads and idle p50 from "
        f"{results['serve_report']}. The real batcher ran {results['real_seconds']:.0f} s in process per "
        "load, and the run cost is fitted on its runs; each simulated figure is the median of "
        f"{SEEDS} seeds of {SIMULATED_SECONDS:.0f} simulated seconds on that cost.",
        "",
        "| precision | load | goal: 4x idle p50 | the real batcher: p50 / p99 ms (texts a run, busy) | its "
        "run cost | simulated p50 / p99 ms: one at a time | every waiting text | the planner | "
        "padding-free bound | committed p99: server / in process |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in results["precisions"].items():
        committed = r["committed_serve"]
        for share, load in r["loads"].items():
            sim, real, cost = load["simulated"], load["real_batcher"], load["run_cost"]
            cells = [f"{sim[n]['p50_s'] * 1e3:.0f} / {sim[n]['p99_s'] * 1e3:.0f}" for n in names]
            served = [committed.get(f"{where}_{share}_p99_ms") for where in ("server", "in_process")]
            lines.append(
                f"| {precision} | {share}: {load['rate_per_s']:.1f}/s | {4 * committed['idle_p50_ms']:.0f} | "
                f"{real['p50_ms']:.0f} / {real['p99_ms']:.0f} ({real['texts_per_run']:.2f}, "
                f"{real['busy_share']:.0%}) | {cost['fixed_ms']:.1f} + {cost['per_token_ms']:.2f}/token ms | "
                + " | ".join(cells)
                + " | "
                + " / ".join("-" if v is None else f"{v:.0f}" for v in served)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def more(parser) -> None:
        parser.add_argument(
            "--serve-report",
            type=Path,
            help="the serve benchmark's serve.json for this CPU (default: OUT/serve.json)",
        )
        parser.add_argument(
            "--real-seconds", type=float, default=REAL_SECONDS, help="how long the real batcher runs per load"
        )

    args = common.parse_args("python -m benchmarks.studies.open_loop", __doc__, "open-loop", argv, more)
    serve_report = args.serve_report or args.out / "serve.json"
    if not serve_report.is_file():
        raise SystemExit(
            f"no serve report at {serve_report}: run python -m benchmarks.serve, or pass --serve-report"
        )
    from gist_onnx.export import export_model
    from gist_onnx.manifest import read_manifest

    texts = fixed_shuffle(load_stsb().sentences())[:1024]  # the serve benchmark's texts
    with common.workspace(args.work, "gist-onnx-open-loop-") as (work, _):
        folder = common.random_gist(work).parent / "onnx"  # where the serve benchmark keeps it
        if not (folder / "manifest.json").is_file() or "int8" not in read_manifest(folder).graphs:
            log("exporting fp32 and int8")
            export_model(str(folder.parent / "model"), folder, quantize="int8", force=True)
        results = {
            **common.header(),
            "serve_report": str(serve_report),
            "real_seconds": args.real_seconds,
            "precisions": measure(folder, committed_serve(serve_report), texts, args.real_seconds),
        }
    common.write(args.out, "open-loop", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
