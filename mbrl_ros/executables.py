"""The executables of the mbrl_ros ROS package: ``ros2 run mbrl_ros NAME``.

One table, read by ``ros_ws/src/mbrl_ros/setup.py`` (which makes each entry a
console script under ``lib/mbrl_ros/``) and available to the pip-only launcher
to map a launch file's ``exec`` to a Python entry point. Keep this file
free of imports beyond the standard library and of side effects: setup.py runs
it by path, without torch and before anything is installed.

NAME -> "module:function", the function taking no argument (it reads
``sys.argv`` for ``--ros-args``) and returning an exit code or None.

The generic nodes are listed; each robot's drivers are found by name, so that
adding a robot touches only its own folder: ``mbrl_ros_hardware/<robot>/sim.py``
is ``sim_<robot>``, ``real.py`` is ``real_<robot>`` and ``emulator.py`` is
``<robot>_emulator`` (each with a ``main``).
"""

import os

NODES: dict[str, str] = {
    "estimator": "mbrl_ros.nodes.estimator:main",
    "dynamics_server": "mbrl_ros.nodes.dynamics_server:main",
    "controller": "mbrl_ros.nodes.controller:main",
    "data_logger": "mbrl_ros.nodes.data_logger:main",
    "trainer": "mbrl_ros.nodes.trainer:main",
    "launch_check": "mbrl_ros.launch_check:main",
}
DRIVERS = {"sim": "sim_{robot}", "real": "real_{robot}", "emulator": "{robot}_emulator"}


def _hardware_folder() -> str | None:
    """``mbrl_ros_hardware`` beside this package: in the repository (``hardware/``), in the colcon
    package (a symlink beside ``mbrl_ros``) or installed (site-packages)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for package in (here, os.path.dirname(os.path.realpath(__file__))):
        parent = os.path.dirname(package)
        for folder in (os.path.join(parent, "mbrl_ros_hardware"), os.path.join(parent, "hardware", "mbrl_ros_hardware")):
            if os.path.isfile(os.path.join(folder, "__init__.py")):
                return folder
    return None


def _drivers() -> dict[str, str]:
    folder = _hardware_folder()
    found: dict[str, str] = {}
    for robot in sorted(os.listdir(folder)) if folder else []:
        if not os.path.isfile(os.path.join(folder, robot, "__init__.py")):
            continue
        for module, name in DRIVERS.items():
            if os.path.isfile(os.path.join(folder, robot, f"{module}.py")):
                found[name.format(robot=robot)] = f"mbrl_ros_hardware.{robot}.{module}:main"
    return found


EXECUTABLES: dict[str, str] = {**NODES, **_drivers()}
