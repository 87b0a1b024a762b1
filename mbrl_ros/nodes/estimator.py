"""estimator: hw/odom (nav_msgs/Odometry) + hw/command -> state (mbrl_interfaces/StateVector).

(``robot: hand``: hw/joint_states (sensor_msgs/JointState) + hw/fingertips
(geometry_msgs/PoseArray) of one stamp -> state, via ``HandStateEstimator``;
everything else below holds for both.)

A thin adapter around ``mbrl_ros.core.estimation.CarStateEstimator``: it takes
the fields out of the messages, and publishes each accepted estimate stamped
with the odometry's stamp (the controller copies that stamp into the command
that answers it). Rejected odometry (non-finite, out of order, duplicate) gives
no state, only a throttled warning and a count in /diagnostics; a consumer sees
the stream stop and falls back on its own watchdog. The one exception is an
identical re-send of the last odometry (the lockstep simulator re-publishes an
unanswered state): the same state is re-sent, so a state lost between here and
the controller cannot stall the loop.
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState

from mbrl_interfaces.msg import CommandVector, StateVector
from mbrl_ros.core.estimation import (STATE_NAMES, STEER_COMMAND, CarStateEstimator, EstimatorConfig, HandStateEstimator,
                                      Rejection, StateEstimate)
from mbrl_ros.ros.diagnostics import LoopStats, diagnostic_array
from mbrl_ros.ros.run import run_node
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, SENSOR
from mbrl_ros.ros.stamps import ns_to_stamp, stamp_to_ns

PARAMS = [
    Param("robot", "car", "'car': state from hw/odom and hw/command; 'hand': from hw/joint_states and hw/fingertips",
          read_only=True),
    Param("steer_gain", 0.7853981633974483, "steering angle (rad) per unit u_steer command", (0.0, 10.0)),
    Param("steer_lag", 0.0, "first-order time constant (s) of the steering actuator; <= dt means instant", (0.0, 10.0)),
    Param("steer_rate_limit", 0.0, "largest steering rate (rad/s) of the actuator; 0: no limit", (0.0, 100.0)),
    Param("dt", 0.2, "control period (s); a steer_lag up to it is treated as instant, as the model does", (0.001, 10.0)),
    Param("speed_filter_alpha", 1.0, "weight of the newest speed sample in a low-pass (1.0: no filter)", (0.001, 1.0)),
    Param("resync_after", 10, "consecutive out-of-order odometry stamps after which the time line is taken as "
          "restarted (a restarted simulator, a replayed bag); 0: never", (0, 1_000_000)),
    Param("state_names", list(STATE_NAMES), "names of the state entries; must be what this estimator produces",
          read_only=True),
    Param("action_names", ["u_accel", "u_steer"], "names of hw/command's entries, used when a command carries none",
          read_only=True),
    Param("joint_names", [""], "hand: the joints of the state, in state order (names in hw/joint_states)",
          read_only=True),
    Param("fingertips", 5, "hand: fingertip positions in hw/fingertips (0: joints only)", (0, 100), read_only=True),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
    Param("log_throttle", 5.0, "wall seconds between repeated warnings about rejected input", (0.0, 3600.0)),
]


class EstimatorNode(Node):
    def __init__(self) -> None:
        super().__init__("estimator")
        self.p = declare_all(self, PARAMS)
        self.stats = LoopStats()  # latency: sensor stamp -> state published, on the node's clock
        self.processing = LoopStats()  # wall time spent in the sensor callback
        self.faults_reported = 0
        self.state_pub = self.create_publisher(StateVector, "state", SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Diagnostics on the wall clock: under sim time they go on when the simulation stalls.
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        if self.p["robot"] == "hand":
            self.setup_hand()
        elif self.p["robot"] == "car":
            self.setup_car()
        else:
            raise ValueError(f"{self.get_fully_qualified_name()}: parameter 'robot' must be 'car' or 'hand', "
                             f"got {self.p['robot']!r}")

    def setup_car(self) -> None:
        source = f"{self.get_fully_qualified_name()}: parameter"
        if list(self.p["state_names"]) != list(STATE_NAMES):
            raise ValueError(f"{source} 'state_names' is {list(self.p['state_names'])}, but the car's estimator "
                             f"produces {list(STATE_NAMES)}")
        if STEER_COMMAND not in self.p["action_names"]:
            raise ValueError(f"{source} 'action_names' {list(self.p['action_names'])} has no '{STEER_COMMAND}'")
        config = EstimatorConfig.from_dict(
            {k: self.p[k] for k in ("steer_gain", "steer_lag", "steer_rate_limit", "dt", "speed_filter_alpha",
                                     "resync_after")},
            source=self.get_fully_qualified_name(),
        )
        self.core = CarStateEstimator(config)
        self.state_names = list(STATE_NAMES)
        # Commands first: when both are waiting, the executor takes them in creation order, and a
        # command received before an odometry was (nearly always) sent before it was measured.
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        self.create_subscription(Odometry, "hw/odom", self.on_odom, SENSOR)

    def setup_hand(self) -> None:
        joints = [n for n in self.p["joint_names"] if n]
        self.core = HandStateEstimator(joints, self.p["fingertips"], self.p["resync_after"])
        self.state_names = list(self.p["state_names"])
        if len(self.state_names) != self.core.state_dim:
            raise ValueError(f"{self.get_fully_qualified_name()}: parameter 'state_names' has "
                             f"{len(self.state_names)} names, but {len(joints)} joints (positions, velocities) and "
                             f"{self.p['fingertips']} fingertips make {self.core.state_dim}")
        self.create_subscription(JointState, "hw/joint_states", self.on_joint_states, SENSOR)
        self.create_subscription(PoseArray, "hw/fingertips", self.on_fingertips, SENSOR)

    # --- inputs ------------------------------------------------------------------------------
    def on_command(self, msg: CommandVector) -> None:
        names = list(msg.names) or list(self.p["action_names"])
        if STEER_COMMAND not in names or len(names) != len(msg.values):
            self.reject(f"hw/command: no '{STEER_COMMAND}' in names {names} with values {list(msg.values)}")
            return
        rejection = self.core.command(stamp_to_ns(msg.header.stamp), msg.values[names.index(STEER_COMMAND)])
        if rejection is not None:
            self.reject(rejection.reason)

    def on_odom(self, msg: Odometry) -> None:
        started = time.perf_counter()
        pose, q = msg.pose.pose.position, msg.pose.pose.orientation
        out = self.core.update(stamp_to_ns(msg.header.stamp), pose.x, pose.y, (q.x, q.y, q.z, q.w),
                               msg.twist.twist.linear.x)
        self.on_estimate(out, msg.header.frame_id, started)

    def on_joint_states(self, msg: JointState) -> None:
        started = time.perf_counter()
        self.on_estimate(self.core.joints(stamp_to_ns(msg.header.stamp), msg.name, msg.position, msg.velocity),
                    msg.header.frame_id, started)

    def on_fingertips(self, msg: PoseArray) -> None:
        started = time.perf_counter()
        points = [(p.position.x, p.position.y, p.position.z) for p in msg.poses]
        self.on_estimate(self.core.fingertip_positions(stamp_to_ns(msg.header.stamp), points), msg.header.frame_id,
                    started)

    def on_estimate(self, out, frame_id: str, started: float) -> None:
        """A sensor callback's outcome: an estimate to publish, a rejection, or None (half a stamp)."""
        if out is None:
            return
        if isinstance(out, Rejection):
            if out.repeat_of is not None:
                # Not a fault (counted as "repeats", not as rejected input): pass the re-send on.
                self.publish(out.repeat_of, frame_id)
            else:
                self.reject(out.reason)
            return
        self.publish(out, frame_id)
        self.stats.record((self.get_clock().now().nanoseconds - out.stamp_ns) * 1e-6)
        self.processing.record((time.perf_counter() - started) * 1e3)

    # --- outputs ---------------------------------------------------------------------------
    def publish(self, estimate: StateEstimate, frame_id: str) -> None:
        msg = StateVector()
        msg.header.stamp = ns_to_stamp(estimate.stamp_ns)
        msg.header.frame_id = frame_id
        msg.names = self.state_names
        msg.values = [float(v) for v in estimate.values]
        msg.valid = True
        msg.reason = ""
        self.state_pub.publish(msg)

    def reject(self, reason: str) -> None:
        self.stats.reject(reason)
        self.warn(reason)

    def warn(self, reason: str) -> None:
        # Bad input tends to come in bursts (a broken sensor): say it, but not 50 times a second.
        self.get_logger().warning(f"rejected: {reason}", throttle_duration_sec=self.p["log_throttle"])

    def publish_diagnostics(self) -> None:
        values = self.stats.as_key_values()
        p50, p99 = self.processing.percentiles()
        values.update({
            "processing_p50_ms": f"{p50:.3f}",
            "processing_p99_ms": f"{p99:.3f}",
            "accepted": str(self.core.accepted),
            "repeats": str(self.core.repeats),
            "resyncs": str(self.core.resyncs),
        })
        level, message = DiagnosticStatus.OK, "ok"
        if self.stats.rejected > self.faults_reported:
            level = DiagnosticStatus.WARN
            message = f"{self.stats.rejected - self.faults_reported} input(s) rejected; last: {self.stats.last_rejection}"
        self.faults_reported = self.stats.rejected
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values, level, message))


def main(args: list[str] | None = None) -> int:
    return run_node(EstimatorNode, "estimator", args)


if __name__ == "__main__":
    sys.exit(main())
