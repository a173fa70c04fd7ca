"""`python -m benchmarks.studies.static_scope`: which GEMMs static int8 must leave in float.

`export --openvino-int8` quantizes with NNCF and fixed (calibrated) activation scales. With every
GEMM quantized, all-MiniLM-L6-v2 kept STS-B but missed the int8 gate (min cosine 0.985 to fp32)
on a few short sentences. This study quantizes MiniLM's fp32 graph the export's way
(gist_onnx.export.static_int8.quantize_static, the export's calibration texts) with different
sets of GEMMs left in float, and scores each on every distinct sentence of the STS-B pairs the
repository carries, against gist-onnx fp32.

Quality runs the QDQ graph on ONNX Runtime's CPU provider with graph optimizations off, so every
QuantizeLinear / DequantizeLinear pair rounds in fp32 ("fake quantization"): the arithmetic the
graph specifies, on any CPU, without the int8 kernels of this one (AVX2's u8×s8 kernels saturate
where OpenVINO's do not). OpenVINO's runtime scores the export's own scope as a check where it
runs.

Speed does not depend on the weights: GIST's architecture with random weights, each scope
quantized on 100 calibration texts, run by OpenVINO's runtime (its CPU plugin's default precision
on this CPU, LATENCY hint) beside the fp32 graph, passes interleaved in one process.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.corpus import fixed_shuffle, load_stsb, stsb_spearman
from benchmarks.measure import median
from benchmarks.peers import missing
from benchmarks.studies.static_calibration import static_folder

GATE = 0.985  # the int8 quality gate: min cosine to fp32
ATTENTION_OUT = re.compile(r"attention/output/dense/MatMul$")
FFN_OUT = re.compile(r"layer\.\d+/output/dense/MatMul$")
FFN_IN = re.compile(r"intermediate/dense/MatMul$")
SPEED_CALIBRATION = 100
SPEED_ROUNDS = 15


def scopes(graph: Any) -> dict[str, list[str]]:
    """The sets of MatMuls left in float, by label, for a BERT exported by optimum."""
    from gist_onnx.export.static_int8 import residual_projections

    names = [node.name for node in graph.node if node.op_type == "MatMul"]
    layers = sorted({int(m.group(1)) for n in names if (m := re.search(r"layer\.(\d+)/", n))})
    late = {f"layer.{i}/" for i in layers[len(layers) // 2 :]}

    def matching(*patterns: re.Pattern[str], only: set[str] | None = None) -> list[str]:
        def wanted(name: str) -> bool:
            return any(p.search(name) for p in patterns) and (not only or any(s in name for s in only))

        return [n for n in names if wanted(n)]

    return {
        "none (every GEMM int8)": [],
        "attention-output projections": matching(ATTENTION_OUT),
        "FFN-output projections": matching(FFN_OUT),
        "both, last half of the layers": matching(ATTENTION_OUT, FFN_OUT, only=late),
        "attention-output and FFN-input projections": matching(ATTENTION_OUT, FFN_IN),
        "residual projections (attention and FFN output: the export's)": residual_projections(graph),
    }


def fake_quantized(folder: Path) -> Any:
    """The folder's int8-openvino graph on ONNX Runtime's CPU provider, every Q/DQ pair in fp32."""
    import onnxruntime as ort

    from gist_onnx import Embedder

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with warnings.catch_warnings():  # the warning is about int8 kernels, which this session never runs
        warnings.filterwarnings("ignore", ".*this int8 graph has 8-bit weights", RuntimeWarning)
        return Embedder(folder, provider="cpu", graph="int8-openvino", session_options=options)


def quality(work: Path, results: dict[str, Any]) -> None:
    import onnx

    from benchmarks.peers import load_openvino
    from gist_onnx import Embedder
    from gist_onnx.export import export_model
    from gist_onnx.export.static_int8 import builtin_calibration

    pairs = load_stsb()
    sentences = list(dict.fromkeys(pairs.sentences()))
    where = {s: i for i, s in enumerate(sentences)}
    rows = np.array([where[s] for s in pairs.sentences()])
    export = work / "minilm" / "export"
    if not (export / "manifest.json").is_file():
        export_model(str(common.minilm_path()), export, openvino_int8=True, force=True)
    expected = Embedder(export, provider="cpu", precision="fp32").encode(sentences, batch_size=64)
    results["sentences"] = len(sentences)
    results["reference_stsb_spearman_x100"] = stsb_spearman(pairs, expected[rows])
    texts = builtin_calibration()
    labels = scopes(onnx.load(str(export / "model.onnx")).graph)
    for index, (label, in_float) in enumerate(labels.items()):
        common.log(f"MiniLM, in float: {label} ({len(in_float)} GEMMs)")
        folder = static_folder(export, work / "minilm" / f"scope-{index}", texts, in_float)
        runs = {"onnxruntime, fake quantization": fake_quantized(folder).encode(sentences, batch_size=64)}
        if index == len(labels) - 1 and missing("openvino") is None:
            encode = load_openvino(folder / "model_int8_openvino.onnx", folder)
            runs["OpenVINO runtime"] = encode(sentences, 64)
        for runs_on, vectors in runs.items():
            cosines = (vectors * expected).sum(axis=1)
            results["quality"].append({
                "in_float": label, "float_gemms": len(in_float), "runs_on": runs_on,
                "min_cosine": float(cosines.min()), "below_gate": int((cosines < GATE).sum()),
                "mean_cosine": float(cosines.mean()),
                "stsb_spearman_x100": stsb_spearman(pairs, vectors[rows]),
                "worst": sentences[int(np.argmin(cosines))],
            })  # fmt: skip


def speed(work: Path, results: dict[str, Any]) -> None:
    import onnx

    from benchmarks.peers import load_openvino, openvino_precision
    from gist_onnx.export.static_int8 import builtin_calibration, quantize_static
    from gist_onnx.manifest import read_manifest

    _, export = common.random_gist_export(work)
    labels = scopes(onnx.load(str(export / "model.onnx")).graph)
    texts = builtin_calibration()[:SPEED_CALIBRATION]
    length = read_manifest(export).max_seq_length
    chosen = {
        "none (every GEMM int8)": "static int8, every GEMM",
        list(labels)[-1]: "static int8, the export's scope",
    }
    graphs = {"fp32 graph": export / "model.onnx"}
    for index, (label, name) in enumerate(chosen.items()):
        common.log(f"GIST architecture, in float: {label}")
        graph = work / "gist-random" / f"static-scope-{index}.onnx"
        if not graph.is_file():
            partial = graph.with_suffix(".partial")
            tokenizer = export / "tokenizer.json"
            quantize_static(export / "model.onnx", partial, tokenizer, length, texts, labels[label])
            partial.rename(graph)
        graphs[name] = graph
    encoders = {name: load_openvino(graph, export) for name, graph in graphs.items()}
    shuffled = fixed_shuffle(list(dict.fromkeys(load_stsb().sentences())))
    batch_s: dict[str, list[float]] = {name: [] for name in encoders}
    single_s: dict[str, list[float]] = {name: [] for name in encoders}
    for encode in encoders.values():
        encode(shuffled[:32], 32)  # compile and warm
    for r in range(SPEED_ROUNDS):
        batch = shuffled[32 * (r + 1) : 32 * (r + 2)]
        singles = shuffled[2000 + 5 * r : 2005 + 5 * r]
        for name, encode in encoders.items():  # interleaved: the machine's noise hits all alike
            start = time.perf_counter()
            encode(batch, 32)
            batch_s[name].append(time.perf_counter() - start)
            for text in singles:
                start = time.perf_counter()
                encode([text], 1)
                single_s[name].append(time.perf_counter() - start)
    results["openvino_precision"] = openvino_precision()
    for name in encoders:
        results["speed"].append({
            "graph": name, "short_texts_per_s": 32 / median(batch_s[name]),
            "single_p50_ms": 1000 * median(single_s[name]),
        })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m benchmarks.studies.static_scope", __doc__, "static-scope", argv)
    results: dict[str, Any] = {**common.header(), "quality": [], "speed": []}
    with common.workspace(args.work, "gist-onnx-static-scope-") as (work, _):
        quality(work, results)
        if missing("openvino") is None:
            speed(work, results)
    common.write(args.out, "static-scope", results, markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Which GEMMs static int8 leaves in float (`export --openvino-int8`)",
        "",
        f"`python -m benchmarks.studies.static_scope` on {results['cpu']}; {results['created']}.",
        "",
        f"Quality: the real all-MiniLM-L6-v2, calibrated on the export's texts, on all "
        f"{results['sentences']} distinct STS-B sentences against gist-onnx fp32 (STS-B x100 "
        f"{results['reference_stsb_spearman_x100']:.2f}). Fake quantization: ONNX Runtime with graph "
        f"optimizations off, the graph's own arithmetic on any CPU.",
        "",
        f"| left in float | GEMMs | runs on | min cos | under {GATE} | mean cos | STS-B x100 | worst |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["quality"]:
        lines.append(
            f"| {r['in_float']} | {r['float_gemms']} | {r['runs_on']} | {r['min_cosine']:.4f} | "
            f"{r['below_gate']} | {r['mean_cosine']:.5f} | {r['stsb_spearman_x100']:.2f} | {r['worst']!r} |"
        )
    if results["speed"]:
        base = results["speed"][0]["short_texts_per_s"]
        lines += [
            "",
            f"Speed: GIST's architecture, random weights, OpenVINO's runtime (default precision here: "
            f"{results['openvino_precision']}), batch 32 of short STS-B sentences, medians of "
            f"{SPEED_ROUNDS} interleaved passes.",
            "",
            "| graph | short texts/s | vs fp32 | single-text p50 |",
            "| --- | --- | --- | --- |",
        ]
        for r in results["speed"]:
            lines.append(
                f"| {r['graph']} | {r['short_texts_per_s']:.1f} | {r['short_texts_per_s'] / base:.2f}x | "
                f"{r['single_p50_ms']:.1f} ms |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
