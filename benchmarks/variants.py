"""The inference stacks compared: PyTorch, sentence-transformers' ONNX backend, the best peers a
user could switch to on this CPU (benchmarks.peers), and gist-onnx.

Each variant is built from one sentence-transformers model folder and exposes the same call,
``encode(texts, batch_size) -> (n, dim) float32``, so every figure is taken the same way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Encode


@dataclass(frozen=True)
class VariantSpec:
    """A variant by name: how to build it, and what it is."""

    name: str
    stack: str  # "pytorch", "st-onnx", "fastembed", "openvino" or "gist-onnx"
    precision: str  # "default": the stack's own default on this CPU (recorded in the report)
    note: str
    export: str | None = None  # gist-onnx: the name of its export in EXPORTS
    provider: str = "cpu"  # gist-onnx: the provider it runs on


# gist-onnx exports by name: export_model's options for each.
EXPORTS: dict[str, dict[str, Any]] = {
    "gist-onnx": {"quantize": "int8"},
    "gist-onnx-O2": {"optimization": "O2"},
    # ONNX Runtime's dynamic quantization, for comparison: with 7-bit weights its MiniLM probe
    # min cosine sits at the 0.98 threshold (docs/performance.md), so it is verified at 0.97.
    "gist-onnx-per-tensor": {"quantize": "int8", "int8_scales": "per-tensor", "min_cosine": {"int8": 0.97}},
    "gist-onnx-openvino-int8": {"openvino_int8": True},
}
SPECS = [
    VariantSpec("pytorch-fp32", "pytorch", "fp32", "sentence-transformers on torch (the model card's way)"),
    VariantSpec(
        "pytorch-bf16", "pytorch", "bf16", "sentence-transformers on torch, model_kwargs dtype=torch.bfloat16"
    ),
    VariantSpec("st-onnx-fp32", "st-onnx", "fp32", "sentence-transformers backend='onnx'"),
    VariantSpec(
        "st-onnx-int8", "st-onnx", "int8", "sentence-transformers export_dynamic_quantized_onnx_model"
    ),
    VariantSpec("fastembed-fp32", "fastembed", "fp32", "fastembed on sentence-transformers' ONNX export"),
    VariantSpec(
        "openvino",
        "openvino",
        "default",
        "OpenVINO's runtime on sentence-transformers' ONNX export, "
        "default precision (bf16 with AMX or AVX512_BF16)",
    ),
    VariantSpec(
        "openvino-int8",
        "openvino",
        "int8",
        "NNCF static int8 of that graph (transformer preset, 300 STS-B calibration sentences)",
    ),
    VariantSpec(
        "gist-onnx-fp32",
        "gist-onnx",
        "fp32",
        "gist-onnx default export (ONNX Runtime fuses at session start)",
        "gist-onnx",
    ),
    VariantSpec(
        "gist-onnx-fp32-O2",
        "gist-onnx",
        "fp32",
        "gist-onnx --optimize O2 (transformer fusions applied at export)",
        "gist-onnx-O2",
    ),
    VariantSpec(
        "gist-onnx-openvino-fp32",
        "gist-onnx",
        "fp32",
        "gist-onnx provider='openvino' (ONNX Runtime's OpenVINO plugin, or OpenVINO's runtime where "
        "the plugin offers no device; f32 inference)",
        "gist-onnx",
        "openvino",
    ),
    VariantSpec(
        "gist-onnx-openvino-bf16",
        "gist-onnx",
        "bf16",
        "gist-onnx provider='openvino' precision='bf16' (the fp32 graph in bf16, native bf16 only)",
        "gist-onnx",
        "openvino",
    ),
    VariantSpec(
        "gist-onnx-openvino-int8",
        "gist-onnx",
        "int8",
        "gist-onnx --openvino-int8, provider='openvino' (NNCF static int8 as QDQ, the export's calibration)",
        "gist-onnx-openvino-int8",
        "openvino",
    ),
    VariantSpec(
        "gist-onnx-int8",
        "gist-onnx",
        "int8",
        "gist-onnx --quantize int8 (per-token scales, smoothed, every weight GEMM int8)",
        "gist-onnx",
    ),
    VariantSpec(
        "gist-onnx-int8-per-tensor",
        "gist-onnx",
        "int8",
        "gist-onnx --quantize int8 --int8-scales per-tensor (ONNX Runtime's dynamic quantization, Q/K/V "
        "fp32)",
        "gist-onnx-per-tensor",
    ),
]
BASELINE = "pytorch-fp32"


def skip_reason(spec: VariantSpec) -> str | None:
    """Why ``spec`` cannot run on this machine (a package missing, the CPU lacking what it needs),
    or None: a peer that is not here is reported as skipped, never silently dropped."""
    from benchmarks import peers

    if spec.stack == "pytorch" and spec.precision == "bf16":
        return peers.pytorch_bf16_skip()
    if spec.stack == "fastembed":
        return peers.missing("fastembed")
    if spec.stack == "openvino":
        return peers.missing("openvino", "nncf") if spec.precision == "int8" else peers.missing("openvino")
    if spec.provider == "openvino":
        return openvino_provider_skip(spec.precision)
    return None


def openvino_provider_skip(precision: str) -> str | None:
    """Why gist-onnx's provider='openvino' cannot run ``precision`` here; None where it can."""
    from gist_onnx import openvino
    from gist_onnx.errors import ProviderError

    try:
        openvino.engine()
        openvino.inference_hint(precision)
    except ProviderError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class Prepared:
    """The folders every variant loads from, made once per model."""

    model_dir: Path  # the sentence-transformers folder (PyTorch weights)
    st_onnx_dir: Path  # its copy with sentence-transformers' ONNX exports under onnx/
    st_int8_file: str  # that int8 graph, relative to st_onnx_dir
    gist_dirs: dict[str, Path]  # gist-onnx's exports, by their name in EXPORTS
    openvino_int8: Path | None  # NNCF's static int8 IR of st_onnx_dir's graph, where nncf is installed

    @property
    def folder(self) -> Path:
        """gist-onnx's default export: the tokenizer and manifest the peers' pipelines read."""
        return self.gist_dirs["gist-onnx"]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, for a variant loaded in another process."""
        return {
            "model_dir": str(self.model_dir),
            "st_onnx_dir": str(self.st_onnx_dir),
            "st_int8_file": self.st_int8_file,
            "gist_dirs": {k: str(v) for k, v in self.gist_dirs.items()},
            "openvino_int8": str(self.openvino_int8) if self.openvino_int8 else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prepared:
        return cls(
            Path(data["model_dir"]),
            Path(data["st_onnx_dir"]),
            data["st_int8_file"],
            {k: Path(v) for k, v in data["gist_dirs"].items()},
            Path(data["openvino_int8"]) if data["openvino_int8"] else None,
        )


def prepare(model_dir: Path, work: Path, st_preset: str, calibration: list[str]) -> Prepared:
    """Export the model for sentence-transformers' ONNX backend (its int8 for ``st_preset``, an
    instruction set), for gist-onnx (its defaults: a portable int8 graph) and, where NNCF is
    installed, OpenVINO's static int8 (calibrated on ``calibration``)."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    from gist_onnx.export import export_model

    st_dir = work / "st-onnx"
    if not (st_dir / "onnx" / "model.onnx").is_file():
        shutil.rmtree(st_dir, ignore_errors=True)
        model = SentenceTransformer(str(model_dir), device="cpu", backend="onnx")
        model.save(str(st_dir))
        export_dynamic_quantized_onnx_model(model, st_preset, str(st_dir))
    # Named by the preset's weight type: model_qint8_avx512_vnni.onnx, model_quint8_avx2.onnx, ...
    found = sorted(p.relative_to(st_dir).as_posix() for p in (st_dir / "onnx").glob("model_q*int8_*.onnx"))
    if len(found) != 1:
        raise RuntimeError(
            f"expected one int8 graph from sentence-transformers in {st_dir / 'onnx'}, found {found}"
        )
    int8_file = found[0]
    # An export no variant here can run is not made (static int8 where OpenVINO offers no device).
    wanted = {spec.export for spec in SPECS if spec.export and skip_reason(spec) is None} | {"gist-onnx"}
    for name, options in EXPORTS.items():
        if name in wanted and not (work / name / "manifest.json").is_file():
            export_model(str(model_dir), work / name, force=True, **options)
    gist_dirs = {name: work / name for name in EXPORTS if name in wanted}
    openvino_int8 = None
    if skip_reason(next(s for s in SPECS if s.name == "openvino-int8")) is None:
        from benchmarks.peers import quantize_openvino_int8

        openvino_int8 = quantize_openvino_int8(
            st_dir / "onnx" / "model.onnx", gist_dirs["gist-onnx"], calibration, work / "openvino-int8"
        )
    return Prepared(model_dir, st_dir, int8_file, gist_dirs, openvino_int8)


