"""The benchmark run: every variant on the same texts, in one process, passes interleaved.

Interleaving (pass 1 of every variant, then pass 2, …) spreads the machine's drift over all
variants alike, so ratios taken in one run are fair even on a noisy machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Encode
from benchmarks.corpus import StsPairs, Workload, stsb_spearman, token_lengths, workload_texts
from benchmarks.measure import (
    batch_drift,
    bert_flops,
    interleaved_latency,
    throughput,
    weight_gemm_params,
    weight_pass_ms,
)
from benchmarks.variants import BASELINE, SPECS, Prepared, VariantSpec, load, prepare, skip_reason


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does: the full run and --quick differ only here."""

    workloads: dict[str, Workload]
    passes: int
    latency_calls: int
    latency_block: int  # single-text calls in a row before the next variant's
    quality_pairs: int | None  # None: all STS-B pairs
    rss_texts: int
    drift_texts: int  # embedded alone and in batches, for batch independence


# Sized for 25 minutes on a 2-core machine: a 512-token GIST text costs about 97 GFLOP, over half a
# second in fp32 on PyTorch, so the long workload is 16 texts in one batch (it is compute-bound:
# batch size barely matters there).
FULL = Plan(
    {
        "short": Workload(256, None, (1, 8, 32, 128)),
        "medium": Workload(32, 126, (1, 8, 32)),
        "long": Workload(16, 510, (16,)),
    },
    passes=3,
    latency_calls=200,
    latency_block=10,
    quality_pairs=None,
    rss_texts=32,
    drift_texts=128,
)
QUICK = Plan(
    {
        "short": Workload(64, None, (1, 8, 32)),
        "medium": Workload(16, 126, (8,)),
        "long": Workload(8, 510, (8,)),
    },
    passes=3,
    latency_calls=200,
    latency_block=10,
    quality_pairs=300,
    rss_texts=16,
    drift_texts=32,
)
# Quality on random weights means nothing: their figures are parity checks on a sample.
RANDOM_WEIGHT_QUALITY_PAIRS = 256


@dataclass(frozen=True)
class ModelCase:
    name: str
    folder: Path
    about: str
    real_weights: bool


def set_peak_fractions(report: dict[str, Any], peak_gflops: float) -> None:
    """Each throughput row's useful GFLOP/s as a fraction of the machine's GEMM peak."""
    for model in report["models"].values():
        for variant in model["variants"].values():
            for row in variant["throughput"]:
                row["fraction_of_gemm_peak"] = row["gflops"] / peak_gflops


