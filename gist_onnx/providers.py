"""Choosing the ONNX Runtime execution provider honestly: CUDA only when it really runs."""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from gist_onnx.errors import ProviderError
from gist_onnx.options import PROVIDERS

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


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
    """The provider list to ask a session for; raises ProviderError when it cannot work."""
    if provider not in PROVIDERS:
        raise ProviderError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if provider == "cpu" or (provider == "auto" and CUDA not in available):
        return [CPU]
    if CUDA not in available:
        raise ProviderError(
            f"provider='cuda' was asked for, but ONNX Runtime offers only {available}. "
            + cuda_hint(available)
        )
    return [CUDA, CPU]


def _preload_cuda_libraries() -> None:
    # onnxruntime >= 1.21 can load CUDA/cuDNN from pip-installed nvidia-* wheels; older ones lack it.
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # a partial preload is not fatal: session creation decides
            warnings.warn(f"onnxruntime.preload_dlls() failed: {exc}", RuntimeWarning, stacklevel=3)


def create_session(graph: Path, provider: str, options: ort.SessionOptions) -> ort.InferenceSession:
    """Create a session on the requested provider and check the provider it really got.

    ``cuda`` raises ProviderError rather than silently running on the CPU; ``auto`` falls back
    to the CPU with a warning when CUDA is offered but does not start.
    """
    available = ort.get_available_providers()
    wanted = providers_for(provider, available)
    if wanted[0] == CUDA:
        _preload_cuda_libraries()
    session = ort.InferenceSession(str(graph), sess_options=options, providers=wanted)
    got = session.get_providers()
    if wanted[0] == CUDA and got[0] != CUDA:
        if provider == "cuda":
            raise ProviderError(
                f"provider='cuda' was asked for, but the session runs on {got}. " + cuda_hint(available)
            )
        warnings.warn(
            f"CUDA is offered but did not start ({cuda_hint(available)}); running on the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    return session
