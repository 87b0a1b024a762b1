"""real_car: the bridge between the stack and an F1TENTH-style vendor driver.

- ``hw/command`` (mbrl_interfaces/CommandVector ``[u_accel, u_steer]``, as
  sim_car takes it) -> ackermann_msgs/AckermannDriveStamped on ``drive_topic``
  (``/drive``), mapped by ``DriveMapper`` (see drive.py for the speed modes).
- ``odom_topic`` (``/odom``, nav_msgs/Odometry) -> ``hw/odom``, unchanged but
  for optional frame names; the estimator does the checking.

The drive stream is kept up at ``rate_hz`` (vendor-side muxes time out
otherwise). Watchdog: when no command came for ``command_timeout`` seconds
(controller dead, deactivated, network gone) the drive is zero speed, wheels
straight, until commands come back; each such stop is counted and logged.
Everything runs on the wall clock: this is a real robot.
"""

from __future__ import annotations

import sys
import time

from ackermann_msgs.msg import AckermannDriveStamped
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry
from rclpy.node import Node

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.io.config import derived
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.car.drive import Drive, DriveMapper

PARAMS = [
    Param("drive_topic", "/drive", "the vendor driver's AckermannDriveStamped input", read_only=True),
    Param("odom_topic", "/odom", "the vendor driver's Odometry output, relayed to hw/odom", read_only=True),
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
    Param("frame_id", "", "frame of the relayed odometry ('' keeps the vendor's)"),
    Param("child_frame_id", "", "child frame of the relayed odometry ('' keeps the vendor's)"),
    Param("drive_frame_id", "base_link", "frame_id of the drive commands"),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]


class RealCarNode(Node):
    def __init__(self) -> None:
        super().__init__("real_car")
        self.p = declare_all(self, PARAMS)
        period = derived(self.p["dt"], self.p["control_period"] or None, "control_period", "dt",
                         self.get_fully_qualified_name())
        self.mapper = DriveMapper(self.p["max_steer"], self.p["max_accel"], self.p["max_speed"],
                                  self.p["max_reverse_speed"], period, self.p["speed_mode"])
        self.drive = self.mapper.stop()
        self.last_command = -float("inf")  # time.monotonic() of the last accepted command
        self.stopped = True  # by the watchdog (or not started yet)
        self.measured_speed: float | None = None
        self.counts = {"commands": 0, "rejected_commands": 0, "drives": 0, "odom_relayed": 0, "watchdog_stops": 0}
        self.last_rejection = ""
        self.last_odom = -float("inf")
        self.drive_pub = self.create_publisher(AckermannDriveStamped, self.p["drive_topic"], COMMAND)
        self.odom_pub = self.create_publisher(Odometry, "hw/odom", SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        self.create_subscription(Odometry, self.p["odom_topic"], self.on_odom, SENSOR)
        self.create_timer(1.0 / self.p["rate_hz"], self.on_timer)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    def on_command(self, msg: CommandVector) -> None:
        names = list(msg.names) or ["u_accel", "u_steer"]
        try:
            if sorted(names) != ["u_accel", "u_steer"] or len(msg.values) != 2:
                raise ValueError(f"expected values for [u_accel, u_steer], got names {names} values {list(msg.values)}")
            values = dict(zip(names, msg.values))
            # Integrated over the wall time since the last command: the controller's rate does not set the ramp.
            elapsed = None if self.stopped else time.monotonic() - self.last_command
            self.drive = self.mapper.command(values["u_accel"], values["u_steer"], self.measured_speed, elapsed)
        except ValueError as err:
            # A bad command is not a command: the watchdog stops the car if no good one follows.
            self.counts["rejected_commands"] += 1
            self.last_rejection = f"hw/command: {err}"
            self.get_logger().warning(f"rejected {self.last_rejection}", throttle_duration_sec=5.0)
            return
        self.counts["commands"] += 1
        self.last_command = time.monotonic()
        if self.stopped:
            self.get_logger().info("commands resumed")
            self.stopped = False
        self.publish_drive(self.drive)

    def on_timer(self) -> None:
        if not self.stopped and time.monotonic() - self.last_command > self.p["command_timeout"]:
            self.stopped = True
            self.counts["watchdog_stops"] += 1
            self.get_logger().warning(f"no hw/command for {self.p['command_timeout']} s: zero speed")
        self.publish_drive(self.mapper.stop() if self.stopped else self.drive)

    def on_odom(self, msg: Odometry) -> None:
        if self.p["frame_id"]:
            msg.header.frame_id = self.p["frame_id"]
        if self.p["child_frame_id"]:
            msg.child_frame_id = self.p["child_frame_id"]
        self.measured_speed = msg.twist.twist.linear.x
        self.last_odom = time.monotonic()
        self.counts["odom_relayed"] += 1
        self.odom_pub.publish(msg)

    def publish_drive(self, drive: Drive) -> None:
        msg = AckermannDriveStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p["drive_frame_id"]
        msg.drive.speed = drive.speed
        msg.drive.acceleration = drive.acceleration
        msg.drive.steering_angle = drive.steering_angle
        self.drive_pub.publish(msg)
        self.counts["drives"] += 1

    def publish_diagnostics(self) -> None:
        values = {k: str(v) for k, v in self.counts.items()}
        now = time.monotonic()
        values.update({"stopped_by_watchdog": str(self.stopped), "speed_command": f"{self.drive.speed:.3f}",
                       "steering_command": f"{self.drive.steering_angle:.3f}",
                       "odom_age_s": f"{now - self.last_odom:.3f}", "last_rejection": self.last_rejection})
        level, message = DiagnosticStatus.OK, "driving"
        if self.stopped:
            level, message = DiagnosticStatus.WARN, "stopped: no hw/command"
        if now - self.last_odom > 1.0:
            level, message = DiagnosticStatus.WARN, f"no odometry on {self.p['odom_topic']} for over 1 s"
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values, level, message))


def main(args: list[str] | None = None) -> int:
    return run_node(RealCarNode, "real_car", args)


if __name__ == "__main__":
    sys.exit(main())
