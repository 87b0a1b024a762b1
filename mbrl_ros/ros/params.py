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


def section(node: Node, prefix: str) -> dict:
    """Every parameter under ``prefix.`` (from the params file), nested, for the core to validate.

    Needs the node to be created with ``automatically_declare_parameters_from_overrides=True``.
    """
    flat = {name: param.value for name, param in node.get_parameters_by_prefix(prefix).items()}
    return unflatten(flat)

