"""`python -m benchmarks.studies.first_token`: what computing only the first token's last layer buys.

A CLS model's export computes its last layer for the first token only (export/first_token.py);
``--all-tokens`` computes it for every token. Both exports of GIST's architecture (random
weights: speed does not depend on them) run side by side, fp32 and int8, passes interleaved:
short STS-B sentences at batch 32, 512-token passages at batch 16, and single-text latency. The
vectors of the two exports are compared too (they should agree to float rounding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import Encode
from benchmarks.corpus import load_stsb, workload_texts
from benchmarks.measure import alternating_latency, median, timed
from benchmarks.run import FULL

EXPORTS = {"first-token": False, "all-tokens": True}  # name → export_model(all_tokens=...)
SHORT_TEXTS, LONG_TEXTS = FULL.workloads["short"].texts, FULL.workloads["long"].texts


def _texts(tokenizer_path: Path) -> dict[str, list[str]]:
    """The full benchmark's short and long texts (256 STS-B sentences, 16 passages of ~512 tokens)."""
    texts = workload_texts(FULL.workloads, load_stsb().sentences(), tokenizer_path)
    return {"short": texts["short"], "long": texts["long"]}


def paired(first: Encode, every: Encode, texts: list[str], batch: int, passes: int) -> dict[str, float]:
    """texts/s of each export and the median of per-pass ratios.

    The two run back to back in every pass, alternating which goes first, so that the machine's
    drift (large on a shared machine) falls on both sides of each ratio.
    """
    for encode in (first, every):
        encode(texts[:batch], batch)  # warm-up
    seconds: dict[str, list[float]] = {"first": [], "every": []}
    for index in range(passes):
        order = [("first", first), ("every", every)]
        for name, encode in order if index % 2 == 0 else order[::-1]:
            seconds[name].append(timed(lambda e=encode: e(texts, batch)))
    return {
        "first_token_texts_per_s": len(texts) / median(seconds["first"]),
        "all_tokens_texts_per_s": len(texts) / median(seconds["every"]),
        "speedup": median([e / f for f, e in zip(seconds["first"], seconds["every"])]),
    }


def measure(folders: dict[str, Path], texts: dict[str, list[str]], passes: int = 9) -> dict[str, Any]:
    """Paired throughput per workload, latency p50 and agreement, for fp32 and int8."""
    from gist_onnx import Embedder

    results: dict[str, Any] = {}
    for precision in ("fp32", "int8"):
        first, every = (Embedder(folders[name], provider="cpu", precision=precision) for name in EXPORTS)
        row: dict[str, Any] = {
            f"{workload}_b{batch}": paired(first.encode, every.encode, texts[workload], batch, passes)
            for workload, batch in (("short", 32), ("long", 16))
        }
        row["latency_p50_ms"] = alternating_latency(
            {"first-token": lambda t, e=first: e.encode([t]), "all-tokens": lambda t, e=every: e.encode([t])},
            texts["short"],
            100,
        )
        a, b = first.encode(texts["short"], batch_size=32), every.encode(texts["short"], batch_size=32)
        row["min_cosine_between_exports"] = float((a * b).sum(axis=1).min())
        results[precision] = row
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# The last layer for the first token only, side by side",
        "",
        f"`python -m benchmarks.studies.first_token` on {results['cpu']}; {results['created']}. GIST's "
        "architecture "
        f"with random weights; {SHORT_TEXTS} STS-B sentences at batch 32, {LONG_TEXTS} passages of ~512 "
        "tokens "
        "at batch 16; the two exports back to back in each of 9 passes, alternating which goes first. "
        "Speedup: the median of the per-pass ratios. Latency: p50 over 100 single texts, in alternating "
        "blocks of 10.",
        "",
        "| precision | workload | first token texts/s | all tokens texts/s | speedup | latency p50 ms first "
        "/ all | min cosine between the two |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for precision in ("fp32", "int8"):
        row = results[precision]
        latency = row["latency_p50_ms"]
        for workload in ("short_b32", "long_b16"):
            r = row[workload]
            lines.append(
                f"| {precision} | {workload} | {r['first_token_texts_per_s']:.1f} | "
                f"{r['all_tokens_texts_per_s']:.1f} "
                f"| {r['speedup']:.2f}x | {latency['first-token']:.1f} / {latency['all-tokens']:.1f} "
                f"| {row['min_cosine_between_exports']:.6f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m benchmarks.studies.first_token", __doc__, "first-token", argv)

    from gist_onnx.export import export_model

    with common.workspace(args.work, "gist-onnx-first-token-") as (work, _):
        gist = common.random_gist(work)
        folders = {name: work / "gist-random" / name for name in EXPORTS}
        for name, all_tokens in EXPORTS.items():
            if not (folders[name] / "manifest.json").is_file():
                export_model(str(gist), folders[name], quantize="int8", all_tokens=all_tokens, force=True)
        results = {**common.header(), **measure(folders, _texts(gist / "tokenizer.json"))}
    common.write(args.out, "first-token", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
