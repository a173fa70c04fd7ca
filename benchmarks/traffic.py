"""Real traffic for the serving benchmark: repeated queries (the vector cache), a big client
beside small ones (fair scheduling), and sparse requests (no spinning between them).

Each phase starts its own server(s) on a free loopback port and returns plain JSON figures.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log
from benchmarks.load import (
    LoadResult,
    closed_loop,
    closed_loop_over,
    exchange,
    paced_clients,
    percentile_ms,
    request_bytes,
)
from benchmarks.measure import INTERVAL_LEVEL, percentile_interval


@dataclass(frozen=True)
class TrafficPlan:
    zipf_texts: int  # distinct texts the queries are drawn from
    zipf_requests: int  # requests from a cold cache
    zipf_baseline_requests: int  # the same sequence's first requests, to a server without a cache
    big_texts: int  # passages in the big client's request
    small_clients: int
    small_share: float  # of the one-at-a-time floor, offered by all small clients together
    sparse_requests: int  # requests one every SPARSE_GAP_S, and as many back to back
    # The big client's requests beside the small clients, back to back: more of them, more small
    # answers for the p99 to rest on.
    big_requests: int = 1


FULL_TRAFFIC = TrafficPlan(10_000, 20_000, 3_000, 2048, 16, 0.10, 60, big_requests=2)
QUICK_TRAFFIC = TrafficPlan(1_000, 2_000, 500, 256, 4, 0.10, 10)

ZIPF_S = 1.1
ZIPF_CLIENTS = 64
SPARSE_GAP_S = 0.1


def distinct_texts(sentences: list[str], count: int) -> list[str]:
    """``count`` distinct texts: the distinct sentences, then pairs of them joined as needed."""
    unique = list(dict.fromkeys(sentences))
    pairs = (f"{a} {b}" for a, b in zip(unique, unique[1:] + unique[:1]))
    return list(itertools.islice(itertools.chain(unique, pairs), count))


def zipf_sequence(texts: list[str], requests: int, s: float = ZIPF_S, seed: int = 0) -> list[str]:
    """Queries drawn with P(rank k) ∝ k^-s over ``texts``, the first most popular."""
    weights = 1.0 / np.arange(1, len(texts) + 1) ** s
    draws = np.random.default_rng(seed).choice(len(texts), size=requests, p=weights / weights.sum())
    return [texts[i] for i in draws]


def _zipf_run(port: int, sequence: list[str]) -> tuple[LoadResult, dict[str, np.ndarray]]:
    vectors: dict[str, np.ndarray] = {}
    result = asyncio.run(
        closed_loop_over(port, ZIPF_CLIENTS, iter(sequence), lambda t, v: vectors.setdefault(t, v))
    )
    return result, vectors


def zipf_phase(
    folder: Path, server_args: list[str], sentences: list[str], plan: TrafficPlan
) -> dict[str, Any]:
    """64 clients over Zipf-distributed queries, from a cold cache and without one; the vectors
    of the texts both answered, compared bit for bit."""
    from gist_onnx.serve.process import start_server

    sequence = zipf_sequence(distinct_texts(sentences, plan.zipf_texts), plan.zipf_requests)
    figures: dict[str, Any] = {"distinct_requested": len(set(sequence)), "requests": len(sequence)}
    found: dict[str, dict[str, np.ndarray]] = {}
    for name, args, requests in (
        ("no_cache", ["--cache-mb", "0"], sequence[: plan.zipf_baseline_requests]),
        ("cache", [], sequence),
    ):
        server = start_server(folder, *server_args, *args)
        try:
            log(f"zipf: {len(requests)} requests, 64 clients, {name.replace('_', ' ')}")
            result, found[name] = _zipf_run(server.port, requests)
            figures[name] = {**result.summary(), "rss_mib": server.rss_mib()}
            if name == "cache":
                figures[name]["cache_hits"] = _metric(server.port, "gist_onnx_cache_hits_total")
        finally:
            server.stop()
    both = found["cache"].keys() & found["no_cache"].keys()
    equal = sum(np.array_equal(found["cache"][t], found["no_cache"][t]) for t in both)
    diff = max((float(np.abs(found["cache"][t] - found["no_cache"][t]).max()) for t in both), default=0.0)
    figures.update(compared=len(both), bit_identical=int(equal), max_abs_diff=diff)
    c, n = figures["cache"], figures["no_cache"]
    figures["throughput_ratio"] = c["texts_per_s"] / n["texts_per_s"]
    figures["p50_ratio"] = c["p50_ms"] / n["p50_ms"]
    return figures


def _idle_p50_ms(port: int, texts: list[str], calls: int = 40) -> float:
    return asyncio.run(closed_loop(port, 1, texts[:calls], 0.5 + calls * 0.2)).summary()["p50_ms"]


async def _big_requests(port: int, requests: list[list[str]]) -> tuple[list[int], float]:
    """The requests back to back on one connection: their statuses and the seconds they took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    statuses = [await exchange(reader, writer, request_bytes(passages)) for passages in requests]
    writer.close()
    return statuses, time.perf_counter() - started


