"""Planar robots' messages (car, base): odometry, goal poses and paths, built and read.

For robots whose state starts with ``x, y, yaw`` in a fixed frame: drivers build
their odometry and task messages here, and the controller's goal and path
inputs read them back (``robots/<robot>/messages.py`` names the topics).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path

from mbrl_ros.core.angles import quaternion_from_yaw, yaw_from_quaternion

__all__ = ["goal_pose", "odometry", "path", "path_points", "planar_goal"]


# --- controller inputs ------------------------------------------------------------------------
def planar_goal(msg: PoseStamped, state_dim: int) -> np.ndarray:
    """The goal as a state of ``state_dim`` entries: the pose's x, y and yaw, the rest 0."""
    q = msg.pose.orientation
    goal = np.zeros(state_dim)
    goal[:3] = (msg.pose.position.x, msg.pose.position.y, yaw_from_quaternion(q.x, q.y, q.z, q.w))
    if not np.all(np.isfinite(goal)):
        raise ValueError(f"non-finite values {goal.tolist()}")
    return goal


def path_points(msg: Path) -> np.ndarray:
    """A path's positions as ``[P, 2]`` (x, y)."""
    points = np.array([[p.pose.position.x, p.pose.position.y] for p in msg.poses], dtype=float)
    if len(points) < 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"need >= 2 finite points, got {len(points)}")
    return points


# --- driver outputs ---------------------------------------------------------------------------
def odometry(stamp: Time, frame_id: str, child_frame_id: str, x: float, y: float, yaw: float,
             speed: float, yaw_rate: float = 0.0, lateral_speed: float = 0.0) -> Odometry:
    """Odometry of a robot at ``(x, y, yaw)`` moving at ``speed`` (body frame, signed; sideways at
    ``lateral_speed``), turning at ``yaw_rate``."""
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = quaternion_from_yaw(float(yaw))
    msg.twist.twist.linear.x = float(speed)
    msg.twist.twist.linear.y = float(lateral_speed)
    msg.twist.twist.angular.z = float(yaw_rate)
    return msg


def goal_pose(stamp: Time, frame_id: str, x: float, y: float, yaw: float) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y = float(x), float(y)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = quaternion_from_yaw(float(yaw))
    return msg


def path(stamp: Time, frame_id: str, points) -> Path:
    """A path through ``points`` ([P, 2] x, y), every pose facing along x."""
    msg = Path()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    for px, py in points:
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y = float(px), float(py)
        pose.pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg
