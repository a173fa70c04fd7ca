"""Pooling and normalization are read from the model's own files, in both layouts."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the export extra is not installed")
from gist_onnx.export.random_model import write_sentence_config  # noqa: E402
from gist_onnx.export.st_config import SentenceConfigError, read_sentence_config  # noqa: E402


def _folder(tmp_path: Path, layout: str, pooling: str, max_len: int | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 768, "max_position_embeddings": 512}))
    if max_len is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_len}))
    write_sentence_config(tmp_path, 768, pooling, layout)
    return tmp_path


@pytest.mark.parametrize("layout", ["hub", "v5"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_both_layouts_give_the_same_answer(tmp_path: Path, layout: str, pooling: str) -> None:
    config = read_sentence_config(_folder(tmp_path, layout, pooling, max_len=512))
    assert (config.pooling, config.normalize, config.embedding_dim) == (pooling, True, 768)
    assert config.max_seq_length == 512


def test_gist_hub_files_as_published(tmp_path: Path) -> None:
    # GIST-Embedding-v0's files as the hub serves them (bge-base-en-v1.5 layout).
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 768, "max_position_embeddings": 512}))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))  # fmt: skip
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 768, "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }))  # fmt: skip
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 512, "do_lower_case": true}')
    config = read_sentence_config(tmp_path)
    assert (config.pooling, config.normalize, config.max_seq_length, config.lowercase) == (
        "cls",
        True,
        512,
        True,
    )


def test_no_normalize_module_means_no_normalization(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "v5", "mean")
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules[:2]))
    assert read_sentence_config(folder).normalize is False


def test_max_length_falls_back_to_the_tokenizer_then_the_positions(tmp_path: Path) -> None:
    assert read_sentence_config(_folder(tmp_path, "v5", "cls", max_len=256)).max_seq_length == 256
    assert read_sentence_config(_folder(tmp_path, "v5", "cls", max_len=10**30)).max_seq_length == 512


@pytest.mark.parametrize(
    ("pooling_config", "message"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "sets 2 pooling modes"),
        ({"pooling_mode": "lasttoken"}, "supports"),
        ({"pooling_mode": "weightedmean"}, "supports"),
    ],
)
def test_unsupported_pooling_is_refused(tmp_path: Path, pooling_config: dict, message: str) -> None:
    folder = _folder(tmp_path, "hub", "cls")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    with pytest.raises(SentenceConfigError, match=message):
        read_sentence_config(folder)


def test_missing_or_foreign_modules_are_named(tmp_path: Path) -> None:
    with pytest.raises(SentenceConfigError, match="modules.json is missing"):
        read_sentence_config(tmp_path)
    folder = _folder(tmp_path, "hub", "cls")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(SentenceConfigError, match="cannot reproduce: \\['Dense'\\]"):
        read_sentence_config(folder)
