"""OpenVINO, the engine behind ``provider="openvino"``: through ONNX Runtime's plugin EP where it
offers an OpenVINO CPU device, else on OpenVINO's own runtime.

``pip install 'gist-onnx[openvino]'`` brings both. The plugin (``onnxruntime-ep-openvino``) loads
into the stock onnxruntime wheel and offers its CPU device on Intel CPUs only; on AMD CPUs, where
it offers none, OpenVINO's own runtime (``openvino``) compiles the same ONNX graph for the same CPU
plugin. ``info.providers`` says which ran. Where neither can run, asking for OpenVINO is an error
naming what is missing, never a quiet fallback to another engine. Under OpenVINO, ``fp32`` runs
with f32 inference precision (exact), ``bf16`` runs the fp32 graph in bf16, on CPUs with native
bf16 (AMX, AVX512_BF16), and ``int8`` runs the folder's static int8 graph (``gist-onnx export
--openvino-int8``), its float parts in bf16 where bf16 is fast.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort

from gist_onnx.cpu import cpu_flags, cpu_vendor
from gist_onnx.errors import ModelFolderError, ProviderError
from gist_onnx.providers import OPENVINO, OPENVINO_RUNTIME

REGISTRATION_NAME = "gist_onnx_openvino"
# x86 flags of a CPU that computes bf16 natively; elsewhere OpenVINO would emulate it, slowly.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
AMX_BF16 = frozenset({"amx_bf16"})
INSTALL_HINT = "pip install 'gist-onnx[openvino]' (it brings onnxruntime-ep-openvino and openvino)"
_registered: dict[str, str] = {}  # library path → EP name, once per process


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or one with ``flags``) multiplies bf16 natively."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags and flags & BF16_FLAGS)


def fast_bf16(flags: frozenset[str] | None = None, vendor: str | None = None) -> bool:
    """Whether bf16 beats f32 under OpenVINO on this CPU (or one with ``flags`` and ``vendor``).

    Measured on GIST's architecture (docs/performance.md): AMX's tiles, yes; AVX512_BF16 on an AMD
    EPYC (Zen 4), yes, 1.9x f32 on short texts; AVX512_BF16 alone on an Intel Xeon (its AMX hidden
    by the hypervisor), no, 0.68x f32.
    """
    flags = cpu_flags() if flags is None else flags
    vendor = cpu_vendor() if vendor is None else vendor
    if not flags:
        return False
    return bool(flags & AMX_BF16) or ("avx512_bf16" in flags and vendor == "AuthenticAMD")


def _plugin() -> tuple[str, str]:
    """The plugin's library path and EP name; ProviderError if it is not installed."""
    try:
        import onnxruntime_ep_openvino as plugin
    except ImportError:
        raise ProviderError("ONNX Runtime's OpenVINO plugin is not installed") from None
    return plugin.get_library_path(), plugin.get_ep_name()


def register() -> str:
    """Register the plugin's library with ONNX Runtime (once per process); the EP's name."""
    path, name = _plugin()
    if path not in _registered:
        register_library = getattr(ort, "register_execution_provider_library", None)
        if register_library is None:
            raise ProviderError(
                f"onnxruntime {ort.__version__} cannot load plugin execution providers; "
                "upgrade it: pip install -U 'onnxruntime>=1.23'"
            )
        register_library(REGISTRATION_NAME, path)
        _registered[path] = name
    return name


def cpu_device(devices: Sequence[Any], ep_name: str) -> Any:
    """The OpenVINO CPU device among ONNX Runtime's EP devices; ProviderError saying what it found."""
    ours = [d for d in devices if d.ep_name == ep_name]
    cpus = [d for d in ours if d.ep_metadata.get("ov_device") == "CPU"]
    if cpus:
        return cpus[0]
    found = ", ".join(sorted({d.ep_metadata.get("ov_device", "?") for d in ours})) or "none"
    raise ProviderError(
        f"the OpenVINO plugin offers no CPU device here (its devices: {found}; it offers none on AMD CPUs)"
    )


