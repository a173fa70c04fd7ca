"""The CUDA path's logic, tested on the CPU: fp16 numerics, I/O binding, provider choice and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the export extra is not installed")

from gist_onnx import Embedder, ProviderError  # noqa: E402
from gist_onnx import providers as providers_module  # noqa: E402
from gist_onnx.cli import main as cli  # noqa: E402
from gist_onnx.export.verify import PROBES, agreement, reference_vectors  # noqa: E402
from gist_onnx.manifest import read_manifest  # noqa: E402
from gist_onnx.providers import CPU, CUDA, cuda_hint, providers_for  # noqa: E402
from gist_onnx.session import choose_precision  # noqa: E402


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "onnx"
    assert cli(["export", str(tiny_model), "-o", str(out), "--fp16"]) == 0
    return out


def test_fp16_graph_is_verified_and_recorded(fp16_export: Path) -> None:
    manifest = read_manifest(fp16_export)
    assert set(manifest.graphs) == {"fp32", "fp16"}
    assert manifest.graphs["fp16"].file == "model_fp16.onnx"
    assert manifest.verification["results"]["fp16"]["min_cosine"] >= 0.999


def test_fp16_numerics_on_the_cpu_provider(fp16_export: Path, tiny_model: Path) -> None:
    import onnx

    graph = onnx.load(str(fp16_export / "model_fp16.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.graph.initializer)
    embedder = Embedder(fp16_export, provider="cpu", precision="fp16")
    found = embedder.encode(PROBES, batch_size=4)
    assert found.dtype == np.float32  # inputs and outputs stay fp32 at the graph's edge
    assert agreement(reference_vectors(tiny_model, PROBES), found).min_cosine >= 0.999


def test_auto_precision_prefers_fp16_on_cuda_and_fp32_on_cpu(fp16_export: Path) -> None:
    manifest = read_manifest(fp16_export)
    assert choose_precision("auto", manifest, "cuda", fp16_export) == "fp16"
    assert choose_precision("auto", manifest, "cpu", fp16_export) == "fp32"
    assert Embedder(fp16_export, provider="cpu").precision == "fp32"


def test_io_binding_gives_the_same_vectors(tiny_export: Path) -> None:
    texts = ["io binding", "word " * 100, ""]
    plain = Embedder(tiny_export, provider="cpu", io_binding=False).encode(texts)
    bound = Embedder(tiny_export, provider="cpu", io_binding=True).encode(texts)
    np.testing.assert_array_equal(plain, bound)


def test_cuda_hints_name_the_likely_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "CUDA or cuDNN libraries" in cuda_hint([CUDA, CPU])
    monkeypatch.setattr(providers_module, "_installed", lambda name: True)
    assert "both onnxruntime and onnxruntime-gpu are installed" in cuda_hint([CPU])
    monkeypatch.setattr(providers_module, "_installed", lambda name: name == "onnxruntime")
    message = cuda_hint([CPU])
    assert "onnxruntime-gpu is not installed" in message and "gist-onnx[gpu]" in message
    with pytest.raises(ProviderError, match=r"offers only \['CPUExecutionProvider'\]"):
        providers_for("cuda", [CPU])


def test_info_shows_the_provider_in_use(fp16_export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["info", "-m", str(fp16_export), "--provider", "cpu"]) == 0
    assert "session:      fp32 on CPUExecutionProvider" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_benchmark_runs_its_whole_plan_on_the_cpu(tmp_path: Path, minilm_dir: Path) -> None:
    """benchmarks/gpu.sh runs only where a GPU is lent; its logic is checked here, tiny and on the CPU."""
    import json

    from benchmarks.studies import gpu

    out = tmp_path / "out"
    argv = ["--device", "cpu", "--tiny", "--work", str(tmp_path), "--tokenizer-from", str(minilm_dir)]
    assert gpu.main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    variants = report["variants"]
    assert set(variants) == {
        "pytorch-fp32",
        "pytorch-fp16",
        "gist-onnx-fp32",
        "gist-onnx-fp16",
        "gist-onnx-fp16-cap512",
        "gist-onnx-fp16-uncapped",
    }
    for name, figures in variants.items():
        rows = {(r["workload"], r["batch_size"]) for r in figures["throughput"]}
        assert rows == {(w, b) for w in ("short", "long") for b in gpu.BATCH_SIZES}, name
        assert all(r["texts_per_s"] > 0 for r in figures["throughput"])
        assert figures["latency_ms_short"]["p50"] > 0 and figures["latency_ms_long"]["p50"] > 0
        # Every stack embeds the same model: fp32 agrees to rounding, fp16 to its precision.
        assert figures["min_cosine_vs_pytorch_fp32_long"] > (0.99999 if "fp32" in name else 0.999), name
    assert "| long | 128 |" in (out / "report.md").read_text()
