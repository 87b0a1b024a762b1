"""The hand's ROS side: its topics for the generic nodes, and its message <-> vector conversions.

Estimator inputs: ``hw/joint_states`` (sensor_msgs/JointState),
``hw/fingertips`` (geometry_msgs/PoseArray; with the estimator's ``fingertips > 0``) and
``hw/block`` (nav_msgs/Odometry: the held block's pose in the world frame and its twist in
its own frame, as Odometry's convention; with the estimator's ``block``), one stamp for every
part of a state. Controller inputs: ``goal_fingertips`` (PoseArray -> the cost's
``fingertip_target``, reach) and ``goal_block_pose`` (geometry_msgs/PoseStamped -> the
cost's ``block_goal``: x, y, z, qw, qx, qy, qz; rotate). The drivers (sim_hand, real_hand,
hand_emulator) build their messages here too.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseArray, PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState

from mbrl_ros.robots.hand import FINGERTIPS, JOINTS
from mbrl_ros.robots.hand.estimator import HandStateEstimator
from mbrl_ros.robots.robot import ContextInput, RobotMessages, SensorInput
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.qos import SENSOR
from mbrl_ros.ros.stamps import stamp_to_ns

__all__ = ["MESSAGES", "block_goal", "block_odometry", "fingertip_target", "joint_state", "pose_array",
           "pose_stamped"]


class HandMessages(RobotMessages):
    estimator_parameters = [
        Param("joint_names", list(JOINTS), "the joints of the state, in state order (names in hw/joint_states)",
              read_only=True),
        Param("fingertips", len(FINGERTIPS), "fingertip positions in hw/fingertips (0: none, not subscribed)",
              (0, 100), read_only=True),
        Param("block", False, "the state ends with the held block's pose and twist from hw/block "
              "(nav_msgs/Odometry; estimator.BLOCK_STATE_NAMES)", read_only=True),
    ]

    def sensor_inputs(self, estimator: HandStateEstimator, action_names: list[str]) -> list[SensorInput]:
        def joints(msg: JointState):
            return estimator.joints(stamp_to_ns(msg.header.stamp), msg.name, msg.position, msg.velocity)

        def fingertips(msg: PoseArray):
            points = [(p.position.x, p.position.y, p.position.z) for p in msg.poses]
            return estimator.fingertip_positions(stamp_to_ns(msg.header.stamp), points)

        def block(msg: Odometry):
            pose, twist = msg.pose.pose, msg.twist.twist
            q = pose.orientation
            return estimator.block_odometry(stamp_to_ns(msg.header.stamp), xyz(pose.position), (q.w, q.x, q.y, q.z),
                                            xyz(twist.linear), xyz(twist.angular))

        inputs = [SensorInput("hw/joint_states", JointState, SENSOR, joints)]
        if estimator.fingertips:
            inputs.append(SensorInput("hw/fingertips", PoseArray, SENSOR, fingertips))
        if estimator.block:
            inputs.append(SensorInput("hw/block", Odometry, SENSOR, block))
        return inputs

    def context_inputs(self) -> list[ContextInput]:
        return [ContextInput("goal_fingertips", PoseArray, "fingertip_target", fingertip_target, goal=True),
                ContextInput("goal_block_pose", PoseStamped, "block_goal", block_goal, goal=True)]


MESSAGES = HandMessages()


def fingertip_target(msg: PoseArray) -> np.ndarray:
    """The fingertip targets as one vector (x, y, z of each pose, in order)."""
    goal = np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=float).reshape(-1)
    if not np.all(np.isfinite(goal)):
        raise ValueError(f"non-finite values {goal.tolist()}")
    return goal


def block_goal(msg: PoseStamped) -> np.ndarray:
    """The block's goal pose as one vector: x, y, z, qw, qx, qy, qz (the state's block pose order)."""
    p, q = msg.pose.position, msg.pose.orientation
    goal = np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z], dtype=float)
    if not np.all(np.isfinite(goal)):
        raise ValueError(f"non-finite values {goal.tolist()}")
    norm = float(np.linalg.norm(goal[3:]))
    if norm < 1e-6:
        raise ValueError("zero-length orientation quaternion")
    goal[3:] /= norm
    return goal


def xyz(vector) -> tuple[float, float, float]:
    return vector.x, vector.y, vector.z


def _set_pose(pose: Pose, values) -> None:
    """``values``: x, y, z, qw, qx, qy, qz."""
    x, y, z, qw, qx, qy, qz = (float(v) for v in values)
    pose.position.x, pose.position.y, pose.position.z = x, y, z
    o = pose.orientation
    o.w, o.x, o.y, o.z = qw, qx, qy, qz


def pose_stamped(pose, stamp: Time, frame_id: str) -> PoseStamped:
    """``pose``: x, y, z, qw, qx, qy, qz (HandManipulate's goal order)."""
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    _set_pose(msg.pose, pose)
    return msg


def block_odometry(pose, linear, angular, stamp: Time, frame_id: str, child_frame_id: str = "block") -> Odometry:
    """The block's odometry: ``pose`` (x, y, z in ``frame_id``; qw, qx, qy, qz), its twist ``linear`` and
    ``angular`` in its own frame (``child_frame_id``, Odometry's convention)."""
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    _set_pose(msg.pose.pose, pose)
    t = msg.twist.twist
    t.linear.x, t.linear.y, t.linear.z = (float(v) for v in linear)
    t.angular.x, t.angular.y, t.angular.z = (float(v) for v in angular)
    return msg


def pose_array(points: np.ndarray, stamp: Time, frame_id: str) -> PoseArray:
    msg = PoseArray()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    for x, y, z in points:
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
        pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


def joint_state(names: list[str], positions, velocities, stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    msg.velocity = [float(v) for v in velocities]
    return msg
