"""`python -m benchmarks.studies.token_budget`: which cap on padded tokens per run pays, per device.

The runtime splits a batch into session runs of at most ``max_batch_tokens`` padded tokens
(gist_onnx.planning). The CPU provider's cap (512) was measured on ONNX Runtime's kernels: it
keeps each run's activations in cache. OpenVINO's kernels (AMX tiles in bf16) may want larger
runs. Each device and precision given runs GIST's architecture (random weights: speed does not
depend on them) under every cap, passes interleaved: the full benchmark's short texts at batch 32
and 128, its ~120-token texts at batch 32, its ~512-token texts at batch 16.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks import common
from benchmarks.corpus import load_stsb, workload_texts
from benchmarks.measure import throughput
from benchmarks.run import FULL

CAPS: tuple[int | None, ...] = (512, 1024, 2048, 4096, None)  # None: one run per batch
CASES = (("short", 32), ("short", 128), ("medium", 32), ("long", 16))
PASSES = 3


def _cap_name(cap: int | None) -> str:
    return "none" if cap is None else str(cap)


def _more(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variant",
        action="append",
        help="PROVIDER:PRECISION to measure, repeatable (default: openvino:bf16 where it runs, and cpu:int8)",
    )


def default_variants() -> list[str]:
    from benchmarks.variants import openvino_provider_skip

    return [*(["openvino:bf16"] if openvino_provider_skip("bf16") is None else []), "cpu:int8"]


def measure(folder: Any, variant: str, texts: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """texts/s per case and cap for one provider:precision."""
    from gist_onnx import Embedder

    provider, precision = variant.split(":")
    encoders = {
        _cap_name(cap): Embedder(folder, provider=provider, precision=precision, max_batch_tokens=cap)
        for cap in CAPS
    }
    results: dict[str, dict[str, float]] = {}
    for workload, batch in CASES:
        common.log(f"{variant}: {workload} texts at batch {batch}")
        encode = {name: (lambda t, b, e=e: e.encode(t, batch_size=b)) for name, e in encoders.items()}
        seconds = throughput(encode, texts[workload], batch, PASSES)
        results[f"{workload}_b{batch}"] = {name: len(texts[workload]) / s for name, s in seconds.items()}
    return results


def markdown(results: dict[str, Any]) -> str:
    caps = [_cap_name(cap) for cap in CAPS]
    lines = [
        "# Padded tokens per session run (`max_batch_tokens`)",
        "",
        f"`python -m benchmarks.studies.token_budget` on {results['cpu']}; {results['created']}. GIST's "
        f"architecture with random weights; texts/s, median of {PASSES} interleaved passes; 'none' is "
        "one run per batch.",
        "",
        "| variant | case | " + " | ".join(caps) + " |",
        "| --- | --- | " + " | ".join("---" for _ in caps) + " |",
    ]
    for variant, cases in results["variants"].items():
        for case, rates in cases.items():
            best = max(rates.values())
            cells = [f"**{rates[c]:.1f}**" if rates[c] == best else f"{rates[c]:.1f}" for c in caps]
            lines.append(f"| {variant} | {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    prog = "python -m benchmarks.studies.token_budget"
    args = common.parse_args(prog, __doc__, "token-budget", argv, _more)

    with common.workspace(args.work, "gist-onnx-budget-") as (work, _):
        gist, folder = common.random_gist_export(work)
        all_texts = workload_texts(FULL.workloads, load_stsb().sentences(), gist / "tokenizer.json")
        texts = {name: all_texts[name] for name in ("short", "medium", "long")}
        results: dict[str, Any] = {**common.header(), "variants": {}}
        for variant in args.variant or default_variants():
            results["variants"][variant] = measure(folder, variant, texts)
    common.write(args.out, "token-budget", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
