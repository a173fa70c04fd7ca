"""`python -m benchmarks.studies.int8_levers`: the INT8 designs weighed for gist-onnx, side by side.

Each is made from the same fp32 export with per-channel int8 weights, and differs in where the
activation scales come from and in which weight GEMMs become int8:

- per-token-smoothed: one scale per token computed in the graph, SmoothQuant smoothing, every
  weight GEMM int8, 7-bit weights (gist-onnx's default, export/per_token.py)
- per-token-smoothed-8bit: the same with 8-bit weights (``--quantize-preset avx512_vnni``): exact
  only on CPUs with VNNI; on others ONNX Runtime's kernels saturate (gist_onnx/cpu.py)
- per-token: the same without smoothing
- per-token-qkv-fp32: the same with the Q/K/V projections kept fp32
- per-tensor: one scale per batch tensor, ONNX Runtime's dynamic quantization, Q/K/V fp32
  (``--int8-scales per-tensor``)
- static: fixed scales calibrated once (QDQ, MinMax) on STS-B sentences kept out of the
  evaluation, Q/K/V fp32
- nbits: ONNX Runtime's MatMulNBits, 8-bit weights in blocks of 32 with int8 compute on
  activations quantized per block of each token (accuracy_level 4), Q/K/V fp32

Measured: quality on the real all-MiniLM-L6-v2 (cosine to PyTorch over the STS-B sentences, STS-B
Spearman), batch independence (each text alone vs in batches of 32), and speed on GIST's
architecture with random weights (short texts at batch 32, single-text latency), passes interleaved.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import log
from benchmarks.corpus import StsPairs, fixed_shuffle, load_stsb, stsb_spearman
from benchmarks.measure import batch_drift, latency_ms, throughput
from gist_onnx.cpu import cpu_flags, exact_weight_bits

DESIGNS = (
    "per-token-smoothed",
    "per-token-smoothed-8bit",
    "per-token",
    "per-token-qkv-fp32",
    "per-tensor",
    "static",
    "nbits",
)
EVAL_PAIRS = 3000  # quality is measured on these pairs; calibration uses sentences after them
CALIBRATION_PAIRS = 300


def build(design: str, export_dir: Path, dest: Path, calibration: list[str]) -> Path:
    """A copy of ``export_dir`` whose int8 graph is made the ``design``'s way."""
    from gist_onnx.export.calibration import calibration_batches
    from gist_onnx.export.convert import quantize_int8, quantize_settings, weight_gemms
    from gist_onnx.manifest import MANIFEST_NAME, file_record, read_manifest

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(export_dir, dest, ignore=shutil.ignore_patterns("model_int8.onnx"))
    fp32, int8 = dest / "model.onnx", dest / "model_int8.onnx"
    gemms = weight_gemms(fp32, qkv=False)
    manifest = read_manifest(dest)
    batches = calibration_batches(dest / "tokenizer.json", manifest.max_seq_length, manifest.inputs)
    per_token = quantize_settings("portable", "per-token")
    variants = {
        "per-token-smoothed": per_token,
        "per-token-smoothed-8bit": quantize_settings("avx512_vnni", "per-token"),
        "per-token": replace(per_token, smoothing=None),
        "per-token-qkv-fp32": replace(per_token, smoothing=None, qkv=False),
        "per-tensor": quantize_settings("portable", "per-tensor"),
    }
    # The weights' bits, for the runtime's check that this CPU multiplies them exactly.
    weight_bits = variants[design].weight_bits if design in variants else 8
    if design in variants:
        quantize_int8(fp32, int8, variants[design], batches)
    elif design == "static":
        _static(fp32, int8, gemms, dest, calibration)
    else:
        _nbits(fp32, int8, gemms)
    record = file_record(int8)
    graph = replace(
        manifest.graphs["int8"],
        size=record.size,
        sha256=record.sha256,
        quantization={"design": design, "weight_bits": weight_bits},
    )
    manifest = replace(manifest, graphs={**manifest.graphs, "int8": graph})
    (dest / MANIFEST_NAME).write_text(manifest.to_json())
    return dest


def _static(fp32: Path, int8: Path, gemms: list[str], folder: Path, texts: list[str]) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from gist_onnx.manifest import read_manifest
    from gist_onnx.tokenize import TextTokenizer

    manifest = read_manifest(folder)
    tokenizer = TextTokenizer(folder / "tokenizer.json", manifest.max_seq_length)
    encodings = tokenizer.encode(texts)
    feeds = [tokenizer.pad(encodings[i : i + 32], manifest.inputs) for i in range(0, len(encodings), 32)]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rest, None)

    quantize_static(
        str(fp32),
        str(int8),
        Batches(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=gemms,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def _nbits(fp32: Path, int8: Path, gemms: list[str]) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from gist_onnx.export.convert import weight_gemms

    keep_fp32 = sorted(set(weight_gemms(fp32, qkv=True)) - set(gemms))
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32)),
        bits=8,
        block_size=32,
        is_symmetric=True,
        accuracy_level=4,
        nodes_to_exclude=keep_fp32,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(int8), use_external_data_format=False)


