"""Opening a model's session and resolving, once, what the runtime really got.

The session is created first; the device it really runs on then decides the graph, the token
budget and everything else, recorded in one frozen ``RuntimeInfo`` that every layer reads (the
CLI, the server, the bulk job, the benchmarks). Nothing else re-derives these.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

from gist_onnx.cpu import int8_mismatch
from gist_onnx.errors import ModelFolderError, ProviderError
from gist_onnx.manifest import GraphRecord, Manifest, check_file
from gist_onnx.options import MAX_BATCH_TOKENS, PRECISIONS
from gist_onnx.providers import CUDA, OPENVINO, cuda_hint, device_of, preload_cuda_libraries, providers_for

_ort_errors = ort.capi.onnxruntime_pybind11_state
# What ONNX Runtime raises for a file that is not a graph it can build a session from.
_GRAPH_LOAD_ERRORS = (
    _ort_errors.Fail,
    _ort_errors.InvalidProtobuf,
    _ort_errors.InvalidGraph,
    _ort_errors.NotImplemented,
)
FEEDABLE_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
# The graph a device runs best, most faithful first; int8 is taken only on request.
AUTO_PRECISION = {"cuda": ("fp16", "fp32"), "cpu": ("fp32",)}
# What each device can run. OpenVINO rejects the per-token int8 graph, so its int8 is a graph of
# its own, static int8 (docs/performance.md).
DEVICE_PRECISIONS = {
    "cpu": ("fp32", "int8", "fp16"),
    "cuda": ("fp32", "int8", "fp16"),
    "openvino": ("fp32", "bf16", "int8"),
}

TokenBudget = int | Literal["auto"] | None


@dataclass(frozen=True)
class RuntimeInfo:
    """What a loaded model really is and runs on, resolved once after its session exists."""

    model_dir: Path
    source_model: str
    device: str  # where the session runs: "cpu", "cuda" or "openvino"
    providers: tuple[str, ...]  # ONNX Runtime's providers of the session, in order
    precision: str  # what it computes in: "fp32", "int8", "fp16", or "bf16" (the fp32 graph, bf16)
    graph: str  # the manifest's graph the session runs: a precision's name, or "int8-openvino"
    graph_sha256: str  # the checksum of the graph loaded: what its vectors come from
    max_batch_tokens: int | None  # padded tokens per session run; None: no cap
    pooling: str  # "cls", "mean" or "max", from the model's sentence-transformers config
    normalize: bool  # the model's default: whether vectors are L2-normalized
    dim: int
    max_seq_length: int  # tokens per text, special tokens included; longer texts are cut
    int8_mismatch: str | None = None  # why this int8 graph is not exact on this CPU, if it is not
    # Whether a text's vector is the same bits whatever its batch mates (``batch_invariant``): what
    # lets a cache, a retried shard or another batch size give the very same vectors.
    batch_invariant: bool = False

    def normalizes(self, override: bool | None = None) -> bool:
        """Whether vectors are normalized: the caller's ``override``, else the model's default."""
        return self.normalize if override is None else override

    @property
    def vectors_of(self) -> str:
        """What identifies the vectors this runtime computes: its graph, and how it computes it."""
        return f"{self.graph_sha256}:{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, for /info, `gist-onnx info --json` and reports."""
        return {**asdict(self), "model_dir": str(self.model_dir), "providers": list(self.providers)}


def graph_of(precision: str, device: str) -> str:
    """The manifest's graph a precision runs on a device: bf16 runs the fp32 graph, and int8
    under OpenVINO its own static graph."""
    if precision == "bf16":
        return "fp32"
    return "int8-openvino" if precision == "int8" and device == "openvino" else precision


def _export_hint(graph: str) -> str:
    flags = {"int8": "--quantize int8", "fp16": "--fp16", "int8-openvino": "--openvino-int8"}
    return flags.get(graph, "the defaults")


