"""The other end of tests/ros/test_controller_safety.py: a stand-in estimator, e-stop button, model
publisher and lifecycle client around a real controller process.

    python controller_peers.py NAMESPACE

Reads one JSON command per stdin line and prints what it sees on stdout:

- ``{"state": [..], "valid": true, "reason": "", "names": [..], "stamp_ns": N, "rate": 20}``: publish this
  state on ``state`` at ``rate`` Hz (stamped with the wall clock unless ``stamp_ns``); ``{"pause": true}`` stops;
  ``{"once": {...same fields...}}`` publishes one message;
- ``{"e_stop": true|false}``, ``{"release": true}`` (the release service; prints ``release <message>``),
  ``{"transition": "deactivate"}`` (prints ``transition <ok>``), ``{"model": "car"}`` (a kinematic bicycle on
  ``dynamics/model``, latched; ``"car_race"``: the race's, with v_y and yaw_rate), ``{"policy": PICKLE_FILE}`` (pickled ModelUpdate fields on ``policy/model``,
  latched), ``{"goal": [x, y, yaw]}`` (``goal_pose``);
- fuzzing the estimator's inputs: ``{"odom": {"stamp_ns": N, "values": [x, y, qx, qy, qz, qw, v]}}`` on
  ``hw/odom``, ``{"hw_command": {"stamp_ns": N, "names": [..], "values": [..]}}`` on ``hw/command``
  (marked frame_id "fuzz", so the stand-in's own are told from the controller's);
- ``{"set": {name: value}}`` through the rclpy parameter client (what `ros2 param set` calls: SetParameters;
  prints ``set {name: [successful, reason]}``), ``{"get": [names]}`` (prints ``get {name: value}``).

Prints ``ready`` once the controller is discovered, ``command {json}`` per hw/command and ``diag {json}`` per
controller diagnostics. Run with the environment of ``mbrl_ros.ros_env.workspace_env()``.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import ExternalShutdownException
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from mbrl_interfaces.msg import CommandVector, ModelUpdate, StateVector
from mbrl_ros.ros.poses import goal_pose
from nav_msgs.msg import Odometry

from mbrl_ros.ros.qos import COMMAND, LATCHED, LATEST_STATE, SENSOR
from mbrl_ros.ros.stamps import ns_to_stamp

CAR_NAMES = ["x", "y", "yaw", "v", "steer"]
TRANSITIONS = {"deactivate": Transition.TRANSITION_DEACTIVATE, "activate": Transition.TRANSITION_ACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP, "configure": Transition.TRANSITION_CONFIGURE}


def say(line: str) -> None:
    print(line, flush=True)


def state_message(spec: dict, now_ns: int) -> StateVector:
    msg = StateVector()
    msg.header.stamp = ns_to_stamp(int(spec.get("stamp_ns", now_ns)))
    msg.header.frame_id = "map"
    msg.names = list(spec.get("names", CAR_NAMES))
    msg.values = [float(v) for v in spec.get("state", [])]
    msg.valid = bool(spec.get("valid", True))
    msg.reason = str(spec.get("reason", ""))
    return msg


def model_update(kind: str = "car") -> ModelUpdate:
    """``car``: the parking car's bicycle (dt 0.2 s, five states); ``car_race``: the race's (dt 0.05 s, with
    lateral velocity and yaw rate)."""
    from mbrl_ros.io.checkpoint import checksum, to_bytes
    from mbrl_ros.robots import get_robot

    config = {"type": "parametric", "dt": 0.2, "speed_input": "acceleration",
              "params": {"wheelbase": 2.5, "rear_axle_to_cg": 1.25, "speed_gain": 5.0, "steer_gain": 0.785}}
    if kind == "car_race":
        config.update(dt=0.05, lateral_states=True)
    blob = to_bytes(get_robot("car").build_model(config), config)
    return ModelUpdate(model_kind="parametric", version=1, checksum=checksum(blob), config_yaml="", weights=blob)


def main(namespace: str) -> None:
    rclpy.init()
    node = rclpy.create_node("controller_peer", namespace=namespace)
    state_pub = node.create_publisher(StateVector, "state", LATEST_STATE)
    e_stop_pub = node.create_publisher(Bool, "e_stop", 10)
    model_pub = node.create_publisher(ModelUpdate, "dynamics/model", LATCHED)
    policy_pub = node.create_publisher(ModelUpdate, "policy/model", LATCHED)
    goal_pub = node.create_publisher(PoseStamped, "goal_pose", LATCHED)
    odom_pub = node.create_publisher(Odometry, "hw/odom", SENSOR)
    command_pub = node.create_publisher(CommandVector, "hw/command", COMMAND)
    release = node.create_client(Trigger, "controller/release_e_stop")
    lifecycle = node.create_client(ChangeState, "controller/change_state")
    fqn = f"{namespace.rstrip('/')}/controller"
    parameters = AsyncParameterClient(node, fqn)

    def on_command(msg: CommandVector) -> None:
        say("command " + json.dumps({"frame_id": msg.header.frame_id, "values": list(msg.values),
                                     "names": list(msg.names), "t": time.monotonic()}))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(fqn):
                say("diag " + json.dumps({"level": int.from_bytes(status.level, "little")
                                          if isinstance(status.level, bytes) else int(status.level),
                                          "message": status.message,
                                          "values": {kv.key: kv.value for kv in status.values}}))

    node.create_subscription(CommandVector, "hw/command", on_command, COMMAND)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    feeding: dict = {}

    def feed() -> None:
        if feeding:
            state_pub.publish(state_message(feeding, time.time_ns()))

    timer = node.create_timer(0.05, feed)
    commands: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [commands.put(json.loads(line)) for line in sys.stdin], daemon=True).start()
    while not release.service_is_ready():
        rclpy.spin_once(node, timeout_sec=0.1)
    say("ready")
    while rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.02)
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if "state" in command:
            feeding.clear()
            feeding.update(command)
            timer.timer_period_ns = int(1e9 / command.get("rate", 20))
        elif "pause" in command:
            feeding.clear()
        elif "once" in command:
            state_pub.publish(state_message(command["once"], time.time_ns()))
        elif "odom" in command:
            msg = Odometry()
            msg.header.stamp = ns_to_stamp(int(command["odom"]["stamp_ns"]))
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            p.x, p.y, q.x, q.y, q.z, q.w, msg.twist.twist.linear.x = command["odom"]["values"]
            odom_pub.publish(msg)
        elif "hw_command" in command:
            msg = CommandVector(names=command["hw_command"]["names"], values=command["hw_command"]["values"])
            msg.header.stamp = ns_to_stamp(int(command["hw_command"]["stamp_ns"]))
            msg.header.frame_id = "fuzz"
            command_pub.publish(msg)
        elif "e_stop" in command:
            e_stop_pub.publish(Bool(data=bool(command["e_stop"])))
        elif "model" in command:
            model_pub.publish(model_update(command["model"]))
        elif "policy" in command:
            import pickle

            with open(command["policy"], "rb") as f:
                policy_pub.publish(ModelUpdate(**pickle.load(f)))
        elif "goal" in command:
            goal_pub.publish(goal_pose(node.get_clock().now().to_msg(), "map", *command["goal"]))
        elif "release" in command:
            future = release.call_async(Trigger.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=10)
            say(f"release {future.result().message}")
        elif "set" in command:
            future = parameters.set_parameters([Parameter(k, value=v) for k, v in command["set"].items()])
            rclpy.spin_until_future_complete(node, future, timeout_sec=10)
            results = future.result().results
            say("set " + json.dumps({k: [r.successful, r.reason] for k, r in zip(command["set"], results)}))
        elif "get" in command:
            future = parameters.get_parameters(command["get"])
            rclpy.spin_until_future_complete(node, future, timeout_sec=10)
            got = [parameter_value_to_python(v) for v in future.result().values]
            say("get " + json.dumps(dict(zip(command["get"], got))))
        elif "transition" in command:
            future = lifecycle.call_async(ChangeState.Request(
                transition=Transition(id=TRANSITIONS[command["transition"]])))
            rclpy.spin_until_future_complete(node, future, timeout_sec=10)
            say(f"transition {future.result().success}")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