async def _mixed(port: int, requests: list[list[str]], shorts: list[str], clients: int, think_s: float):
    big = asyncio.ensure_future(_big_requests(port, requests))
    small = await paced_clients(port, clients, shorts, think_s, until=big.done)
    return await big, small


def mixed_phase(
    folder: Path,
    server_args: list[str],
    passages: list[str],
    shorts: list[str],
    floor: float,
    plan: TrafficPlan,
) -> dict[str, Any]:
    """One client sending a big request alone, then ``plan.big_requests`` of them back to back
    while small clients send single texts at ``plan.small_share`` of the one-at-a-time ``floor``,
    on a server without a cache."""
    from gist_onnx.serve.process import start_server

    args = [*server_args, "--cache-mb", "0", "--max-client-batch", str(plan.big_texts)]
    server = start_server(folder, *args)
    think_s = plan.small_clients / (plan.small_share * floor)
    try:
        idle_p50 = _idle_p50_ms(server.port, shorts)
        log(f"mixed: {plan.big_texts} passages alone")
        [status_alone], alone_s = asyncio.run(_big_requests(server.port, [passages[: plan.big_texts]]))
        log(
            f"mixed: {plan.big_requests} x {plan.big_texts} passages beside {plan.small_clients} clients, "
            f"think {think_s:.1f} s"
        )
        (statuses_mixed, mixed_s), small = asyncio.run(
            _mixed(
                server.port,
                [passages[plan.big_texts : 2 * plan.big_texts]] * plan.big_requests,
                shorts,
                plan.small_clients,
                think_s,
            )
        )
    finally:
        server.stop()
    ok = small.latencies.get(200, [])
    alone, mixed = plan.big_texts / alone_s, plan.big_requests * plan.big_texts / mixed_s
    low, high = percentile_interval(np.array(ok) * 1e3, 99) if ok else (0.0, 0.0)
    return {
        "idle_p50_ms": idle_p50,
        "big_statuses": [status_alone, *statuses_mixed],
        "big_alone_texts_per_s": alone,
        "big_mixed_texts_per_s": mixed,
        "big_ratio": mixed / alone,
        "small_think_s": think_s,
        "small": small.summary(),
        "small_p50_vs_idle": (percentile_ms(ok, 50) or 0) / idle_p50,
        "small_p99_vs_idle": (percentile_ms(ok, 99) or 0) / idle_p50,
        # Independent draws of the small answers (they share no queue state beyond a slice).
        "small_p99_vs_idle_interval": [low / idle_p50, high / idle_p50],
        "interval_level": INTERVAL_LEVEL,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one_by_one(port: int, texts: list[str], gap_s: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for text in texts:
        await exchange(reader, writer, request_bytes(text))
        await asyncio.sleep(gap_s)
    writer.close()


def sparse_phase(folder: Path, server_args: list[str], texts: list[str], plan: TrafficPlan) -> dict[str, Any]:
    """Server CPU per request (all its threads): requests back to back, then one every
    SPARSE_GAP_S. What the gaps cost is what an idle server burns between requests."""
    from gist_onnx.serve.process import start_server

    server = start_server(folder, *server_args, "--cache-mb", "0")
    figures: dict[str, Any] = {}
    try:
        asyncio.run(_one_by_one(server.port, texts[:10], 0.0))  # warm
        for name, gap, part in (("back_to_back", 0.0, texts[10:]), ("sparse", SPARSE_GAP_S, texts[10:])):
            chosen = part[: plan.sparse_requests]
            before = _cpu_seconds(server.process.pid)
            asyncio.run(_one_by_one(server.port, chosen, gap))
            figures[f"{name}_cpu_ms_per_request"] = (
                (_cpu_seconds(server.process.pid) - before) / len(chosen) * 1e3
            )
    finally:
        server.stop()
    figures["ratio"] = figures["sparse_cpu_ms_per_request"] / figures["back_to_back_cpu_ms_per_request"]
    return figures


def _metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise KeyError(name)


def interval_text(interval: list[float] | None, unit: str = "", digits: int = 1) -> str:
    """An interval as "low–high" (with ``unit``), or "n/a" for reports written before intervals."""
    return f"{interval[0]:.{digits}f}–{interval[1]:.{digits}f}{unit}" if interval else "n/a"


def markdown(report: dict[str, Any]) -> list[str]:
    """The report's real-traffic tables, per precision."""
    lines = [
        "",
        f"Repeated queries: {ZIPF_CLIENTS} clients, Zipf (s = {ZIPF_S}) over distinct STS-B texts, from a "
        "cold cache; the server without a cache takes the same sequence's first requests. Vectors of the "
        "texts both answered compared bit for bit (base64, exact).",
        "",
        "| precision | requests (distinct) | texts/s: no cache / cache (ratio) | p50 ms: no cache / cache "
        "(ratio) | cache hits | bit-identical / compared (max abs diff) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        z = r["traffic"]["zipf"]
        n, c = z["no_cache"], z["cache"]
        lines.append(
            f"| {precision} | {z['requests']} ({z['distinct_requested']}) | {n['texts_per_s']:.1f} / "
            f"{c['texts_per_s']:.1f} ({z['throughput_ratio']:.2f}x) | {n['p50_ms']:.0f} / {c['p50_ms']:.0f} "
            f"({z['p50_ratio']:.2f}x) | {c['cache_hits']:.0f} | {z['bit_identical']} / {z['compared']} "
            f"({z['max_abs_diff']:.1e}) |"
        )
    lines += [
        "",
        "A big client beside small ones: requests of ~40-token passages, one alone, then "
        f"{report['plan']['traffic'].get('big_requests', 1)} back to back while small clients send single "
        "short texts with exponential think times (together a tenth of the one-at-a-time floor); no "
        f"cache. Idle p50: single requests to the idle server. Interval: {INTERVAL_LEVEL:.0%} bootstrap "
        "interval of the small p99.",
        "",
        "| precision | passages | big client texts/s: alone / mixed (ratio) | small: statuses | "
        "small p50 / p99 ms (x idle p50) | small p99 x idle p50, interval | idle p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        m = r["traffic"]["mixed"]
        s = m["small"]
        statuses = ", ".join(f"{count} x {status}" for status, count in s["statuses"].items())
        lines.append(
            f"| {precision} | {report['plan']['traffic']['big_texts']} | {m['big_alone_texts_per_s']:.1f} / "
            f"{m['big_mixed_texts_per_s']:.1f} ({m['big_ratio']:.2f}x) | {statuses} | {s['p50_ms']:.0f} / "
            f"{s['p99_ms']:.0f} ({m['small_p50_vs_idle']:.1f}x / {m['small_p99_vs_idle']:.1f}x) | "
            f"{interval_text(m.get('small_p99_vs_idle_interval'), 'x')} | {m['idle_p50_ms']:.1f} |"
        )
    lines += [
        "",
        f"Sparse requests: server CPU (every thread) per request, back to back and one every "
        f"{SPARSE_GAP_S * 1e3:.0f} ms.",
        "",
        "| precision | CPU ms per request: back to back / sparse (ratio) |",
        "| --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        sp = r["traffic"]["sparse"]
        dense, sparse = sp["back_to_back_cpu_ms_per_request"], sp["sparse_cpu_ms_per_request"]
        lines.append(f"| {precision} | {dense:.1f} / {sparse:.1f} ({sp['ratio']:.2f}x) |")
    return lines