def quality(folders: dict[str, Path], minilm: Path, pairs: StsPairs) -> dict[str, dict[str, float]]:
    from sentence_transformers import SentenceTransformer

    from gist_onnx import Embedder
    from gist_onnx.export.verify import agreement

    sentences = pairs.sentences()
    reference = SentenceTransformer(str(minilm), device="cpu").encode(sentences, batch_size=64)
    out = {"pytorch-fp32": {"stsb_spearman_x100": stsb_spearman(pairs, reference)}}
    for design, folder in folders.items():
        log(f"quality and batch independence: {design}")
        embedder = Embedder(folder, provider="cpu", precision="int8")
        vectors = embedder.encode(sentences, batch_size=32)
        found = agreement(reference, vectors)
        encode = {design: lambda texts, size, e=embedder: e.encode(texts, batch_size=size)}
        drift = batch_drift(encode, sentences[:128])[design]
        out[design] = {
            "min_cosine_to_pytorch": found.min_cosine,
            "mean_cosine_to_pytorch": found.mean_cosine,
            "stsb_spearman_x100": stsb_spearman(pairs, vectors),
            "alone_vs_batch_min_cosine": drift["min_cosine"],
        }
    return out


def speed(folders: dict[str, Path], texts: list[str], passes: int = 3) -> dict[str, dict[str, float]]:
    from gist_onnx import Embedder

    embedders = {
        design: Embedder(folder, provider="cpu", precision="int8") for design, folder in folders.items()
    }
    encoders = {
        design: lambda t, size, e=embedder: e.encode(t, batch_size=size)
        for design, embedder in embedders.items()
    }
    seconds = throughput(encoders, texts, 32, passes)
    return {
        design: {
            "short_b32_texts_per_s": len(texts) / seconds[design],
            "latency_p50_ms": latency_ms(lambda t, e=embedder: e.encode([t]), texts, 100)["p50"],
        }
        for design, embedder in embedders.items()
    }


def markdown(results: dict[str, Any]) -> str:
    q, s = results["quality"], results["speed"]
    lines = [
        "# INT8 designs, side by side",
        "",
        f"`python -m benchmarks.studies.int8_levers` on {results['cpu']}; {results['created']}. Quality: "
        "the real "
        f"all-MiniLM-L6-v2 on the sentences of the first {EVAL_PAIRS} STS-B pairs (PyTorch fp32 Spearman "
        f"x100 {q['pytorch-fp32']['stsb_spearman_x100']:.2f}); alone vs batch over 128 of them. Speed: "
        "GIST's "
        "architecture with random weights, 256 STS-B sentences at batch 32 (median of 3 interleaved passes), "
        "latency p50 over 100 single texts.",
        "",
        "| design | min / mean cos to PyTorch | STS-B x100 | alone vs batch min cos | short b32 texts/s | "
        "latency p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for design in [d for d in DESIGNS if d in q]:
        lines.append(
            f"| {design} | {q[design]['min_cosine_to_pytorch']:.4f} / "
            f"{q[design]['mean_cosine_to_pytorch']:.5f} | "
            f"{q[design]['stsb_spearman_x100']:.2f} | {q[design]['alone_vs_batch_min_cosine']:.5f} | "
            f"{s[design]['short_b32_texts_per_s']:.1f} | {s[design]['latency_p50_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def designs_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--designs", nargs="+", choices=DESIGNS, default=DESIGNS, help="default: all")

    args = common.parse_args(
        "python -m benchmarks.studies.int8_levers", __doc__, "int8-levers", argv, designs_option
    )
    designs = [d for d in DESIGNS if d in args.designs]

    from gist_onnx.export import export_model

    stsb = load_stsb()
    pairs = stsb.head(EVAL_PAIRS)
    calibration = StsPairs(
        stsb.first[EVAL_PAIRS : EVAL_PAIRS + CALIBRATION_PAIRS],
        stsb.second[EVAL_PAIRS : EVAL_PAIRS + CALIBRATION_PAIRS],
        stsb.scores[EVAL_PAIRS : EVAL_PAIRS + CALIBRATION_PAIRS],
    ).sentences()
    minilm = common.minilm_path()
    with common.workspace(args.work, "gist-onnx-int8-") as (work, _):
        gist = common.random_gist(work, minilm)
        folders: dict[str, dict[str, Path]] = {}
        for name, source in (("minilm", minilm), ("gist-random", gist)):
            exported = work / name / "export"
            if not (exported / "manifest.json").is_file():
                log(f"exporting {name}")
                export_model(str(source), exported, quantize="int8", force=True)
            folders[name] = {}
            for design in designs:
                log(f"{name}: building the {design} int8 graph")
                folders[name][design] = build(design, exported, work / name / design, calibration)
        short = fixed_shuffle(stsb.sentences())[:256]
        results = {
            **common.header(),
            "exact_weight_bits_here": exact_weight_bits(cpu_flags()),
            "quality": quality(folders["minilm"], minilm, pairs),
            "speed": speed(folders["gist-random"], short),
        }
    common.write(args.out, "int8-levers", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
