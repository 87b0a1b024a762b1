"""What ``mbrl-ros demo car`` needs to know about the simulated car's tasks (ROS-free).

``TASKS``: the tasks sim_car runs, the first the default; ``scene(task, config_dir)``:
what the trajectory plot draws around the driven paths (``mbrl_ros.demo.scene.Scene``).
"""

from __future__ import annotations

from pathlib import Path

from mbrl_ros.demo.scene import Scene

TASKS = ("parking", "race")


def scene(task: str, config_dir: Path) -> Scene:
    if task == "parking":
        from mbrl_ros_hardware.car.parking import WALL_HALF_X, WALL_HALF_Y

        return Scene(bounds=(-WALL_HALF_X, -WALL_HALF_Y, WALL_HALF_X, WALL_HALF_Y))
    from mbrl_ros_hardware.car.race import stadium_track

    return Scene(reference=stadium_track(), goals=False)
