"""ONNX Runtime's OpenVINO execution provider, loaded as a plugin library into the stock wheel.

``pip install 'gist-onnx[openvino]'`` brings ``onnxruntime-ep-openvino``; the runtime registers
its library with ONNX Runtime once per process and runs on the OpenVINO CPU device it offers.
Where it offers none (it offers none on AMD CPUs), asking for it is an error naming what is
missing, never a quiet fallback. Under OpenVINO, ``fp32`` runs with f32 inference precision
(exact), ``bf16`` runs the fp32 graph in bf16, on CPUs with native bf16 (AMX, AVX512_BF16), and
``int8`` runs the folder's static int8 graph (``gist-onnx export --openvino-int8``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import onnxruntime as ort

from gist_onnx.cpu import cpu_flags
from gist_onnx.errors import ProviderError

OPENVINO = "OpenVINOExecutionProvider"
REGISTRATION_NAME = "gist_onnx_openvino"
# x86 flags of a CPU that computes bf16 natively; elsewhere OpenVINO would emulate it, slowly.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# Where bf16 is faster than f32 under OpenVINO: AMX's tiles. With AVX512_BF16 alone (a Xeon whose
# AMX the hypervisor hides) bf16 ran at 0.68x f32 on GIST's architecture (docs/performance.md).
FAST_BF16_FLAGS = frozenset({"amx_bf16"})
INSTALL_HINT = "pip install 'gist-onnx[openvino]' (it brings onnxruntime-ep-openvino)"
_registered: dict[str, str] = {}  # library path → EP name, once per process


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or one with ``flags``) multiplies bf16 natively."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags and flags & BF16_FLAGS)


def fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 beats f32 under OpenVINO on this CPU (or one with ``flags``): AMX only."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags and flags & FAST_BF16_FLAGS)


def _plugin() -> tuple[str, str]:
    """The plugin's library path and EP name; ProviderError naming the extra if not installed."""
    try:
        import onnxruntime_ep_openvino as plugin
    except ImportError:
        raise ProviderError(
            f"provider='openvino' needs ONNX Runtime's OpenVINO plugin: {INSTALL_HINT}"
        ) from None
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
        f"provider='openvino' was asked for, but the OpenVINO plugin offers no CPU device here (its "
        f"devices: {found}); it offers none on AMD CPUs. Use provider='cpu' on this machine"
    )


def device() -> Any:
    """The registered plugin's OpenVINO CPU device; ProviderError if not installed or none here."""
    name = register()  # first: ONNX Runtime lists a plugin's devices only once it is registered
    return cpu_device(ort.get_ep_devices(), name)


def load_config(precision: str, flags: frozenset[str] | None = None) -> dict[str, Any]:
    """The OpenVINO EP options for a precision: f32 inference (exact), bf16 (native bf16 only), or
    int8, whose graph's float parts (softmax, LayerNorm, GELU) run in bf16 where that is fast
    (AMX, where its quality was measured too), else f32."""
    if precision == "bf16" and not native_bf16(flags):
        raise ProviderError(
            "precision='bf16' needs a CPU with native bf16 (AMX or AVX512_BF16); this one has neither. "
            "Use fp32 (or int8) here"
        )
    hint = "bf16" if precision == "bf16" or (precision == "int8" and fast_bf16(flags)) else "f32"
    return {"load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint}})}


def add_to(options: ort.SessionOptions, precision: str) -> None:
    """Put the OpenVINO CPU device, with the precision's inference hint, first in ``options``."""
    options.add_provider_for_devices([device()], load_config(precision))
