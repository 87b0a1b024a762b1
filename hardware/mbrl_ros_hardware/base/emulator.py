"""base_emulator: plays a TurtleBot/Clearpath-style base driver, for tests and demos without a base.

Subscribes ``/cmd_vel`` (geometry_msgs/Twist), drives the simulated base
(``world.BaseWorld``: ir-sim's limits plus motor lag and slip, stepped at
``rate_hz``, in an open field) and publishes ``/odom`` (nav_msgs/Odometry) as a
base's driver does, with what a real one has: twists take effect ``latency``
seconds late and odometry arrives ``latency`` seconds after it was measured
(stamped with the measurement time), pose and twist carry Gaussian noise, and a
fraction of messages in each direction is lost (``mbrl_ros_hardware.emulation``).

It reports on /diagnostics what it received (``twists_received``, the last
command) and the base's true state, so a test can see the bridge's output.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node

from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.poses import odometry
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.base.world import BaseWorld, BaseWorldConfig
from mbrl_ros_hardware.emulation import DelayLine

PARAMS = [
    Param("cmd_vel_topic", "/cmd_vel", "twist commands in", read_only=True),
    Param("odom_topic", "/odom", "odometry out", read_only=True),
    Param("rate_hz", 50.0, "simulation and odometry rate", (1.0, 1000.0), read_only=True),
    Param("latency", 0.02, "seconds from a twist to its effect, and from a measurement to its odometry",
          (0.0, 5.0), read_only=True),
    Param("cmd_vel_drop_rate", 0.02, "fraction of twists lost", (0.0, 0.99), read_only=True),
    Param("odom_drop_rate", 0.05, "fraction of odometry messages lost", (0.0, 0.99), read_only=True),
    Param("position_noise", 0.005, "standard deviation of x and y (m)", (0.0, 10.0), read_only=True),
    Param("yaw_noise", 0.005, "standard deviation of the heading (rad)", (0.0, 3.0), read_only=True),
    Param("velocity_noise", 0.01, "standard deviation of the speed (m/s) and yaw rate (rad/s)", (0.0, 10.0),
          read_only=True),
    Param("seed", 0, "seed of the start pose, noise and drops", (0, 2**31 - 1), read_only=True),
    Param("frame_id", "odom", "odometry frame", read_only=True),
    Param("child_frame_id", "base_link", "odometry child frame", read_only=True),
    Param("diagnostics_period", 0.5, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]


class BaseEmulatorNode(Node):
    def __init__(self) -> None:
        super().__init__("base_emulator")
        self.p = declare_all(self, PARAMS)
        self.rng = np.random.default_rng(self.p["seed"])
        self.dt = 1.0 / self.p["rate_hz"]
        # An open field: walls far away, no obstacles, no time limit.
        self.base = BaseWorld(BaseWorldConfig(dt=self.dt, arena_half_size=1000.0, episode_steps=2**62))
        self.base.reset(seed=self.p["seed"])
        self.twists = DelayLine(self.p["latency"], self.p["cmd_vel_drop_rate"], self.rng)
        self.odoms = DelayLine(self.p["latency"], self.p["odom_drop_rate"], self.rng)
        self.command = (0.0, 0.0)  # linear.x, angular.z in effect
        self.last_received = (0.0, 0.0)
        self.published = 0
        self.odom_pub = self.create_publisher(Odometry, self.p["odom_topic"], SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Twist, self.p["cmd_vel_topic"], self.on_twist, COMMAND)
        self.create_timer(self.dt, self.on_tick)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    def on_twist(self, msg: Twist) -> None:
        self.last_received = (msg.linear.x, msg.angular.z)
        self.twists.put(time.monotonic(), self.last_received)

    def on_tick(self) -> None:
        now = time.monotonic()
        for command in self.twists.due(now):
            self.command = command
        x, y, yaw, v, w = self.base.step(np.array(self.command)).state
        p = self.p
        noise = self.rng.normal(size=5) * [p["position_noise"], p["position_noise"], p["yaw_noise"],
                                           p["velocity_noise"], p["velocity_noise"]]
        measured = np.array([x, y, yaw, v, w]) + noise
        self.odoms.put(now, (self.get_clock().now().to_msg(), *measured))
        for stamp, *values in self.odoms.due(now):
            self.odom_pub.publish(odometry(stamp, p["frame_id"], p["child_frame_id"], *values))
            self.published += 1

    def publish_diagnostics(self) -> None:
        x, y, yaw, v, w = self.base.state
        linear, angular = self.last_received
        values = {"twists_received": str(self.twists.received), "twists_dropped": str(self.twists.dropped),
                  "odom_published": str(self.published), "odom_dropped": str(self.odoms.dropped),
                  "last_linear_x_command": f"{linear:.4f}", "last_angular_z_command": f"{angular:.4f}",
                  "x": f"{x:.4f}", "y": f"{y:.4f}", "yaw": f"{yaw:.4f}", "v": f"{v:.4f}", "w": f"{w:.4f}"}
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values))


def main(args: list[str] | None = None) -> int:
    return run_node(BaseEmulatorNode, "base_emulator", args)


if __name__ == "__main__":
    sys.exit(main())
