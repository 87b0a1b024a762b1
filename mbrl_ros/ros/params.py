"""Declaring parameters with descriptions and ranges, as ros2/demos does.

A node lists its parameters once as ``Param`` rows; ``declare_all`` declares
them with a ParameterDescriptor (description, read-only, range) so `ros2 param
describe` explains them, and returns their values as a dict. Nested sections
(``cost``, ``mppi``, ``model``) are read whole by prefix and validated by the
core, whose errors name the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

