"""The README's figures come from a committed report, regenerated, never copied by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the bench extra is not installed")
from benchmarks.report import GENERATED, regenerate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_generated_tables_are_the_committed_reports() -> None:
    for doc in (ROOT / "README.md", *(ROOT / "docs").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        assert regenerate(text, doc.parent) == text, (
            f"{doc.name}: run `python -m benchmarks.report --readme {doc}`"
        )
    assert GENERATED.search((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_links_resolve() -> None:
    import re

    for doc in (ROOT / "README.md", *(ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which is missing"
