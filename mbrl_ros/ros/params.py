"""Declaring parameters with descriptions and ranges, as ros2/demos does.

A node lists its parameters once as ``Param`` rows; ``declare_all`` declares
them with a ParameterDescriptor (description, read-only, range) so `ros2 param
describe` explains them, and returns their values as a dict. Nested sections
(``cost``, ``mppi``, ``model``) are read whole by prefix and validated by the
core, whose errors name the key.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    read_only: bool = False


def declare_all(node: Node, params: list[Param]) -> dict[str, Any]:
    values = {}
    for p in params:
        descriptor = ParameterDescriptor(description=p.description, read_only=p.read_only)
        if p.range is not None:
            lo, hi = p.range
            if isinstance(p.default, bool) or not isinstance(p.default, (int, float)):
                raise TypeError(f"parameter '{p.name}': a range needs a numeric default")
            if isinstance(p.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        if node.has_parameter(p.name):
            # Declared already from the params file (automatically_declare_parameters_from_overrides);
            # declared again with its description and range, the file's value still applies.
            node.undeclare_parameter(p.name)
        values[p.name] = node.declare_parameter(p.name, p.default, descriptor).value
    return values


def unflatten(flat: dict[str, Any]) -> dict:
    """``{'cost.goal.weight': 1}`` -> ``{'cost': {'goal': {'weight': 1}}}`` (rclpy's dotted names)."""
    nested: dict = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def declare_sections(node: Node, prefixes: list[str], description: str) -> None:
    """Declare every parameter the params files give under ``<prefix>.`` for each prefix (a nested section
    the core validates: ``cost``, ``mppi``), so that a node needs neither
    ``automatically_declare_parameters_from_overrides`` (which declares every key of the file, the other
    nodes' ones included) nor ``allow_undeclared_parameters`` (which takes any name at run time)."""
    # rclpy has no public accessor for the overrides (rclcpp: get_parameter_overrides()).
    for name, param in node._parameter_overrides.items():
        if name.split(".", 1)[0] in prefixes and "." in name and not node.has_parameter(name):
            node.declare_parameter(name, param.value, ParameterDescriptor(description=description))


def values(node: Node, params: list[Param]) -> dict[str, Any]:
    """The current values of declared ``params``."""
    return {p.name: node.get_parameter(p.name).value for p in params}


def section(node: Node, prefix: str) -> dict:
    """Every declared parameter under ``prefix.`` (``declare_sections``), nested, for the core to validate."""
    flat = {name: param.value for name, param in node.get_parameters_by_prefix(prefix).items()}
    return unflatten(flat)



def params_files(argv: list[str]) -> list[str]:
    """The ``--params-file`` paths among the ROS arguments of ``argv`` (``--ros-args ... [--]``)."""
    files, in_ros_args = [], False
    args = iter(argv)
    for arg in args:
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg == "--params-file":
            files.append(next(args, ""))
    return [f for f in files if f]


def section_matches(section: str, fully_qualified_name: str) -> bool:
    """Whether a params file's node section (``/**``, ``/**/controller``, ``/car/*``) applies to a node (rcl's rule)."""
    pattern = ""
    for token in section.strip("/").split("/"):
        pattern += "(/[^/]+)*" if token == "**" else "/[^/]+" if token == "*" else "/" + re.escape(token)
    return re.fullmatch(pattern, fully_qualified_name) is not None


def flat_keys(tree: dict, prefix: str = "") -> list[str]:
    """``{'cost': {'goal': {'weight': 1}}}`` -> ``['cost.goal.weight']`` (rclpy's dotted names)."""
    keys = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys += flat_keys(value, name + ".") if isinstance(value, dict) else [name]
    return keys


def check_params_files(node: Node, argv: list[str]) -> None:
    """Refuse a key of this node's own section in a params file that the node does not declare (a typo such as
    ``state_timout`` would otherwise be dropped without a word, and the default used): ValueError naming the
    file, the section and the key, with the close names. The shared ``/**`` section is for every node, so its
    keys are not checked here; a node that declares every key of the file (automatically_declare_parameters_
    from_overrides) passes by construction."""
    fqn = node.get_fully_qualified_name()
    for path in params_files(argv):
        try:
            sections = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # rcl read it already (or refused it, naming the file)
        for section, body in sections.items():
            if section.strip("/") == "**" or not section_matches(str(section), fqn) or not isinstance(body, dict):
                continue
            for key in flat_keys(body.get("ros__parameters") or {}):
                if not node.has_parameter(key):
                    declared = node.list_parameters([], 0).names
                    close = difflib.get_close_matches(key, declared, n=3)
                    raise ValueError(f"{path}: section '{section}': '{key}' is not a parameter of {fqn}"
                                     + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else "")
                                     + f"; `ros2 param list {fqn}` lists them")
