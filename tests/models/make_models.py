"""Regenerate the committed model folders of the core test tier (needs the `export` extra).

    python tests/models/make_models.py

Each folder is a random-weight BERT with GIST's layout scaled far down, exported by
``gist-onnx export --quantize int8`` (fp32 and int8 graphs, and fp16 for ``cls``, verified
against sentence-transformers like any export). Their WordPiece vocabulary is trained here on the
project's own calibration and probe texts, so the folders stay a few hundred KB and carry no
third-party data. ``cls``: CLS pooling then Normalize, as GIST. ``mean``: mean pooling with no
Normalize module, so the model's default is unnormalized vectors. Beside each folder,
``NAME-reference.json`` holds the verification probes and sentence-transformers' vectors for them
(torch fp32): an independent reference that the core tier checks without torch.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"cls": {"pooling": "cls", "normalize": True}, "mean": {"pooling": "mean", "normalize": False}}
GRAPHS = {"cls": {"quantize": "int8", "fp16": True}, "mean": {"quantize": "int8"}}
SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(folder: Path) -> int:
    """An uncased BERT WordPiece tokenizer trained on our own texts; its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from gist_onnx.export.calibration import CALIBRATION_TEXTS
    from gist_onnx.export.verify import PROBES

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(CALIBRATION_TEXTS + PROBES, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (folder / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    config = {
        "tokenizer_class": "BertTokenizerFast", "do_lower_case": True, "model_max_length": 512,
        **dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], SPECIAL_TOKENS)),
    }  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return tokenizer.get_vocab_size()


def main() -> int:
    import numpy as np

    from gist_onnx.export import export_model
    from gist_onnx.export.random_model import build_random_model
    from gist_onnx.export.verify import PROBES, reference_vectors

    with tempfile.TemporaryDirectory() as scratch:
        donor = Path(scratch) / "tokenizer"
        vocab_size = train_tokenizer(donor)
        for name, settings in MODELS.items():
            source = build_random_model(
                Path(scratch) / name, donor, overrides={**SHAPE, "vocab_size": vocab_size}, **settings
            )
            export_model(str(source), HERE / name, force=True, **GRAPHS[name])
            reference = reference_vectors(source, PROBES)
            document = {"texts": PROBES, "vectors": reference.astype(np.float64).tolist()}
            (HERE / f"{name}-reference.json").write_text(json.dumps(document) + "\n", encoding="utf-8")
            manifest = json.loads((HERE / name / "manifest.json").read_text())
            # The source folder was temporary: name the model by what it is, not where it was.
            manifest["source_model"] = f"gist-onnx core test model ({name} pooling)"
            (HERE / name / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            size = sum(p.stat().st_size for p in (HERE / name).iterdir()) / 1024
            print(f"{HERE / name}: {size:.0f} KB, vocabulary {vocab_size}", file=sys.stderr)
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
