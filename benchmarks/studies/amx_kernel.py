"""`python -m benchmarks.studies.amx_kernel`: does ONNX Runtime's int8 path run on MLAS's AMX kernel?

MLAS, ONNX Runtime's CPU kernel library, has a u8×s8 GEMM on AMX tiles. It dispatches to it when
the CPU reports AMX-TILE and AMX-INT8 and Linux grants the process the tile state
(``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``, asked once when MLAS sets up its kernels). Our
int8 graph multiplies uint8 activations by int8 weights, so on such a CPU it should run there.
Three pieces of evidence, on GIST's architecture (random weights), short texts at batch 32:

1. permission: whether a fresh process holds the tile permission at start, after importing
   numpy and tokenizers, after importing onnxruntime and after an int8 session has run.
2. rate: ONNX Runtime's int8 GEMM rate over its fp32 rate on the same shape. An AVX-512 VNNI
   ``vpdpbusd`` does 4x the multiply-adds of an fp32 FMA, so a ratio well above 4 is beyond
   what the vector kernels can do.
3. profile (where ``perf`` and ``objdump`` exist): the share of ONNX Runtime's CPU samples, while
   the int8 graph runs, that fall beside AMX tile instructions (``tdpbusd``) and beside VNNI's
   ``vpdpbusd``. The library is stripped, so the code around each hot address is what tells.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.measure import gemm_peak_gflops, int8_gemm_peak_gops

ARCH_GET_XCOMP_PERM = 0x1022
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86-64
VNNI_OVER_FP32 = 4  # multiply-adds per vpdpbusd over per fp32 FMA, same vector width
WINDOW = 96  # bytes disassembled on each side of a sampled address (sampling skids a few)
TOP_ADDRESSES = 60  # the hottest addresses looked at; they hold most of the GEMMs' samples


def tile_permission() -> bool | None:
    """Whether this process may use AMX tile data; None where Linux cannot say (not x86-64)."""
    mask = ctypes.c_ulong(0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) != 0:
        return None
    return bool(mask.value & (1 << XFEATURE_XTILEDATA))


def child(folder: Path, seconds: float) -> None:
    """The fresh process: the permission at each stage, then the int8 graph for ``seconds``."""
    stages = {"start": tile_permission()}
    import numpy  # noqa: F401
    import tokenizers  # noqa: F401

    stages["numpy and tokenizers imported"] = tile_permission()
    import onnxruntime  # noqa: F401  (MLAS picks its kernels as the library loads)

    stages["onnxruntime imported"] = tile_permission()
    from benchmarks.corpus import load_stsb
    from gist_onnx import Embedder

    texts = load_stsb().sentences()[:32]
    embedder = Embedder(folder, provider="cpu", precision="int8")
    embedder.encode(texts, batch_size=32)
    stages["int8 session ran"] = tile_permission()
    runs, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        embedder.encode(texts, batch_size=32)
        runs += 1
    print(json.dumps({"stages": stages, "runs": runs}), flush=True)


def run_child(folder: Path, seconds: float, perf_data: Path | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.studies.amx_kernel", "--child", str(folder), str(seconds)]
    if perf_data:
        sampling = ["-q", "-e", "cpu-clock", "-F", "1999", "-o", str(perf_data)]
        command = ["perf", "record", *sampling, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hot_addresses(perf_data: Path, library: str) -> list[tuple[int, float]]:
    """(address in ``library``, share of all samples) of its hottest addresses."""
    report = subprocess.run(
        ["perf", "report", "-i", str(perf_data), "--stdio", "--no-children", "--sort", "dso,sym"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = []
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[\.\]\s+0x([0-9a-f]+)", line)
        if match and match.group(2) == library:
            rows.append((int(match.group(3), 16), float(match.group(1)) / 100))
    return sorted(rows, key=lambda row: -row[1])


def neighbourhood(library: Path, address: int) -> str:
    """The instructions around ``address`` in ``library``."""
    return subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--start-address={max(address - WINDOW, 0)}",
         f"--stop-address={address + WINDOW}", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def profile(folder: Path, seconds: float, scratch: Path) -> dict[str, Any] | None:
    """Sample shares of ONNX Runtime's code beside AMX tile and VNNI instructions."""
    if not (shutil.which("perf") and shutil.which("objdump")):
        return None
    from onnxruntime.capi import onnxruntime_pybind11_state

    # The Python wheel links ONNX Runtime, MLAS included, into its extension module.
    library = Path(onnxruntime_pybind11_state.__file__)
    perf_data = scratch / "perf.data"
    run_child(folder, seconds, perf_data)
    rows = hot_addresses(perf_data, library.name)
    shares = {"amx": 0.0, "vnni": 0.0, "other": 0.0}
    for address, share in rows[:TOP_ADDRESSES]:
        code = neighbourhood(library, address)
        amx, vnni = re.search(r"\t(tdpb|tileloadd)", code), "\tvpdpbusd" in code
        kind = "amx" if amx else "vnni" if vnni else "other"
        shares[kind] += share
    looked_at = sum(share for _, share in rows[:TOP_ADDRESSES])
    return {
        "library_share": sum(share for _, share in rows),
        "looked_at_share": looked_at,
        "beside": shares,
    }


