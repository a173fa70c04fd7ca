"""`python -m benchmarks.serve`: the HTTP server under load, beside in-process encode, in one run.

For each precision (GIST's architecture, random weights): the in-process floor (``encode([text])``
once per request) and ceiling (``encode`` at batch 32 on the same texts), the server's idle
overhead (single requests alternated with in-process calls), closed loops of 1, 16 and 64
clients each sending one short text, the same 64 clients against the server with batching off,
and open loops at 50% and 200% of the measured peak (Poisson arrivals). The load comes from raw
HTTP/1.1 over asyncio streams with keep-alive, so the client costs the 2-core machine little.
Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, machine, random_gist, versions
from benchmarks.corpus import fixed_shuffle, load_stsb
from benchmarks.measure import alternating_latency, median, timed


@dataclass(frozen=True)
class ServePlan:
    clients: tuple[int, ...]
    closed_seconds: float
    open_seconds: dict[str, float]  # load as a share of the peak → seconds
    idle_calls: int
    precisions: tuple[str, ...]
    tiny: bool


FULL = ServePlan((1, 16, 64), 15.0, {"50%": 20.0, "200%": 30.0}, 200, ("fp32", "int8"), tiny=False)
QUICK = ServePlan((1, 16, 64), 3.0, {"50%": 3.0, "200%": 4.0}, 40, ("fp32",), tiny=True)
CEILING_TEXTS = 256


def _request_bytes(text: str) -> bytes:
    body = json.dumps({"input": text, "encoding_format": "float"}).encode()
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read the whole response; its status."""
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


@dataclass
class LoadResult:
    seconds: float
    latencies: dict[int, list[float]]  # status → seconds of each response
    errors: int  # connections refused, reset or closed mid-response

    def summary(self) -> dict[str, Any]:
        ok = np.array(self.latencies.get(200, [])) * 1e3
        rejected = np.array(self.latencies.get(429, [])) * 1e3
        pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
        return {
            "seconds": self.seconds,
            "texts_per_s": len(ok) / self.seconds,
            "p50_ms": pct(ok, 50), "p95_ms": pct(ok, 95), "p99_ms": pct(ok, 99),
            "statuses": {str(k): len(v) for k, v in sorted(self.latencies.items())},
            "errors": self.errors,
            "rejected_p99_ms": pct(rejected, 99),
        }  # fmt: skip


async def closed_loop(port: int, clients: int, texts: list[str], seconds: float) -> LoadResult:
    """``clients`` connections, each sending its next text as soon as the last is answered."""
    latencies: dict[int, list[float]] = {}
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = index
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                status = await _exchange(reader, writer, _request_bytes(texts[sent % len(texts)]))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                return
            latencies.setdefault(status, []).append(time.perf_counter() - started)
            sent += clients
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return LoadResult(time.perf_counter() - began, latencies, errors)


async def open_loop(port: int, rate: float, texts: list[str], seconds: float) -> LoadResult:
    """Poisson arrivals at ``rate`` per second for ``seconds``, whatever the server's pace; each
    arrival takes a free keep-alive connection or opens one."""
    latencies: dict[int, list[float]] = {}
    errors = 0
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    rng = random.Random(0)

    async def arrival(index: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        request = _request_bytes(texts[index % len(texts)])
        try:
            if idle:  # a kept-alive connection the server may have closed after its idle timeout
                reader, writer = idle.pop()
                try:
                    status = await _exchange(reader, writer, request)
                except (ConnectionResetError, asyncio.IncompleteReadError):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    status = await _exchange(reader, writer, request)
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                status = await _exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        latencies.setdefault(status, []).append(time.perf_counter() - started)
        idle.append((reader, writer))

    began = time.perf_counter()
    tasks, index, due = [], 0, began
    while due < began + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.ensure_future(arrival(index)))
        index += 1
        due += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return LoadResult(time.perf_counter() - began, latencies, errors)


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


def in_process(embedder, texts: list[str], calls: int) -> dict[str, float]:
    """The floor (one text per call) and the ceiling (batch 32) on the same texts."""
    embedder.encode(texts[:32], batch_size=32)
    one = [timed(lambda t=t: embedder.encode([t])) for t in (texts * 2)[:calls]]
    batch = median([timed(lambda: embedder.encode(texts[:CEILING_TEXTS], batch_size=32)) for _ in range(3)])
    return {
        "floor_texts_per_s": 1 / median(one),
        "ceiling_texts_per_s": min(CEILING_TEXTS, len(texts)) / batch,
    }


