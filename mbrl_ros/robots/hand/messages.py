"""The hand's ROS side: its topics for the generic nodes, and its message <-> vector conversions.

Estimator inputs: ``hw/joint_states`` (sensor_msgs/JointState) and
``hw/fingertips`` (geometry_msgs/PoseArray), one stamp for both halves of a
state. Controller input: ``goal_fingertips`` (PoseArray -> the cost's
``fingertip_target``). The drivers (sim_hand, real_hand, hand_emulator) build
their messages here too.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseArray
from sensor_msgs.msg import JointState

from mbrl_ros.robots.hand import FINGERTIPS, JOINTS
from mbrl_ros.robots.hand.estimator import HandStateEstimator
from mbrl_ros.robots.robot import ContextInput, RobotMessages, SensorInput
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.qos import SENSOR
from mbrl_ros.ros.stamps import stamp_to_ns

__all__ = ["MESSAGES", "fingertip_target", "joint_state", "pose_array"]


class HandMessages(RobotMessages):
    estimator_parameters = [
        Param("joint_names", list(JOINTS), "the joints of the state, in state order (names in hw/joint_states)",
              read_only=True),
        Param("fingertips", len(FINGERTIPS), "fingertip positions in hw/fingertips (0: joints only)", (0, 100),
              read_only=True),
    ]

    def sensor_inputs(self, estimator: HandStateEstimator, action_names: list[str]) -> list[SensorInput]:
        def joints(msg: JointState):
            return estimator.joints(stamp_to_ns(msg.header.stamp), msg.name, msg.position, msg.velocity)

        def fingertips(msg: PoseArray):
            points = [(p.position.x, p.position.y, p.position.z) for p in msg.poses]
            return estimator.fingertip_positions(stamp_to_ns(msg.header.stamp), points)

        return [SensorInput("hw/joint_states", JointState, SENSOR, joints),
                SensorInput("hw/fingertips", PoseArray, SENSOR, fingertips)]

    def context_inputs(self) -> list[ContextInput]:
        return [ContextInput("goal_fingertips", PoseArray, "fingertip_target", fingertip_target, goal=True)]


MESSAGES = HandMessages()


def fingertip_target(msg: PoseArray) -> np.ndarray:
    """The fingertip targets as one vector (x, y, z of each pose, in order)."""
    goal = np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=float).reshape(-1)
    if not np.all(np.isfinite(goal)):
        raise ValueError(f"non-finite values {goal.tolist()}")
    return goal


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
