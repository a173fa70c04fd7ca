"""`python -m benchmarks.studies.openvino_int8`: int8 designs under OpenVINO, beside ONNX Runtime's.

The question: which int8 graph runs fast under OpenVINO (on AMX it is the engine of
``provider="openvino"``) and keeps gist-onnx's int8 gates (min cosine ≥ 0.985 to PyTorch fp32 on
MiniLM, STS-B loss ≤ 0.15, a text's vector independent of its batch mates)? Designs, each run by
OpenVINO's runtime on this CPU with its default inference precision (bf16 with AMX or
AVX512_BF16, f32 elsewhere):

- per-token: gist-onnx's int8 graph as exported. Its per-token QuantizeLinear (a 2-D view,
  axis 0) becomes a FakeQuantize whose scale OpenVINO's CPU plugin cannot broadcast.
- per-token-elementwise: the same graph with each of those QuantizeLinear nodes written as the
  arithmetic it stands for (divide by the [tokens, 1] scale, round, add 128, clip, cast to uint8),
  which OpenVINO reads. Also run on ONNX Runtime's CPU provider, where it must match the exported
  graph to be a candidate for one graph serving both.
- weight-only: NNCF's int8 weight compression (INT8_SYM) of the fp32 graph; OpenVINO's CPU plugin
  may quantize activations per token group at run time (``DYNAMIC_QUANTIZATION_GROUP_SIZE``, 32
  here, and 0: off).
- nncf-static: NNCF's static int8 (transformer preset, 300 calibration sentences): fixed scales.
- References: OpenVINO on the fp32 graph (its default precision), and gist-onnx int8 on ONNX
  Runtime's CPU provider (the product's int8 today).

Quality: the real all-MiniLM-L6-v2 on the sentences of the first 1,000 STS-B pairs, against
gist-onnx fp32 on ONNX Runtime (itself within 1e-6 of PyTorch fp32); alone vs batch over 64 of
them. Speed: GIST's architecture with random weights, 256 STS-B sentences at batch 32 (median of
3 interleaved passes), single-text p50 over 100 texts. A design that fails to load or run is
reported with its error, not dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common, peers
from benchmarks.common import Encode, log
from benchmarks.corpus import StsPairs, fixed_shuffle, load_stsb, stsb_spearman
from benchmarks.measure import batch_drift, latency_ms, throughput

EVAL_PAIRS = 1000
CALIBRATION_SENTENCES = 300  # from the pairs after EVAL_PAIRS
DESIGNS = (
    "openvino-fp32-graph",
    "per-token",
    "per-token-elementwise",
    "weight-only",
    "weight-only-no-dynamic",
    "nncf-static",
    "ort-per-token-elementwise",
    "ort-gist-onnx-int8",
)


def elementwise_quantize(graph_in: Path, graph_out: Path) -> int:
    """``graph_in`` with every per-token QuantizeLinear (axis 0 of a 2-D view, 1-D scale) replaced
    by Div, Round, Add, Clip and Cast on a [tokens, 1] scale; returns how many were replaced."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(graph_in))
    graph = model.graph
    constants = [
        numpy_helper.from_array(np.array([1], np.int64), "ew/axis1"),
        numpy_helper.from_array(np.array(128.0, np.float32), "ew/zero_point"),
        numpy_helper.from_array(np.array(0.0, np.float32), "ew/low"),
        numpy_helper.from_array(np.array(255.0, np.float32), "ew/high"),
    ]
    nodes, replaced = [], 0
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if node.op_type != "QuantizeLinear" or axis != 0:
            nodes.append(node)
            continue
        x, scale, _ = node.input
        p = f"ew/{node.output[0]}"
        nodes += [
            helper.make_node("Unsqueeze", [scale, "ew/axis1"], [f"{p}/scale"]),
            helper.make_node("Div", [x, f"{p}/scale"], [f"{p}/scaled"]),
            helper.make_node("Round", [f"{p}/scaled"], [f"{p}/rounded"]),  # half to even, as QuantizeLinear
            helper.make_node("Add", [f"{p}/rounded", "ew/zero_point"], [f"{p}/shifted"]),
            helper.make_node("Clip", [f"{p}/shifted", "ew/low", "ew/high"], [f"{p}/clipped"]),
            helper.make_node("Cast", [f"{p}/clipped"], [node.output[0]], to=TensorProto.UINT8),
        ]
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    onnx.checker.check_model(model, full_check=False)
    onnx.save(model, str(graph_out))
    return replaced


