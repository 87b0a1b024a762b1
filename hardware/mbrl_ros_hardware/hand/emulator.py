"""hand_emulator: plays a Shadow-hand-style vendor driver on the MuJoCo hand, for tests and demos.

Subscribes ``trajectory_topic`` (trajectory_msgs/JointTrajectory; the last
point's positions are the actuators' targets, by joint name), steps the
gymnasium-robotics hand in real time at its 25 Hz, and publishes
``joint_states_topic`` (sensor_msgs/JointState, vendor-prefixed names) like a
real hand's driver: trajectories take effect ``latency`` seconds late, joint
states arrive ``latency`` seconds after the measurement (stamped with it),
positions and velocities carry Gaussian noise, and a fraction of messages in
each direction is lost. It reports what it received on /diagnostics.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from mbrl_ros.robots.hand.messages import joint_state
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.emulation import DelayLine

PARAMS = [
    Param("trajectory_topic", "/rh_trajectory_controller/command", "joint trajectories in", read_only=True),
    Param("joint_states_topic", "/joint_states", "joint states out", read_only=True),
    Param("vendor_prefix", "rh_", "prefix of the joint names on the wire", read_only=True),
    Param("latency", 0.02, "seconds from a trajectory to its effect, and from a measurement to its joint state",
          (0.0, 5.0), read_only=True),
    Param("trajectory_drop_rate", 0.02, "fraction of trajectories lost", (0.0, 0.99), read_only=True),
    Param("joint_states_drop_rate", 0.05, "fraction of joint states lost", (0.0, 0.99), read_only=True),
    Param("position_noise", 0.002, "standard deviation of the joint positions (rad)", (0.0, 1.0), read_only=True),
    Param("velocity_noise", 0.02, "standard deviation of the joint velocities (rad/s)", (0.0, 10.0), read_only=True),
    Param("seed", 0, "seed of the hand's start, noise and drops", (0, 2**31 - 1), read_only=True),
    Param("diagnostics_period", 0.5, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]


class HandEmulatorNode(Node):
    def __init__(self) -> None:
        super().__init__("hand_emulator")
        self.p = declare_all(self, PARAMS)
        os.environ.setdefault("MUJOCO_GL", "egl")
        from mbrl_ros_hardware.hand.shadow_hand import HandSim

        self.hand = HandSim("reach")
        self.state = self.hand.reset(seed=self.p["seed"])
        self.rng = np.random.default_rng(self.p["seed"])
        prefix = self.p["vendor_prefix"]
        self.actuator_index = {prefix + n.removeprefix("A_"): i for i, n in enumerate(self.hand.actuator_names)}
        self.joint_names = [prefix + n for n in self.hand.joint_names]
        self.action = np.zeros(self.hand.action_dim)
        self.trajectories = DelayLine(self.p["latency"], self.p["trajectory_drop_rate"], self.rng)
        self.measurements = DelayLine(self.p["latency"], self.p["joint_states_drop_rate"], self.rng)
        self.rejected, self.last_rejection, self.published = 0, "", 0
        self.joint_pub = self.create_publisher(JointState, self.p["joint_states_topic"], SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, self.p["trajectory_topic"], self.on_trajectory, COMMAND)
        self.create_timer(self.hand.dt, self.on_tick)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    def on_trajectory(self, msg: JointTrajectory) -> None:
        unknown = [n for n in msg.joint_names if n not in self.actuator_index]
        if not msg.points or unknown or len(msg.points[-1].positions) != len(msg.joint_names):
            self.rejected += 1
            self.last_rejection = f"unknown joints {unknown}" if unknown else "no point, or positions do not match names"
            return
        targets = self.hand.actuator_targets(self.action)  # joints the trajectory leaves out keep their target
        for name, position in zip(msg.joint_names, msg.points[-1].positions):
            targets[self.actuator_index[name]] = position
        self.trajectories.put(time.monotonic(), self.hand.actions_for(targets))

    def on_tick(self) -> None:
        now = time.monotonic()
        for action in self.trajectories.due(now):
            self.action = action
        self.state = self.hand.step(self.action).state
        positions = self.state.positions + self.rng.normal(0.0, self.p["position_noise"], len(self.joint_names))
        velocities = self.state.velocities + self.rng.normal(0.0, self.p["velocity_noise"], len(self.joint_names))
        self.measurements.put(now, (self.get_clock().now().to_msg(), positions, velocities))
        for stamp, q, dq in self.measurements.due(now):
            self.joint_pub.publish(joint_state(self.joint_names, q, dq, stamp))
            self.published += 1

    def publish_diagnostics(self) -> None:
        values = {"trajectories_received": str(self.trajectories.received),
                  "trajectories_dropped": str(self.trajectories.dropped),
                  "trajectories_rejected": str(self.rejected), "last_rejection": self.last_rejection,
                  "joint_states_published": str(self.published),
                  "joint_states_dropped": str(self.measurements.dropped),
                  "action_in_effect": " ".join(f"{a:.3f}" for a in self.action)}
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values))


def main(args: list[str] | None = None) -> int:
    return run_node(HandEmulatorNode, "hand_emulator", args)


if __name__ == "__main__":
    sys.exit(main())
