"""The README's figures come from a committed report, regenerated, never copied by hand."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report import README_END, README_START, readme_source, readme_table

ROOT = Path(__file__).resolve().parents[1]


def test_headline_table_is_the_committed_reports() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    source = readme_source(readme)
    report = json.loads((ROOT / source).read_text())
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert block == readme_table(report, source), "run `python -m benchmarks.report --readme`"


def test_readme_links_resolve() -> None:
    import re

    for doc in (ROOT / "README.md", *(ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which is missing"
