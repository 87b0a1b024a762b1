"""What ``mbrl-ros demo hand`` needs to know about the simulated hand's tasks (ROS-free).

``TASKS``: the tasks sim_hand runs, the first the default; ``scene(task, config_dir)``:
what the demo plots. The hand drives no x-y path, so there is no trajectory plot; its
progress is the final fingertip distance (reach: sim_hand's ``final_goal_distance_m``) or the
block's final rotation error (rotate: ``final_rotation_error_rad``).
"""

from __future__ import annotations

from pathlib import Path

from mbrl_ros.demo.scene import Scene
from mbrl_ros_hardware.hand.shadow_hand import TASKS as _SIM_TASKS

TASKS = tuple(_SIM_TASKS)


def scene(task: str, config_dir: Path) -> Scene:
    if task == "rotate":
        return Scene(goals=False, paths=False, distance_key="final_rotation_error_rad",
                     distance_label="final block rotation error (rad)", summary_key="mean_final_rotation_error_rad")
    return Scene(goals=False, paths=False, distance_key="final_goal_distance_m",
                 distance_label="final fingertip distance (m)")
