"""`export_model`: a sentence-transformers model → a verified, self-contained ONNX model folder.

The folder is built in a hidden sibling and renamed into place only once it is complete and
verified, so an interrupted or failed export never leaves a folder the runtime would load, and
never damages the folder it was meant to replace. The hidden folder's name carries the host and
process that build it, so a later export can delete the ones whose process died.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from gist_onnx.errors import ExportError
from gist_onnx.export.calibration import CALIBRATION_TEXTS, calibration_batches
from gist_onnx.export.convert import (
    QuantizeSettings,
    optimize,
    quantize_int8,
    quantize_settings,
    to_fp16,
    to_onnx,
)
from gist_onnx.export.first_token import GraphShapeError, keep_first_token
from gist_onnx.export.source import Source, resolve_source
from gist_onnx.export.st_config import SentenceConfig, read_sentence_config
from gist_onnx.export.static_int8 import builtin_calibration, quantize_static, read_calibration
from gist_onnx.export.verify import MIN_COSINE, PROBES, reference_vectors, verify
from gist_onnx.manifest import FORMAT_VERSION, MANIFEST_NAME, GraphRecord, Manifest, file_record
from gist_onnx.options import DEFAULT_MODEL, GRAPHS

GRAPH_FILES = {
    "fp32": "model.onnx",
    "int8": "model_int8.onnx",
    "fp16": "model_fp16.onnx",
    "int8-openvino": "model_int8_openvino.onnx",
}
TOOLS = [
    "gist-onnx", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
    "sentence-transformers", "tokenizers", "nncf",
]  # fmt: skip


def tool_versions(names: list[str] = TOOLS) -> dict[str, str]:
    """Installed versions of the named distributions (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _check_target(output: Path, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output} is a file; pass a folder path to write the model into")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ExportError(f"{output} exists and is not empty; pass --force to replace it")


def _partial_prefix(output: Path) -> str:
    return f".{output.name}.partial-{socket.gethostname()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove_abandoned(output: Path) -> None:
    """Delete the half-built folders of earlier exports to ``output`` whose process is gone.

    Only this host's: on a shared file system another host's export may still be running. A
    partial folder is never the only copy of anything (the old model is swapped out only once the
    new one is whole), so deleting it loses nothing.
    """
    prefix = _partial_prefix(output)
    for folder in output.parent.glob(glob.escape(prefix) + "*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _publish(work: Path, output: Path) -> None:
    """Move the finished folder into place; an old folder is replaced only after the new is whole."""
    if not output.exists():
        work.rename(output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    old.rmdir()
    output.rename(old)
    try:
        work.rename(output)
    except OSError:
        old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_model(
    model: str = DEFAULT_MODEL,
    output: str | Path = "gist-onnx-model",
    *,
    revision: str | None = None,
    optimization: str = "none",
    quantize: str | None = None,
    quantize_preset: str = "portable",
    int8_scales: str = "per-token",
    fp16: bool = False,
    openvino_int8: bool = False,
    calibration: str | Path | None = None,
    all_tokens: bool = False,
    opset: int | None = None,
    force: bool = False,
    min_cosine: dict[str, float] | None = None,
) -> Manifest:
    """Export, optimize, quantize and verify a model into ``output``; return its manifest.

    ``optimization`` applies to the fp32 graph (and the int8 graph made from it): "none" leaves
    the fusions to ONNX Runtime at session start, which measured fastest on CPUs. ``int8_scales``
    is "per-token" (smoothed, every weight GEMM int8; a text's int8 vector does not depend on its
    batch mates) or "per-tensor" (ONNX Runtime's dynamic quantization, Q/K/V kept fp32).
    ``quantize_preset`` "portable" gives 7-bit int8 weights, exact on every CPU; a CPU's preset
    ("avx512_vnni", "arm64", or "auto" for this one's) may give 8-bit weights, exact only there.
    ``openvino_int8`` adds the "int8-openvino" graph, static int8 for provider="openvino",
    calibrated on the texts the export carries (export/data) or on ``calibration`` (a text file,
    one text per line). With CLS pooling the last layer computes the first token only unless
    ``all_tokens``. ``min_cosine`` overrides verification thresholds per graph; overrides are
    recorded.
    Raises ExportError, ModelUnavailableError, SentenceConfigError or VerificationError, having
    written nothing at ``output``.
    """
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize takes int8, got {quantize!r}")
    try:
        settings = quantize_settings(quantize_preset, int8_scales) if quantize else None
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    unknown = sorted(set(min_cosine or {}) - set(GRAPHS))
    if unknown:
        raise ExportError(f"--min-cosine names no graph: {unknown}; the graphs are {sorted(GRAPHS)}")
    if calibration is not None and not openvino_int8:
        raise ExportError("--calibration sets the scales of --openvino-int8; pass both or neither")
    static_texts = None
    if openvino_int8:
        static_texts = read_calibration(Path(calibration)) if calibration else builtin_calibration()
    output = Path(output).expanduser().resolve()
    _check_target(output, force)
    source = resolve_source(model, revision)
    config = read_sentence_config(source.folder)
    thresholds = {**MIN_COSINE, **(min_cosine or {})}

    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(output)
    work = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(output)}{os.getpid()}-", dir=output.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the published folder is an ordinary one
    try:
        built = _build_graphs(
            source.folder, config, work, optimization, settings, fp16, static_texts, all_tokens, opset
        )
        # The runtime reads the folder through its manifest, so verification needs a draft one.
        _write_manifest(work, _manifest(work, source, config, built, verification={}))
        reference = reference_vectors(source.folder, PROBES)
        results = verify(work, reference, list(built.graphs), thresholds)
        manifest = _manifest(work, source, config, built, _verification(results, thresholds))
        _write_manifest(work, manifest)
        _publish(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


@dataclass
class _Built:
    """What the graph-making steps leave in the work folder, for the manifest."""

    graphs: dict[str, dict]  # precision → how it was made (optimization, quantization)
    inputs: list[str]
    output_tokens: str
    vocab_size: int


def _build_graphs(
    model_dir: Path,
    config: SentenceConfig,
    work: Path,
    optimization: str,
    settings: QuantizeSettings | None,
    fp16: bool,
    static_texts: list[str] | None,
    all_tokens: bool,
    opset: int | None,
) -> _Built:
    """PyTorch → ONNX, then the first-token rewrite, the optimized fp32 graph, int8, fp16 and
    the static int8 for OpenVINO."""
    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    heads, hidden = model_config["num_attention_heads"], model_config["hidden_size"]
    build = work / "build"
    build.mkdir()
    raw_graph = build / "raw.onnx"
    raw_folder = to_onnx(model_dir, raw_graph, opset)
    shutil.copyfile(raw_folder / "tokenizer.json", work / "tokenizer.json")
    output_tokens = "all"
    if config.pooling == "cls" and not all_tokens:
        try:
            keep_first_token(raw_graph, build / "first_token.onnx")
        except GraphShapeError as exc:  # an encoder laid out otherwise: correct, just slower
            warnings.warn(f"every token's last layer is computed: {exc}", stacklevel=3)
        else:
            raw_graph, output_tokens = build / "first_token.onnx", "first"

    fp32 = work / GRAPH_FILES["fp32"]
    optimize(raw_graph, fp32, optimization, heads, hidden)
    inputs = _graph_inputs(fp32)  # read once: the graph can be hundreds of MB
    graphs: dict[str, dict] = {"fp32": {"optimization": optimization}}
    if settings:
        batches = calibration_batches(work / "tokenizer.json", config.max_seq_length, inputs)
        quantization = quantize_int8(fp32, work / GRAPH_FILES["int8"], settings, batches)
        quantization["calibration_texts"] = len(CALIBRATION_TEXTS)
        graphs["int8"] = {"optimization": optimization, "quantization": quantization}
    if fp16:
        # fp16 is for GPUs, where the fused Attention and LayerNorm kernels are the fast path.
        fused = build / "fused.onnx"
        optimize(raw_graph, fused, "O2", heads, hidden)
        to_fp16(fused, work / GRAPH_FILES["fp16"])
        graphs["fp16"] = {"optimization": "O2"}
    if static_texts:
        # From the unfused graph: NNCF cannot read ONNX Runtime's fused ops (Attention,
        # SkipLayerNormalization: O2, O3), and OpenVINO, which fuses on its own, cannot run them.
        out = work / GRAPH_FILES["int8-openvino"]
        made = quantize_static(raw_graph, out, work / "tokenizer.json", config.max_seq_length, static_texts)
        graphs["int8-openvino"] = {"optimization": "none", "quantization": made}
    shutil.rmtree(build)
    return _Built(graphs, inputs, output_tokens, model_config["vocab_size"])


def _manifest(
    work: Path, source: Source, config: SentenceConfig, built: _Built, verification: dict
) -> Manifest:
    """The manifest of the folder being built in ``work``: every file with its size and sha256."""
    return Manifest(
        source_model=source.name,
        source_revision=source.revision,
        embedding_dim=config.embedding_dim,
        pooling=config.pooling,
        normalize=config.normalize,
        lowercase=config.lowercase,
        output_tokens=built.output_tokens,
        max_seq_length=config.max_seq_length,
        vocab_size=built.vocab_size,
        inputs=built.inputs,
        output="last_hidden_state",
        tokenizer=file_record(work / "tokenizer.json"),
        graphs={
            name: GraphRecord(
                precision=GRAPHS[name], **file_record(work / GRAPH_FILES[name]).__dict__, **made
            )
            for name, made in built.graphs.items()
        },
        tools=tool_versions(),
        verification=verification,
        # Version 3 only where a graph's name is not its precision: older runtimes read the rest.
        format_version=FORMAT_VERSION if any(GRAPHS[name] != name for name in built.graphs) else 2,
    )


def _verification(results: dict, thresholds: dict[str, float]) -> dict:
    return {
        "probes": len(PROBES),
        "reference": "sentence-transformers, torch fp32, CPU",
        "thresholds_overridden": {k: v for k, v in thresholds.items() if MIN_COSINE.get(k) != v},
        "results": results,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_manifest(work: Path, manifest: Manifest) -> None:
    (work / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")


def _graph_inputs(graph: Path) -> list[str]:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]
