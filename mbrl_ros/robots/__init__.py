"""Robots as plug-ins: one package per robot, ``mbrl_ros/robots/<name>/``, found by its name.

A robot is registered by being such a package whose ``ROBOT`` is a
``mbrl_ros.robots.robot.Robot``; adding one touches no generic file. The
generic nodes and tools take the robot's name (the ``robot`` parameter,
``--robot``) and ask ``get_robot`` for the plug-in, as Nav2 picks its motion
models and critics by name.

Light on purpose: listing the robots imports none of them (no torch).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mbrl_ros.robots.robot import Robot

__all__ = ["available_robots", "get_robot"]


def available_robots() -> list[str]:
    """The names of the robot packages under ``mbrl_ros/robots/``."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if module.ispkg)


def get_robot(name: str, source: str = "") -> "Robot":
    """The plug-in of robot ``name`` (``mbrl_ros.robots.<name>.ROBOT``); for an unknown name a ValueError
    listing the robots, after ``source`` (what named it: a parameter, an option)."""
    from mbrl_ros.robots.robot import Robot

    robots = available_robots()
    if name not in robots:
        raise ValueError(f"{source + ': ' if source else ''}unknown robot {name!r}; robots: {robots}")
    robot = getattr(importlib.import_module(f"{__name__}.{name}"), "ROBOT", None)
    if not isinstance(robot, Robot):
        raise ValueError(f"mbrl_ros.robots.{name} defines no ROBOT (a mbrl_ros.robots.robot.Robot)")
    return robot