def markdown(results: dict[str, Any]) -> str:
    rate = results["rate"]
    lines = [
        "# Does ONNX Runtime's int8 path take MLAS's AMX kernel?",
        "",
        f"{results['created']}, {results['cpu']}; onnxruntime {results['onnxruntime']}. "
        "GIST's architecture, random weights, int8 graph, short STS-B texts at batch 32.",
        "",
        "| stage of a fresh process | holds the AMX tile permission |",
        "| --- | --- |",
        *(f"| {stage} | {held} |" for stage, held in results["permission"].items()),
        "",
        f"GEMM rates on {rate['shape']}: int8 {rate['int8_gops']:.0f} GOP/s (MatMulInteger), fp32 "
        f"{rate['fp32_gflops']:.0f} GFLOP/s: **{rate['ratio']:.1f}x**, against {VNNI_OVER_FP32}x "
        "for AVX-512 VNNI at its best.",
    ]
    prof = results["profile"]
    if prof is None:
        lines += ["", "No profile: `perf` or `objdump` is not installed here."]
    else:
        beside = prof["beside"]
        lines += [
            "",
            f"Profile: ONNX Runtime's library took {prof['library_share']:.0%} of the samples; its "
            f"{TOP_ADDRESSES} hottest addresses ({prof['looked_at_share']:.0%} of all samples) sit "
            f"beside AMX tile instructions for {beside['amx']:.0%}, beside VNNI `vpdpbusd` for "
            f"{beside['vnni']:.0%}, elsewhere for {beside['other']:.0%} of all samples.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(Path(argv[1]), float(argv[2]))
        return 0
    args = common.parse_args("python -m benchmarks.studies.amx_kernel", __doc__, "amx-kernel", argv)

    import onnxruntime

    with common.workspace(args.work, "gist-onnx-amx-") as (work, scratch):
        gist, folder = common.random_gist_export(work)
        permission = run_child(folder, 1.0, None)["stages"]
        fp32, int8 = gemm_peak_gflops(), int8_gemm_peak_gops()
        rate = {
            "shape": int8["shape"].replace(" uint8 x int8", ""),
            "fp32_gflops": fp32["onnxruntime_gflops"],
            "int8_gops": int8["peak_gops"],
            "ratio": int8["peak_gops"] / fp32["onnxruntime_gflops"],
        }
        results = {
            **common.header(),
            "onnxruntime": onnxruntime.__version__,
            "permission": permission,
            "rate": rate,
            "profile": profile(folder, 10.0, scratch),
        }
    common.write(args.out, "amx-kernel", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
