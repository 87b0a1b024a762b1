"""real_base: the bridge between the stack and a differential-drive base's vendor driver.

- ``hw/command`` (mbrl_interfaces/CommandVector ``[linear_x, angular_z]``, as
  sim_base takes it) -> geometry_msgs/Twist on ``cmd_vel_topic`` (``/cmd_vel``),
  clipped to ``max_speed`` and ``max_yaw_rate``;
- ``odom_topic`` (``/odom``, nav_msgs/Odometry) -> ``hw/odom``;
- the config's ``obstacles`` -> ``obstacles`` (MarkerArray, latched), the
  controller's obstacle cost, as sim_base publishes them.

The same safety rules as the car's bridge (``mbrl_ros_hardware.vendor_bridge``):
the twist stream kept up at ``rate_hz``; the controller's stop (its twist
ramped down within the base's acceleration limits) passed on; and when commands
stop for ``command_timeout`` seconds a zero twist, which the base's own
acceleration limits turn into braking, until commands come back.
"""

from __future__ import annotations

import math
import sys

from geometry_msgs.msg import Twist
from rclpy.parameter import Parameter
from visualization_msgs.msg import MarkerArray

from mbrl_ros.robots.base import ROBOT
from mbrl_ros.robots.base.messages import obstacle_markers, obstacle_rows
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.qos import COMMAND, LATCHED
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.vendor_bridge import VendorBridgeNode

PARAMS = [
    Param("cmd_vel_topic", "/cmd_vel", "the vendor driver's Twist input", read_only=True),
    Param("max_speed", 0.8, "largest |linear.x| sent (m/s)", (0.01, 20.0)),
    Param("max_yaw_rate", 2.0, "largest |angular.z| sent (rad/s)", (0.01, 50.0)),
    Param("command_timeout", 0.5, "wall seconds without hw/command after which the twist is zero", (0.01, 60.0)),
    Param("rate_hz", 20.0, "rate of the twist stream to the vendor driver", (1.0, 1000.0)),
    Param("obstacles", Parameter.Type.DOUBLE_ARRAY, "circular obstacles: x, y, radius (m) of each, flat (the task "
          "file's '/**' value), published on 'obstacles' in obstacles_frame_id", read_only=True),
    Param("obstacles_frame_id", "odom", "frame of the obstacles' coordinates", read_only=True),
]


class RealBaseNode(VendorBridgeNode):
    def __init__(self) -> None:
        super().__init__("real_base", PARAMS, ROBOT.action_names)
        self.twist_pub = self.create_publisher(Twist, self.p["cmd_vel_topic"], COMMAND)
        circles = obstacle_rows(self.p["obstacles"] or [], f"{self.get_fully_qualified_name()}: parameter")
        if len(circles):
            self.create_publisher(MarkerArray, "obstacles", LATCHED).publish(
                obstacle_markers(circles, self.get_clock().now().to_msg(), self.p["obstacles_frame_id"]))
        self.start()

    def command(self, values: dict[str, float], elapsed: float | None) -> tuple[float, float]:
        linear, angular = values["linear_x"], values["angular_z"]
        if not (math.isfinite(linear) and math.isfinite(angular)):
            raise ValueError(f"non-finite twist [linear_x {linear}, angular_z {angular}]")
        speed, yaw_rate = self.p["max_speed"], self.p["max_yaw_rate"]
        return min(speed, max(-speed, linear)), min(yaw_rate, max(-yaw_rate, angular))

    def stop(self) -> tuple[float, float]:
        return 0.0, 0.0

    def stop_command(self, values: dict[str, float]) -> tuple[float, float]:
        """The controller's stop is a twist already ramped within the base's limits: sent as it is."""
        return self.command(values, None)

    def publish(self, twist: tuple[float, float]) -> None:
        msg = Twist()
        msg.linear.x, msg.angular.z = float(twist[0]), float(twist[1])
        self.twist_pub.publish(msg)

    def report(self, twist: tuple[float, float]) -> dict[str, str]:
        return {"linear_x_command": f"{twist[0]:.3f}", "angular_z_command": f"{twist[1]:.3f}"}


def main(args: list[str] | None = None) -> int:
    return run_node(RealBaseNode, "real_base", args)


if __name__ == "__main__":
    sys.exit(main())
