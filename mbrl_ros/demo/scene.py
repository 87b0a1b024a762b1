"""What a robot's demo plot draws around the driven paths, and where a robot's demo tasks are found.

A robot has a demo when its hardware package has a ``demo`` module
(``mbrl_ros_hardware.<robot>.demo``, ROS-free) with ``TASKS`` (the simulator's
tasks, the first the default) and ``scene(task, config_dir) -> Scene``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from mbrl_ros.robots import available_robots


@dataclass
class Scene:
    """The plot's fixed parts: walls (``bounds``: xmin, ymin, xmax, ymax), a reference path [P, 2],
    circular obstacles [M, 3] (x, y, r); ``goals``: whether each episode's goal pose is drawn;
    ``paths``: whether the robot drives x-y paths to plot at all (the hand does not).
    ``distance_key``: the episode report's final distance to the goal, plotted with success
    against the transitions collected (``distance_label`` on its axis; ``summary_key`` its mean in the summary)."""

    bounds: tuple[float, float, float, float] | None = None
    reference: np.ndarray | None = None
    circles: np.ndarray | None = None
    goals: bool = True
    paths: bool = True
    distance_key: str = "final_position_error_m"
    distance_label: str = "final distance to the goal (m)"
    summary_key: str = "mean_final_distance_m"  # the summary's name of the distances' mean


def demo_module(robot: str) -> ModuleType | None:
    """``mbrl_ros_hardware.<robot>.demo``, or None for a robot without a demo."""
    name = f"mbrl_ros_hardware.{robot}.demo"
    try:
        found = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # no mbrl_ros_hardware.<robot> at all
        return None
    return importlib.import_module(name) if found is not None else None


def demo_tasks() -> dict[str, tuple[str, ...]]:
    """Each robot with a demo -> its tasks (the first is the default)."""
    tasks = {}
    for robot in available_robots():
        module = demo_module(robot)
        if module is not None:
            tasks[robot] = tuple(module.TASKS)
    return tasks
