"""car_emulator: plays an F1TENTH-style vendor driver, for tests and demos without a car.

Subscribes ``/drive`` (ackermann_msgs/AckermannDriveStamped), drives an
``EmulatedCar`` (kinematic bicycle behind a speed controller and a servo), and
publishes ``/odom`` (nav_msgs/Odometry) at ``rate_hz``, as a real car's driver
does, with what a real one has: drive commands take effect ``latency`` seconds
late and odometry arrives ``latency`` seconds after it was measured (stamped
with the measurement time), positions, heading and speed carry Gaussian noise,
and a fraction of messages in each direction is lost. Latencies are quantised
to the ``rate_hz`` tick.

It reports on /diagnostics what it received (``drives_received``, the last
speed and steering commanded) so a test can see the bridge's output without
importing ackermann_msgs itself.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from ackermann_msgs.msg import AckermannDriveStamped
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node

from mbrl_ros.ros.poses import odometry
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.emulation import DelayLine
from mbrl_ros_hardware.car.emulated_car import EmulatedCar

PARAMS = [
    Param("drive_topic", "/drive", "drive commands in", read_only=True),
    Param("odom_topic", "/odom", "odometry out", read_only=True),
    Param("rate_hz", 50.0, "simulation and odometry rate", (1.0, 1000.0), read_only=True),
    Param("latency", 0.02, "seconds from a drive command to its effect, and from a measurement to its odometry",
          (0.0, 5.0), read_only=True),
    Param("drive_drop_rate", 0.02, "fraction of drive commands lost", (0.0, 0.99), read_only=True),
    Param("odom_drop_rate", 0.05, "fraction of odometry messages lost", (0.0, 0.99), read_only=True),
    Param("position_noise", 0.01, "standard deviation of x and y (m)", (0.0, 10.0), read_only=True),
    Param("yaw_noise", 0.005, "standard deviation of the heading (rad)", (0.0, 3.0), read_only=True),
    Param("speed_noise", 0.02, "standard deviation of the speed (m/s)", (0.0, 10.0), read_only=True),
    Param("wheelbase", 0.33, "m", (0.01, 10.0), read_only=True),
    Param("max_steer", 0.4189, "the servo's end stop (rad)", (0.01, 1.5), read_only=True),
    Param("max_accel", 5.0, "the speed controller's acceleration limit (m/s^2)", (0.01, 50.0), read_only=True),
    Param("seed", 0, "seed of noise and drops", (0, 2**31 - 1), read_only=True),
    Param("frame_id", "odom", "odometry frame", read_only=True),
    Param("child_frame_id", "base_link", "odometry child frame", read_only=True),
    Param("diagnostics_period", 0.5, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]


class CarEmulatorNode(Node):
    def __init__(self) -> None:
        super().__init__("car_emulator")
        self.p = declare_all(self, PARAMS)
        self.rng = np.random.default_rng(self.p["seed"])
        self.car = EmulatedCar(wheelbase=self.p["wheelbase"], max_steer=self.p["max_steer"],
                               max_accel=self.p["max_accel"])
        self.drives = DelayLine(self.p["latency"], self.p["drive_drop_rate"], self.rng)
        self.odoms = DelayLine(self.p["latency"], self.p["odom_drop_rate"], self.rng)
        self.command = (0.0, 0.0, 0.0)  # speed, acceleration, steering angle in effect
        self.last_received = (0.0, 0.0, 0.0)
        self.published = 0
        self.dt = 1.0 / self.p["rate_hz"]
        self.odom_pub = self.create_publisher(Odometry, self.p["odom_topic"], SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(AckermannDriveStamped, self.p["drive_topic"], self.on_drive, COMMAND)
        self.create_timer(self.dt, self.on_tick)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    def on_drive(self, msg: AckermannDriveStamped) -> None:
        d = msg.drive
        self.last_received = (d.speed, d.acceleration, d.steering_angle)
        self.drives.put(time.monotonic(), self.last_received)

    def on_tick(self) -> None:
        now = time.monotonic()
        for command in self.drives.due(now):
            self.command = command
        x, y, yaw, v, _ = self.car.step(self.dt, *self.command)
        noise = self.rng.normal(size=4) * [self.p["position_noise"], self.p["position_noise"],
                                           self.p["yaw_noise"], self.p["speed_noise"]]
        self.odoms.put(now, (self.get_clock().now().to_msg(), x + noise[0], y + noise[1], yaw + noise[2], v + noise[3]))
        for measured in self.odoms.due(now):
            self.odom_pub.publish(self.odometry(*measured))
            self.published += 1

    def odometry(self, stamp: Time, x: float, y: float, yaw: float, v: float) -> Odometry:
        return odometry(stamp, self.p["frame_id"], self.p["child_frame_id"], x, y, yaw, v)

    def publish_diagnostics(self) -> None:
        x, y, yaw, v, steer = self.car.state
        speed, accel, steering = self.last_received
        values = {"drives_received": str(self.drives.received), "drives_dropped": str(self.drives.dropped),
                  "odom_published": str(self.published), "odom_dropped": str(self.odoms.dropped),
                  "last_speed_command": f"{speed:.4f}", "last_acceleration_command": f"{accel:.4f}",
                  "last_steering_command": f"{steering:.4f}",
                  "x": f"{x:.4f}", "y": f"{y:.4f}", "yaw": f"{yaw:.4f}", "speed": f"{v:.4f}", "steer": f"{steer:.4f}"}
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values))


def main(args: list[str] | None = None) -> int:
    return run_node(CarEmulatorNode, "car_emulator", args)


if __name__ == "__main__":
    sys.exit(main())
