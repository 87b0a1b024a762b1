"""What ``mbrl-ros demo base`` needs to know about the simulated base's tasks (ROS-free).

``TASKS``: the tasks sim_base runs, the first the default; ``scene(task, config_dir)``:
what the trajectory plot draws around the driven paths (``mbrl_ros.demo.scene.Scene``).
"""

from __future__ import annotations

from pathlib import Path

from mbrl_ros.demo.scene import Scene
from mbrl_ros.io.config import launch_parameters
from mbrl_ros.robots.base.messages import obstacle_rows
from mbrl_ros_hardware.base.world import TASKS, BaseWorldConfig, loop_path


def scene(task: str, config_dir: Path) -> Scene:
    params = launch_parameters(config_dir, "base", task, "sim_base")
    half = float(params.get("arena_half_size", BaseWorldConfig.arena_half_size))
    circles = obstacle_rows(params.get("obstacles") or [], f"{config_dir}/base_{task}.yaml")
    return Scene(bounds=(-half, -half, half, half), circles=circles,
                 reference=loop_path(BaseWorldConfig.path_radius) if task == "path" else None, goals=task == "goal")


__all__ = ["TASKS", "scene"]
