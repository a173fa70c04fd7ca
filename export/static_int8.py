"""Static int8 for provider="openvino": NNCF's post-training quantization of the fp32 graph.

OpenVINO's CPU plugin rejects the per-token int8 graph (its per-token QuantizeLinear becomes a
FakeQuantize whose scale shape it cannot take), so OpenVINO gets a graph of its own: every
activation scale fixed at export from calibration texts, written as QuantizeLinear /
DequantizeLinear pairs, which OpenVINO compiles to its int8 kernels (AMX or VNNI). Fixed scales
keep a text's vector independent of its batch mates. NNCF's transformer preset decides what stays
in float (softmax, LayerNorm and the like) and smooths the activations it quantizes.

Not every GEMM is quantized: the ones that write into the residual stream (each layer's
attention-output and FFN-output projections, whose result is added to the layer's input and
normalized) stay in float. Their inputs carry the outlier channels that one fixed per-tensor scale
clips or coarsens (Bondarenko et al. 2021 found the same in BERT); on all-MiniLM-L6-v2 over
7,911 STS-B sentences, quantizing them too left min cosine 0.973 (6 sentences under the 0.985
gate, all short lines like "Ah ha, ha, ha, ha, ha!"), keeping them in float 0.994 (none under it;
docs/performance.md). Keeping only one of the two, or only the last layers', left 0.980-0.984.

The scales are only as good as the calibration texts, and a text unlike all of them loses most:
on all-MiniLM-L6-v2, 300 STS-B sentences gave min cosine 0.993 to fp32 on other STS-B sentences
but 0.796 on the empty text and 0.944 on "Hello, world!"; the 40 texts that calibrate per-token
smoothing gave 0.969 on STS-B. So the export carries texts of every length a user sends (one-word
queries to 512-token passages) and of many kinds and scripts (``export/data/README.md``): 0.995
on STS-B, 0.982 at worst on the verification probes with every GEMM quantized, 0.997 with the
residual projections in float. ``--calibration``
names a file of the user's own texts instead, one per line.
"""

from __future__ import annotations

import logging
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

from gist_onnx.errors import ExportError
from gist_onnx.export.calibration import CALIBRATION_TEXTS

# The fewest texts that calibrate well enough: 40 missed the int8 gate (min cosine 0.969 < 0.985).
MIN_CALIBRATION_TEXTS = 100
CALIBRATION_FILES = ("stsb-calibration.txt", "varied-calibration.txt")


def builtin_calibration() -> list[str]:
    """The texts the export carries: STS-B sentences, queries and passages, then texts of other
    kinds and scripts written for this project (export/data/README.md), and the per-token
    smoothing's 40."""
    data = files("gist_onnx.export").joinpath("data")
    texts = [line for name in CALIBRATION_FILES for line in _lines(data.joinpath(name).read_text("utf-8"))]
    return list(dict.fromkeys(texts + CALIBRATION_TEXTS))


def read_calibration(path: Path) -> list[str]:
    """Calibration texts from a UTF-8 file, one per line; ExportError if there are too few."""
    try:
        texts = _lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"--calibration {path}: cannot read it as UTF-8 text ({exc})") from exc
    if len(texts) < MIN_CALIBRATION_TEXTS:
        raise ExportError(
            f"--calibration {path}: {len(texts)} distinct non-empty lines; static int8 needs at least "
            f"{MIN_CALIBRATION_TEXTS} texts like the ones you will embed (one per line)"
        )
    return texts


def _lines(text: str) -> list[str]:
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def quantize_static(
    graph_in: Path,
    graph_out: Path,
    tokenizer: Path,
    max_seq_length: int,
    texts: list[str],
    in_float: list[str] | None = None,
) -> dict[str, Any]:
    """Write NNCF's static int8 (QDQ) of ``graph_in``, calibrated on ``texts``; how it was made.

    ``in_float`` names the MatMuls left in float (default: the residual projections; a study
    passes others)."""
    import nncf
    import onnx

    from gist_onnx.tokenize import TextTokenizer

    model = onnx.load(str(graph_in))
    inputs = [i.name for i in model.graph.input]
    text_tokenizer = TextTokenizer(tokenizer, max_seq_length)
    # One text a sample, as it runs alone: padding never enters the activation ranges.
    samples = [text_tokenizer.pad([encoding], inputs) for encoding in text_tokenizer.encode(texts)]
    in_float = residual_projections(model.graph) if in_float is None else in_float
    # NNCF logs two INFO lines for every GEMM it leaves in float; its progress bars stay.
    level = logging.getLogger("nncf").level
    nncf.set_log_level(logging.WARNING)
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
            ignored_scope=nncf.IgnoredScope(names=in_float),
        )
    finally:
        nncf.set_log_level(level)
    onnx.save(quantized, str(graph_out))
    return {
        "activations": "static",
        "weight_bits": 8,
        "tool": f"nncf {metadata.version('nncf')}, transformer preset",
        "calibration_texts": len(texts),
        "float_gemms": len(in_float),
    }


def residual_projections(graph: Any) -> list[str]:
    """The weight MatMuls whose result (plus bias) is added to the residual stream and normalized:
    x @ W → Add (bias) → Add (residual) → LayerNormalization, or fused into SkipLayerNormalization."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {init.name for init in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        out, adds = node.output[0], 0
        while len(consumers.get(out, [])) == 1 and consumers[out][0].op_type == "Add" and adds < 2:
            out, adds = consumers[out][0].output[0], adds + 1
        ends = {c.op_type for c in consumers.get(out, [])}
        if (adds == 2 and "LayerNormalization" in ends) or "SkipLayerNormalization" in ends:
            found.append(node.name)
    return found
