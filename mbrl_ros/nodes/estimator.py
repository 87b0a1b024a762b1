"""estimator: the robot's sensor messages -> state (mbrl_interfaces/StateVector).

A thin adapter around the robot plug-in's estimator core (``robot`` parameter:
``mbrl_ros.robots.<robot>``): the plug-in's ``sensor_inputs`` name the topics
(the car: ``hw/odom`` and ``hw/command``; the hand: ``hw/joint_states`` and
``hw/fingertips``) and feed each message to the core; this node publishes each
accepted estimate stamped with the sensor's stamp (the controller copies that
stamp into the command that answers it). Rejected input (non-finite, out of
order, duplicate) gives no state, only a throttled warning and a count in
/diagnostics; a consumer sees the stream stop and falls back on its own
watchdog. The one exception is an identical re-send of the last sample (the
lockstep simulator re-publishes an unanswered state): the same state is re-sent,
so a state lost between here and the controller cannot stall the loop.
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from mbrl_interfaces.msg import StateVector
from mbrl_ros.core.estimation import Rejection, StateEstimate
from mbrl_ros.robots import available_robots, get_robot
from mbrl_ros.ros.diagnostics import LoopStats, diagnostic_array
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros.ros.stamps import ns_to_stamp

PARAMS = [
    Param("robot", "car", f"the robot plug-in (mbrl_ros.robots.<robot>: {', '.join(available_robots())}): its "
          "sensor topics and estimator", read_only=True),
    Param("dt", 0.2, "control period (s) (the '/**' section's); a steering lag up to it is instant, as in the model",
          (0.001, 10.0)),
    Param("resync_after", 10, "consecutive out-of-order stamps after which the time line is taken as restarted "
          "(a restarted simulator, a replayed bag); 0: never", (0, 1_000_000)),
    Param("wait_for_command", False, "lockstep simulation (launch/robot.launch.yaml sets it there): the simulator "
          "steps only on the command answering a state; an estimator whose state holds that command (the car's "
          "steering) holds a sample that comes first until the command comes (CarStateEstimator), so the state "
          "is never one command stale; the other robots' states hold no command", read_only=True),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
    Param("log_throttle", 5.0, "wall seconds between repeated warnings about rejected input", (0.0, 3600.0)),
]


class EstimatorNode(Node):
    def __init__(self) -> None:
        super().__init__("estimator")
        self.p = declare_all(self, PARAMS)
        source = self.get_fully_qualified_name()
        robot = get_robot(self.p["robot"], f"{source}: parameter 'robot'")
        messages = robot.messages()
        self.p.update(declare_all(self, [
            Param("state_names", list(robot.state_names), "names of the state entries; must be what this "
                  "robot's estimator produces", read_only=True),
            Param("action_names", list(robot.action_names), "names of hw/command's entries, used when a command "
                  "carries none", read_only=True),
            *messages.estimator_parameters,
        ]))
        self.core = robot.estimator(self.p, source)
        self.state_names = list(self.p["state_names"])
        self.stats = LoopStats()  # latency: sensor stamp -> state published, on the node's clock
        self.processing = LoopStats()  # wall time spent in the sensor callback
        self.faults_reported = 0
        self.state_pub = self.create_publisher(StateVector, "state", SENSOR)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Diagnostics on the wall clock: under sim time they go on when the simulation stalls.
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.frame_id = ""  # of the last measurement: the frame of the states published
        for sensor in messages.sensor_inputs(self.core, list(self.p["action_names"])):
            self.create_subscription(sensor.message_type, sensor.topic,
                                     lambda msg, sensor=sensor: self.on_sensor(sensor, msg), sensor.qos)

    # --- inputs ------------------------------------------------------------------------------
    def on_sensor(self, sensor, msg) -> None:
        started = time.perf_counter()
        if sensor.measures:
            self.frame_id = msg.header.frame_id
        out = sensor.read(msg)
        for one in out if isinstance(out, list) else [out]:
            self.on_estimate(one, self.frame_id, started)

    def on_estimate(self, out: StateEstimate | Rejection | None, frame_id: str, started: float) -> None:
        """A sensor message's outcome: an estimate to publish, a rejection, or None (nothing yet)."""
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
            **{name: str(count) for name, count in self.core.counters().items()},
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
