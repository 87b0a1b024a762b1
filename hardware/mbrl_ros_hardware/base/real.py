"""real_base: the bridge between the stack and a differential-drive base's vendor driver.

- ``hw/command`` (mbrl_interfaces/CommandVector ``[linear_x, angular_z]``, as
  sim_base takes it) -> geometry_msgs/Twist on ``cmd_vel_topic`` (``/cmd_vel``),
  clipped to ``max_speed`` and ``max_yaw_rate``;
- ``odom_topic`` (``/odom``, nav_msgs/Odometry) -> ``hw/odom``, unchanged but
  for optional frame names; the estimator does the checking;
- the config's ``obstacles`` -> ``obstacles`` (MarkerArray, latched), the
  controller's obstacle cost, as sim_base publishes them.

The same safety rules as the car's bridge: the twist stream is kept up at
``rate_hz`` (vendor twist muxes time out otherwise); when no command came for
``command_timeout`` seconds (controller dead, deactivated, network gone) the
twist is zero, and the base's own acceleration limits brake it, until commands
come back; each such stop is counted and logged. Everything runs on the wall
clock: this is a real robot.
"""

from __future__ import annotations

import math
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from visualization_msgs.msg import MarkerArray

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.robots.base import ROBOT
from mbrl_ros.robots.base.messages import obstacle_markers, obstacle_rows
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, LATCHED, SENSOR
from mbrl_ros.ros.run import run_node

PARAMS = [
    Param("cmd_vel_topic", "/cmd_vel", "the vendor driver's Twist input", read_only=True),
    Param("odom_topic", "/odom", "the vendor driver's Odometry output, relayed to hw/odom", read_only=True),
    Param("max_speed", 0.8, "largest |linear.x| sent (m/s)", (0.01, 20.0)),
    Param("max_yaw_rate", 2.0, "largest |angular.z| sent (rad/s)", (0.01, 50.0)),
    Param("command_timeout", 0.5, "wall seconds without hw/command after which the twist is zero", (0.01, 60.0)),
    Param("rate_hz", 20.0, "rate of the twist stream to the vendor driver", (1.0, 1000.0)),
    Param("frame_id", "", "frame of the relayed odometry ('' keeps the vendor's)"),
    Param("child_frame_id", "", "child frame of the relayed odometry ('' keeps the vendor's)"),
    Param("obstacles", Parameter.Type.DOUBLE_ARRAY, "circular obstacles: x, y, radius (m) of each, flat (the task "
          "file's '/**' value), published on 'obstacles' in obstacles_frame_id", read_only=True),
    Param("obstacles_frame_id", "odom", "frame of the obstacles' coordinates", read_only=True),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]
STOP = (0.0, 0.0)


class RealBaseNode(Node):
    def __init__(self) -> None:
        super().__init__("real_base")
        self.p = declare_all(self, PARAMS)
        self.twist = STOP  # (linear.x, angular.z) to send while commands come
        self.last_command = -float("inf")  # time.monotonic() of the last accepted command
        self.stopped = True  # by the watchdog (or not started yet)
        self.counts = {"commands": 0, "rejected_commands": 0, "twists": 0, "odom_relayed": 0, "watchdog_stops": 0}
        self.last_rejection = ""
        self.last_odom = -float("inf")
        self.twist_pub = self.create_publisher(Twist, self.p["cmd_vel_topic"], COMMAND)
        self.odom_pub = self.create_publisher(Odometry, "hw/odom", SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        circles = obstacle_rows(self.p["obstacles"] or [], f"{self.get_fully_qualified_name()}: parameter")
        if len(circles):
            self.create_publisher(MarkerArray, "obstacles", LATCHED).publish(
                obstacle_markers(circles, self.get_clock().now().to_msg(), self.p["obstacles_frame_id"]))
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        self.create_subscription(Odometry, self.p["odom_topic"], self.on_odom, SENSOR)
        self.create_timer(1.0 / self.p["rate_hz"], self.on_timer)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    def on_command(self, msg: CommandVector) -> None:
        names = list(msg.names) or list(ROBOT.action_names)
        values = dict(zip(names, msg.values))
        if sorted(names) != sorted(ROBOT.action_names) or len(msg.values) != 2 \
                or not all(math.isfinite(v) for v in msg.values):
            # A bad command is not a command: the watchdog stops the base if no good one follows.
            self.counts["rejected_commands"] += 1
            self.last_rejection = (f"hw/command: expected finite values for {list(ROBOT.action_names)}, got names "
                                   f"{names} values {list(msg.values)}")
            self.get_logger().warning(f"rejected {self.last_rejection}", throttle_duration_sec=5.0)
            return
        speed, yaw_rate = self.p["max_speed"], self.p["max_yaw_rate"]
        self.twist = (min(speed, max(-speed, values["linear_x"])), min(yaw_rate, max(-yaw_rate, values["angular_z"])))
        self.counts["commands"] += 1
        self.last_command = time.monotonic()
        if self.stopped:
            self.get_logger().info("commands resumed")
            self.stopped = False
        self.publish_twist(self.twist)

    def on_timer(self) -> None:
        if not self.stopped and time.monotonic() - self.last_command > self.p["command_timeout"]:
            self.stopped = True
            self.counts["watchdog_stops"] += 1
            self.get_logger().warning(f"no hw/command for {self.p['command_timeout']} s: zero twist")
        self.publish_twist(STOP if self.stopped else self.twist)

    def on_odom(self, msg: Odometry) -> None:
        if self.p["frame_id"]:
            msg.header.frame_id = self.p["frame_id"]
        if self.p["child_frame_id"]:
            msg.child_frame_id = self.p["child_frame_id"]
        self.last_odom = time.monotonic()
        self.counts["odom_relayed"] += 1
        self.odom_pub.publish(msg)

    def publish_twist(self, twist: tuple[float, float]) -> None:
        msg = Twist()
        msg.linear.x, msg.angular.z = float(twist[0]), float(twist[1])
        self.twist_pub.publish(msg)
        self.counts["twists"] += 1

    def publish_diagnostics(self) -> None:
        values = {k: str(v) for k, v in self.counts.items()}
        now = time.monotonic()
        sent = STOP if self.stopped else self.twist
        values.update({"stopped_by_watchdog": str(self.stopped), "linear_x_command": f"{sent[0]:.3f}",
                       "angular_z_command": f"{sent[1]:.3f}", "odom_age_s": f"{now - self.last_odom:.3f}",
                       "last_rejection": self.last_rejection})
        level, message = DiagnosticStatus.OK, "driving"
        if self.stopped:
            level, message = DiagnosticStatus.WARN, "stopped: no hw/command"
        if now - self.last_odom > 1.0:
            level, message = DiagnosticStatus.WARN, f"no odometry on {self.p['odom_topic']} for over 1 s"
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values, level, message))


def main(args: list[str] | None = None) -> int:
    return run_node(RealBaseNode, "real_base", args)


if __name__ == "__main__":
    sys.exit(main())
