"""Finding packages and node executables without colcon or ros2cli.

Order for both: the ament index first (what `ros2 launch` uses, so a colcon
install or a system ROS 2 wins), then what a pip-only install offers.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping

from .substitutions import SubstitutionFailure

NODE_ENTRY_POINT_GROUP = "mbrl_ros.nodes"
THIS_PACKAGE = "mbrl_ros"


def ament_prefixes(environment: Mapping[str, str]) -> list[Path]:
    return [Path(p) for p in environment.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]


def repository_root() -> Path:
    """The folder holding the mbrl_ros package, `launch/` and `config/` (editable install)."""
    return Path(__file__).resolve().parents[2]


def find_package_share(package: str, environment: Mapping[str, str]) -> str:
    for prefix in ament_prefixes(environment):
        if (prefix / "share" / "ament_index" / "resource_index" / "packages" / package).is_file():
            return str(prefix / "share" / package)
    if package == THIS_PACKAGE:
        root = repository_root()
        if (root / "launch").is_dir() or (root / "config").is_dir():
            return str(root)
    raise SubstitutionFailure(
        f"package '{package}' not found: not in the ament index "
        f"(AMENT_PREFIX_PATH={environment.get('AMENT_PREFIX_PATH', '')!r})"
        + ("" if package == THIS_PACKAGE else f", and only '{THIS_PACKAGE}' is known without it"))


def find_node_command(package: str | None, executable: str,
                      environment: Mapping[str, str]) -> list[str]:
    """The command that starts `package`'s `executable`, as a list of arguments."""
    if package is None:
        # Upstream: without pkg, exec is a path or a command on PATH.
        return [executable]
    looked = []
    for prefix in ament_prefixes(environment):
        candidate = prefix / "lib" / package / executable
        looked.append(str(candidate))
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    target = _entry_point_target(package, executable)
    if target is not None:
        # Run it through a tiny runner so the node sees argv[0] == its executable name.
        return [sys.executable, "-m", "mbrl_ros.launcher.entry_point", target, executable]
    raise SubstitutionFailure(
        f"executable '{executable}' of package '{package}' not found; looked for "
        f"{', '.join(looked) or 'lib/<pkg>/<exec> under AMENT_PREFIX_PATH (unset)'}, and for an entry "
        f"point '{package}/{executable}' in group '{NODE_ENTRY_POINT_GROUP}'")


def _entry_point_target(package: str, executable: str) -> str | None:
    names = {f"{package}/{executable}"}
    if package == THIS_PACKAGE:
        names.add(executable)
    for entry_point in metadata.entry_points(group=NODE_ENTRY_POINT_GROUP):
        if entry_point.name in names:
            return entry_point.value
    if package == THIS_PACKAGE:
        # The package's own table of executables (the colcon setup.py reads it too).
        try:
            from mbrl_ros.executables import EXECUTABLES
        except ImportError:
            return None
        return EXECUTABLES.get(executable)
    return None
