"""`gist-onnx embed` and `gist-onnx info` on a committed model folder, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gist_onnx import Embedder
from gist_onnx.cli import main as cli

pytestmark = pytest.mark.core
TEXTS = ["How to bake a cake", "A recipe for chocolate cake", "The stock market fell today"]


def test_embed_prints_the_similarity_matrix(core_model: Path, capsys) -> None:
    assert cli(["embed", "-m", str(core_model), *TEXTS]) == 0
    printed = capsys.readouterr().out
    rows = [list(map(float, line.strip(" []").split())) for line in printed.strip().splitlines()]
    vectors = Embedder(core_model).encode(TEXTS)
    np.testing.assert_allclose(rows, vectors @ vectors.T, atol=1e-4)


def test_embed_files_in_and_out(core_model: Path, tmp_path: Path, capsys) -> None:
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    records = tmp_path / "texts.jsonl"
    records.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    expected = Embedder(core_model).encode(TEXTS)

    assert cli(["embed", "-m", str(core_model), "-i", str(lines), "-o", str(tmp_path / "v.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-6)

    assert cli(["embed", "-m", str(core_model), "-i", str(records), "-o", str(tmp_path / "v.jsonl")]) == 0
    written = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [w["text"] for w in written] == TEXTS
    np.testing.assert_allclose([w["embedding"] for w in written], expected, atol=1e-6)


def test_progress_bar_on_long_inputs(core_model: Path, tmp_path: Path, capsys) -> None:
    lines = tmp_path / "many.txt"
    lines.write_text("\n".join(f"text number {i}" for i in range(300)))
    assert cli(["embed", "-m", str(core_model), "-i", str(lines), "-o", str(tmp_path / "v.npy")]) == 0
    assert "embedding: 300/300 (100%) texts" in capsys.readouterr().err


def test_bad_jsonl_line_is_named(core_model: Path, tmp_path: Path, capsys) -> None:
    records = tmp_path / "bad.jsonl"
    records.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    assert cli(["embed", "-m", str(core_model), "-i", str(records)]) == 1
    assert 'bad.jsonl:2: expected a JSON object with a "text" field' in capsys.readouterr().err


def test_wrong_model_folder_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    assert cli(["embed", "-m", str(tmp_path), "hello"]) == 1
    err = capsys.readouterr().err
    assert "manifest.json: is missing" in err and "Traceback" not in err


def test_info_summarizes(core_model: Path, capsys) -> None:
    assert cli(["info", "-m", str(core_model)]) == 0
    out = capsys.readouterr().out
    assert "32 dims, cls pooling, normalize=True" in out and "last layer:   first token only" in out
    assert (
        "graph int8" in out
        and "per-token scales" in out
        and "session:      fp32 on CPUExecutionProvider" in out
        and "per run:      512 padded tokens (the cpu default)" in out
        and "batch mates:  none change a text's vector, bit for bit" in out
    )
    assert cli(["info", "-m", str(core_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pooling"] == "cls"


@pytest.mark.parametrize("command", [[], ["export"], ["embed"], ["info"]])
def test_help_everywhere(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gist_onnx", *command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: gist-onnx" in result.stdout


def _one_line_error(args: list[str]) -> str:
    """Run the real command; it must fail with exactly one line on stderr and no traceback."""
    result = subprocess.run([sys.executable, "-m", "gist_onnx", *args], capture_output=True, text=True)
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, (
        result.stderr
    )
    return lines[0]


def test_errors_end_in_one_line(core_mean_model: Path, tmp_path: Path) -> None:
    assert "has no fp16 graph" in _one_line_error(
        ["embed", "-m", str(core_mean_model), "--precision", "fp16", "hi"]
    )
    assert "manifest.json: is missing" in _one_line_error(["embed", "-m", str(tmp_path), "hi"])
    assert "is not a folder" in _one_line_error(["info", "-m", str(tmp_path / "nowhere")])
    assert "give texts" in _one_line_error(["embed", "-m", str(core_mean_model)])
    assert ".npy or .jsonl" in _one_line_error(
        ["embed", "-m", str(core_mean_model), "hi", "-o", str(tmp_path / "v.csv")]
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert 'bad.jsonl:1: expected a JSON object with a "text" field' in _one_line_error(
        ["embed", "-m", str(core_mean_model), "-i", str(bad)]
    )
    assert "No such file" in _one_line_error(
        ["embed", "-m", str(core_mean_model), "-i", str(tmp_path / "none.txt")]
    )


def test_the_mean_model_embeds_unnormalized_by_default(core_mean_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    assert cli(["embed", "-m", str(core_mean_model), *TEXTS, "-o", str(out)]) == 0
    vectors = np.load(out)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # the model has no Normalize module
    np.testing.assert_allclose(vectors, Embedder(core_mean_model).encode(TEXTS), atol=1e-6)
