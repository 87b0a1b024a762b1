"""A publisher at a known rate for tests/ros/test_logger_crash.py, run as its own process.

    python logger_crash_peers.py publish RATE_HZ

In namespace /car: publishes hw/command (mbrl_interfaces/CommandVector,
values[0] = k) and hw/odom (nav_msgs/Odometry, pose.position.x = k) for
k = 0, 1, ... at RATE_HZ, once the data_logger's subscription has matched
(prints "ready"), and prints "sent k WALL_TIME" after each, until SIGTERM.
"""

from __future__ import annotations

import sys
import time

import rclpy
from mbrl_interfaces.msg import CommandVector
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException

from mbrl_ros.ros.qos import COMMAND, SENSOR


def publish(rate_hz: float) -> None:
    node = rclpy.create_node("crash_publisher", namespace="/car")
    commands = node.create_publisher(CommandVector, "hw/command", COMMAND)
    odometry = node.create_publisher(Odometry, "hw/odom", SENSOR)
    while commands.get_subscription_count() < 1 or odometry.get_subscription_count() < 1:
        time.sleep(0.05)
    time.sleep(0.5)  # matched on our side; give the logger's side the same
    print("ready", flush=True)
    period, next_at, k = 1.0 / rate_hz, time.monotonic(), 0
    while rclpy.ok():
        stamp = node.get_clock().now().to_msg()
        command = CommandVector(names=["index"], values=[float(k)])
        command.header.stamp = stamp
        odom = Odometry()
        odom.header.stamp = stamp
        odom.pose.pose.position.x = float(k)
        commands.publish(command)
        odometry.publish(odom)
        print(f"sent {k} {time.time():.6f}", flush=True)
        k += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))


def main() -> None:
    rclpy.init()
    try:
        if sys.argv[1] == "publish":
            publish(float(sys.argv[2]))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
