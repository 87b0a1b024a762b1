"""The executables of the mbrl_ros ROS package: ``ros2 run mbrl_ros NAME``.

One table, read by ``ros_ws/src/mbrl_ros/setup.py`` (which makes each entry a
console script under ``lib/mbrl_ros/``) and available to the pip-only launcher
to map a launch file's ``exec`` to a Python entry point. Keep this file
free of imports and side effects: setup.py runs it without torch.

NAME -> "module:function", the function taking no argument (it reads
``sys.argv`` for ``--ros-args``) and returning an exit code or None.
"""

EXECUTABLES: dict[str, str] = {
    "estimator": "mbrl_ros.nodes.estimator:main",
    "dynamics_server": "mbrl_ros.nodes.dynamics_server:main",
    "controller": "mbrl_ros.nodes.controller:main",
    "data_logger": "mbrl_ros.nodes.data_logger:main",
    "trainer": "mbrl_ros.nodes.trainer:main",
    "sim_car": "mbrl_ros_hardware.car.sim:main",
    "real_car": "mbrl_ros_hardware.car.real:main",
    "car_emulator": "mbrl_ros_hardware.car.emulator:main",
    "sim_hand": "mbrl_ros_hardware.hand.sim:main",
    "real_hand": "mbrl_ros_hardware.hand.real:main",
    "hand_emulator": "mbrl_ros_hardware.hand.emulator:main",
}
