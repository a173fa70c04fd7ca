"""`python -m benchmarks.studies.packing`: what a run would cost with its texts packed, not padded.

The open-loop study (benchmarks/studies/open_loop.py) bounds the serve tail with an engine that
computes no padding. This one measures such an engine. GIST's architecture (random weights) is
exported twice with the same exporter (torch.onnx, all tokens, no fusion at export):

- padded: the usual graph, a batch of texts padded to its longest, attention masked per row;
- packed: one row holding the texts back to back, each token's position counted from its text's
  start and attention limited to its own text (a block-diagonal mask built from segment ids).

Both run on ONNX Runtime's CPU provider, interleaved, on groups of n texts of the serve
benchmark's 1,024 STS-B sentences: drawn at random (what a queue holds: padding is large) and cut
from the length-sorted list (what ``encode`` runs: padding is small, so this shows what packing
costs, attention over the whole row). The first token of each text must agree between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding

from benchmarks import common
from benchmarks.common import log
from benchmarks.corpus import fixed_shuffle, load_stsb
from benchmarks.measure import median, timed
from gist_onnx.tokenize import TextTokenizer

SIZES = (1, 2, 3, 4, 8, 16, 32)
PADDED_INPUTS = ("input_ids", "attention_mask")
GROUPS = 6  # groups of each size and kind; each timed 5 times after a warm-up, the median kept


def packed_feeds(group: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """The texts back to back in one row, each token's position in its text, and its text's index."""
    return {
        "input_ids": np.concatenate([np.asarray(t, np.int64) for t in group])[None],
        "position_ids": np.concatenate([np.arange(len(t), dtype=np.int64) for t in group])[None],
        "segment_ids": np.concatenate([np.full(len(t), k, np.int64) for k, t in enumerate(group)])[None],
    }


def first_tokens(packed_output: np.ndarray, group: Sequence[Sequence[int]]) -> np.ndarray:
    """Each text's first-token row of the packed output ([1, tokens, hidden])."""
    starts = np.cumsum([0] + [len(t) for t in group[:-1]])
    return packed_output[0, starts]