def load(spec: VariantSpec, prepared: Prepared) -> Encode:
    """Build a variant's encode function (models load here, outside any timing)."""
    from benchmarks import peers

    if spec.stack == "gist-onnx":
        from gist_onnx import Embedder

        embedder = Embedder(prepared.gist_dirs[spec.export], provider=spec.provider, precision=spec.precision)
        return lambda texts, batch_size: embedder.encode(texts, batch_size=batch_size)
    if spec.stack == "openvino":
        graph = (
            prepared.openvino_int8 if spec.precision == "int8" else prepared.st_onnx_dir / "onnx/model.onnx"
        )
        return peers.load_openvino(graph, prepared.folder)
    if spec.stack == "fastembed":
        from gist_onnx.manifest import read_manifest

        return peers.load_fastembed(prepared.st_onnx_dir, read_manifest(prepared.folder))
    if spec.stack == "pytorch" and spec.precision == "bf16":
        return peers.load_pytorch_bf16(prepared.model_dir)

    from sentence_transformers import SentenceTransformer

    if spec.stack == "pytorch":
        model = SentenceTransformer(str(prepared.model_dir), device="cpu")
    else:
        file_name = "onnx/model.onnx" if spec.precision == "fp32" else prepared.st_int8_file
        model = SentenceTransformer(
            str(prepared.st_onnx_dir), device="cpu", backend="onnx", model_kwargs={"file_name": file_name}
        )
    return lambda texts, batch_size: model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32, copy=False)
