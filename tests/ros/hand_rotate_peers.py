"""The other end of tests/ros/test_hand_rotate.py: a stand-in controller for sim_hand's rotate task in lockstep.

    python hand_rotate_peers.py

Answers each state the estimator publishes with the command ``action(k)`` of its step k (the stamp over the
0.04 s period), stamped with the state's stamp, until the first episode's report; records by stamp the block
odometry sim_hand publishes (hw/block), the states, the latched goal (goal_block_pose) and the reports
(sim/episodes).
Prints one JSON line prefixed ``result ``. Run with the environment of ``mbrl_ros.ros_env.workspace_env()``
(it imports mbrl_interfaces).
"""

from __future__ import annotations

import json
import math
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry

from mbrl_ros.ros.qos import COMMAND, LATCHED, SENSOR

DT_NS = 40_000_000


def action(step: int) -> list[float]:
    """The command of step ``step``: every actuator on its own slow sine, within [-1, 1]."""
    return [0.8 * math.sin(0.3 * step + j) for j in range(20)]


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def main() -> None:
    from mbrl_interfaces.msg import CommandVector, StateVector  # the workspace's: not importable by the tests

    node = rclpy.create_node("rotate_controller", namespace="/hand")
    odometry: dict[int, list[float]] = {}
    states: dict[int, list[float]] = {}
    goals: list[list[float]] = []
    reports: list[dict] = []
    command_pub = node.create_publisher(CommandVector, "hw/command", COMMAND)

    def on_odometry(msg: Odometry) -> None:
        p, q, t = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
        odometry[stamp_ns(msg)] = [p.x, p.y, p.z, q.w, q.x, q.y, q.z, t.linear.x, t.linear.y, t.linear.z,
                                   t.angular.x, t.angular.y, t.angular.z, msg.header.frame_id, msg.child_frame_id]

    def on_state(msg) -> None:
        stamp = stamp_ns(msg)
        states[stamp] = list(msg.values)
        command = CommandVector(values=action(stamp // DT_NS))
        command.header.stamp = msg.header.stamp
        command_pub.publish(command)

    def on_goal(msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        goals.append([p.x, p.y, p.z, q.w, q.x, q.y, q.z])

    def on_episode(msg: DiagnosticArray) -> None:
        reports.extend({kv.key: kv.value for kv in status.values} for status in msg.status)

    node.create_subscription(Odometry, "hw/block", on_odometry, SENSOR)
    node.create_subscription(StateVector, "state", on_state, SENSOR)
    node.create_subscription(PoseStamped, "goal_block_pose", on_goal, LATCHED)
    node.create_subscription(DiagnosticArray, "sim/episodes", on_episode, LATCHED)
    deadline = time.monotonic() + 120
    while not reports and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("result " + json.dumps({"odometry": {str(k): v for k, v in odometry.items()},
                                  "states": {str(k): v for k, v in states.items()},
                                  "goals": goals, "reports": reports}), flush=True)


if __name__ == "__main__":
    rclpy.init()
    try:
        main()
    finally:
        if rclpy.ok():
            rclpy.shutdown()
