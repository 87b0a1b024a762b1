"""data_logger: records the stack's raw topics to a sequence of rosbag2 directories.

Messages are taken as they arrive on the wire (rclpy's raw, serialised
subscriptions) and written as they are, with their receive time on the node's
clock (sim time under ``use_sim_time``), through ``mbrl_ros.io.recording.BagSequence``:
``<output_dir>/<prefix>_<NNNN>/``, each bag closed after ``split_duration``
seconds of that clock (or ``split_size`` MB of messages) so the trainer can read
closed bags while logging goes on, and whenever ``~/split`` (std_srvs/Trigger) is called: a held lockstep
simulation stops the clock, and the demo closes the bag of the episode it wants the trainer to learn from
(``mbrl_ros.demo.run``). The open bag is closed on shutdown (SIGINT, SIGTERM).

Crash safety: every ``flush_period`` wall seconds what was written is flushed
(MCAP: a closed chunk in the file; sqlite3: a committed transaction), so a
SIGKILL or a crash loses at most the messages of the last period; wall time,
not ROS time, because that is what a crash is measured in (sim time may stall
or race). ``mbrl-ros bag repair`` turns the killed bag into a complete one.

Each topic is subscribed with the QoS its publisher offers (sensor streams best
effort, commands reliable, goal and episodes transient-local), so the logger
matches every publisher and gets the latched messages sent before it started;
its queues are deeper than the publishers' so a slow disk write does not drop
messages. The stack's topics have their type and QoS in ``STACK_TOPICS``; any
other topic in ``topics`` is looked up in the ROS graph until a publisher shows
up, and subscribed with the QoS its publishers offer.

What it records is on ``~/recording`` (``<namespace>/data_logger/recording``, a latched DiagnosticArray,
re-sent whenever it changes): per topic the publishers its subscription has matched and whether a message
has arrived; level OK once every topic has a matched publisher. A lockstep simulator holds its steps until
then and until the logger has its command (``mbrl_ros_hardware.sim_driver``): it steps as soon as a command
arrives, and under load it once drove all of its exploration in under a second, before this logger had
matched ``hw/command``, so nothing of it was recorded and every training round failed.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from mbrl_ros.io.bags import STORAGES, BagError
from mbrl_ros.io.recording import BagSequence, bag_qos
from mbrl_ros.ros.diagnostics import LoopStats, diagnostic_array
from mbrl_ros.ros.run import run_node
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, EPISODE_REPORTS, LATCHED, SENSOR

# The stack's topics (relative to the robot namespace): type and the publisher's QoS.
STACK_TOPICS: dict[str, tuple[str, QoSProfile]] = {
    "hw/odom": ("nav_msgs/msg/Odometry", SENSOR),
    "hw/joint_states": ("sensor_msgs/msg/JointState", SENSOR),
    "hw/command": ("mbrl_interfaces/msg/CommandVector", COMMAND),
    "state": ("mbrl_interfaces/msg/StateVector", SENSOR),
    "goal_pose": ("geometry_msgs/msg/PoseStamped", LATCHED),
    "reference_path": ("nav_msgs/msg/Path", LATCHED),
    "sim/episodes": ("diagnostic_msgs/msg/DiagnosticArray", EPISODE_REPORTS),
    "dynamics/model": ("mbrl_interfaces/msg/ModelUpdate", LATCHED),
}

PARAMS = [
    Param("topics", ["hw/odom", "hw/command", "state", "goal_pose", "sim/episodes"],
          "topics to record; relative names are resolved in the node's namespace", read_only=True),
    Param("output_dir", "bags", "folder of the bags, created if missing", read_only=True),
    Param("prefix", "bag", "bag directory names: <output_dir>/<prefix>_<NNNN>", read_only=True),
    Param("storage", "mcap", "rosbag2 storage: mcap | sqlite3", read_only=True),
    Param("split_duration", 60.0, "seconds of ROS time (sim time under use_sim_time) after which a bag is closed "
          "and the next one starts", (0.01, 86400.0), read_only=True),
    Param("split_size", 0.0, "MB of serialised messages after which a bag is closed and the next one starts; "
          "0: split by duration only", (0.0, 1e6), read_only=True),
    Param("flush_period", 0.5, "wall seconds between flushes of the open bag (a SIGKILL loses at most this much "
          "of the recording)", (0.01, 10.0), read_only=True),
    Param("repeat_latched", True, "write the last message of each transient-local topic at the start of every "
          "bag, so each bag holds its goal", read_only=True),
    Param("queue_depth", 100, "subscription queue depth (publishers' QoS policies, deeper history)", (1, 100_000),
          read_only=True),
    Param("discovery_period", 1.0, "wall seconds between looks for the types of topics not yet known",
          (0.05, 60.0), read_only=True),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.05, 60.0)),
    Param("niceness", 0, "added to the process's nice value at start (os.nice): > 0, the recorder, which wakes on "
          "the same messages as the estimator and the controller, yields a core to them when they compete; its "
          "queue (queue_depth) holds what arrives meanwhile, and a lockstep simulation that outruns it for "
          "longer drops the oldest (the trainer runs at 10)", (0, 19), read_only=True),
    Param("recording_period", 0.1, "wall seconds between looks at the subscriptions' matched publishers for "
          "~/recording (what a lockstep simulator waits for)", (0.01, 10.0), read_only=True),
]

RECORDING_TOPIC = "~/recording"  # what the logger records: publishers matched and messages received, per topic


class DataLoggerNode(Node):
    def __init__(self) -> None:
        super().__init__("data_logger")
        self.p = declare_all(self, PARAMS)
        os.nice(self.p["niceness"])
        if self.p["storage"] not in STORAGES:
            raise ValueError(f"{self.get_fully_qualified_name()}: parameter 'storage' must be one of "
                             f"{sorted(STORAGES)}, got {self.p['storage']!r}")
        self.bags = BagSequence(
            self.p["output_dir"], prefix=self.p["prefix"], storage=self.p["storage"],
            split_duration_ns=int(self.p["split_duration"] * 1e9),
            split_size_bytes=int(self.p["split_size"] * 1e6) or None, repeat_latched=self.p["repeat_latched"],
        )
        self.stats = LoopStats()  # per written message: wall ms spent writing it
        self.flushed = 0  # messages flushed to disk (safe from a crash), over all bags
        self.subscriptions_by_topic: dict[str, object] = {}
        self.pending: list[str] = []  # resolved names whose type is not known yet
        stack = {self.resolve_topic_name(name): entry for name, entry in STACK_TOPICS.items()}
        for name in self.p["topics"]:
            topic = self.resolve_topic_name(name)
            if topic in self.subscriptions_by_topic or topic in self.pending:
                continue
            if topic in stack:
                msgtype, qos = stack[topic]
                self.record(topic, msgtype, qos)
            else:
                self.pending.append(topic)
        self.get_logger().info(
            f"recording {sorted(self.subscriptions_by_topic)} to {self.bags.output_dir}/{self.p['prefix']}_NNNN "
            f"({self.p['storage']}, split every {self.p['split_duration']} s"
            + (f" or {self.p['split_size']} MB" if self.p["split_size"] else "")
            + f", flushed every {self.p['flush_period']} s)"
            + (f"; waiting for publishers of {self.pending}" if self.pending else "")
        )
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.recording_pub = self.create_publisher(DiagnosticArray, RECORDING_TOPIC, LATCHED)
        self.recording: tuple | None = None  # what ~/recording said last
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self.p["recording_period"], self.publish_recording, clock=wall)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics, clock=wall)
        self.create_timer(self.p["flush_period"], self.flush, clock=wall)
        if self.pending:
            self.discovery_timer = self.create_timer(self.p["discovery_period"], self.discover, clock=wall)
        # On the node's clock: a bag closes when its ROS time is up even if no message arrives.
        self.create_timer(min(1.0, self.p["split_duration"] / 4), self.on_tick)
        self.create_service(Trigger, "~/split", self.on_split)

    # --- subscriptions -------------------------------------------------------------------------
    def record(self, topic: str, msgtype: str, publisher_qos: QoSProfile) -> None:
        """Subscribe to ``topic`` (serialised) and add it to the bags."""
        package, _, name = msgtype.split("/")
        msg_class = getattr(importlib.import_module(f"{package}.msg"), name)
        self.bags.add_topic(
            topic, msgtype,
            bag_qos(reliable=publisher_qos.reliability == ReliabilityPolicy.RELIABLE,
                    transient_local=publisher_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL,
                    depth=publisher_qos.depth),
            latched=publisher_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL,
        )
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(publisher_qos.depth, self.p["queue_depth"]),
                         reliability=publisher_qos.reliability, durability=publisher_qos.durability)
        self.subscriptions_by_topic[topic] = self.create_subscription(
            msg_class, topic, lambda data, topic=topic: self.on_message(topic, data), qos, raw=True
        )

    def discover(self) -> None:
        """Subscribe to the pending topics whose publishers have appeared."""
        types = dict(self.get_topic_names_and_types())
        for topic in list(self.pending):
            publishers = self.get_publishers_info_by_topic(topic)
            if topic not in types or not publishers:
                continue
            self.pending.remove(topic)
            msgtype = types[topic][0]
            # The weakest policy any publisher offers, so the subscription matches them all.
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
            latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=max(1, max(p.qos_profile.depth for p in publishers)),
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
            )
            try:
                self.record(topic, msgtype, qos)
            except (BagError, ImportError, AttributeError) as error:
                self.get_logger().error(f"cannot record '{topic}' ({msgtype}): {error}")
                continue
            self.get_logger().info(f"recording '{topic}' ({msgtype})")
        if not self.pending:
            self.discovery_timer.cancel()

    # --- writing -------------------------------------------------------------------------------
    def on_message(self, topic: str, data: bytes) -> None:
        started = time.perf_counter()
        try:
            opened = self.bags.current_path
            self.bags.write(topic, self.get_clock().now().nanoseconds, data)
        except (BagError, OSError) as error:
            self.stats.reject(f"{topic}: {error}")
            self.get_logger().error(f"cannot write '{topic}': {error}", throttle_duration_sec=5.0)
            return
        if self.bags.current_path != opened:
            if opened is not None:
                self.get_logger().info(f"closed {opened}")
            self.get_logger().debug(f"recording to {self.bags.current_path}")
        self.stats.record((time.perf_counter() - started) * 1e3)

    def flush(self) -> None:
        try:
            self.flushed += self.bags.flush()
        except (BagError, OSError) as error:
            self.stats.reject(str(error))
            self.get_logger().error(str(error), throttle_duration_sec=5.0)

    def on_tick(self) -> None:
        self.close_bag(lambda: self.bags.tick(self.get_clock().now().nanoseconds))

    def on_split(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Close the open bag now (the next message opens the next one): what was recorded is the trainer's."""
        closed = self.close_bag(self.bags.close)
        response.success = closed is not None
        response.message = f"closed {closed}" if closed is not None else "no open bag"
        return response

    def close_bag(self, close) -> Path | None:
        """``close()`` (the bag sequence's tick or close): the closed bag's path, logged, or None."""
        try:
            closed = close()
        except (BagError, OSError) as error:
            self.stats.reject(str(error))
            self.get_logger().error(str(error), throttle_duration_sec=5.0)
            return None
        if closed is not None:
            self.get_logger().info(f"closed {closed}")
        return closed

    def close(self) -> None:
        closed = self.bags.close()
        if closed is None:
            return
        if self.context.ok():
            self.get_logger().info(f"closed {closed}")
        else:  # shut down by a signal: /rosout is gone, the console is still there
            print(f"[data_logger] closed {closed}", file=sys.stderr, flush=True)

    def publish_recording(self) -> None:
        """``~/recording``, when it changed: per topic its matched publishers and whether a message arrived;
        level OK once every topic has a matched publisher (the topics still waiting for a type have none)."""
        topics = {topic: (self.subscriptions_by_topic[topic].get_publisher_count(), self.bags.counts[topic] > 0)
                  for topic in sorted(self.subscriptions_by_topic)}
        topics.update({topic: (0, False) for topic in self.pending})
        recording = tuple(sorted(topics.items()))
        if recording == self.recording:
            return
        self.recording = recording
        unmatched = [topic for topic, (publishers, _) in recording if not publishers]
        values = {}
        for topic, (publishers, received) in recording:
            values[f"publishers {topic}"] = str(publishers)
            values[f"received {topic}"] = str(received)
        message = f"no publisher matched yet on {', '.join(unmatched)}" if unmatched else "recording every topic"
        self.recording_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values,
                                                    DiagnosticStatus.WARN if unmatched else DiagnosticStatus.OK,
                                                    message))

    def publish_diagnostics(self) -> None:
        values = self.stats.as_key_values()
        for topic in sorted(self.subscriptions_by_topic):
            values[f"written {topic}"] = str(self.bags.counts[topic])
            # Matched publishers: zero means nothing will be recorded (no publisher, or a QoS mismatch).
            values[f"publishers {topic}"] = str(self.subscriptions_by_topic[topic].get_publisher_count())
        values.update({
            "bags_closed": str(len(self.bags.closed_paths)),
            "messages_flushed": str(self.flushed),
            "current_bag": str(self.bags.current_path or ""),
            "waiting_for": ", ".join(self.pending),
        })
        level = DiagnosticStatus.WARN if self.stats.rejected else DiagnosticStatus.OK
        message = f"write errors: {self.stats.rejected}; last: {self.stats.last_rejection}" if self.stats.rejected else "ok"
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values, level, message))


def main(args: list[str] | None = None) -> int:
    return run_node(DataLoggerNode, "data_logger", args)


if __name__ == "__main__":
    sys.exit(main())
