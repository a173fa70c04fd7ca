"""Export through the CLI on the tiny GIST-shaped model: folder contents, parity, atomicity, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the export extra is not installed")

from gist_onnx import Embedder  # noqa: E402
from gist_onnx.cli import main as cli  # noqa: E402
from gist_onnx.export.verify import PROBES, agreement, reference_vectors  # noqa: E402
from gist_onnx.manifest import MANIFEST_NAME, read_manifest, sha256_of  # noqa: E402

TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "",
    "naïve café 🚀",
    "word " * 700,  # truncated at 512 tokens
]


def test_manifest_describes_the_folder(tiny_export: Path, tiny_model: Path) -> None:
    manifest = read_manifest(tiny_export)
    assert (manifest.pooling, manifest.normalize, manifest.lowercase) == ("cls", True, True)
    assert (manifest.embedding_dim, manifest.max_seq_length, manifest.vocab_size) == (64, 512, 30522)
    assert manifest.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.source_model == str(tiny_model.resolve())
    assert set(manifest.graphs) == {"fp32", "int8"}
    for record in manifest.files():
        path = tiny_export / record.file
        assert (record.size, record.sha256) == (path.stat().st_size, sha256_of(path))
    quantization = manifest.graphs["int8"].quantization
    assert quantization["per_channel"] is True and quantization["activations"] == "per-token"
    assert (
        quantization["qkv"] is True and quantization["quantized_gemms"] == 2 * 6
    )  # two layers: Q, K, V, out, FFN up, down
    assert quantization["smoothing"] == 0.5 and quantization["calibration_texts"] > 0
    assert manifest.graphs["fp32"].optimization == "none"
    results = manifest.verification["results"]
    assert results["fp32"]["min_cosine"] >= 0.99999 and results["int8"]["min_cosine"] >= 0.98
    assert manifest.verification["thresholds_overridden"] == {}
    assert {"onnxruntime", "torch", "optimum", "sentence-transformers"} <= set(manifest.tools)
    assert sorted(p.name for p in tiny_export.iterdir()) == sorted(
        [MANIFEST_NAME, "model.onnx", "model_int8.onnx", "tokenizer.json"]
    )


def test_graph_has_dynamic_batch_and_sequence_axes(tiny_export: Path) -> None:
    import onnx

    graph = onnx.load(str(tiny_export / "model.onnx"), load_external_data=False).graph
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_param, tensor.name
    # CLS pooling: the graph returns the first token's state only.
    (output,) = graph.output
    assert output.type.tensor_type.shape.dim[0].dim_param
    assert output.type.tensor_type.shape.dim[1].dim_value == 1
    assert read_manifest(tiny_export).output_tokens == "first"


@pytest.mark.parametrize(("precision", "threshold"), [("fp32", 0.99999), ("int8", 0.98)])
def test_parity_with_sentence_transformers(
    tiny_export: Path, tiny_model: Path, precision: str, threshold: float
) -> None:
    reference = reference_vectors(tiny_model, TEXTS)
    found = Embedder(tiny_export, precision=precision).encode(TEXTS, batch_size=2)
    assert agreement(reference, found).min_cosine >= threshold


@pytest.mark.parametrize("optimization", ["O1", "O2", "O3"])
def test_each_optimization_level_verifies(tmp_path: Path, tiny_model: Path, optimization: str) -> None:
    out = tmp_path / "onnx"
    assert cli(["export", str(tiny_model), "-o", str(out), "--optimize", optimization]) == 0
    assert read_manifest(out).graphs["fp32"].optimization == optimization


def test_all_tokens_export_gives_the_same_vectors(
    tmp_path: Path, tiny_model: Path, tiny_export: Path
) -> None:
    import onnx

    out = tmp_path / "onnx"
    assert cli(["export", str(tiny_model), "-o", str(out), "--all-tokens"]) == 0
    assert read_manifest(out).output_tokens == "all"
    (output,) = onnx.load(str(out / "model.onnx"), load_external_data=False).graph.output
    assert output.type.tensor_type.shape.dim[1].dim_param  # every token's state
    every = Embedder(out).encode(TEXTS, batch_size=2)
    first = Embedder(tiny_export, precision="fp32").encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(first, every, atol=1e-5)


def test_per_tensor_int8_scales_are_onnxruntimes_dynamic_quantization(
    tmp_path: Path, tiny_model: Path
) -> None:
    import onnx

    out = tmp_path / "onnx"
    assert (
        cli(["export", str(tiny_model), "-o", str(out), "--quantize", "int8", "--int8-scales", "per-tensor"])
        == 0
    )
    quantization = read_manifest(out).graphs["int8"].quantization
    assert quantization["activations"] == "per-tensor" and quantization["smoothing"] is None
    assert quantization["qkv"] is False and quantization["quantized_gemms"] == 2 * 3
    ops = {node.op_type for node in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QuantizeLinear" not in ops


def test_v5_layout_with_mean_pooling_exports_and_matches(tmp_path: Path, minilm_dir: Path) -> None:
    from gist_onnx.export.random_model import build_random_model

    model = build_random_model(tmp_path / "m", minilm_dir, tiny=True, pooling="mean", layout="v5", seed=1)
    assert cli(["export", str(model), "-o", str(tmp_path / "onnx")]) == 0
    assert read_manifest(tmp_path / "onnx").pooling == "mean"
    reference = reference_vectors(model, PROBES)
    assert agreement(reference, Embedder(tmp_path / "onnx").encode(PROBES)).min_cosine >= 0.99999


def test_refuses_a_non_empty_target_without_force(tmp_path: Path, tiny_model: Path, capsys) -> None:
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli(["export", str(tiny_model), "-o", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert cli(["export", str(tiny_model), "-o", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / MANIFEST_NAME).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # no partial or old folder left


def test_failed_verification_leaves_nothing(tmp_path: Path, tiny_model: Path, capsys) -> None:
    out = tmp_path / "onnx"
    # No graph reaches a cosine above 1: the override makes verification fail for real.
    assert cli(["export", str(tiny_model), "-o", str(out), "--min-cosine", "fp32=1.5"]) == 1
    assert "fp32: min cosine" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_threshold_override_is_recorded(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "onnx"
    assert cli(["export", str(tiny_model), "-o", str(out), "--min-cosine", "fp32=0.9"]) == 0
    assert read_manifest(out).verification["thresholds_overridden"] == {"fp32": 0.9}


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gist_onnx", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_offline_hub_id_gives_one_clear_paragraph(tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    result = _run_cli(
        "export",
        "avsolatorio/GIST-Embedding-v0",
        "-o",
        str(out),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "'avsolatorio/GIST-Embedding-v0'" in result.stderr
    assert "pass its path instead" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "empty-cache"] == []


def test_missing_local_folder_is_named(tmp_path: Path, capsys) -> None:
    assert cli(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_folder_that_is_not_a_sentence_transformer_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "model").mkdir()
    assert cli(["export", str(tmp_path / "model"), "-o", str(tmp_path / "onnx")]) == 1
    assert "modules.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_killed_export_leaves_the_old_folder_intact_and_nothing_loadable(
    tmp_path: Path, tiny_export: Path, tiny_model: Path
) -> None:
    import shutil
    import signal
    import time

    from gist_onnx import ModelFolderError

    out = Path(shutil.copytree(tiny_export, tmp_path / "onnx"))
    before = Embedder(out).encode(TEXTS)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gist_onnx",
            "export",
            str(tiny_model),
            "-o",
            str(out),
            "--force",
            "--quantize",
            "int8",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    partial: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in tmp_path.glob(".onnx.partial-*") if (p / "model.onnx").exists()]
        if partial:
            break
        time.sleep(0.01)
    assert partial, "the export finished or failed before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    np.testing.assert_array_equal(Embedder(out).encode(TEXTS), before)
    for leftover in tmp_path.glob(".onnx.*"):
        with pytest.raises(ModelFolderError, match="never finished"):
            Embedder(leftover)

    # The next export to the same folder deletes what the killed one left, and only that: a
    # folder another live export is writing stays.
    busy = tmp_path / f".onnx.partial-{socket.gethostname()}-{os.getpid()}-busy"
    busy.mkdir()
    assert cli(["export", str(tiny_model), "-o", str(out), "--force"]) == 0
    assert [p.name for p in tmp_path.glob(".onnx.*")] == [busy.name]


def test_export_errors_are_the_packages_errors() -> None:
    from gist_onnx import GistOnnxError
    from gist_onnx.export import ExportError
    from gist_onnx.export.source import ModelUnavailableError
    from gist_onnx.export.st_config import SentenceConfigError
    from gist_onnx.export.verify import VerificationError

    for error in (ExportError, ModelUnavailableError, SentenceConfigError, VerificationError):
        assert issubclass(error, GistOnnxError), error


def test_the_libraries_warnings_go_to_a_named_log_unless_verbose(tmp_path: Path, tiny_model: Path) -> None:
    quiet = _run_cli("export", str(tiny_model), "-o", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert "TracerWarning" not in quiet.stderr and "fp32: min cosine" in quiet.stderr
    log = Path(quiet.stderr.split("optimum: ", 1)[1].split(" (--verbose", 1)[0])
    assert "TracerWarning" in log.read_text()  # torch's, from the trace: kept, out of the way
    log.unlink()
    verbose = _run_cli("export", str(tiny_model), "-o", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0 and "TracerWarning" in verbose.stderr
