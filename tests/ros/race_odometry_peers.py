"""The other end of tests/ros/test_race_odometry.py: a stand-in controller that steers the race car hard left
and records, by stamp, the odometry sim_car publishes and the state the estimator makes of it.

    python race_odometry_peers.py MIN_TURNING
    python race_odometry_peers.py restarts RESTARTS

Prints one JSON line prefixed ``result ``: for each stamp with both messages where the car turns and its
tyres slip (``|yaw rate| > 0.2 rad/s``, ``|lateral velocity| > 0.01 m/s``), the twist
``[linear.x, linear.y, angular.z]`` and the state's names and values; it stops after MIN_TURNING of them
or 90 s. ``restarts``: for each of the first RESTARTS episode ends on ``sim/episodes``, the estimated steering
of the last state before it and of the first state at or after it (the next episode's first, or a later one
where states were lost: ``first_after_s`` after the end). Run with the environment of ``mbrl_ros.ros_env.workspace_env()`` (it imports mbrl_interfaces).
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry

from mbrl_interfaces.msg import CommandVector, StateVector
from mbrl_ros.ros.qos import COMMAND, SENSOR


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def main(min_turning: str) -> None:
    node = rclpy.create_node("race_controller", namespace="/car")
    odometry: dict[int, Odometry] = {}
    states: dict[int, StateVector] = {}
    node.create_subscription(Odometry, "hw/odom", lambda m: odometry.setdefault(stamp_ns(m), m), SENSOR)
    node.create_subscription(StateVector, "state", lambda m: states.setdefault(stamp_ns(m), m), SENSOR)
    command_pub = node.create_publisher(CommandVector, "hw/command", COMMAND)

    def turning() -> list[int]:
        return [s for s in sorted(states) if s in odometry and abs(odometry[s].twist.twist.angular.z) > 0.2
                and abs(odometry[s].twist.twist.linear.y) > 0.01]

    deadline = time.monotonic() + 90
    while len(turning()) < int(min_turning) and time.monotonic() < deadline:
        # Real time: the simulator holds the latest command.
        command = CommandVector(names=["u_accel", "u_steer"], values=[0.2, 1.0])
        command.header.stamp = node.get_clock().now().to_msg()
        command_pub.publish(command)
        rclpy.spin_once(node, timeout_sec=0.05)
    rows = []
    for s in turning():
        twist = odometry[s].twist.twist
        rows.append({"twist": [twist.linear.x, twist.linear.y, twist.angular.z],
                     "names": list(states[s].names), "values": list(states[s].values)})
    print("result " + json.dumps({"turning": rows, "odometry": len(odometry), "states": len(states)}), flush=True)


def restarts(count: str) -> None:
    node = rclpy.create_node("race_controller", namespace="/car")
    states: dict[int, float] = {}  # stamp -> estimated steering
    ends: list[int] = []
    node.create_subscription(StateVector, "state", lambda m: states.setdefault(stamp_ns(m), m.values[4]), SENSOR)
    node.create_subscription(DiagnosticArray, "sim/episodes", lambda m: ends.extend(
        int(kv.value) for status in m.status for kv in status.values if kv.key == "end_stamp_ns"), COMMAND)
    command_pub = node.create_publisher(CommandVector, "hw/command", COMMAND)

    def pairs() -> list[dict]:
        out = []
        for end in ends:
            before = [s for s in states if s < end]
            after = [s for s in states if s >= end]
            if before and after:
                out.append({"end_stamp_ns": end, "last_steer": states[max(before)], "first_steer": states[min(after)],
                            "first_after_s": (min(after) - end) / 1e9})
        return out

    deadline = time.monotonic() + 90
    while len(pairs()) < int(count) and time.monotonic() < deadline:
        command = CommandVector(names=["u_accel", "u_steer"], values=[0.0, 1.0])  # hard left, all the time
        command.header.stamp = node.get_clock().now().to_msg()
        command_pub.publish(command)
        rclpy.spin_once(node, timeout_sec=0.05)
    print("result " + json.dumps({"restarts": pairs(), "states": len(states)}), flush=True)


if __name__ == "__main__":
    rclpy.init()
    try:
        if sys.argv[1] == "restarts":
            restarts(*sys.argv[2:])
        else:
            main(*sys.argv[1:])
    finally:
        if rclpy.ok():
            rclpy.shutdown()
