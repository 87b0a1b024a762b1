"""real_hand: the bridge between the stack and a Shadow-hand-style vendor driver.

- ``hw/command`` (mbrl_interfaces/CommandVector, the 20 actuators' normalised
  targets) -> trajectory_msgs/JointTrajectory on ``trajectory_topic``: one
  point, the actuators' position targets (HandReach's mapping of [-1, 1] to
  each actuator's range), ``time_from_start`` = one control period; joint
  names are the actuators' with ``vendor_prefix`` (the coupled distal
  actuators as ``<prefix>FFJ1``...).
- ``joint_states_topic`` (sensor_msgs/JointState, vendor names) ->
  ``hw/joint_states`` (names without ``vendor_prefix``, same stamp), and
  ``hw/fingertips`` (geometry_msgs/PoseArray) from the hand's forward
  kinematics at those joint positions, same stamp, so the estimator pairs them.

The robot description (actuator ranges, kinematics) is the MuJoCo model of
gymnasium-robotics' Shadow hand. No command watchdog here: the vendor's
trajectory controller holds the last point's position, which is the safe
behaviour of a position-controlled hand.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.io.config import derived
from mbrl_ros.robots.hand.messages import joint_state, pose_array
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.run import run_node

PARAMS = [
    Param("trajectory_topic", "/rh_trajectory_controller/command", "the vendor's JointTrajectory input", read_only=True),
    Param("joint_states_topic", "/joint_states", "the vendor's JointState output", read_only=True),
    Param("vendor_prefix", "rh_", "prefix of the vendor's joint names (stripped for the stack)", read_only=True),
    Param("dt", 0.04, "time_from_start of the trajectory point (s): the control period, the robot config's '/**' dt",
          (0.001, 10.0)),
    Param("control_period", 0.0, "follows from dt (0: unset); a config that still sets it must agree", (0.0, 10.0)),
    Param("frame_id", "world", "frame of the fingertip positions"),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]


def _duration(seconds: float):
    from builtin_interfaces.msg import Duration

    sec = int(seconds)
    return Duration(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))


class RealHandNode(Node):
    def __init__(self) -> None:
        super().__init__("real_hand")
        self.p = declare_all(self, PARAMS)
        self.period = derived(self.p["dt"], self.p["control_period"] or None, "control_period", "dt",
                              self.get_fully_qualified_name())
        os.environ.setdefault("MUJOCO_GL", "egl")
        from mbrl_ros_hardware.hand.shadow_hand import HandSim

        self.hand = HandSim("reach")  # the robot description: actuator ranges and kinematics
        prefix = self.p["vendor_prefix"]
        self.trajectory_joints = [prefix + n.removeprefix("A_") for n in self.hand.actuator_names]
        self.counts = {"commands": 0, "rejected_commands": 0, "joint_states": 0, "rejected_joint_states": 0}
        self.last_rejection = ""
        self.trajectory_pub = self.create_publisher(JointTrajectory, self.p["trajectory_topic"], COMMAND)
        self.joint_pub = self.create_publisher(JointState, "hw/joint_states", SENSOR)
        self.tips_pub = self.create_publisher(PoseArray, "hw/fingertips", SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        self.create_subscription(JointState, self.p["joint_states_topic"], self.on_joint_states, SENSOR)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    def reject(self, what: str, reason: str) -> None:
        self.counts[f"rejected_{what}"] += 1
        self.last_rejection = reason
        self.get_logger().warning(f"rejected {reason}", throttle_duration_sec=5.0)

    def on_command(self, msg: CommandVector) -> None:
        values = np.asarray(msg.values, dtype=float)
        if values.shape != (self.hand.action_dim,) or not np.all(np.isfinite(values)):
            self.reject("commands", f"hw/command: expected {self.hand.action_dim} finite values, got {list(msg.values)}")
            return
        self.counts["commands"] += 1
        trajectory = JointTrajectory()
        trajectory.header.stamp = self.get_clock().now().to_msg()
        trajectory.joint_names = self.trajectory_joints
        point = JointTrajectoryPoint()
        point.positions = [float(v) for v in self.hand.actuator_targets(values)]
        point.time_from_start = _duration(self.period)
        trajectory.points = [point]
        self.trajectory_pub.publish(trajectory)

    def on_joint_states(self, msg: JointState) -> None:
        prefix = self.p["vendor_prefix"]
        names = [n.removeprefix(prefix) for n in msg.name]
        try:
            order = [names.index(n) for n in self.hand.joint_names]
        except ValueError:
            missing = sorted(set(self.hand.joint_names) - set(names))
            self.reject("joint_states", f"{self.p['joint_states_topic']}: missing joint(s) {missing}")
            return
        positions = np.asarray(msg.position, dtype=float)
        if len(positions) != len(names) or not np.all(np.isfinite(positions[order])):
            self.reject("joint_states", f"{self.p['joint_states_topic']}: {len(names)} names, positions "
                                        f"{list(msg.position)}")
            return
        self.counts["joint_states"] += 1
        # Relayed as received (the estimator checks and orders them); the fingertips need the model's order.
        self.joint_pub.publish(joint_state(names, msg.position, msg.velocity, msg.header.stamp))
        tips = self.hand.fingertips_at(positions[order])
        self.tips_pub.publish(pose_array(tips, msg.header.stamp, self.p["frame_id"]))

    def publish_diagnostics(self) -> None:
        values = {k: str(v) for k, v in self.counts.items()}
        values["last_rejection"] = self.last_rejection
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values))


def main(args: list[str] | None = None) -> int:
    return run_node(RealHandNode, "real_hand", args)


if __name__ == "__main__":
    sys.exit(main())
