"""The base's ROS side: its topics for the generic nodes, and its message <-> vector conversions.

Estimator input: ``hw/odom`` (nav_msgs/Odometry: pose and body twist; the
commands add nothing the odometry lacks). Controller inputs, all latched:
``goal_pose`` (geometry_msgs/PoseStamped -> the cost's ``goal`` state),
``reference_path`` (nav_msgs/Path -> the cost's ``path``) and ``obstacles``
(visualization_msgs/MarkerArray of cylinders -> the ``obstacles`` term's
circles), which sim_base and real_base publish from the config's ``obstacles``
and a map or perception node may publish instead. The drivers build their
messages here and in ``mbrl_ros.ros.poses``.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_ros.robots.base.estimator import STATE_NAMES, BaseStateEstimator
from mbrl_ros.robots.robot import ContextInput, RobotMessages, SensorInput
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.poses import path_points, planar_goal
from mbrl_ros.ros.qos import SENSOR
from mbrl_ros.ros.stamps import stamp_to_ns

__all__ = ["MESSAGES", "circles_from_markers", "goal_state", "obstacle_markers", "obstacle_rows"]


class BaseMessages(RobotMessages):
    estimator_parameters = [
        Param("velocity_filter_alpha", 1.0, "weight of the newest v and w samples in a low-pass (1.0: no filter)",
              (0.001, 1.0)),
    ]

    controller_parameters = [
        Param("max_accel", 1.0, "the base's acceleration limit (m/s^2): the stop slows down no faster",
              (0.01, 100.0)),
        Param("max_yaw_accel", 4.0, "the base's yaw acceleration limit (rad/s^2): the stop stops turning no faster",
              (0.01, 1000.0)),
    ]

    def sensor_inputs(self, estimator: BaseStateEstimator, action_names: list[str]) -> list[SensorInput]:
        def odom(msg: Odometry):
            pose, q, twist = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
            return estimator.update(stamp_to_ns(msg.header.stamp), pose.x, pose.y, (q.x, q.y, q.z, q.w),
                                    twist.linear.x, twist.angular.z)

        return [SensorInput("hw/odom", Odometry, SENSOR, odom)]

    def context_inputs(self) -> list[ContextInput]:
        return [ContextInput("goal_pose", PoseStamped, "goal", goal_state, goal=True),
                ContextInput("reference_path", Path, "path", path_points),
                ContextInput("obstacles", MarkerArray, "obstacles", circles_from_markers)]


MESSAGES = BaseMessages()


def goal_state(msg: PoseStamped) -> np.ndarray:
    """The goal as a base state: the pose's x, y and yaw; at rest."""
    return planar_goal(msg, len(STATE_NAMES))


def obstacle_rows(flat, source: str) -> np.ndarray:
    """The config's ``obstacles`` (a flat list: x, y, radius of each, as ROS parameters hold no nested
    lists) as ``[M, 3]`` rows; ValueError naming ``source`` when it is not."""
    values = np.asarray(list(flat), dtype=float)
    if len(values) % 3 or not np.all(np.isfinite(values)) or np.any(values[2::3] <= 0):
        raise ValueError(f"{source}: 'obstacles' must be x, y, radius (> 0) triples, got {values.tolist()}")
    return values.reshape(-1, 3)


def circles_from_markers(msg: MarkerArray) -> dict:
    """The cylinders of a MarkerArray as the obstacles term's circles ``[M, 3]`` (x, y, radius)."""
    circles = [(m.pose.position.x, m.pose.position.y, 0.5 * max(m.scale.x, m.scale.y))
               for m in msg.markers if m.type == Marker.CYLINDER and m.action == Marker.ADD]
    rows = np.array(circles, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"non-finite obstacle {rows.tolist()}")
    return {"circles": rows}


def obstacle_markers(circles: np.ndarray, stamp: Time, frame_id: str) -> MarkerArray:
    """Circles ``[M, 3]`` as 0.5 m cylinders (what RViz shows, what the controller reads back)."""
    msg = MarkerArray()
    for i, (x, y, r) in enumerate(circles):
        marker = Marker()
        marker.header.stamp, marker.header.frame_id = stamp, frame_id
        marker.ns, marker.id, marker.type, marker.action = "obstacles", i, Marker.CYLINDER, Marker.ADD
        marker.pose.position.x, marker.pose.position.y, marker.pose.position.z = float(x), float(y), 0.25
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = 2.0 * float(r)
        marker.scale.z = 0.5
        marker.color.r = marker.color.g = marker.color.b = 0.4
        marker.color.a = 1.0
        msg.markers.append(marker)
    return msg
