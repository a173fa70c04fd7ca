"""A damaged or wrong model folder fails at load time with an error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gist_onnx import Embedder, ModelFolderError
from gist_onnx.manifest import MANIFEST_NAME, file_record

pytestmark = pytest.mark.core


@pytest.fixture()
def folder(model_copy: Path) -> Path:
    return model_copy


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="nope: is not a folder"):
        Embedder(tmp_path / "nope")


def test_missing_manifest_says_the_export_never_finished(folder: Path) -> None:
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(ModelFolderError, match="manifest.json: is missing.*never finished"):
        Embedder(folder)


def test_manifest_that_is_not_json(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_text('{"format_version": 1, "graphs": ')
    with pytest.raises(ModelFolderError, match="manifest.json: is not valid JSON"):
        Embedder(folder)


def test_manifest_from_a_newer_format(folder: Path) -> None:
    _edit_manifest(folder, format_version=99)
    with pytest.raises(ModelFolderError, match="format version 99.*upgrade gist-onnx"):
        Embedder(folder)


def test_first_token_output_with_mean_pooling_is_refused(folder: Path) -> None:
    _edit_manifest(folder, pooling="mean")  # the tiny export computes the first token only
    with pytest.raises(ModelFolderError, match="output_tokens 'first' needs cls pooling"):
        Embedder(folder)


def test_manifest_missing_a_field(folder: Path) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    del data["pooling"]
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match="manifest.json: is malformed.*pooling"):
        Embedder(folder)


@pytest.mark.parametrize(
    ("name", "precision"), [("int8-openvino", "fp32"), ("int9", "int8"), ("fp32", "bf16")]
)
def test_a_graph_name_must_match_its_precision(folder: Path, name: str, precision: str) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    record = {**data["graphs"].pop("fp32"), "precision": precision}
    _edit_manifest(folder, graphs={**data["graphs"], name: record})
    with pytest.raises(ModelFolderError, match=f"is malformed.*graph '{name}' has precision '{precision}'"):
        Embedder(folder)


def test_missing_graph(folder: Path) -> None:
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelFolderError, match="model.onnx: is listed in the manifest but missing"):
        Embedder(folder)


def test_truncated_graph(folder: Path) -> None:
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="model.onnx: has .* bytes.*truncated"):
        Embedder(folder, verify_checksums=False)  # the size check holds even without hashing


def test_byte_flipped_graph_fails_the_checksum(folder: Path) -> None:
    data = bytearray((folder / "model_int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model_int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="model_int8.onnx: sha256 is .*damaged"):
        Embedder(folder, precision="int8")
    Embedder(folder, precision="fp32")  # only the files a session reads are checked


def test_garbage_graph_with_checksums_off_is_named(folder: Path) -> None:
    size = (folder / "model.onnx").stat().st_size
    (folder / "model.onnx").write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))
    with pytest.raises(ModelFolderError, match="model.onnx: is not a loadable ONNX graph"):
        Embedder(folder, verify_checksums=False)


def test_tokenizer_from_a_bigger_vocabulary(folder: Path) -> None:
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    for i in range(100):
        vocab[f"extra_token_{i}"] = len(vocab)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    # Re-record it, as someone who swapped the file and fixed the manifest would.
    _edit_manifest(folder, tokenizer=file_record(folder / "tokenizer.json").__dict__)
    with pytest.raises(
        ModelFolderError, match="tokenizer.json: has 1100 tokens but the graph embeds only 1000"
    ):
        Embedder(folder)


def test_unreadable_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("{}")
    _edit_manifest(folder, tokenizer=file_record(folder / "tokenizer.json").__dict__)
    with pytest.raises(ModelFolderError, match="tokenizer.json: is not a readable tokenizers file"):
        Embedder(folder)