def device() -> Any:
    """The registered plugin's OpenVINO CPU device; ProviderError if not installed or none here."""
    name = register()  # first: ONNX Runtime lists a plugin's devices only once it is registered
    return cpu_device(ort.get_ep_devices(), name)


def engine() -> str:
    """Which engine ``provider="openvino"`` runs on here: ONNX Runtime's OpenVINO plugin
    (``OPENVINO``) where it offers a CPU device, else OpenVINO's own runtime (``OPENVINO_RUNTIME``);
    ProviderError naming what to install where neither can run."""
    try:
        device()
        return OPENVINO
    except ProviderError as plugin:
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise ProviderError(
                f"provider='openvino' cannot run here: {plugin}, and OpenVINO's own runtime is not "
                f"installed: {INSTALL_HINT}"
            ) from None
        return OPENVINO_RUNTIME


def inference_hint(precision: str, flags: frozenset[str] | None = None, vendor: str | None = None) -> str:
    """OpenVINO's inference precision for ours: f32 (exact), bf16 (native bf16 only), or, for int8,
    bf16 for the graph's float parts (softmax, LayerNorm, GELU, the residual projections) where bf16
    beats f32 (`fast_bf16`: AMX, AVX512_BF16 on AMD; its quality measured on both), else f32."""
    flags = cpu_flags() if flags is None else flags
    if precision == "bf16" and not native_bf16(flags):
        raise ProviderError(
            "precision='bf16' needs a CPU with native bf16 (AMX or AVX512_BF16); this one has neither. "
            "Use fp32 (or int8) here"
        )
    fast_int8_parts = precision == "int8" and fast_bf16(flags, vendor)
    return "bf16" if precision == "bf16" or fast_int8_parts else "f32"


def load_config(
    precision: str, flags: frozenset[str] | None = None, vendor: str | None = None
) -> dict[str, Any]:
    """The plugin EP's options for a precision (its inference hint, `inference_hint`)."""
    hint = inference_hint(precision, flags, vendor)
    return {"load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint}})}


def session(graph_path: Path, options: ort.SessionOptions, precision: str) -> Any:
    """A session on OpenVINO (`engine` says which): an ONNX Runtime session with the plugin's CPU
    device first, or a `RuntimeSession`. ProviderError: neither installed, no native bf16."""
    if engine() == OPENVINO:
        options.add_provider_for_devices([device()], load_config(precision))
        return ort.InferenceSession(str(graph_path), sess_options=options)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_hint(precision)}
    if options.intra_op_num_threads > 0:  # Embedder(threads=...) sets it
        config["INFERENCE_NUM_THREADS"] = str(options.intra_op_num_threads)
    return RuntimeSession(graph_path, config)


class RuntimeSession:
    """OpenVINO's own runtime on an ONNX graph, answering what the Embedder asks of an ONNX Runtime
    session: ``get_inputs``, ``get_providers`` and ``run``. Of ONNX Runtime's session options it
    takes the thread count alone (as ``INFERENCE_NUM_THREADS``)."""

    def __init__(self, graph_path: Path, config: dict[str, str]) -> None:
        import openvino

        try:
            self._compiled = openvino.Core().compile_model(str(graph_path), "CPU", config)
        except RuntimeError as exc:
            raise ModelFolderError(graph_path, f"is not a graph OpenVINO can compile: {exc}") from exc
        self._inputs = [SimpleNamespace(name=port.get_any_name()) for port in self._compiled.inputs]
        self._requests = threading.local()  # an infer request serves one thread at a time

    def get_inputs(self) -> list[SimpleNamespace]:
        return self._inputs

    def get_providers(self) -> list[str]:
        return [OPENVINO_RUNTIME]

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        results = request.infer(feeds)  # copies of the outputs: the request reuses its own
        return [results[self._compiled.output(name)] for name in output_names]
