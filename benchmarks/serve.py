"""`python -m benchmarks.serve`: the HTTP server under load, beside in-process encode, in one run.

For each precision (GIST's architecture, random weights): the in-process floor (``encode([text])``
once per request) and ceiling (``encode`` at batch 32 on the same texts), the server's idle
overhead (single requests alternated with in-process calls), closed loops of 1, 16 and 64
clients each sending one short text, the same 64 clients against the server with batching off,
and open loops at 25%, 50% and 200% of the measured peak (Poisson arrivals). At 25% and 50% the
same arrivals also go to the server's batcher in this process, without HTTP, in blocks that
alternate with the server's, so that what HTTP adds is read from neighbouring minutes. The load
comes from raw HTTP/1.1 over asyncio streams with keep-alive, so the client costs the 2-core
machine little.
Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import log, machine, random_gist, versions
from benchmarks.corpus import Workload, fixed_shuffle, load_stsb, workload_texts
from benchmarks.load import LoadResult, closed_loop, merged, open_loop, poisson_arrivals
from benchmarks.measure import INTERVAL_LEVEL, alternating_latency, block_interval, median, timed
from benchmarks.traffic import (
    FULL_TRAFFIC,
    QUICK_TRAFFIC,
    TrafficPlan,
    interval_text,
    mixed_phase,
    sparse_phase,
    zipf_phase,
)
from benchmarks.traffic import markdown as traffic_markdown
from gist_onnx.batcher import Batcher, Job, RunStats
from gist_onnx.options import PRECISIONS

if TYPE_CHECKING:
    from gist_onnx.serve.process import ServerProcess


@dataclass(frozen=True)
class ServePlan:
    clients: tuple[int, ...]
    closed_seconds: float
    ceiling_blocks: int  # the most clients' loop runs this many times, each after a ceiling pass
    open_seconds: dict[str, float]  # load as a share of the peak → seconds
    queue_shares: tuple[str, ...]  # loads also offered to the batcher in process, without HTTP
    idle_calls: int
    precisions: tuple[str, ...]
    tiny: bool
    traffic: TrafficPlan


FULL = ServePlan(
    clients=(1, 16, 64),
    closed_seconds=15.0,
    ceiling_blocks=3,
    open_seconds={"25%": 30.0, "50%": 120.0, "200%": 30.0},
    queue_shares=("25%", "50%"),
    idle_calls=200,
    precisions=("fp32", "int8"),
    tiny=False,
    traffic=FULL_TRAFFIC,
)
QUICK = ServePlan(
    clients=(1, 16, 64),
    closed_seconds=3.0,
    ceiling_blocks=2,
    open_seconds={"50%": 3.0, "200%": 4.0},
    queue_shares=("50%",),
    idle_calls=40,
    precisions=("fp32",),
    tiny=True,
    traffic=QUICK_TRAFFIC,
)
CEILING_TEXTS = 256
# An open loop compared with the same arrivals in process runs in blocks of about this many
# seconds, alternating: the machine's speed drifts over minutes, and two p99s taken minutes apart
# differed by tens of percent.
OPEN_BLOCK_SECONDS = 10.0
PASSAGE_TOKENS = 40  # the big client's passages (benchmarks.traffic.mixed_phase)


def server_batcher(
    folder: Path, provider: str, precision: str, on_run: Callable[[RunStats], None] | None = None
) -> Batcher:
    """The server's batcher in this process, loaded and warm: the session built as the server
    builds it (its options, on the worker thread at the worker's priority), without HTTP.
    ``on_run`` sees each session run."""
    from gist_onnx.serve.app import ServeConfig  # the [serve] extra, like the server this measures

    config = ServeConfig(folder, provider=provider, precision=precision, max_queue=512, cache_mb=0)
    batcher = Batcher(config.load, max_queue=config.max_queue, on_run=on_run)
    batcher.start()
    if not batcher.wait_ready():
        raise RuntimeError(f"the model failed to load: {batcher.load_error}")
    return batcher


def stop_batcher(batcher: Batcher) -> None:
    """Let what waits finish, then end its worker."""
    batcher.drain()
    batcher.stop()
    batcher.join()


def queue_loop(batcher: Batcher, rate: float, texts: list[str], seconds: float, seed: int = 0) -> LoadResult:
    """Poisson arrivals straight to the batcher: a text is tokenized, queued and awaited in this
    process, so what the queue itself costs at this load shows apart from HTTP."""
    embedder = batcher.embedder
    assert embedder is not None

    async def arrival(index: int) -> int:
        job = Job(embedder.tokenize([texts[index % len(texts)]]))
        batcher.submit(job)  # the queue holds 512 texts: far more than these loads leave waiting
        await asyncio.wrap_future(job.future)
        return 200

    return asyncio.run(poisson_arrivals(rate, seconds, arrival, seed))


def open_loop_in_process(
    folder: Path, provider: str, precision: str, rate: float, texts: list[str], seconds: float,
    on_run: Callable[[RunStats], None] | None = None,
) -> LoadResult:  # fmt: skip
    """``queue_loop`` on a batcher of its own, for ``seconds``."""
    batcher = server_batcher(folder, provider, precision, on_run)
    try:
        return queue_loop(batcher, rate, texts, seconds)
    finally:
        stop_batcher(batcher)


def paired_open_loops(
    port: int, batcher: Batcher, rate: float, texts: list[str], seconds: float
) -> tuple[list[LoadResult], list[LoadResult]]:
    """The server's open loop and the same arrivals in process, in alternating blocks of about
    ``OPEN_BLOCK_SECONDS`` (block k: seed k for both, its texts rotated by k blocks' worth, the
    first of the pair alternating): each side's blocks, in order."""
    blocks = max(1, round(seconds / OPEN_BLOCK_SECONDS))
    server, queue = [], []
    for block in range(blocks):
        shift = block * round(rate * seconds / blocks) % len(texts)
        rotated = texts[shift:] + texts[:shift]
        for side in ("server", "queue") if block % 2 == 0 else ("queue", "server"):
            if side == "server":
                server.append(asyncio.run(open_loop(port, rate, rotated, seconds / blocks, block)))
            else:
                queue.append(queue_loop(batcher, rate, rotated, seconds / blocks, block))
    return server, queue


def paired_tail(server: list[LoadResult], queue: list[LoadResult]) -> dict[str, Any]:
    """The server's p99 over the same arrivals' in process, and bootstrap intervals of it and of
    the server's p99, drawing whole pairs of blocks (benchmarks.measure.block_interval)."""
    blocks = [
        (np.array(s.latencies.get(200, [])) * 1e3, np.array(q.latencies.get(200, [])) * 1e3)
        for s, q in zip(server, queue)
    ]
    p99 = lambda a: float(np.percentile(a, 99))  # noqa: E731
    whole = [np.concatenate([block[side] for block in blocks]) for side in (0, 1)]
    return {
        "blocks": len(blocks),
        "interval_level": INTERVAL_LEVEL,
        "server_p99_interval_ms": block_interval([(s,) for s, _ in blocks], p99),
        "p99_ratio": p99(whole[0]) / p99(whole[1]),
        "p99_ratio_interval": block_interval(blocks, lambda s, q: p99(s) / p99(q)),
    }


def open_loops(
    server: ServerProcess, queue: Batcher | None, peak: float, texts: list[str], plan: ServePlan, label: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figures of the server's open loop at each share of ``peak`` (with its RSS after), and, at
    the plan's queue shares, of the same arrivals to ``queue`` in process (paired_open_loops)."""
    figures, in_process = {}, {}
    for share, seconds in plan.open_seconds.items():
        rate = peak * float(share.rstrip("%")) / 100
        paired = queue is not None and share in plan.queue_shares
        log(f"[{label}] open loop at {share} of the peak ({rate:.0f}/s), {seconds:.0f} s"
            + (", in blocks alternating with the same arrivals in process" if paired else ""))  # fmt: skip
        if paired:
            server_blocks, queue_blocks = paired_open_loops(server.port, queue, rate, texts, seconds)
            loop, beside = merged(server_blocks), merged(queue_blocks)
            in_process[f"open_{share}"] = {
                "rate_per_s": rate, **beside.summary(), "paired": paired_tail(server_blocks, queue_blocks)
            }  # fmt: skip
        else:
            loop = asyncio.run(open_loop(server.port, rate, texts, seconds))
        figures[f"open_{share}"] = {"rate_per_s": rate, **loop.summary(), "rss_mib_after": server.rss_mib()}
    return figures, in_process


def idle_overhead(port: int, embedder, texts: list[str], calls: int) -> dict[str, float]:
    """Single-text p50 in process and through an idle server, in alternating blocks."""
    connection = http.client.HTTPConnection("127.0.0.1", port)

    def over_http(text: str) -> None:
        connection.request("POST", "/v1/embeddings", json.dumps({"input": text, "encoding_format": "float"}))
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the server answered {response.status}")

    p50 = alternating_latency(
        {"in_process": lambda t: embedder.encode([t]), "server": over_http}, texts, calls
    )
    connection.close()
    return {"in_process_p50_ms": p50["in_process"], "server_p50_ms": p50["server"],
            "overhead_ms": p50["server"] - p50["in_process"]}  # fmt: skip


def floor_texts_per_s(embedder, texts: list[str], calls: int) -> float:
    """In-process ``encode([text])`` once per call: the no-server floor."""
    return 1 / median([timed(lambda t=t: embedder.encode([t])) for t in (texts * 2)[:calls]])


def ceiling_texts_per_s(embedder, texts: list[str]) -> float:
    """In-process ``encode`` at batch 32 on the first 256 texts: the ceiling."""
    seconds = timed(lambda: embedder.encode(texts[:CEILING_TEXTS], batch_size=32))
    return min(CEILING_TEXTS, len(texts)) / seconds


def closed_beside_in_process(
    port: int, embedder, clients: int, texts: list[str], seconds: float, blocks: int, floor_calls: int
) -> dict[str, Any]:
    """The closed loop for ``blocks`` blocks of ``seconds``, each right after an in-process floor
    and ceiling pass. The machine's speed drifts over minutes, so each block is compared with the
    passes beside it and the ratios are the medians of those pairs."""
    floors, ceilings, results = [], [], []
    for _ in range(blocks):
        floors.append(floor_texts_per_s(embedder, texts, floor_calls))
        ceilings.append(ceiling_texts_per_s(embedder, texts))
        results.append(asyncio.run(closed_loop(port, clients, texts, seconds)))
    rates = [r.summary()["texts_per_s"] for r in results]
    return {
        **merged(results).summary(),
        "texts_per_s": median(rates),
        "block_texts_per_s": rates,
        "floor_texts_per_s": median(floors),
        "ceiling_texts_per_s": median(ceilings),
        "floors": floors,
        "ceilings": ceilings,
        "vs_floor": median([rate / floor for rate, floor in zip(rates, floors)]),
        "vs_ceiling": median([rate / ceiling for rate, ceiling in zip(rates, ceilings)]),
    }


@dataclass(frozen=True)
class Corpus:
    """The texts every phase sends: short sentences, all distinct sentences, ~40-token passages."""

    texts: list[str]
    sentences: list[str]
    passages: list[str]


def measure_traffic(
    folder: Path, provider: str, precision: str, corpus: Corpus, floor: float, plan: TrafficPlan
) -> dict[str, Any]:
    """The real-traffic phases (benchmarks.traffic), each on servers of its own."""
    args = ["--provider", provider, "--precision", precision]
    log(f"[{precision}] real traffic: Zipf queries, a big client beside small ones, sparse requests")
    return {
        "zipf": zipf_phase(folder, args, corpus.sentences, plan),
        "mixed": mixed_phase(folder, args, corpus.passages, corpus.texts, floor, plan),
        "sparse": sparse_phase(folder, args, corpus.texts, plan),
    }


def measure_precision(
    folder: Path, provider: str, precision: str, corpus: Corpus, plan: ServePlan
) -> dict[str, Any]:
    texts = corpus.texts
    from gist_onnx import Embedder
    from gist_onnx.serve.process import start_server

    embedder = Embedder(folder, provider=provider, precision=precision)
    embedder.encode(texts[:32], batch_size=32)  # warm-up: first calls allocate
    results: dict[str, Any] = {"in_process": {}}
    peak = 0.0
    for batching in (False, True):
        name = "server" if batching else "server_no_batching"
        # No vector cache: these phases cycle through 1,024 texts, and measure what computing costs.
        args = ["--provider", provider, "--precision", precision, "--max-queue", "512", "--cache-mb", "0"]
        if not batching:
            args.append("--no-batching")
        server = start_server(folder, *args)
        try:
            figures: dict[str, Any] = {"rss_mib_idle": server.rss_mib()}
            if batching:
                log(f"[{precision}] idle overhead, {plan.idle_calls} calls each way")
                figures["idle"] = idle_overhead(server.port, embedder, texts, plan.idle_calls)
            for clients in plan.clients if batching else (max(plan.clients),):
                log(f"[{precision}] {name}: closed loop, {clients} clients, {plan.closed_seconds:.0f} s")
                if clients == max(plan.clients):  # the goal's ratios: beside floor and ceiling
                    figures[f"closed_{clients}"] = closed_beside_in_process(
                        server.port, embedder, clients, texts, plan.closed_seconds, plan.ceiling_blocks,
                        floor_calls=plan.idle_calls // 4,
                    )  # fmt: skip
                else:
                    figures[f"closed_{clients}"] = asyncio.run(
                        closed_loop(server.port, clients, texts, plan.closed_seconds)
                    ).summary()
            if batching:
                peak = figures[f"closed_{max(plan.clients)}"]["texts_per_s"]
                queue = server_batcher(folder, provider, precision) if plan.queue_shares else None
                try:
                    loops, queued = open_loops(server, queue, peak, texts, plan, precision)
                finally:
                    if queue is not None:
                        stop_batcher(queue)
                figures.update(loops)
                results["in_process"].update(queued)
                after = asyncio.run(closed_loop(server.port, 1, texts, 2.0)).summary()
                figures["right_after_overload"] = after
            figures["rss_mib_end"] = server.rss_mib()
            results[name] = figures
        finally:
            figures_exit = server.stop()
            results.setdefault("exit_codes", {})[name] = figures_exit
    beside = results["server"][f"closed_{max(plan.clients)}"]
    results["in_process"]["floor_texts_per_s"] = beside["floor_texts_per_s"]
    results["in_process"]["ceiling_texts_per_s"] = beside["ceiling_texts_per_s"]
    del embedder  # its memory, before the traffic phases start servers of their own
    floor = results["in_process"]["floor_texts_per_s"]
    results["traffic"] = measure_traffic(folder, provider, precision, corpus, floor, plan.traffic)
    return results


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} x {status}" for status, count in counts.items())


def _p50_p99(figures: dict[str, Any] | None) -> str:
    return f"{figures['p50_ms']:.0f} / {figures['p99_ms']:.0f}" if figures else "not run"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Serving benchmark",
        "",
        f"`{report['command']}` on {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])})"
        + (f", {report['gpu']} (CUDA)" if report.get("gpu") else "")
        + "; "
        f"{report['created']}; {report['wall_s'] / 60:.1f} min. {report['model']}. Server and load "
        "generator share the machine; every request is one short STS-B sentence to /v1/embeddings. "
        "The 64-client loop runs in blocks, each right after an in-process floor and ceiling pass; "
        "the ratios are medians over those neighbouring pairs.",
        "",
        "| precision | in-process floor / ceiling texts/s | 1 / 16 / 64 clients texts/s | 64 clients, "
        "batching off | 64 vs ceiling / floor | idle overhead ms (p50) | p50 / p95 / p99 ms, 64 clients |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        s, off, ip = r["server"], r["server_no_batching"], r["in_process"]
        c64 = s["closed_64"]
        ratios = f"{c64['vs_ceiling']:.2f}x / {c64['vs_floor']:.2f}x"
        idle = s["idle"]
        lines.append(
            f"| {precision} | {ip['floor_texts_per_s']:.1f} / {ip['ceiling_texts_per_s']:.1f} | "
            + " / ".join(f"{s[f'closed_{c}']['texts_per_s']:.1f}" for c in report["plan"]["clients"])
            + f" | {off['closed_64']['texts_per_s']:.1f} | {ratios} | {idle['overhead_ms']:.2f} "
            f"({idle['in_process_p50_ms']:.1f} → {idle['server_p50_ms']:.1f}) | "
            f"{c64['p50_ms']:.0f} / {c64['p95_ms']:.0f} / {c64['p99_ms']:.0f} |"
        )
    lines += [
        "",
        'Open loop: Poisson arrivals at a share of the 64-client peak. "Same queue in process" offers '
        "the same arrivals to the server's batcher without HTTP, in this process, in blocks of about "
        f"{OPEN_BLOCK_SECONDS:.0f} s alternating with the server's; the intervals are {INTERVAL_LEVEL:.0%} "
        "bootstrap intervals drawing whole pairs of blocks.",
        "",
        "| precision | load | offered / served texts/s | server p50 / p99 ms | server p99 interval ms | "
        "same queue in process p50 / p99 ms | p99 server / in process (interval) | 4x idle p50 ms | "
        "statuses | dropped connections | 429 p99 ms | RSS MiB idle → after | right after: status, p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        s = r["server"]
        shares = list(report["plan"]["open_seconds"])
        for share in shares:
            o = s[f"open_{share}"]
            rejected = f"{o['rejected_p99_ms']:.1f}" if o["rejected_p99_ms"] is not None else "none"
            after = s["right_after_overload"]  # measured once, after the last load
            after_text = (
                f"{_statuses(after['statuses'])}, {after['p50_ms']:.1f}" if share == shares[-1] else ""
            )
            queue = r["in_process"].get(f"open_{share}")
            paired = (queue or {}).get("paired")
            ratio = (
                f"{paired['p99_ratio']:.2f}x ({interval_text(paired['p99_ratio_interval'], 'x', 2)})"
                if paired
                else "not run"
            )
            lines.append(
                f"| {precision} | {share} | {o['rate_per_s']:.0f} / {o['texts_per_s']:.0f} | {_p50_p99(o)} | "
                f"{interval_text(paired['server_p99_interval_ms'], digits=0) if paired else 'not run'} | "
                f"{_p50_p99(queue)} | {ratio} | {4 * s['idle']['server_p50_ms']:.0f} | "
                f"{_statuses(o['statuses'])} | {o['errors']} | {rejected} | "
                f"{s['rss_mib_idle']:.0f} → {o['rss_mib_after']:.0f} | {after_text} |"
            )
    if all("traffic" in r for r in report["precisions"].values()):
        lines += traffic_markdown(report)
    return "\n".join(lines) + "\n"


def _label(report: dict[str, Any], precision: str) -> str:
    """A row's name: its precision, after its provider where that is not the CPU's."""
    provider = report.get("provider", "cpu")
    return precision if provider == "cpu" else f"{provider} {precision}"


def readme_table(report: dict[str, Any]) -> str:
    """The README's serving table: throughput and tail under load, repeated queries, a big client
    beside small ones, sparse requests, and overload, per precision."""
    from benchmarks.report import machine_line

    lines = [
        f"{machine_line(report)} {report['model']}.",
        "",
        "| precision | 64 clients texts/s (vs ceiling; its blocks) | p99 / p50, 64 clients | "
        "50% load p99 ms: server / same queue in process / 4x idle p50 (server over in process, "
        f"{INTERVAL_LEVEL:.0%} interval) | repeated queries, cache vs none: texts/s, p50, bit-identical "
        "| big request beside small ones: small p50 / p99 (x idle p50; p99 interval), big (x alone) | "
        "CPU ms per request: sparse / back to back | 200% load: statuses, 429 p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        s, ip = r["server"], r["in_process"]
        c64, overload, idle = s["closed_64"], s["open_200%"], s["idle"]["server_p50_ms"]
        blocks = [rate / ceiling for rate, ceiling in zip(c64["block_texts_per_s"], c64["ceilings"])]
        rejected = (
            f"{overload['rejected_p99_ms']:.1f}" if overload["rejected_p99_ms"] is not None else "no 429"
        )
        half, queue = s["open_50%"], ip.get("open_50%")
        tail = f"{half['p99_ms']:.0f} / {queue['p99_ms']:.0f}" if queue else f"{half['p99_ms']:.0f} / not run"
        tail += f" / {4 * idle:.0f}"
        paired = (queue or {}).get("paired")
        if paired:
            tail += f" ({paired['p99_ratio']:.2f}x, {interval_text(paired['p99_ratio_interval'], 'x', 2)})"
        cells = [
            f"{c64['texts_per_s']:.1f} ({c64['vs_ceiling']:.2f}x; {min(blocks):.2f}–{max(blocks):.2f}x)",
            f"{c64['p99_ms'] / c64['p50_ms']:.2f}",
            tail,
        ]
        traffic = r.get("traffic")
        if traffic:
            z, m, sp = traffic["zipf"], traffic["mixed"], traffic["sparse"]
            differ = z["bit_identical"] < z["compared"]
            cells += [
                f"{z['throughput_ratio']:.1f}x, {z['p50_ratio']:.2f}x, "
                f"{z['bit_identical']} / {z['compared']}"
                + (f" (max diff {z['max_abs_diff']:.0e})" if differ else ""),
                f"{m['small']['p50_ms']:.0f} / {m['small']['p99_ms']:.0f} ({m['small_p50_vs_idle']:.1f}x / "
                f"{m['small_p99_vs_idle']:.1f}x; {interval_text(m.get('small_p99_vs_idle_interval'), 'x')}), "
                f"{m['big_ratio']:.2f}x",
                f"{sp['sparse_cpu_ms_per_request']:.0f} / {sp['back_to_back_cpu_ms_per_request']:.0f}",
            ]
        else:
            cells += ["not run"] * 3
        cells.append(f"{_statuses(overload['statuses'])}, {rejected}")
        lines.append(f"| {_label(report, precision)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _gpu_name() -> str:
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.split("\n")
        return names[0].strip() or "unknown GPU"
    except OSError:
        return "unknown GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and seconds per phase (the tests)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest"), help="where serve.{json,md} go"
    )
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for the model and its export (reused)"
    )
    parser.add_argument(
        "--provider", choices=("cpu", "cuda", "openvino"), default="cpu",
        help="where the server and encode run (cpu)",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS[1:],
        help="precisions to serve, one after the other (default: fp32 int8; on CUDA say fp16, "
        "under OpenVINO bf16 where the CPU has it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.precisions:
        plan = replace(plan, precisions=tuple(args.precisions))

    from gist_onnx.export import export_model
    from gist_onnx.manifest import read_manifest
    from gist_onnx.session import graph_of

    started = time.perf_counter()
    model = random_gist(args.work, tiny=plan.tiny)
    folder = model.parent / "onnx"
    graphs = {graph_of(precision, args.provider) for precision in plan.precisions}
    if not (folder / "manifest.json").is_file() or graphs - set(read_manifest(folder).graphs):
        log(f"exporting {', '.join(sorted(graphs))}")
        export_model(
            str(model), folder, quantize="int8" if "int8" in graphs else None, fp16="fp16" in graphs,
            openvino_int8="int8-openvino" in graphs, force=True,
        )  # fmt: skip
    sentences = load_stsb().sentences()
    passages = workload_texts(
        {"passages": Workload(2 * plan.traffic.big_texts, PASSAGE_TOKENS, ())},
        sentences,
        folder / "tokenizer.json",
    )["passages"]
    corpus = Corpus(fixed_shuffle(sentences)[:1024], fixed_shuffle(sentences), passages)
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m benchmarks.serve", *(argv if argv is not None else sys.argv[1:])]),
        "provider": args.provider,
        "gpu": _gpu_name() if args.provider == "cuda" else None,
        "machine": machine(),
        "versions": versions(),
        "model": "Random weights, GIST-Embedding-v0's "
        + ("config scaled down" if plan.tiny else "exact architecture"),
        "plan": asdict(plan),
        "precisions": {p: measure_precision(folder, args.provider, p, corpus, plan) for p in plan.precisions},
    }
    report["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve.md").write_text(markdown(report))
    print(markdown(report))
    log(f"done in {report['wall_s'] / 60:.1f} min: {args.out}/serve.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
