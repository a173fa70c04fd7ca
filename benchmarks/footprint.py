"""Install footprint: bytes on disk of a package and everything it requires (no extras)."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement


def _closure(root: str) -> set[str]:
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra's dependency, or one for another platform
            todo.append(requirement.name)
    return seen


def installed_mib(*roots: str) -> dict[str, object]:
    """Total installed size of ``roots`` and their requirements, with the package list."""
    names = set().union(*(_closure(root) for root in roots))
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            path = file.locate()
            if path.is_file():
                total += path.stat().st_size
    return {"mib": total / 2**20, "packages": sorted(names)}