def choose_precision(precision: str, manifest: Manifest, device: str, model_dir: Path) -> str:
    """What a precision setting means for a device and a folder: ModelFolderError if the folder
    lacks the graph asked for, ProviderError if the device cannot run it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto" and device == "openvino":
        from gist_onnx.openvino import fast_bf16

        # OpenVINO's own default is bf16 wherever the CPU has it; ours only where it wins (AMX).
        precision = "bf16" if fast_bf16() else "fp32"
    if precision == "auto":
        for candidate in (*AUTO_PRECISION.get(device, ("fp32",)), *manifest.graphs):
            if candidate in manifest.graphs:
                return candidate
    if precision not in DEVICE_PRECISIONS.get(device, PRECISIONS):
        raise ProviderError(
            f"precision={precision!r} does not run on {device}: it runs "
            + ", ".join(DEVICE_PRECISIONS[device])
            + (" (bf16 runs under OpenVINO: provider='openvino')" if precision == "bf16" else "")
        )
    graph = graph_of(precision, device)
    if graph not in manifest.graphs:
        what = "int8 graph for OpenVINO" if graph == "int8-openvino" else f"{precision} graph"
        raise ModelFolderError(
            model_dir,
            f"has no {what} (it has {sorted(manifest.graphs)}); export with {_export_hint(graph)} to add one",
        )
    return precision


def token_budget(setting: TokenBudget, device: str) -> int | None:
    """The padded-token cap per session run that a ``max_batch_tokens`` setting means on a device."""
    if setting == "auto":
        return MAX_BATCH_TOKENS.get(device, MAX_BATCH_TOKENS["cpu"])
    if setting is not None and (isinstance(setting, bool) or not isinstance(setting, int) or setting < 1):
        raise ValueError(f"max_batch_tokens must be 'auto', None or an int >= 1, got {setting!r}")
    return setting


def open_session(
    model_dir: Path,
    manifest: Manifest,
    provider: str,
    precision: str,
    options: ort.SessionOptions,
    checksum: bool,
    graph: str | None = None,
) -> tuple[ort.InferenceSession, str, str, str]:
    """The session, the precision it computes in, the device it really runs on, and its graph.

    ``cuda`` raises ProviderError rather than run on the CPU; ``auto`` falls back to the CPU with
    a warning when CUDA is offered but does not start, and then loads the graph chosen for the
    CPU (fp32 rather than fp16, under ``precision="auto"``). ``graph`` names the manifest's graph
    to run instead of the one the precision and device choose; it is run as it is, on any device.
    """
    available = ort.get_available_providers()
    if provider == "auto" and precision == "bf16":
        provider = "openvino"  # bf16 is OpenVINO's: asking for it names the provider
    wanted = providers_for(provider, available)
    device = device_of(wanted[0])
    named = graph is not None
    if named:
        chosen = _precision_of_graph(graph, precision, manifest, model_dir)
    else:
        chosen = choose_precision(precision, manifest, device, model_dir)
        graph = graph_of(chosen, device)
    session = _load(model_dir, manifest, graph, chosen, wanted, options, checksum)
    got = device_of(session.get_providers()[0])
    if got == device:
        return session, chosen, got, graph
    if provider == device:  # asked for by name: never run elsewhere
        hint = cuda_hint(available) if device == "cuda" else "The OpenVINO plugin took no part of the graph"
        raise ProviderError(
            f"provider={provider!r} was asked for, but the session runs on {session.get_providers()}. {hint}"
        )
    warnings.warn(
        f"{wanted[0]} is offered but did not start ({cuda_hint(available)}); running on {got}",
        RuntimeWarning,
        stacklevel=3,
    )
    if named:  # a graph asked for by name runs wherever the session landed
        return session, chosen, got, graph
    fallback = choose_precision(precision, manifest, got, model_dir)
    if fallback != chosen:
        graph = graph_of(fallback, got)
        session = _load(model_dir, manifest, graph, fallback, session.get_providers(), options, checksum)
    return session, fallback, got, graph


def _precision_of_graph(graph: str, precision: str, manifest: Manifest, model_dir: Path) -> str:
    """What a graph asked for by name computes in: its own precision, or bf16 for the fp32 graph."""
    if graph not in manifest.graphs:
        raise ModelFolderError(model_dir, f"has no graph {graph!r} (it has {sorted(manifest.graphs)})")
    own = manifest.graphs[graph].precision
    if precision in ("auto", own) or (precision == "bf16" and own == "fp32"):
        return own if precision == "auto" else precision
    raise ValueError(f"graph {graph!r} computes in {own}, not precision={precision!r}")


def _load(
    model_dir: Path,
    manifest: Manifest,
    graph: str,
    precision: str,
    providers: list[str],
    options: ort.SessionOptions,
    checksum: bool,
) -> ort.InferenceSession:
    graph_path = check_file(model_dir, manifest.graphs[graph].record, checksum=checksum)
    if providers[0] == CUDA:
        preload_cuda_libraries()
    try:
        if providers[0] == OPENVINO:
            session = _openvino_session(graph_path, options, precision)
        else:
            session = ort.InferenceSession(str(graph_path), sess_options=options, providers=providers)
    except _GRAPH_LOAD_ERRORS as exc:
        raise ModelFolderError(graph_path, f"is not a loadable ONNX graph: {exc}") from exc
    unknown = {i.name for i in session.get_inputs()} - FEEDABLE_INPUTS
    if unknown:
        raise ModelFolderError(graph_path, f"declares inputs this runtime cannot feed: {unknown}")
    return session


def _openvino_session(graph_path: Path, options: ort.SessionOptions, precision: str) -> ort.InferenceSession:
    from gist_onnx import openvino

    return openvino.session(graph_path, options, precision)  # ProviderError: no engine, no native bf16


def batch_invariant(device: str, graph: GraphRecord) -> bool:
    """Whether a text's vector is the same bits whatever its batch mates, as tested
    (tests/test_runtime.py): ONNX Runtime's CPU kernels on fp32 graphs and on int8 with per-token
    scales. Nowhere else is it promised: OpenVINO's and CUDA's kernels follow the run's shape (on a
    Zen 4 EPYC, 20 of 40 texts alone and in a batch differ in their last bits under OpenVINO fp32,
    4 under bf16), per-tensor int8 scales follow the batch, and fp16 or static int8 on the CPU
    are untested."""
    if device != "cpu":
        return False
    if not graph.quantization:
        return graph.precision == "fp32"
    return graph.quantization.get("activations") == "per-token"


def resolve(
    model_dir: Path,
    manifest: Manifest,
    session: ort.InferenceSession,
    precision: str,
    device: str,
    graph_name: str,
    max_batch_tokens: TokenBudget,
) -> RuntimeInfo:
    """Record what the session got, with the model's own settings from its manifest."""
    graph = manifest.graphs[graph_name]
    # An int8 graph exported for a VNNI CPU still runs elsewhere, on saturating kernels.
    mismatch = int8_mismatch(graph.weight_bits) if device == "cpu" and graph.weight_bits else None
    return RuntimeInfo(
        model_dir=model_dir,
        source_model=manifest.source_model,
        device=device,
        providers=tuple(session.get_providers()),
        precision=precision,
        graph=graph_name,
        graph_sha256=graph.sha256,
        max_batch_tokens=token_budget(max_batch_tokens, device),
        pooling=manifest.pooling,
        normalize=manifest.normalize,
        dim=manifest.embedding_dim,
        max_seq_length=manifest.max_seq_length,
        int8_mismatch=mismatch,
        batch_invariant=batch_invariant(device, graph),
    )
