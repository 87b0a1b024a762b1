"""The other end of tests/ros/test_car_stop_before_any_state.py: a stand-in controller that drives the lockstep
sim_car up to speed, then falls silent, and reports what the simulator does next.

    python car_stop_peers.py STEPS

Answers each of the first STEPS states on ``hw/odom`` with full acceleration (``u_accel`` 1), then sends nothing
more and prints ``silent``; prints ``odom {"stamp_ns": N, "v": SPEED}`` for each new odometry stamp and
``command {"stamp_ns": N, "frame_id": F, "values": [..]}`` for each ``hw/command`` not its own. Run with the
environment of ``mbrl_ros.ros_env.workspace_env()`` (it imports mbrl_interfaces).
"""

from __future__ import annotations

import json
import sys

import rclpy
from nav_msgs.msg import Odometry

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.ros.qos import COMMAND, SENSOR

OWN = "car_stop_peer"  # frame_id of this stand-in's commands


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def main(steps: str) -> None:
    rclpy.init()
    node = rclpy.create_node("car_stop_peer", namespace="/car")
    command_pub = node.create_publisher(CommandVector, "hw/command", COMMAND)
    seen: set[int] = set()
    answered = [0]

    def on_odom(msg: Odometry) -> None:
        stamp = stamp_ns(msg)
        if stamp in seen:  # the lockstep simulator re-publishes a state until it is answered
            if answered[0] < int(steps):
                answer(msg)
            return
        seen.add(stamp)
        print("odom " + json.dumps({"stamp_ns": stamp, "v": msg.twist.twist.linear.x}), flush=True)
        if answered[0] < int(steps):
            answer(msg)
            answered[0] += 1
            if answered[0] == int(steps):
                print("silent", flush=True)

    def answer(msg: Odometry) -> None:
        command = CommandVector(names=["u_accel", "u_steer"], values=[1.0, 0.0])
        command.header.stamp = msg.header.stamp
        command.header.frame_id = OWN
        command_pub.publish(command)

    def on_command(msg: CommandVector) -> None:
        if msg.header.frame_id != OWN:
            print("command " + json.dumps({"stamp_ns": stamp_ns(msg), "frame_id": msg.header.frame_id,
                                           "values": list(msg.values)}), flush=True)

    node.create_subscription(Odometry, "hw/odom", on_odom, SENSOR)
    node.create_subscription(CommandVector, "hw/command", on_command, COMMAND)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(*sys.argv[1:])