def build(export_dir: Path, work: Path, calibration: list[str]) -> dict[str, Path]:
    """Every design's graph for one exported model folder (made once under ``work``)."""
    import nncf
    import openvino as ov

    fp32, int8 = export_dir / "model.onnx", export_dir / "model_int8.onnx"
    work.mkdir(parents=True, exist_ok=True)
    elementwise = work / "model_int8_elementwise.onnx"
    if not elementwise.is_file():
        log(f"{export_dir.parent.name}: {elementwise_quantize(int8, elementwise)} QuantizeLinear rewritten")
    weight_only = work / "weight-only" / "model.xml"
    if not weight_only.is_file():
        weight_only.parent.mkdir(parents=True, exist_ok=True)
        compressed = nncf.compress_weights(
            ov.Core().read_model(str(fp32)), mode=nncf.CompressWeightsMode.INT8_SYM
        )
        ov.save_model(compressed, str(weight_only))
    static = peers.quantize_openvino_int8(fp32, export_dir, calibration, work / "static")
    return {
        "openvino-fp32-graph": fp32,
        "per-token": int8,
        "per-token-elementwise": elementwise,
        "weight-only": weight_only,
        "weight-only-no-dynamic": weight_only,
        "nncf-static": static,
        "ort-per-token-elementwise": elementwise,
        "ort-gist-onnx-int8": int8,
    }


def loaders(export_dir: Path, graphs: dict[str, Path]) -> dict[str, Callable[[], Encode]]:
    """Each design's encode function, built on call (a failure is the design's result)."""

    def openvino(design: str, config: dict[str, str] | None = None) -> Callable[[], Encode]:
        return lambda: peers.load_openvino(graphs[design], export_dir, config)

    def onnxruntime(design: str) -> Callable[[], Encode]:
        return lambda: peers.load_onnxruntime(graphs[design], export_dir)

    return {
        "openvino-fp32-graph": openvino("openvino-fp32-graph"),
        "per-token": openvino("per-token"),
        "per-token-elementwise": openvino("per-token-elementwise"),
        "weight-only": openvino("weight-only", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"}),
        "weight-only-no-dynamic": openvino("weight-only", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}),
        "nncf-static": openvino("nncf-static"),
        "ort-per-token-elementwise": onnxruntime("ort-per-token-elementwise"),
        "ort-gist-onnx-int8": onnxruntime("ort-gist-onnx-int8"),
    }


def loaded(
    builders: dict[str, Callable[[], Encode]], probe: list[str]
) -> tuple[dict[str, Encode], dict[str, str]]:
    """(the designs that load and embed ``probe``, the error of each that does not)."""
    ok, failed = {}, {}
    for design, load in builders.items():
        try:
            encode = load()
            encode(probe, len(probe))
            ok[design] = encode
        except Exception as error:  # the design's result, whatever the engine raised
            failed[design] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}"
            log(f"{design}: {failed[design]}")
    return ok, failed


def quality(encoders: dict[str, Encode], reference: Encode, pairs: StsPairs) -> dict[str, dict[str, float]]:
    from gist_onnx.export.verify import agreement

    sentences = pairs.sentences()
    expected = reference(sentences, 32)
    out = {"reference": {"stsb_spearman_x100": stsb_spearman(pairs, expected)}}
    for design, encode in encoders.items():
        log(f"quality and batch independence: {design}")
        vectors = encode(sentences, 32)
        found = agreement(expected, vectors)
        out[design] = {
            "min_cosine_to_fp32": found.min_cosine,
            "mean_cosine_to_fp32": found.mean_cosine,
            "stsb_spearman_x100": stsb_spearman(pairs, vectors),
            "alone_vs_batch_min_cosine": batch_drift({design: encode}, sentences[:64])[design]["min_cosine"],
        }
    return out


