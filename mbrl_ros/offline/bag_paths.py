"""The bags named on a command line: bag directories, or folders of bags."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mbrl_ros.io.bags import BagError, list_bags


def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Every complete bag at or under each path, in the order given (a folder's in natural order)."""
    if not paths:
        raise BagError("no bags given: name a bag directory or a folder of bags")
    bags: list[Path] = []
    for path in paths:
        found = list_bags(path)
        if not found:
            what = "does not exist" if not Path(path).exists() else "holds no bag (a directory with metadata.yaml)"
            raise BagError(f"{path}: {what}")
        bags += [bag for bag in found if bag not in bags]
    return bags
