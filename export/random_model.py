"""Random-weight sentence-transformers folders with GIST-Embedding-v0's architecture.

The real GIST weights need the model hub. Speed does not depend on the weights, and the
export/runtime plumbing does not either, so tests and benchmarks build this stand-in locally:
GIST's exact BERT config (or a scaled-down one), GIST's tokenizer vocabulary (bert-base-uncased,
taken from any folder that has it, such as the packaged all-MiniLM-L6-v2) and GIST's
sentence-transformers config (CLS pooling, then Normalize).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# avsolatorio/GIST-Embedding-v0's config.json (= BAAI/bge-base-en-v1.5's).
GIST_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}
# The same shape scaled down: a few seconds to build, export and verify.
TINY_OVERRIDES: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


MODULE_TYPES = {
    "hub": {
        "Transformer": "sentence_transformers.models.Transformer",
        "Pooling": "sentence_transformers.models.Pooling",
        "Normalize": "sentence_transformers.models.Normalize",
    },
    "v5": {
        "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
        "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        "Normalize": "sentence_transformers.sentence_transformer.modules.normalize.Normalize",
    },
}
POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
}


def write_sentence_config(
    folder: Path, dim: int, pooling: str, layout: str = "hub", normalize: bool = True
) -> None:
    """Write modules.json and the Pooling config in the hub (GIST's) or the v5.7 layout; without
    ``normalize``, no Normalize module (the model's vectors are then not normalized)."""
    if layout not in MODULE_TYPES:
        raise ValueError(f"layout must be one of {sorted(MODULE_TYPES)}, got {layout!r}")
    if layout == "hub":
        flags = {flag: mode == pooling for mode, flag in POOLING_FLAGS.items()}
        pooling_config = {"word_embedding_dimension": dim, **flags}
        bert_config = {"max_seq_length": 512, "do_lower_case": True}
    else:
        pooling_config = {"embedding_dimension": dim, "pooling_mode": pooling, "include_prompt": True}
        bert_config = {"transformer_task": "feature-extraction"}
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    kinds = [kind for kind in MODULE_TYPES[layout] if normalize or kind != "Normalize"]
    modules = [
        {"idx": idx, "name": str(idx), "path": paths[kind], "type": MODULE_TYPES[layout][kind]}
        for idx, kind in enumerate(kinds)
    ]
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "1_Pooling" / "config.json", pooling_config)
    _write_json(folder / "sentence_bert_config.json", bert_config)


def build_random_model(
    folder: Path,
    tokenizer_from: Path,
    *,
    tiny: bool = False,
    pooling: str = "cls",
    layout: str = "hub",
    seed: int = 0,
    normalize: bool = True,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a random-weight BERT sentence-transformers model with GIST's architecture (``tiny``:
    scaled down; ``overrides``: any other change to GIST's config, such as a smaller vocabulary)."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(**{**GIST_CONFIG, **(TINY_OVERRIDES if tiny else {}), **(overrides or {})})
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copyfile(tokenizer_from / name, folder / name)
    tokenizer_config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text(encoding="utf-8"))
    tokenizer_config["model_max_length"] = 512  # GIST's limit, not the donor's
    _write_json(tokenizer_config_path, tokenizer_config)
    write_sentence_config(folder, config.hidden_size, pooling, layout, normalize)
    return folder
