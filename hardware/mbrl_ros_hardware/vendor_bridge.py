"""What a real robot's bridge to a mobile vendor driver shares: the command watchdog, the odometry relay.

A bridge (``real_car``, ``real_base``) subclasses ``VendorBridgeNode`` and says how
a ``hw/command`` (mbrl_interfaces/CommandVector, the stack's action by name)
becomes the vendor's command (``command``), what stops the robot (``stop``), how
a command is published (``publish``) and what of it to report (``report``). The
base does the rest, the same way for every robot:

- the vendor's command stream is kept up at ``rate_hz`` (vendor-side muxes time
  out otherwise), re-sending the last command;
- watchdog: when no good command came for ``command_timeout`` wall seconds
  (controller dead, deactivated, network gone) the robot gets its stop until
  commands come back; each such stop is counted and logged; a bad command is not
  a command (counted, its reason reported); a command marked as the controller's
  stop (``mbrl_ros.ros.commands``) becomes ``stop_command`` (default: ``stop``);
- ``odom_topic`` (nav_msgs/Odometry) is relayed to ``hw/odom`` unchanged but for
  optional frame names (the estimator does the checking);
- /diagnostics: the counts, whether the watchdog holds the stop, the age of the
  last odometry, the last rejection, and the command in effect.

Everything runs on the wall clock: this is a real robot.
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry
from rclpy.node import Node

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.ros.commands import is_stop
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, SENSOR

BRIDGE_PARAMS = [
    Param("odom_topic", "/odom", "the vendor driver's Odometry output, relayed to hw/odom", read_only=True),
    Param("frame_id", "", "frame of the relayed odometry ('' keeps the vendor's)"),
    Param("child_frame_id", "", "child frame of the relayed odometry ('' keeps the vendor's)"),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
]


class VendorBridgeNode(Node):
    """Base of the real drivers' bridges; see the module docstring. ``params`` are the robot's own, with
    ``command_timeout`` and ``rate_hz`` among them (their defaults and descriptions are the robot's)."""

    def __init__(self, name: str, params: list[Param], action_names: tuple[str, ...]) -> None:
        super().__init__(name)
        self.p = declare_all(self, [*params, *BRIDGE_PARAMS])
        self.action_names = tuple(action_names)
        self.last_command = -float("inf")  # time.monotonic() of the last accepted command
        self.stopped = True  # by the watchdog (or not started yet)
        self.counts = {"commands": 0, "rejected_commands": 0, "sent": 0, "odom_relayed": 0, "watchdog_stops": 0}
        self.last_rejection = ""
        self.last_odom = -float("inf")
        self.odom_pub = self.create_publisher(Odometry, "hw/odom", SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def start(self) -> None:
        """Called by the subclass once its own state and publishers exist."""
        self.current = self.stop()
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        self.create_subscription(Odometry, self.p["odom_topic"], self.on_odom, SENSOR)
        self.create_timer(1.0 / self.p["rate_hz"], self.on_timer)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)

    # --- what a bridge provides ------------------------------------------
    def command(self, values: dict[str, float], elapsed: float | None) -> Any:
        """The vendor command for the action ``values`` (by name); ``elapsed``: wall seconds since the last
        accepted command (None after a stop). ValueError (with what is wrong) for a command to refuse."""
        raise NotImplementedError

    def stop(self) -> Any:
        """The vendor command that stops the robot."""
        raise NotImplementedError

    def stop_command(self, values: dict[str, float]) -> Any:
        """The vendor command for a ``hw/command`` marked as the controller's stop (``mbrl_ros.ros.commands``),
        whose ``values`` are the robot's stop in the action space. Default: ``stop()``."""
        return self.stop()

    def publish(self, command: Any) -> None:
        raise NotImplementedError

    def report(self, command: Any) -> dict[str, str]:
        """The command in effect, for /diagnostics."""
        return {}

    def on_measured(self, msg: Odometry) -> None:
        """Called with every relayed odometry message (a bridge that needs the measured speed keeps it)."""

    # --- the shared behaviour ----------------------------------------------
    def on_command(self, msg: CommandVector) -> None:
        names = list(msg.names) or list(self.action_names)
        try:
            if sorted(names) != sorted(self.action_names) or len(msg.values) != len(names):
                raise ValueError(f"expected values for {list(self.action_names)}, got names {names} values "
                                 f"{list(msg.values)}")
            values = dict(zip(names, msg.values))
            if is_stop(msg):
                self.current = self.stop_command(values)
            else:
                elapsed = None if self.stopped else time.monotonic() - self.last_command
                self.current = self.command(values, elapsed)
        except ValueError as err:
            # A bad command is not a command: the watchdog stops the robot if no good one follows.
            self.counts["rejected_commands"] += 1
            self.last_rejection = f"hw/command: {err}"
            self.get_logger().warning(f"rejected {self.last_rejection}", throttle_duration_sec=5.0)
            return
        self.counts["commands"] += 1
        self.last_command = time.monotonic()
        if self.stopped:
            self.get_logger().info("commands resumed")
            self.stopped = False
        self.send(self.current)

    def on_timer(self) -> None:
        if not self.stopped and time.monotonic() - self.last_command > self.p["command_timeout"]:
            self.stopped = True
            self.counts["watchdog_stops"] += 1
            self.get_logger().warning(f"no hw/command for {self.p['command_timeout']} s: stopping")
        self.send(self.stop() if self.stopped else self.current)

    def send(self, command: Any) -> None:
        self.publish(command)
        self.counts["sent"] += 1

    def on_odom(self, msg: Odometry) -> None:
        if self.p["frame_id"]:
            msg.header.frame_id = self.p["frame_id"]
        if self.p["child_frame_id"]:
            msg.child_frame_id = self.p["child_frame_id"]
        self.on_measured(msg)
        self.last_odom = time.monotonic()
        self.counts["odom_relayed"] += 1
        self.odom_pub.publish(msg)

    def publish_diagnostics(self) -> None:
        values = {k: str(v) for k, v in self.counts.items()}
        now = time.monotonic()
        values.update({"stopped_by_watchdog": str(self.stopped), "odom_age_s": f"{now - self.last_odom:.3f}",
                       "last_rejection": self.last_rejection,
                       **self.report(self.stop() if self.stopped else self.current)})
        level, message = DiagnosticStatus.OK, "driving"
        if self.stopped:
            level, message = DiagnosticStatus.WARN, "stopped: no hw/command"
        if now - self.last_odom > 1.0:
            level, message = DiagnosticStatus.WARN, f"no odometry on {self.p['odom_topic']} for over 1 s"
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values, level, message))
