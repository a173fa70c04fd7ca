"""What the side studies (`benchmarks.int8_levers`, `benchmarks.first_token`) share: their command
line, the random-weight GIST model they time, and how they write their results."""

from __future__ import annotations

import argparse
import json
import time
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


def random_gist(work: Path, minilm: Path) -> Path:
    """A random-weight model with GIST's architecture under ``work``, built once (speed only)."""
    from export.random_model import build_random_model

    gist = work / "gist-random" / "model"
    if not (gist / "config.json").is_file():
        build_random_model(gist, minilm)
    return gist


def write(out: Path, stem: str, results: dict[str, Any], markdown: str) -> None:
    """STEM.json and STEM.md under ``out``; the markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
