"""`python -m benchmarks.studies.static_calibration`: what the calibration texts of
`export --openvino-int8` are worth.

Static int8 fixes every activation range at export, so a text unlike all the calibration texts
loses most. This study exports the real all-MiniLM-L6-v2 once, then quantizes its fp32 graph the
export's way (gist_onnx.export.static_int8.quantize_static) on growing calibration sets: the 300
STS-B sentences alone (the set the design study used), then the short queries, then the
passages of the export's file, then the whole set the export carries (its other scripts and kinds
and the 40 per-token smoothing texts). Each graph runs through the runtime on ONNX Runtime's CPU
provider (every machine has it), and the export's own set also under provider="openvino" where
the plugin offers a CPU device. Quality only (speed does not depend on the calibration):

- the export's verification probes (export/verify.py): the worst, the empty text and "Hello, world!";
- the sentences of the first 1,000 STS-B pairs (never calibrated on) against our fp32, and the
  STS-B score x100;
- alone vs in batches of 32 over 64 of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.corpus import load_stsb, stsb_spearman
from benchmarks.measure import batch_drift

EVAL_PAIRS = 1000
# The parts of export/data/stsb-calibration.txt, by its README's line ranges.
STSB_PARTS = {"sentences": (0, 300), "queries": (300, 360), "passages": (360, 410)}
SETS = (
    ("300 STS-B sentences", ("sentences",)),
    ("+ 60 short queries", ("sentences", "queries")),
    ("+ 50 passages", ("sentences", "queries", "passages")),
    ("the export's set (+ other scripts and kinds, the 40 smoothing texts)", None),
)


def calibration_sets() -> dict[str, list[str]]:
    """Each calibration set of the study by its label, built from the file the export carries."""
    from importlib.resources import files

    from gist_onnx.export.static_int8 import CALIBRATION_FILES, builtin_calibration

    # Raw lines, not deduplicated: the README's line ranges index them.
    lines = files("gist_onnx.export").joinpath("data", CALIBRATION_FILES[0]).read_text("utf-8").splitlines()
    sets = {}
    for label, parts in SETS:
        if parts is None:
            sets[label] = builtin_calibration()
        else:
            sets[label] = [line for part in parts for line in lines[slice(*STSB_PARTS[part])]]
    return sets


def static_folder(export: Path, out: Path, texts: list[str], in_float: list[str] | None = None) -> Path:
    """A copy of the gist-onnx folder ``export`` with its int8-openvino graph calibrated on ``texts``
    (``in_float``: the MatMuls it leaves in float, by default the export's)."""
    from gist_onnx.export.static_int8 import quantize_static
    from gist_onnx.manifest import read_manifest

    length = read_manifest(export).max_seq_length

    def quantize(folder: Path, graph: Path) -> dict[str, Any]:
        tokenizer = folder / "tokenizer.json"
        made = quantize_static(folder / "model.onnx", graph, tokenizer, length, texts, in_float)
        return {"quantization": made}

    return common.folder_with_graph(export, out, "int8-openvino", quantize)


def drift(encode: common.Encode, texts: list[str]) -> float:
    """The min cosine of a text's vector alone against it in batches of 32."""
    return batch_drift({"encode": encode}, texts)["encode"]["min_cosine"]


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(
        "python -m benchmarks.studies.static_calibration", __doc__, "static-calibration", argv
    )
    from benchmarks.variants import openvino_provider_skip
    from gist_onnx import Embedder
    from gist_onnx.export import export_model
    from gist_onnx.export.verify import PROBES, agreement, reference_vectors

    minilm = common.minilm_path()
    pairs = load_stsb().head(EVAL_PAIRS)
    sentences = pairs.sentences()
    results: dict[str, Any] = {**common.header(), "rows": []}
    with common.workspace(args.work, "gist-onnx-static-cal-") as (work, _):
        export = work / "minilm" / "export"
        if not (export / "manifest.json").is_file():
            export_model(str(minilm), export, openvino_int8=True, force=True)
        fp32 = Embedder(export, provider="cpu", precision="fp32")
        expected = fp32.encode(sentences, batch_size=32)
        probes_reference = reference_vectors(minilm, PROBES)
        results["reference_stsb_spearman_x100"] = stsb_spearman(pairs, expected)
        openvino_here = openvino_provider_skip("int8") is None
        for index, (label, texts) in enumerate(calibration_sets().items()):
            common.log(f"calibrating on {label} ({len(texts)} texts)")
            folder = static_folder(export, work / "minilm" / f"static-{index}", texts)
            providers = ["cpu", "openvino"] if openvino_here and index == len(SETS) - 1 else ["cpu"]
            for provider in providers:
                embedder = Embedder(folder, provider=provider, graph="int8-openvino")
                encode = lambda t, size, e=embedder: e.encode(t, batch_size=size)  # noqa: E731
                probes = (encode(PROBES, len(PROBES)) * probes_reference).sum(axis=1)
                vectors = encode(sentences, 32)
                found = agreement(expected, vectors)
                results["rows"].append({
                    "calibration": label, "texts": len(texts), "provider": provider,
                    "probe_min_cosine": float(probes.min()), "empty_text": float(probes[PROBES.index("")]),
                    "hello_world": float(probes[PROBES.index("Hello, world!")]),
                    "stsb_min_cosine": found.min_cosine, "stsb_mean_cosine": found.mean_cosine,
                    "stsb_spearman_x100": stsb_spearman(pairs, vectors),
                    "alone_vs_batch_min_cosine": drift(encode, sentences[:64]),
                })  # fmt: skip
    common.write(args.out, "static-calibration", results, markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# What static int8's calibration texts are worth (`export --openvino-int8`)",
        "",
        f"`python -m benchmarks.studies.static_calibration` on {results['cpu']}; {results['created']}. "
        "The real all-MiniLM-L6-v2: probes against sentence-transformers on torch fp32 (the export's "
        f"verification), the sentences of the first {EVAL_PAIRS} STS-B pairs against gist-onnx fp32 "
        f"(STS-B x100 {results['reference_stsb_spearman_x100']:.2f}).",
        "",
        "| calibration | texts | runs on | probes: worst / empty text / Hello, world! "
        "| STS-B min / mean cos | STS-B x100 | alone vs batch min cos |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['calibration']} | {r['texts']} | {r['provider']} | "
            f"{r['probe_min_cosine']:.4f} / {r['empty_text']:.4f} / {r['hello_world']:.4f} | "
            f"{r['stsb_min_cosine']:.4f} / {r['stsb_mean_cosine']:.5f} | {r['stsb_spearman_x100']:.2f} | "
            f"{r['alone_vs_batch_min_cosine']:.5f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
