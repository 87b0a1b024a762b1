"""real_car: the bridge between the stack and an F1TENTH-style vendor driver.

- ``hw/command`` (mbrl_interfaces/CommandVector ``[u_accel, u_steer]``, as
  sim_car takes it) -> ackermann_msgs/AckermannDriveStamped on ``drive_topic``
  (``/drive``), mapped by ``DriveMapper`` (see drive.py for the speed modes).
- ``odom_topic`` (``/odom``, nav_msgs/Odometry) -> ``hw/odom``.
- A command marked as the controller's stop (``mbrl_ros.ros.commands``) is speed
  zero, braking at the stop's deceleration, in every speed mode.

The drive stream, the watchdog (zero speed, wheels straight, when commands stop)
and the relay are every bridge's (``mbrl_ros_hardware.vendor_bridge``).
"""

from __future__ import annotations

import sys

from ackermann_msgs.msg import AckermannDriveStamped
from nav_msgs.msg import Odometry

from mbrl_ros.io.config import derived
from mbrl_ros.robots.car import ROBOT
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.qos import COMMAND
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.car.drive import Drive, DriveMapper
from mbrl_ros_hardware.vendor_bridge import VendorBridgeNode

PARAMS = [
    Param("drive_topic", "/drive", "the vendor driver's AckermannDriveStamped input", read_only=True),
    Param("speed_mode", "integrate", "'integrate': speed += u_accel * max_accel * (seconds since the last "
          "command, at most dt); "
          "'acceleration': toward the top speed with acceleration |u_accel| * max_accel", read_only=True),
    Param("max_steer", 0.4189, "steering angle (rad) at u_steer = 1; the estimator's steer_gain must equal it "
          "(it checks at startup)", (0.01, 1.5)),
    Param("max_accel", 3.0, "acceleration (m/s^2) at u_accel = 1", (0.01, 50.0)),
    Param("max_speed", 3.0, "highest forward speed commanded (m/s)", (0.01, 100.0)),
    Param("max_reverse_speed", 1.0, "highest reverse speed commanded (m/s)", (0.0, 100.0)),
    Param("dt", 0.2, "seconds one command holds: the control period, the robot config's '/**' dt", (0.001, 10.0)),
    Param("control_period", 0.0, "follows from dt (0: unset); a config that still sets it must agree", (0.0, 10.0)),
    Param("command_timeout", 0.5, "wall seconds without hw/command after which the drive is zero speed", (0.01, 60.0)),
    Param("rate_hz", 50.0, "rate of the drive stream to the vendor driver", (1.0, 1000.0)),
    Param("drive_frame_id", "base_link", "frame_id of the drive commands"),
]


class RealCarNode(VendorBridgeNode):
    def __init__(self) -> None:
        super().__init__("real_car", PARAMS, ROBOT.action_names)
        period = derived(self.p["dt"], self.p["control_period"] or None, "control_period", "dt",
                         self.get_fully_qualified_name())
        self.mapper = DriveMapper(self.p["max_steer"], self.p["max_accel"], self.p["max_speed"],
                                  self.p["max_reverse_speed"], period, self.p["speed_mode"])
        self.measured_speed: float | None = None
        self.drive_pub = self.create_publisher(AckermannDriveStamped, self.p["drive_topic"], COMMAND)
        self.start()

    def command(self, values: dict[str, float], elapsed: float | None) -> Drive:
        # Integrated over the wall time since the last command: the controller's rate does not set the ramp.
        return self.mapper.command(values["u_accel"], values["u_steer"], self.measured_speed, elapsed)

    def stop_command(self, values: dict[str, float]) -> Drive:
        """The controller's stop: zero speed, braking at its deceleration (``|u_accel| * max_accel``)."""
        return self.mapper.stop(values["u_accel"])

    def stop(self) -> Drive:
        return self.mapper.stop()

    def on_measured(self, msg: Odometry) -> None:
        self.measured_speed = msg.twist.twist.linear.x

    def publish(self, drive: Drive) -> None:
        msg = AckermannDriveStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p["drive_frame_id"]
        msg.drive.speed = drive.speed
        msg.drive.acceleration = drive.acceleration
        msg.drive.steering_angle = drive.steering_angle
        self.drive_pub.publish(msg)

    def report(self, drive: Drive) -> dict[str, str]:
        return {"speed_command": f"{drive.speed:.3f}", "steering_command": f"{drive.steering_angle:.3f}"}


def main(args: list[str] | None = None) -> int:
    return run_node(RealCarNode, "real_car", args)


if __name__ == "__main__":
    sys.exit(main())
