"""Reading the ROS parameter YAML files in ``config/`` without ROS.

The nodes get these files through ``--params-file`` (rclpy flattens nested
keys to ``cost.goal_pose.weight``); pip-only tools (the demo, ``mbrl-ros fit``)
read the same files here, so every tunable lives in one YAML either way.
Errors name the file and the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or key is wrong; the message names which."""


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def node_parameters(path: str | Path, node_name: str, required: bool = True) -> dict:
    """The ``ros__parameters`` a node named ``node_name`` gets from ``path``, nested.

    Like rclpy: the ``/**`` wildcard section applies to every node and the node's
    own section (by plain name or ``/namespace/name``) overrides it.
    """
    data = load_yaml(path)
    merged: dict = {}
    found = False
    for section, body in data.items():
        if section in ("/**", node_name) or str(section).rsplit("/", 1)[-1] == node_name:
            if not isinstance(body, dict) or "ros__parameters" not in body:
                raise ConfigError(f"{path}: section '{section}' has no 'ros__parameters' mapping")
            _merge(merged, body["ros__parameters"] or {})
            found = True
    if not found and required:
        raise ConfigError(f"{path}: no parameters for node '{node_name}' (sections: {sorted(data)})")
    return merged


def merge(into: dict, update: dict) -> dict:
    """Deep-merge ``update`` into ``into`` (later params files override earlier ones, as in rclpy)."""
    _merge(into, update)
    return into


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def require(section: dict, key: str, source: str, kind: type | tuple = object) -> Any:
    """``section[key]``, or a ConfigError naming ``source`` and the key."""
    if key not in section:
        raise ConfigError(f"{source}: missing key '{key}' (has: {sorted(section)})")
    value = section[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{source}: key '{key}' must be {names}, got {value!r}")
    return value


def derived(value: Any, given: Any, key: str, source_key: str, source: str) -> Any:
    """A value that follows from another key (``source_key``), written once in the robot's config.

    A config may leave ``key`` out (``given`` None) or give it the same value; a different
    value is a ConfigError naming both keys, so two places can never disagree silently.
    """
    if given is None:
        return value
    same = (math.isclose(float(given), float(value), rel_tol=1e-9, abs_tol=1e-12)
            if isinstance(given, (int, float)) and isinstance(value, (int, float)) else given == value)
    if not same:
        raise ConfigError(f"{source}: '{key}' is {given!r}, but it follows from '{source_key}' ({value!r}); "
                          f"remove '{key}': '{source_key}' is the one place to set it")
    return value


def model_section_at(section: dict, dt: float, where: str) -> dict:
    """A model section with the control period ``dt`` filled in where the model takes one (a physics
    prior: ``parametric``, and a ``semiparametric`` model's prior); a section that still sets its own
    ``dt`` must agree (``derived``)."""
    section = dict(section)
    if section.get("type") == "parametric":
        section["dt"] = derived(dt, section.get("dt"), f"{where}.dt", "dt", where)
    elif section.get("type") == "semiparametric" and isinstance(section.get("prior"), dict):
        section["prior"] = model_section_at(section["prior"], dt, f"{where}.prior")
    return section


def launch_parameters(config_dir: str | Path, robot: str, task: str, node_name: str) -> dict:
    """A node's parameters as the launch files give them: ``<robot>.yaml``, then ``<robot>_<task>.yaml``."""
    folder = Path(config_dir)
    return merge(node_parameters(folder / f"{robot}.yaml", node_name),
                 node_parameters(folder / f"{robot}_{task}.yaml", node_name, required=False))
