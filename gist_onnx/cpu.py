"""Which int8 weights this CPU multiplies exactly: ONNX Runtime's int8 GEMM kernels depend on it.

x86 CPUs without VNNI multiply uint8 activations by int8 weights with vpmaddubsw, which adds two
products into an int16 and saturates: with 8-bit weights (up to 2 x 255 x 127 = 64,770) the sums
clip and the vectors drift; 7-bit weights (at most 32,130) never reach the limit. VNNI (AVX-512
VNNI or AVX-VNNI) and ARM accumulate in int32 and take 8-bit weights exactly.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Flags that give x86 an int32-accumulating u8 x s8 dot product.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
EXACT_EVERYWHERE_BITS = 7


def _cpuinfo(*fields: str) -> str | None:
    """The first of ``fields`` in /proc/cpuinfo; None where it cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(fields):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags from /proc/cpuinfo; None where they cannot be read (not Linux)."""
    flags = _cpuinfo("flags", "Features")
    return None if flags is None else frozenset(flags.split())


def cpu_vendor() -> str | None:
    """This CPU's vendor ("GenuineIntel", "AuthenticAMD", ...); None where it cannot be read."""
    return _cpuinfo("vendor_id")


def is_arm(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("arm64", "aarch64")


def exact_weight_bits(flags: frozenset[str] | None, machine: str | None = None) -> int | None:
    """The widest int8 weights this CPU multiplies without saturating: 8 or 7; None if unknown."""
    if is_arm(machine):
        return 8
    if flags is None:
        return None
    return 8 if flags & VNNI_FLAGS else EXACT_EVERYWHERE_BITS


def int8_mismatch(
    weight_bits: int, flags: frozenset[str] | None = None, machine: str | None = None
) -> str | None:
    """Why an int8 graph with ``weight_bits``-bit weights is not exact on this CPU, or None if it is.

    ``flags`` and ``machine`` default to this machine's; tests pass others.
    """
    exact = exact_weight_bits(cpu_flags() if flags is None else flags, machine)
    if exact is None or weight_bits <= exact:
        return None
    return (
        f"this int8 graph has {weight_bits}-bit weights, which need a CPU with VNNI "
        "(AVX-512 VNNI or AVX-VNNI); this CPU has neither, so ONNX Runtime's int8 kernels "
        "saturate and the vectors drift from fp32. Re-export with `--quantize-preset portable` "
        "(7-bit weights, exact on every CPU) for machines like this one"
    )