def cold_start(spec_name: str, prepared: Prepared, texts: list[str], batch_size: int) -> dict[str, float]:
    """Start a fresh process for one variant: seconds to first embedding, then its peak RSS."""
    job = {
        "variant": spec_name,
        "prepared": prepared.to_json(),
        "texts": texts,
        "batch_size": batch_size,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.coldstart", handle.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    first = None
    last = ""
    for line in process.stdout:
        if line.startswith("first-embedding") and first is None:
            first = time.perf_counter() - start
        last = line
    if process.wait() != 0 or first is None:
        raise RuntimeError(f"the cold-start process for {spec_name} failed (exit {process.returncode})")
    Path(handle.name).unlink()
    return {"cold_start_s": first, **json.loads(last)}


def quality(
    encoders: dict[str, Encode], pairs: StsPairs, long_texts: list[str], reference_name: str
) -> dict[str, dict[str, float]]:
    """STS-B Spearman x100 per variant, min/mean cosine to the reference's vectors, and the min
    cosine on long texts (a stack that truncates elsewhere differs only there)."""
    from gist_onnx.export.verify import agreement

    sentences = pairs.sentences()
    vectors = {name: encode(sentences, 32) for name, encode in encoders.items()}
    long = {name: encode(long_texts, 8) for name, encode in encoders.items()}
    out = {}
    for name, found in vectors.items():
        agreed = agreement(vectors[reference_name], found)
        out[name] = {
            "stsb_spearman_x100": stsb_spearman(pairs, found),
            "min_cosine_to_pytorch": agreed.min_cosine,
            "mean_cosine_to_pytorch": agreed.mean_cosine,
            "long_min_cosine_to_pytorch": agreement(long[reference_name], long[name]).min_cosine,
        }
    return out


def run_model(case: ModelCase, plan: Plan, work: Path, preset: str, stsb: StsPairs, log) -> dict[str, Any]:
    """Every figure for one model, every variant side by side."""
    skipped = {spec.name: reason for spec in SPECS if (reason := skip_reason(spec))}
    specs = [spec for spec in SPECS if spec.name not in skipped]
    for name, reason in skipped.items():
        log(f"[{case.name}] skipping {name}: {reason}")
    log(f"[{case.name}] exporting for sentence-transformers' ONNX backend, gist-onnx and the peers")
    # NNCF calibrates on the corpus's last sentences: outside the --quick quality pairs; the full
    # run scores every pair, but calibration reads only activation ranges, never the labels.
    prepared = prepare(case.folder, work / case.name, preset, stsb.sentences()[::-1])
    config = json.loads((case.folder / "config.json").read_text())
    manifest = json.loads((prepared.gist_dirs["gist-onnx"] / "manifest.json").read_text())
    tokenizer_path = prepared.gist_dirs["gist-onnx"] / "tokenizer.json"
    encoders = {spec.name: load(spec, prepared) for spec in specs}
    texts = workload_texts(plan.workloads, stsb.sentences(), tokenizer_path)
    variants: dict[str, dict[str, Any]] = {
        spec.name: {
            "stack": spec.stack,
            "precision": resolved_precision(spec),
            "note": spec.note,
            "throughput": [],
        }
        for spec in specs
    }

    for workload, workload_texts_ in texts.items():
        lengths = token_lengths(workload_texts_, tokenizer_path, manifest["max_seq_length"])
        flops = bert_flops(config, lengths)
        for batch_size in plan.workloads[workload].batch_sizes:
            log(
                f"[{case.name}] throughput: {workload} ({len(workload_texts_)} texts, mean "
                f"{np.mean(lengths):.0f} tokens), batch {batch_size}"
            )
            seconds = throughput(encoders, workload_texts_, batch_size, plan.passes)
            for name, value in seconds.items():
                variants[name]["throughput"].append(
                    {
                        "workload": workload,
                        "batch_size": batch_size,
                        "texts": len(workload_texts_),
                        "mean_tokens": float(np.mean(lengths)),
                        "seconds": value,
                        "texts_per_s": len(workload_texts_) / value,
                        "tokens_per_s": sum(lengths) / value,
                        "gflops": flops / value / 1e9,
                        "vs_pytorch": seconds[BASELINE] / value,
                    }
                )

    log(f"[{case.name}] single-text latency, {plan.latency_calls} calls each")
    samples_source = texts["short"]
    latencies = interleaved_latency(
        {name: (lambda t, e=encode: e([t], 1)) for name, encode in encoders.items()},
        samples_source,
        plan.latency_calls,
        plan.latency_block,
    )
    for name, figures in latencies.items():
        variants[name]["latency_ms"] = figures
    base_p50 = variants[BASELINE]["latency_ms"]["p50"]
    for name in variants:
        variants[name]["latency_ms"]["p50_vs_pytorch"] = variants[name]["latency_ms"]["p50"] / base_p50

    log(f"[{case.name}] batch independence: {plan.drift_texts} texts alone and in batches of 32")
    for name, figures in batch_drift(encoders, samples_source[: plan.drift_texts]).items():
        variants[name]["batch_drift"] = figures

    pairs = stsb.head(plan.quality_pairs if case.real_weights else RANDOM_WEIGHT_QUALITY_PAIRS)
    log(f"[{case.name}] quality on {len(pairs.first)} STS-B pairs")
    for name, figures in quality(encoders, pairs, texts["long"][:8], BASELINE).items():
        variants[name]["quality"] = figures
    del encoders

    floor_tokens = int(np.median(token_lengths(samples_source, tokenizer_path, manifest["max_seq_length"])))
    log(f"[{case.name}] single-text floor: one pass over the weight GEMMs at {floor_tokens} tokens")
    floor = weight_pass_ms(config["hidden_size"], weight_gemm_params(config), floor_tokens)

    log(f"[{case.name}] cold start and peak RSS, one fresh process per variant")
    rss_texts = texts["medium"][: plan.rss_texts]
    for spec in specs:
        variants[spec.name].update(cold_start(spec.name, prepared, rss_texts, 32))
    base = variants[BASELINE]
    for name in variants:
        variants[name]["cold_start_vs_pytorch"] = base["cold_start_s"] / variants[name]["cold_start_s"]
        variants[name]["peak_rss_vs_pytorch"] = variants[name]["peak_rss_mib"] / base["peak_rss_mib"]
    return {
        "about": case.about,
        "config": {
            k: config[k]
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
            )
        },
        "pooling": manifest["pooling"],
        "max_seq_length": manifest["max_seq_length"],
        "quality_pairs": len(pairs.first),
        "single_text_floor": floor,
        "variants": variants,
        "skipped": skipped,
    }


def resolved_precision(spec: VariantSpec) -> str:
    """The precision a variant really runs at: OpenVINO's default depends on the CPU."""
    if spec.stack == "openvino" and spec.precision == "default":
        from benchmarks.peers import openvino_precision

        return openvino_precision()
    return spec.precision