def export_both(model_dir: Path, out: Path) -> dict[str, Path]:
    """The padded and the packed graph of the model at ``model_dir`` (torch.onnx, opset 17)."""
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(model_dir, attn_implementation="eager", add_pooling_layer=False).eval()

    class Padded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model  # a submodule: its weights export as initializers

        def forward(self, input_ids, attention_mask):
            types = torch.zeros_like(input_ids)
            return self.bert(input_ids=input_ids, token_type_ids=types, attention_mask=attention_mask)[0]

    class Packed(Padded):
        def forward(self, input_ids, position_ids, segment_ids):
            # A token attends to the tokens of its own text only: [1, tokens, tokens].
            mask = (segment_ids[:, :, None] == segment_ids[:, None, :]).to(torch.int64)
            types = torch.zeros_like(input_ids)
            return self.bert(
                input_ids=input_ids, position_ids=position_ids, token_type_ids=types, attention_mask=mask
            )[0]

    graphs = {"padded": out / "padded.onnx", "packed": out / "packed.onnx"}
    if all(path.is_file() for path in graphs.values()):
        return graphs  # kept under --work from an earlier run
    out.mkdir(parents=True, exist_ok=True)
    example = [[101, 2000, 2001, 102], [101, 2003, 102]]
    padded_example = {
        "input_ids": np.array([[101, 2000, 2001, 102], [101, 2003, 102, 0]]),
        "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    for name, module, feeds in (
        ("padded", Padded(), padded_example),
        ("packed", Packed(), packed_feeds(example)),
    ):
        axes = {0: "batch", 1: "tokens"} if name == "padded" else {1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(
                module, tuple(torch.from_numpy(v) for v in feeds.values()), graphs[name],
                input_names=list(feeds), output_names=["last_hidden_state"],
                dynamic_axes=dict.fromkeys(feeds, axes), opset_version=17, dynamo=False,
            )  # fmt: skip
    return graphs


def measure(graphs: dict[str, Path], tokenizer: TextTokenizer, texts: list[Encoding]) -> dict[str, Any]:
    """Agreement on 64 texts, then paired timings per group kind and size."""
    import onnxruntime as ort

    def feeds_of(group: list[Encoding]) -> dict[str, dict[str, np.ndarray]]:
        return {"padded": tokenizer.pad(group, PADDED_INPUTS), "packed": packed_feeds([e.ids for e in group])}

    sessions = {
        n: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for n, p in graphs.items()
    }
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), 64, replace=False)]
    feeds = feeds_of(sample)
    padded = sessions["padded"].run(None, feeds["padded"])[0][:, 0]
    packed = first_tokens(sessions["packed"].run(None, feeds["packed"])[0], [e.ids for e in sample])
    cosine = (padded * packed).sum(1) / np.linalg.norm(padded, axis=1) / np.linalg.norm(packed, axis=1)
    results: dict[str, Any] = {
        "agreement": {"max_abs_diff": float(np.abs(padded - packed).max()), "min_cosine": float(cosine.min())}
    }
    by_length = sorted(texts, key=lambda e: len(e.ids))
    for kind in ("random", "sorted"):
        rows = []
        for size in SIZES:
            log(f"{kind} groups of {size}")
            pairs = []
            for index in range(GROUPS):
                if kind == "random":
                    group = [texts[i] for i in rng.choice(len(texts), size, replace=False)]
                else:
                    start = int(rng.integers(0, len(by_length) - size))
                    group = by_length[start : start + size]
                feeds = feeds_of(group)
                order = ("padded", "packed") if index % 2 == 0 else ("packed", "padded")
                ms = {}
                for name in order:
                    session, feed = sessions[name], feeds[name]
                    session.run(None, feed)  # warm-up: this shape's first run allocates
                    ms[name] = 1e3 * median([timed(lambda: session.run(None, feed)) for _ in range(5)])  # noqa: B023
                pairs.append(
                    (
                        ms["padded"],
                        ms["packed"],
                        feeds["padded"]["input_ids"].size,
                        feeds["packed"]["input_ids"].size,
                    )
                )
            padded_ms, packed_ms, padded_tokens, real_tokens = (
                median([p[k] for p in pairs]) for k in range(4)
            )
            rows.append({
                "texts": size, "padded_ms": padded_ms, "packed_ms": packed_ms,
                "padded_tokens": padded_tokens, "real_tokens": real_tokens,
                "packed_over_padded": median([p[1] / p[0] for p in pairs]),
            })  # fmt: skip
        results[kind] = rows
    return results


def markdown(results: dict[str, Any]) -> str:
    agreement = results["measured"]["agreement"]
    lines = [
        "# Packed runs against padded ones",
        "",
        f"`python -m benchmarks.studies.packing` on {results['cpu']}; {results['created']}. Random weights, "
        "GIST-Embedding-v0's exact architecture, both graphs exported by torch.onnx (all tokens, no fusion "
        f"at export), ONNX Runtime {results['onnxruntime']} CPU provider. Medians of {GROUPS} groups per "
        "row, each timed 5 times; the two graphs alternate which runs first. First tokens, packed against "
        f"padded (64 texts): max abs diff {agreement['max_abs_diff']:.1e}, min cosine "
        f"{agreement['min_cosine']:.8f}.",
        "",
        "| groups | texts | padded ms (tokens) | packed ms (tokens) | packed / padded |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = {"random": "drawn at random (a queue)", "sorted": "cut from the length-sorted list (encode)"}
    for kind, label in names.items():
        for row in results["measured"][kind]:
            lines.append(
                f"| {label} | {row['texts']} | {row['padded_ms']:.1f} ({row['padded_tokens']:.0f}) | "
                f"{row['packed_ms']:.1f} ({row['real_tokens']:.0f}) | {row['packed_over_padded']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m benchmarks.studies.packing", __doc__, "packing", argv)
    import onnxruntime as ort

    with common.workspace(args.work, "gist-onnx-packing-") as (work, _):
        model = common.random_gist(work)
        graphs = export_both(model, work / "packing")
        tokenizer = TextTokenizer(model / "tokenizer.json", 512)
        sentences = fixed_shuffle(load_stsb().sentences())[:1024]  # the serve benchmark's texts
        texts = tokenizer.encode(sentences)
        results = {
            **common.header(),
            "onnxruntime": ort.__version__,
            "measured": measure(graphs, tokenizer, texts),
        }
    common.write(args.out, "packing", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
