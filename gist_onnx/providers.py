"""ONNX Runtime's execution providers by our names, and why a wanted one is not usable."""

from __future__ import annotations

import warnings
from importlib import metadata

import onnxruntime as ort

from gist_onnx.errors import ProviderError
from gist_onnx.options import PROVIDERS

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"  # a plugin library, registered by gist_onnx.openvino
# No ONNX Runtime provider: OpenVINO's own runtime, where the plugin offers no device (AMD CPUs).
OPENVINO_RUNTIME = "OpenVINORuntime"
# Our device names for the providers a session runs on.
DEVICES = {CPU: "cpu", CUDA: "cuda", OPENVINO: "openvino", OPENVINO_RUNTIME: "openvino"}


def device_of(provider_name: str) -> str:
    """Our name ("cpu", "cuda") for the ONNX Runtime provider a session runs on."""
    return DEVICES.get(provider_name, provider_name)


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def cuda_hint(available: list[str]) -> str:
    """The likeliest reason CUDA is not usable, and what to do about it."""
    if CUDA in available:
        return (
            "onnxruntime-gpu is installed but could not start CUDA: the CUDA or cuDNN libraries "
            "it was built for are missing or of another major version, or no GPU is visible. "
            "Check `nvidia-smi` and the CUDA/cuDNN versions in onnxruntime's install guide"
        )
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        return (
            "both onnxruntime and onnxruntime-gpu are installed and the CPU-only one shadows the "
            "other: `pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`"
        )
    return "onnxruntime-gpu is not installed: `pip install 'gist-onnx[gpu]'` (it replaces onnxruntime)"


def providers_for(provider: str, available: list[str]) -> list[str]:
    """The provider list to ask a session for; raises ProviderError when it cannot work.

    ``auto`` never picks OpenVINO: it has not been measured to win where auto would choose it.
    OpenVINO's own checks (plugin installed, a CPU device offered) happen as its session is built.
    """
    if provider not in PROVIDERS:
        raise ProviderError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if provider == "openvino":
        return [OPENVINO, CPU]
    if provider == "cpu" or (provider == "auto" and CUDA not in available):
        return [CPU]
    if CUDA not in available:
        raise ProviderError(
            f"provider='cuda' was asked for, but ONNX Runtime offers only {available}. "
            + cuda_hint(available)
        )
    return [CUDA, CPU]


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from pip-installed nvidia-* wheels (onnxruntime >= 1.21; older ones lack it)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # a partial preload is not fatal: session creation decides
            warnings.warn(f"onnxruntime.preload_dlls() failed: {exc}", RuntimeWarning, stacklevel=3)