def speed(encoders: dict[str, Encode], texts: list[str]) -> dict[str, dict[str, float]]:
    seconds = throughput(encoders, texts, 32, 3)
    return {
        design: {
            "short_b32_texts_per_s": len(texts) / seconds[design],
            "latency_p50_ms": latency_ms(lambda t, e=encode: e([t], 1), texts, 100)["p50"],
        }
        for design, encode in encoders.items()
    }


def markdown(results: dict[str, Any]) -> str:
    q, s, failed = results["quality"], results["speed"], results["failed"]
    lines = [
        "# int8 designs under OpenVINO",
        "",
        f"`python -m benchmarks.studies.openvino_int8` on {results['cpu']}; {results['created']}; OpenVINO "
        f"{results['openvino']} (default inference precision here: {results['openvino_precision']}). "
        f"Quality: the real all-MiniLM-L6-v2 on the sentences of the first {EVAL_PAIRS} STS-B pairs, against "
        f"gist-onnx fp32 on ONNX Runtime (STS-B x100 {q['reference']['stsb_spearman_x100']:.2f}). Speed: "
        "GIST's architecture with random weights, 256 short texts at batch 32, p50 of 100 single texts.",
        "",
        "| design | min / mean cos to fp32 | STS-B x100 | alone vs batch min cos | short b32 texts/s | "
        "latency p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for design in DESIGNS:
        if design in failed:
            lines.append(f"| {design} | fails: {failed[design]} | | | | |")
        elif design in q and design in s:
            d, t = q[design], s[design]
            lines.append(
                f"| {design} | {d['min_cosine_to_fp32']:.4f} / {d['mean_cosine_to_fp32']:.5f} | "
                f"{d['stsb_spearman_x100']:.2f} | {d['alone_vs_batch_min_cosine']:.5f} | "
                f"{t['short_b32_texts_per_s']:.1f} | {t['latency_p50_ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m benchmarks.studies.openvino_int8", __doc__, "openvino-int8", argv)
    import openvino as ov

    from gist_onnx import Embedder
    from gist_onnx.export import export_model

    stsb = load_stsb()
    pairs = stsb.head(EVAL_PAIRS)
    calibration = list(dict.fromkeys(stsb.first[EVAL_PAIRS:] + stsb.second[EVAL_PAIRS:]))[
        :CALIBRATION_SENTENCES
    ]
    minilm = common.minilm_path()
    short = fixed_shuffle(stsb.sentences())[:256]
    results: dict[str, Any] = {
        **common.header(),
        "openvino": ov.__version__,
        "openvino_precision": peers.openvino_precision(),
    }
    with common.workspace(args.work, "gist-onnx-ov-int8-") as (work, _):
        gist = common.random_gist(work, minilm)
        encoders: dict[str, dict[str, Encode]] = {}
        failed: dict[str, str] = {}
        exports = {}
        for name, source in (("minilm", minilm), ("gist-random", gist)):
            exports[name] = work / name / "export"
            if not (exports[name] / "manifest.json").is_file():
                log(f"exporting {name}")
                export_model(str(source), exports[name], quantize="int8", force=True)
            graphs = build(exports[name], work / name / "designs", calibration)
            encoders[name], failures = loaded(loaders(exports[name], graphs), short[:8])
            failed.update(failures)
        fp32 = Embedder(exports["minilm"], provider="cpu", precision="fp32")
        reference = lambda texts, size: fp32.encode(texts, batch_size=size)  # noqa: E731
        results["quality"] = quality(encoders["minilm"], reference, pairs)
        results["speed"] = speed(encoders["gist-random"], short)
        results["failed"] = failed
    common.write(args.out, "openvino-int8", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