def measure_precision(folder: Path, precision: str, texts: list[str], plan: ServePlan) -> dict[str, Any]:
    from gist_onnx import Embedder
    from gist_onnx.serve.process import start_server

    results: dict[str, Any] = {}
    embedder = Embedder(folder, provider="cpu", precision=precision)
    log(f"[{precision}] in-process floor and ceiling")
    results["in_process"] = in_process(embedder, texts, plan.idle_calls)

    for batching in (False, True):
        name = "server" if batching else "server_no_batching"
        args = ("--precision", precision, "--max-queue", "512") + (() if batching else ("--no-batching",))
        server = start_server(folder, *args)
        try:
            figures: dict[str, Any] = {"rss_mib_idle": server.rss_mib()}
            if batching:
                log(f"[{precision}] idle overhead, {plan.idle_calls} calls each way")
                figures["idle"] = idle_overhead(server.port, embedder, texts, plan.idle_calls)
            for clients in plan.clients if batching else (64,):
                log(f"[{precision}] {name}: closed loop, {clients} clients, {plan.closed_seconds:.0f} s")
                figures[f"closed_{clients}"] = asyncio.run(
                    closed_loop(server.port, clients, texts, plan.closed_seconds)
                ).summary()
            if batching:
                peak = figures[f"closed_{max(plan.clients)}"]["texts_per_s"]
                for share, seconds in plan.open_seconds.items():
                    rate = peak * float(share.rstrip("%")) / 100
                    log(f"[{precision}] open loop at {share} of the peak ({rate:.0f}/s), {seconds:.0f} s")
                    figures[f"open_{share}"] = {
                        "rate_per_s": rate,
                        **asyncio.run(open_loop(server.port, rate, texts, seconds)).summary(),
                        "rss_mib_after": server.rss_mib(),
                    }
                after = asyncio.run(closed_loop(server.port, 1, texts, 2.0)).summary()
                figures["right_after_overload"] = after
            figures["rss_mib_end"] = server.rss_mib()
            results[name] = figures
        finally:
            figures_exit = server.stop()
            results.setdefault("exit_codes", {})[name] = figures_exit
    return results


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} x {status}" for status, count in counts.items())


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Serving benchmark",
        "",
        f"`{report['command']}` on {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])}); "
        f"{report['created']}; {report['wall_s'] / 60:.1f} min. {report['model']}. Server and load "
        "generator share the machine; every request is one short STS-B sentence to /v1/embeddings.",
        "",
        "| precision | in-process floor / ceiling texts/s | 1 / 16 / 64 clients texts/s | 64 clients, "
        "batching off | 64 vs ceiling / floor | idle overhead ms (p50) | p50 / p95 / p99 ms, 64 clients |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        s, off, ip = r["server"], r["server_no_batching"], r["in_process"]
        c64 = s["closed_64"]
        ceiling, floor = ip["ceiling_texts_per_s"], ip["floor_texts_per_s"]
        ratios = f"{c64['texts_per_s'] / ceiling:.2f}x / {c64['texts_per_s'] / floor:.2f}x"
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
        "Open loop (Poisson arrivals at a share of the 64-client peak):",
        "",
        "| precision | load | offered / served texts/s | p50 / p99 ms (200s) | statuses | dropped "
        "connections | 429 p99 ms | RSS MiB idle → after | right after: status, ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        s = r["server"]
        for share in report["plan"]["open_seconds"]:
            o = s[f"open_{share}"]
            after = s["right_after_overload"]
            rejected = f"{o['rejected_p99_ms']:.1f}" if o["rejected_p99_ms"] is not None else "none"
            lines.append(
                f"| {precision} | {share} | {o['rate_per_s']:.0f} / {o['texts_per_s']:.0f} | "
                f"{o['p50_ms']:.0f} / {o['p99_ms']:.0f} | {_statuses(o['statuses'])} | {o['errors']} | "
                f"{rejected} | "
                f"{s['rss_mib_idle']:.0f} → {o['rss_mib_after']:.0f} | "
                f"{_statuses(after['statuses'])}, p50 {after['p50_ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and seconds per phase (the tests)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest"), help="where serve.{json,md} go"
    )
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for the model and its export (reused)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    from gist_onnx.export import export_model

    started = time.perf_counter()
    model = random_gist(args.work, tiny=plan.tiny)
    folder = model.parent / "onnx"
    if not (folder / "manifest.json").is_file():
        log("exporting fp32 + int8")
        export_model(str(model), folder, quantize="int8", force=True)
    texts = fixed_shuffle(load_stsb().sentences())[:1024]
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.serve" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "versions": versions(),
        "model": "Random weights, GIST-Embedding-v0's "
        + ("config scaled down" if plan.tiny else "exact architecture"),
        "plan": asdict(plan),
        "precisions": {p: measure_precision(folder, p, texts, plan) for p in plan.precisions},
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


def readme_table(report: dict[str, Any]) -> str:
    """The README's serving table: 64 single-text clients against in-process encode, per precision."""
    from benchmarks.report import machine_line

    lines = [
        f"{machine_line(report)} {report['model']}; one short text per request.",
        "",
        "| precision | in-process floor / ceiling texts/s | server, 64 clients texts/s (vs ceiling, vs "
        "floor) | batching off | idle overhead p50 ms | 200% load: statuses, 429 p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for precision, r in report["precisions"].items():
        s, ip = r["server"], r["in_process"]
        c64, overload = s["closed_64"]["texts_per_s"], s["open_200%"]
        rejected = (
            f"{overload['rejected_p99_ms']:.1f}" if overload["rejected_p99_ms"] is not None else "no 429"
        )
        lines.append(
            f"| {precision} | {ip['floor_texts_per_s']:.1f} / {ip['ceiling_texts_per_s']:.1f} | {c64:.1f} "
            f"({c64 / ip['ceiling_texts_per_s']:.2f}x, {c64 / ip['floor_texts_per_s']:.2f}x) | "
            f"{r['server_no_batching']['closed_64']['texts_per_s']:.1f} | {s['idle']['overhead_ms']:.2f} | "
            f"{_statuses(overload['statuses'])}, {rejected} |"
        )
    return "\n".join(lines) + "\n"
