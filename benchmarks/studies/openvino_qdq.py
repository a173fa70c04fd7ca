"""`python -m benchmarks.studies.openvino_qdq`: static int8 as an ONNX graph, through provider='openvino'.

`benchmarks.studies.openvino_int8` found NNCF's static int8 of gist-onnx's own fp32 graph the
fastest int8 design under OpenVINO on AMX, and within the int8 gates there. It wrote OpenVINO IR,
which ONNX Runtime's OpenVINO plugin does not load. This study quantizes the same graph with
NNCF's ONNX backend (QuantizeLinear/DequantizeLinear pairs: a plain ONNX graph, transformer
preset, the same 300 STS-B calibration sentences, one at a time) and runs it the product's way:
`Embedder(provider="openvino")` (bf16 inference where the CPU has it, else f32), beside the same
Embedder on the fp32 graph and gist-onnx int8 on ONNX Runtime's CPU provider. The same
quantization calibrated on the 40 texts the export carries for int8 smoothing shows what the
calibration set is worth (quality only: speed does not depend on it).

Quality: the real all-MiniLM-L6-v2 on the sentences of the first 1,000 STS-B pairs against
gist-onnx fp32 on ONNX Runtime; alone vs batch over 64 of them. Speed: GIST's architecture with
random weights, 256 short texts at batch 32 (median of 3 interleaved passes), single-text p50
over 100 texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.corpus import fixed_shuffle, load_stsb, stsb_spearman
from benchmarks.measure import batch_drift, latency_ms, throughput
from benchmarks.peers import Pipeline
from gist_onnx.export.calibration import CALIBRATION_TEXTS

EVAL_PAIRS = 1000
CALIBRATION_SENTENCES = 300  # from the pairs after EVAL_PAIRS, as in benchmarks.studies.openvino_int8
BUILTIN = f"openvino-qdq-int8, calibrated on the export's {len(CALIBRATION_TEXTS)} built-in texts"


def qdq_folder(export: Path, out: Path, calibration: list[str]) -> Path:
    """A copy of the gist-onnx folder ``export`` whose fp32 graph is NNCF's static int8 of it (QDQ)."""

    def quantize(folder: Path, graph: Path) -> None:
        import nncf
        import onnx

        model = onnx.load(str(export / "model.onnx"))
        names = {i.name for i in model.graph.input}
        pipeline = Pipeline(export, infer=None)
        data = [{k: v for k, v in pipeline.feeds([s]).items() if k in names} for s in calibration]
        quantized = nncf.quantize(
            model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data)
        )
        onnx.save(quantized, str(graph))

    return common.folder_with_graph(export, out, "fp32", quantize)


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m benchmarks.studies.openvino_qdq", __doc__, "openvino-qdq", argv)
    from gist_onnx import Embedder
    from gist_onnx.export import export_model
    from gist_onnx.export.verify import agreement

    stsb = load_stsb()
    pairs = stsb.head(EVAL_PAIRS)
    calibration = list(dict.fromkeys(stsb.first[EVAL_PAIRS:] + stsb.second[EVAL_PAIRS:]))
    calibration = calibration[:CALIBRATION_SENTENCES]
    minilm = common.minilm_path()
    results: dict[str, Any] = {**common.header(), "quality": {}, "speed": {}}
    with common.workspace(args.work, "gist-onnx-ov-qdq-") as (work, _):
        gist = common.random_gist(work, minilm)
        folders: dict[str, dict[str, Path]] = {}
        for name, source in (("minilm", minilm), ("gist-random", gist)):
            export = work / name / "export"
            if not (export / "manifest.json").is_file():
                export_model(str(source), export, quantize="int8", force=True)
            common.log(f"{name}: NNCF static int8 as QDQ")
            folders[name] = {"export": export, "qdq": qdq_folder(export, work / name / "qdq", calibration)}
        # Calibration matters: the texts an export carries today (export/calibration.py) instead.
        builtin = qdq_folder(folders["minilm"]["export"], work / "minilm" / "qdq-builtin", CALIBRATION_TEXTS)

        def embedders(name: str) -> dict[str, Any]:
            return {
                "openvino-qdq-int8": Embedder(folders[name]["qdq"], provider="openvino"),
                "openvino-fp32-graph": Embedder(folders[name]["export"], provider="openvino"),
                "cpu-gist-onnx-int8": Embedder(folders[name]["export"], provider="cpu", precision="int8"),
            }

        sentences = pairs.sentences()
        reference = Embedder(folders["minilm"]["export"], provider="cpu", precision="fp32")
        expected = reference.encode(sentences, batch_size=32)
        results["quality"]["reference"] = {"stsb_spearman_x100": stsb_spearman(pairs, expected)}
        quality_only = {BUILTIN: Embedder(builtin, provider="openvino")}
        for label, embedder in {**embedders("minilm"), **quality_only}.items():
            encode = lambda texts, size, e=embedder: e.encode(texts, batch_size=size)  # noqa: E731
            vectors = encode(sentences, 32)
            found = agreement(expected, vectors)
            results["quality"][label] = {
                "precision": embedder.info.precision,
                "min_cosine_to_fp32": found.min_cosine,
                "mean_cosine_to_fp32": found.mean_cosine,
                "stsb_spearman_x100": stsb_spearman(pairs, vectors),
                "alone_vs_batch_min_cosine": batch_drift({label: encode}, sentences[:64])[label][
                    "min_cosine"
                ],
            }
        short = fixed_shuffle(stsb.sentences())[:256]
        encoders = {
            label: (lambda texts, size, e=embedder: e.encode(texts, batch_size=size))
            for label, embedder in embedders("gist-random").items()
        }
        seconds = throughput(encoders, short, 32, 3)
        for label, encode in encoders.items():
            results["speed"][label] = {
                "short_b32_texts_per_s": len(short) / seconds[label],
                "latency_p50_ms": latency_ms(lambda t, e=encode: e([t], 1), short, 100)["p50"],
            }
    common.write(args.out, "openvino-qdq", results, markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    q, s = results["quality"], results["speed"]
    bf16 = s["openvino-fp32-graph"]["short_b32_texts_per_s"]
    lines = [
        "# Static int8 as an ONNX (QDQ) graph, through gist-onnx provider='openvino'",
        "",
        f"`python -m benchmarks.studies.openvino_qdq` on {results['cpu']}; {results['created']}. Quality: "
        f"the real all-MiniLM-L6-v2 on the sentences of the first {EVAL_PAIRS} STS-B pairs against gist-onnx "
        f"fp32 on ONNX Runtime (STS-B x100 {q['reference']['stsb_spearman_x100']:.2f}). Speed: GIST's "
        "architecture with random weights, 256 short texts at batch 32, p50 of 100 single texts.",
        "",
        "| design | runs in | min / mean cos to fp32 | STS-B x100 | alone vs batch min cos "
        "| short b32 texts/s | vs the fp32 graph under OpenVINO | latency p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in (label for label in q if label != "reference"):
        d, t = q[label], s.get(label)
        rate = t["short_b32_texts_per_s"] if t else 0.0
        speed = f"{rate:.1f} | {rate / bf16:.2f}x | {t['latency_p50_ms']:.1f}" if t else "quality only | |"
        lines.append(
            f"| {label} | {d['precision']} | "
            f"{d['min_cosine_to_fp32']:.4f} / {d['mean_cosine_to_fp32']:.5f} | "
            f"{d['stsb_spearman_x100']:.2f} | {d['alone_vs_batch_min_cosine']:.5f} | {speed} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
