"""The other end of tests/ros/test_estimator_logger.py: a stand-in for the simulator and the controller.

    python estimator_logger_peers.py drive STEPS NAN_STEP JUMP_STEP

In the ROS namespace /car, like a lockstep simulator it publishes /clock and
hw/odom (one odometry per step, stamped with sim time), and like the
controller it answers each state from the estimator with a hw/command stamped
with that state's stamp. Odometry of step NAN_STEP has a NaN position (the
estimator must drop it); from JUMP_STEP on the car is moved 50 m (a reset).
It also publishes a latched goal_pose for the logger, and reads the
estimator's /diagnostics. Prints ``ready`` once everyone is discovered and the
result as one JSON line prefixed ``result ``. Run with the environment of
``mbrl_ros.ros_env.workspace_env()``.
"""

from __future__ import annotations

import json
import math
import sys
import time

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException
from rosgraph_msgs.msg import Clock

from mbrl_interfaces.msg import CommandVector, StateVector
from mbrl_ros.ros.qos import COMMAND, LATCHED, SENSOR

DT_NS = 200_000_000
T0_NS = 1_000_000_000


def say(line: str) -> None:
    print(line, flush=True)


def pose_at(k: int, jump_step: int) -> tuple[float, float, float, float]:
    """x, y, yaw (unwrapped: passes pi on purpose), speed at step k."""
    x = 0.5 * k + (50.0 if k >= jump_step else 0.0)
    return x, -0.25 * k, 0.4 * k, 1.0 + 0.1 * k


def steer_command(k: int) -> float:
    return round(math.sin(0.7 * k), 6)


def drive(steps: str, nan_step: str, jump_step: str) -> None:
    steps, nan_step, jump_step = int(steps), int(nan_step), int(jump_step)
    node = rclpy.create_node("driver", namespace="/car")
    clock_pub = node.create_publisher(Clock, "/clock", 10)
    odom_pub = node.create_publisher(Odometry, "hw/odom", SENSOR)
    command_pub = node.create_publisher(CommandVector, "hw/command", COMMAND)
    goal_pub = node.create_publisher(PoseStamped, "goal_pose", LATCHED)
    states: dict[int, list[float]] = {}
    state_sub = node.create_subscription(
        StateVector, "state",
        lambda m: states.setdefault(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                                    [list(m.names), list(m.values), m.valid, m.header.frame_id]),
        SENSOR)
    diagnostics: dict[str, list[dict]] = {"/car/estimator": [], "/car/data_logger": []}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name in diagnostics:
                level = status.level
                diagnostics[status.name].append({
                    "level": int.from_bytes(level, "little") if isinstance(level, bytes) else int(level),
                    "message": status.message, **{kv.key: kv.value for kv in status.values},
                })

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

    def spin_until(done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.02)
        return done()

    def logger_publishers() -> dict[str, int]:
        last = diagnostics["/car/data_logger"][-1] if diagnostics["/car/data_logger"] else {}
        return {k[len("publishers "):]: int(v) for k, v in last.items() if k.startswith("publishers ")}

    # Every endpoint matched (not only seen in the graph): the estimator and the logger to our
    # odometry and commands, we and the logger to the estimator's state (the logger says so in
    # its diagnostics), the logger to our goal.
    def matched() -> dict:
        return {
            "odom_readers": odom_pub.get_subscription_count(), "command_readers": command_pub.get_subscription_count(),
            "goal_readers": goal_pub.get_subscription_count(), "state_writers": state_sub.get_publisher_count(),
            "clock_readers": clock_pub.get_subscription_count(), "logger": logger_publishers(),
        }

    def all_matched() -> bool:
        m = matched()
        return (m["odom_readers"] >= 2 and m["command_readers"] >= 2 and m["goal_readers"] >= 1
                and m["state_writers"] >= 1 and m["clock_readers"] >= 2
                and all(m["logger"].get(f"/car/{t}", 0) >= 1 for t in ("hw/odom", "hw/command", "state", "goal_pose")))

    if not spin_until(all_matched, 60.0):
        say("result " + json.dumps({"error": "peers not matched", **matched()}))
        return
    say("ready")

    goal = PoseStamped()
    goal.header.frame_id = "map"
    goal.header.stamp = Time(sec=1)
    goal.pose.position.x, goal.pose.position.y, goal.pose.orientation.w = 3.0, 4.0, 1.0
    goal_pub.publish(goal)

    sent_commands: list[list] = []  # [stamp_ns, u_accel, u_steer] in the order sent
    missing: list[int] = []
    resends = 0
    for k in range(steps):
        stamp_ns = T0_NS + k * DT_NS
        stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        clock_pub.publish(Clock(clock=stamp))
        x, y, yaw, v = pose_at(k, jump_step)
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id = "map"
        odom.pose.pose.position.x = float("nan") if k == nan_step else x
        odom.pose.pose.position.y = y
        odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        odom.twist.twist.linear.x = v
        odom_pub.publish(odom)
        if k == nan_step:
            spin_until(lambda: stamp_ns in states, 0.3)  # nothing must come
            continue
        # As the lockstep simulator does: re-send an unanswered state (the same message).
        while not spin_until(lambda: stamp_ns in states, 0.3):
            resends += 1
            if resends > 20:
                break
            odom_pub.publish(odom)
        if stamp_ns not in states:
            missing.append(k)
            continue
        command = CommandVector(names=["u_accel", "u_steer"], values=[0.1, steer_command(k)])
        command.header.stamp = stamp
        command_pub.publish(command)
        sent_commands.append([stamp_ns, 0.1, steer_command(k)])
        spin_until(lambda: False, 0.03)  # the command reaches the estimator before the next odometry

    estimator = diagnostics["/car/estimator"]
    spin_until(lambda: any(int(d.get("rejected_inputs", 0)) >= 1 for d in estimator), 5.0)

    def logger_caught_up() -> bool:
        """The logger's diagnostics count every state and command this run saw."""
        last = diagnostics["/car/data_logger"][-1] if diagnostics["/car/data_logger"] else {}
        return (int(last.get("written /car/state", -1)) >= len(states)
                and int(last.get("written /car/hw/command", -1)) >= len(sent_commands))

    spin_until(logger_caught_up, 10.0)
    say("result " + json.dumps({
        "states": {str(s): v for s, v in sorted(states.items())},
        "commands": sent_commands,
        "missing": missing,
        "resends": resends,
        "diagnostics": estimator[-1] if estimator else None,
        "warned": any(d["level"] == 1 for d in estimator),
        "logger": diagnostics["/car/data_logger"][-1] if diagnostics["/car/data_logger"] else None,
    }))


ROLES = {"drive": drive}

if __name__ == "__main__":
    rclpy.init()
    try:
        ROLES[sys.argv[1]](*sys.argv[2:])
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if rclpy.ok():
            rclpy.shutdown()
