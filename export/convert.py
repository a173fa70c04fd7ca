"""Graph-making steps: PyTorch → ONNX, offline graph optimization, INT8 quantization, fp16."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gist_onnx.cpu import EXACT_EVERYWHERE_BITS, cpu_flags, exact_weight_bits, is_arm
from gist_onnx.export.per_token import SMOOTHING_ALPHA, channel_maxima, quantize_per_token
from gist_onnx.options import INT8_SCALES, OPTIMIZE_LEVELS, QUANTIZE_PRESETS

# INT8 designs, measured side by side by `python -m benchmarks.studies.int8_levers` (README, "Performance"):
#   per-token (default): one activation scale per token computed in the graph, SmoothQuant
#     smoothing, every weight GEMM int8. Batch-independent, the closest to fp32, the fastest.
#   per-tensor: ONNX Runtime's dynamic quantization, one scale per batch tensor, with the Q/K/V
#     projections kept fp32 (quantizing them too cost too much accuracy without smoothing).
# Activation-by-activation products (QKᵀ, attention × V) and the embedding Gather stay fp32.
# Static calibrated scales were measured and dropped: all-MiniLM-L6-v2 min cosine 0.84.


def to_onnx(model_dir: Path, graph_path: Path, opset: int | None) -> Path:
    """Export the model's transformer (last_hidden_state) with dynamic batch and sequence axes.

    Writes ``graph_path`` and returns the folder where optimum also saved the tokenizer.
    """
    from optimum.exporters.onnx import main_export

    raw = graph_path.parent / "optimum-export"
    main_export(
        str(model_dir),
        output=raw,
        task="feature-extraction",
        library_name="transformers",  # the bare encoder: pooling is ours, read from the ST config
        opset=opset,
        device="cpu",
        do_validation=False,  # we validate the whole pipeline against sentence-transformers
        local_files_only=True,
    )
    shutil.move(raw / "model.onnx", graph_path)
    return raw


def optimize(graph_in: Path, graph_out: Path, level: str, num_heads: int, hidden_size: int) -> None:
    """Apply ONNX Runtime's graph optimizations once, at export, instead of at every session start.

    O1: basic rewrites (constant folding, redundant nodes). O2: O1 plus the transformer fusions
    (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization). O3: O2 plus the tanh
    approximation of GELU (FastGelu), which changes the numbers slightly. The fused ops are
    ONNX Runtime contrib ops that both the CPU and the CUDA providers implement.
    """
    if level not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimization level must be one of {OPTIMIZE_LEVELS}, got {level!r}")
    if level == "none":
        shutil.copyfile(graph_in, graph_out)
        return
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_gelu_approximation = level == "O3"
    model = optimize_model(
        str(graph_in),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=1,  # basic level only: its rewrites are portable across providers
        only_onnxruntime=level == "O1",
    )
    model.save_model_to_file(str(graph_out))


@dataclass(frozen=True)
class QuantizeSettings:
    """How weights and activations become int8; recorded in the manifest."""

    preset: str
    weight_type: str
    per_channel: bool
    reduce_range: bool  # 7-bit weights: exact on every CPU (gist_onnx/cpu.py says why)
    weight_bits: int
    activations: str  # "per-token" or "per-tensor" activation scales
    qkv: bool  # the Q/K/V projections are int8 too
    smoothing: float | None  # SmoothQuant's alpha, or None for no smoothing


def detect_preset(flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """The instruction-set preset for a CPU (this machine's by default), from its flags."""
    if is_arm(machine):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if exact_weight_bits(flags or frozenset(), machine) == 8:
        return "avx512_vnni"
    return "avx512" if flags and "avx512f" in flags else "avx2"


def quantize_settings(preset: str, activations: str = "per-token") -> QuantizeSettings:
    """Settings for a preset: signed per-channel weights, 7 bits unless the preset names a CPU
    that multiplies 8-bit weights exactly (VNNI or ARM).

    "portable" (the default) keeps 7-bit weights so that one export runs exactly on any CPU of
    a fleet; "auto" takes this machine's preset, and its 8 bits where it can.
    """
    if preset not in QUANTIZE_PRESETS:
        raise ValueError(f"quantization preset must be one of {QUANTIZE_PRESETS}, got {preset!r}")
    if activations not in INT8_SCALES:
        raise ValueError(f"activation scales must be one of {INT8_SCALES}, got {activations!r}")
    if preset == "auto":
        preset = detect_preset()
    bits = 8 if preset in ("avx512_vnni", "arm64") else EXACT_EVERYWHERE_BITS
    per_token = activations == "per-token"
    smoothing = SMOOTHING_ALPHA if per_token else None
    return QuantizeSettings(preset, "QInt8", True, bits < 8, bits, activations, per_token, smoothing)


def weight_gemms(graph: Path, qkv: bool) -> list[str]:
    """Names of the MatMuls that multiply by a weight, without the Q/K/V projections unless asked.

    Q, K and V are recognized by structure, not by name: they are the weight MatMuls that share
    one input tensor (the layer's input feeds all three; Q through a Slice where the last layer
    computes the first token only).
    """
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    slices = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Slice"}
    nodes = [n for n in model.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]
    readers: dict[str, int] = {}
    for node in nodes:
        source = slices.get(node.input[0], node.input[0])
        readers[source] = readers.get(source, 0) + 1
    return [n.name for n in nodes if qkv or readers[slices.get(n.input[0], n.input[0])] < 3]


def quantize_int8(
    graph_in: Path, graph_out: Path, settings: QuantizeSettings, calibration: list[dict[str, np.ndarray]]
) -> dict[str, object]:
    """INT8 weight GEMMs: weights quantized now, activation scales at run time (per token or tensor).

    ``calibration`` (padded input batches) sets the smoothing where the settings ask for it.
    """
    nodes = weight_gemms(graph_in, settings.qkv)
    if settings.activations == "per-token":
        maxima = channel_maxima(graph_in, nodes, calibration) if settings.smoothing else None
        quantize_per_token(graph_in, graph_out, nodes, settings.weight_bits, maxima)
    else:
        _quantize_per_tensor(graph_in, graph_out, nodes, settings)
    return {"method": "dynamic", **asdict(settings), "quantized_gemms": len(nodes)}


def _quantize_per_tensor(
    graph_in: Path, graph_out: Path, nodes: list[str], settings: QuantizeSettings
) -> None:
    """ONNX Runtime's dynamic quantization: one activation scale per tensor, set at run time."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        graph_in,
        graph_out,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        weight_type=QuantType[settings.weight_type],
        # Shape inference cannot type the outputs of fused contrib ops (Attention, SkipLayerNorm);
        # every float tensor in these graphs is fp32.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def to_fp16(graph_in: Path, graph_out: Path) -> None:
    """Half-precision graph for GPUs with fp32 inputs and outputs.

    onnxruntime's own converter is used (onnxconverter-common's made graphs that ONNX Runtime
    refused: a Cast type mismatch), with symbolic shape inference so that fused contrib ops are
    typed. Plain LayerNormalization and Softmax stay in fp32: their sums over a whole row overflow
    or lose precision in fp16. The fused SkipLayerNormalization and Attention kernels already
    accumulate in fp32 internally, so they take fp16 tensors.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(graph_in)))
    keep_fp32 = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt"]
    model.convert_float_to_float16(keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + keep_fp32)
    model.save_model_to_file(str(graph_out))
