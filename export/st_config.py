"""Read how a sentence-transformers model pools, normalizes and truncates, from its own files.

Two layouts exist. Hub models such as GIST (sentence-transformers 2.x/3.x) write
``"type": "sentence_transformers.models.Pooling"`` in ``modules.json`` and boolean flags such as
``"pooling_mode_cls_token": true`` in ``1_Pooling/config.json``. sentence-transformers 5.7 writes
longer module paths (``sentence_transformers.sentence_transformer.modules.pooling.Pooling``) and
``"pooling_mode": "cls"``. Both are read here; nothing is assumed about a model by its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gist_onnx.errors import ExportError

# Old-style boolean flags → our pooling mode names.
_FLAG_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SUPPORTED_POOLING = ("cls", "mean", "max")


class SentenceConfigError(ExportError):
    """The model folder's sentence-transformers config is missing, unreadable or unsupported."""


@dataclass(frozen=True)
class SentenceConfig:
    """What the runtime must do around the transformer to reproduce sentence-transformers."""

    pooling: str
    normalize: bool
    max_seq_length: int
    lowercase: bool
    embedding_dim: int


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SentenceConfigError(f"{path} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SentenceConfigError(f"{path} is not valid JSON: {exc}") from exc


def _module_kind(module_type: str) -> str:
    # "sentence_transformers.models.Pooling" and "...modules.pooling.Pooling" both end in the class.
    return module_type.rsplit(".", 1)[-1]


def _pooling_mode(config: dict[str, Any], path: Path) -> str:
    mode = config.get("pooling_mode")
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode is None:
        modes = [name for flag, name in _FLAG_MODES.items() if config.get(flag)]
        if len(modes) != 1:
            raise SentenceConfigError(f"{path} sets {len(modes)} pooling modes {modes}; expected one")
        mode = modes[0]
    if not isinstance(mode, str):
        raise SentenceConfigError(f"{path} has pooling_mode {mode!r}; expected one of {SUPPORTED_POOLING}")
    mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
    if mode not in SUPPORTED_POOLING:
        raise SentenceConfigError(f"{path} asks for {mode!r} pooling; gist-onnx supports {SUPPORTED_POOLING}")
    return mode


def read_sentence_config(model_dir: Path) -> SentenceConfig:
    """Read pooling, normalization and max length from a local sentence-transformers folder."""
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        raise SentenceConfigError(f"{model_dir / 'modules.json'} is not a list of modules")
    kinds = {_module_kind(m.get("type", "")): m for m in modules if isinstance(m, dict)}
    if "Transformer" not in kinds or "Pooling" not in kinds:
        raise SentenceConfigError(
            f"{model_dir / 'modules.json'} lists {sorted(kinds)}; expected a Transformer and a Pooling "
            "module (gist-onnx exports sentence-transformers models)"
        )
    extra = set(kinds) - {"Transformer", "Pooling", "Normalize"}
    if extra:
        raise SentenceConfigError(
            f"{model_dir / 'modules.json'} has modules gist-onnx cannot reproduce: {sorted(extra)}"
        )

    pooling_path = model_dir / kinds["Pooling"].get("path", "1_Pooling") / "config.json"
    pooling_config = _read_json(pooling_path)
    mode = _pooling_mode(pooling_config, pooling_path)

    model_config = _read_json(model_dir / "config.json")
    bert_config_path = model_dir / kinds["Transformer"].get("path", "") / "sentence_bert_config.json"
    st_config = _read_json(bert_config_path) if bert_config_path.is_file() else {}
    tokenizer_config_path = model_dir / "tokenizer_config.json"
    tokenizer_config = _read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else {}
    # sentence-transformers 5.x no longer writes max_seq_length; it takes the tokenizer's limit.
    max_len = st_config.get("max_seq_length") or tokenizer_config.get("model_max_length")
    positions = model_config.get("max_position_embeddings", 512)
    if not isinstance(max_len, int) or max_len > positions:
        max_len = positions
    dim = pooling_config.get("word_embedding_dimension") or pooling_config.get("embedding_dimension")
    hidden = model_config.get("hidden_size")
    if dim is not None and hidden is not None and dim != hidden:
        raise SentenceConfigError(f"{pooling_path} pools width {dim} but the model's hidden size is {hidden}")
    return SentenceConfig(
        pooling=mode,
        normalize="Normalize" in kinds,
        max_seq_length=max_len,
        lowercase=bool(st_config.get("do_lower_case", False)),
        embedding_dim=int(dim or hidden),
    )
