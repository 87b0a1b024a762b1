"""sim_base: the simulated differential-drive base (ir-sim plus motor lag and slip) as a ROS 2 hardware driver.

Publishes what a base's driver would: ``hw/odom`` (nav_msgs/Odometry, pose and
body twist), and the task, latched: the goal pose (``goal``) or the reference
path (``path``), and the obstacles of the config (``obstacles``, MarkerArray
cylinders) that the controller's cost avoids. Takes ``hw/command``
(mbrl_interfaces/CommandVector ``[linear_x, angular_z]``: the twist a real
base gets on ``cmd_vel``). The world itself is ROS-free: ``world.BaseWorld``.

Lockstep or real time, episodes and their reports on ``sim/episodes``: see
``mbrl_ros_hardware.sim_driver``. An episode's report adds the final pose and
distance to the goal, or the path's cross-track errors.
"""

from __future__ import annotations

import sys

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rclpy.parameter import Parameter
from visualization_msgs.msg import MarkerArray

from mbrl_ros.robots.base.messages import obstacle_markers, obstacle_rows
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.poses import goal_pose, odometry, path
from mbrl_ros.ros.qos import LATCHED, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.base.world import TASKS, BaseWorld, BaseWorldConfig
from mbrl_ros_hardware.sim_driver import SimDriverNode

DEFAULTS = BaseWorldConfig()
PARAMS = [
    Param("task", "goal", f"simulated task: {' or '.join(TASKS)}", read_only=True),
    # Typed, no default: ROS parameters hold no empty list of doubles; unset means no obstacles.
    Param("obstacles", Parameter.Type.DOUBLE_ARRAY, "circular obstacles: x, y, radius (m) of each, in one flat "
          "list (the task file's '/**' value, which real_base publishes too)", read_only=True),
    Param("arena_half_size", DEFAULTS.arena_half_size, "walls at x, y = +-this (m)", (0.5, 100.0), read_only=True),
    Param("robot_radius", DEFAULTS.robot_radius, "m", (0.01, 5.0), read_only=True),
    Param("max_speed", DEFAULTS.max_speed, "speed limit (m/s)", (0.01, 10.0), read_only=True),
    Param("max_yaw_rate", DEFAULTS.max_yaw_rate, "yaw rate limit (rad/s)", (0.01, 20.0), read_only=True),
    Param("max_accel", DEFAULTS.max_accel, "acceleration limit (m/s^2)", (0.01, 50.0), read_only=True),
    Param("max_yaw_accel", DEFAULTS.max_yaw_accel, "yaw acceleration limit (rad/s^2)", (0.01, 100.0),
          read_only=True),
    Param("motor_lag", DEFAULTS.motor_lag, "first-order time constant of the wheel motors (s)", (0.0, 5.0),
          read_only=True),
    Param("slip", DEFAULTS.slip, "fraction of the yaw rate lost at max_speed (skid steering)", (0.0, 0.95),
          read_only=True),
    Param("goal_tolerance", DEFAULTS.goal_tolerance, "goal task: position tolerance (m)", (0.01, 10.0),
          read_only=True),
    Param("yaw_tolerance", DEFAULTS.yaw_tolerance, "goal task: heading tolerance (rad)", (0.01, 3.2),
          read_only=True),
    Param("path_tolerance", DEFAULTS.path_tolerance, "path task: largest mean cross-track error (m)",
          (0.01, 10.0), read_only=True),
    Param("path_min_speed", DEFAULTS.path_min_speed, "path task: least mean progress along the loop (m/s)",
          (0.0, 10.0), read_only=True),
]
# The time limit of an episode when max_episode_steps is 0 (at dt = 0.1 s: 15 s and 20 s).
TASK_EPISODE_STEPS = {"goal": 150, "path": 200}


class SimBaseNode(SimDriverNode):
    reset_gap = 1.0  # s of sim time between episodes: the data path splits episodes there

    def __init__(self) -> None:
        super().__init__("sim_base", PARAMS)
        self.odom_pub = self.create_publisher(Odometry, "hw/odom", SENSOR)
        self.goal_pub = self.create_publisher(PoseStamped, "goal_pose", LATCHED)
        self.path_pub = self.create_publisher(Path, "reference_path", LATCHED)
        self.obstacle_pub = self.create_publisher(MarkerArray, "obstacles", LATCHED)

    def make_sim(self):
        p, source = self.p, self.get_fully_qualified_name()
        if p["task"] not in TASKS:
            raise ValueError(f"{source}: parameter 'task' must be one of {list(TASKS)}, got {p['task']!r}")
        obstacles = obstacle_rows(p["obstacles"] or [], f"{source}: parameter")
        return BaseWorld(BaseWorldConfig(
            dt=p["dt"] or DEFAULTS.dt, task=p["task"], obstacles=obstacles,
            episode_steps=p["max_episode_steps"] or TASK_EPISODE_STEPS[p["task"]],
            **{k: p[k] for k in ("arena_half_size", "robot_radius", "max_speed", "max_yaw_rate", "max_accel",
                                 "max_yaw_accel", "motor_lag", "slip", "goal_tolerance", "yaw_tolerance",
                                 "path_tolerance", "path_min_speed")}))

    def hold_stop(self, stop: np.ndarray) -> np.ndarray:
        """Real time, the controller's last command was its stop and nothing followed: a zero twist, which
        the simulated base brakes to within its acceleration limits (the stop's last ramp step, held as it
        is, would keep the base driving)."""
        return np.zeros_like(stop)

    def default_episode_steps(self) -> int:
        return TASK_EPISODE_STEPS[self.p["task"]]

    def episode_result(self) -> dict:
        x, y, yaw = (float(v) for v in self.state[:3])
        result = {"final_x": x, "final_y": y, "final_yaw": yaw}
        if self.sim.goal is not None:
            result["final_position_error_m"] = float(np.hypot(x - self.sim.goal[0], y - self.sim.goal[1]))
        if self.sim.errors:
            result["mean_cross_track_error_m"] = float(np.mean(self.sim.errors))
            result["max_cross_track_error_m"] = float(np.max(self.sim.errors))
        return result

    def publish_state(self, stamp: Time) -> None:
        x, y, yaw, v, w = self.state
        self.odom_pub.publish(odometry(stamp, self.p["frame_id"], "base_link", x, y, yaw, v, w))

    def publish_task(self, stamp: Time) -> None:
        frame = self.p["frame_id"]
        if self.sim.goal is not None:
            self.goal_pub.publish(goal_pose(stamp, frame, *self.sim.goal[:3]))
        if self.sim.path is not None:
            self.path_pub.publish(path(stamp, frame, self.sim.path))
        if len(self.sim.config.obstacles):
            self.obstacle_pub.publish(obstacle_markers(self.sim.config.obstacles, stamp, frame))


def main(args: list[str] | None = None) -> int:
    return run_node(SimBaseNode, "sim_base", args)


if __name__ == "__main__":
    sys.exit(main())
