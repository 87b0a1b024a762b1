"""The car's ROS side: its topics for the generic nodes, and its message <-> vector conversions.

Estimator inputs: ``hw/command`` (mbrl_interfaces/CommandVector, for the
steering the odometry does not carry), ``hw/odom`` (nav_msgs/Odometry) and, from a
simulated car only, ``sim/episodes`` (diagnostic_msgs/DiagnosticArray: where an episode
ends the simulator restarts the car with straight steering, ``CarStateEstimator.episode_ended``).
Controller inputs: ``goal_pose`` (geometry_msgs/PoseStamped -> the cost's
``goal`` state) and ``reference_path`` (nav_msgs/Path -> the cost's ``path``).
The drivers (sim_car, real_car, car_emulator) build their messages with
``mbrl_ros.ros.poses``, as the base's do.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.core.estimation import Rejection
from mbrl_ros.robots.car.estimator import STATE_NAMES, STEER_COMMAND, CarStateEstimator
from mbrl_ros.robots.robot import ContextInput, RobotMessages, SensorInput
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.poses import path_points, planar_goal
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.stamps import stamp_to_ns

__all__ = ["MESSAGES", "goal_state"]


class CarMessages(RobotMessages):
    estimator_parameters = [
        Param("steer_gain", 0.7853981633974483, "steering angle (rad) per unit u_steer command", (0.0, 10.0)),
        Param("steer_lag", 0.0, "first-order time constant (s) of the steering actuator; <= dt means instant",
              (0.0, 10.0)),
        Param("steer_rate_limit", 0.0, "largest steering rate (rad/s) of the actuator; 0: no limit", (0.0, 100.0)),
        Param("max_steer", 0.0, "the real car's steering angle (rad) at u_steer = 1 (config/car_real.yaml, "
              "the bridge's gain); when set, steer_gain must equal it (0: not on a real car)", (0.0, 10.0)),
        Param("speed_filter_alpha", 1.0, "weight of the newest speed sample in a low-pass (1.0: no filter)",
              (0.001, 1.0)),
    ]

    controller_parameters = [
        Param("accel_per_unit", 5.0, "acceleration (m/s^2) at u_accel = 1: highway-env's 5, the race sim's "
              "accel_gain, the real car bridge's max_accel", (0.01, 100.0)),
        Param("stop_deceleration", 4.0, "deceleration (m/s^2) of the stop, at most accel_per_unit", (0.01, 100.0)),
        Param("max_accel", 0.0, "the real car's acceleration (m/s^2) at u_accel = 1 (config/car_real.yaml, the "
              "bridge's gain); when set, accel_per_unit must equal it (0: not on a real car)", (0.0, 100.0)),
    ]

    def sensor_inputs(self, estimator: CarStateEstimator, action_names: list[str]) -> list[SensorInput]:
        def command(msg: CommandVector) -> Rejection | None:
            names = list(msg.names) or list(action_names)
            if STEER_COMMAND not in names or len(names) != len(msg.values):
                return Rejection(f"hw/command: no '{STEER_COMMAND}' in names {names} with values {list(msg.values)}")
            return estimator.command(stamp_to_ns(msg.header.stamp), msg.values[names.index(STEER_COMMAND)])

        def odom(msg: Odometry):
            pose, q = msg.pose.pose.position, msg.pose.pose.orientation
            twist = msg.twist.twist
            return estimator.update(stamp_to_ns(msg.header.stamp), pose.x, pose.y, (q.x, q.y, q.z, q.w),
                                    twist.linear.x, twist.linear.y, twist.angular.z)

        def episodes(msg: DiagnosticArray) -> Rejection | None:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if "end_stamp_ns" in values:
                    try:
                        end = int(values["end_stamp_ns"])
                    except ValueError:
                        return Rejection(f"sim/episodes: '{status.name}' has a malformed end_stamp_ns "
                                         f"{values['end_stamp_ns']!r}")
                    estimator.episode_ended(end)
            return None

        # Episode reports and commands first: when several are waiting, the executor takes them in creation
        # order; the simulator reports an episode's end before it publishes the next one's first odometry,
        # and a command received before an odometry was (nearly always) sent before it was measured.
        # sim/episodes: volatile (reliable) here, so the latched last report of a running simulator is not
        # taken as a new episode end.
        return [SensorInput("sim/episodes", DiagnosticArray, COMMAND, episodes, measures=False),
                SensorInput("hw/command", CommandVector, COMMAND, command, measures=False),
                SensorInput("hw/odom", Odometry, SENSOR, odom)]

    def context_inputs(self) -> list[ContextInput]:
        return [ContextInput("goal_pose", PoseStamped, "goal", goal_state, goal=True),
                ContextInput("reference_path", Path, "path", path_points)]


MESSAGES = CarMessages()


def goal_state(msg: PoseStamped) -> np.ndarray:
    """The goal as a car state: the pose's x, y and yaw; speed and steering 0 (and the kinematic layout's
    size: a goal pose is a parking task's, whose state is kinematic)."""
    return planar_goal(msg, len(STATE_NAMES))
