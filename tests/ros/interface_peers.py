"""The other end of tests/ros/test_interfaces.py: one small rclpy process per role.

    python interface_peers.py ROLE [ARGS]

Each role prints ``ready`` or ``published`` lines to sync on, and its result as
one JSON line prefixed ``result ``. Run with the environment of
``mbrl_ros.ros_env.workspace_env()`` (it imports mbrl_interfaces).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mbrl_interfaces.msg import ModelUpdate, StateVector
from mbrl_interfaces.srv import PredictBatch

MODEL_TOPIC = "dynamics/model"
PREDICT_SERVICE = "dynamics/predict"
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def say(line: str) -> None:
    print(line, flush=True)


def publish_model(num_bytes: str) -> None:
    """Publish one ModelUpdate, latched, then stay alive (the writer holds it) until killed."""
    node = rclpy.create_node("model_publisher")
    pub = node.create_publisher(ModelUpdate, MODEL_TOPIC, LATCHED)
    weights = bytes((i * 7919) % 251 for i in range(int(num_bytes)))
    msg = ModelUpdate(model_kind="ensemble", version=3, checksum=hashlib.sha256(weights).hexdigest())
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.metric_names = ["rmse_h1", "rmse_h10"]
    msg.metric_values = [0.01, 0.25]
    msg.config_yaml = "members: 5\nhidden: [200, 200]\n"
    msg.weights = weights
    pub.publish(msg)
    say(f"published {msg.checksum}")
    rclpy.spin(node)


def subscribe_model(timeout_s: str) -> None:
    """Join late, receive the latched ModelUpdate, report what arrived."""
    node = rclpy.create_node("model_subscriber")
    received: list[ModelUpdate] = []
    node.create_subscription(ModelUpdate, MODEL_TOPIC, received.append, LATCHED)
    deadline = time.monotonic() + float(timeout_s)
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        say("result " + json.dumps({"received": False}))
        return
    msg = received[0]
    weights = bytes(msg.weights)
    say("result " + json.dumps({
        "received": True,
        "version": msg.version,
        "model_kind": msg.model_kind,
        "checksum": msg.checksum,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "num_bytes": len(weights),
        "metrics": dict(zip(msg.metric_names, msg.metric_values)),
        "config_yaml": msg.config_yaml,
    }))


def serve_predict() -> None:
    """next = state + [action, 0...] (the first action_dim entries move), spread 0.1."""
    import numpy as np

    node = rclpy.create_node("predict_server")

    def predict(request: PredictBatch.Request, response: PredictBatch.Response) -> PredictBatch.Response:
        nx, nu = request.state_dim, request.action_dim
        states = np.asarray(request.states, dtype=np.float64)
        actions = np.asarray(request.actions, dtype=np.float64)
        if nx == 0 or nu > nx or states.size % nx or actions.size != states.size // nx * nu:
            response.success = False
            response.message = f"bad dimensions: {states.size} states of {nx}, {actions.size} actions of {nu}"
            return response
        states = states.reshape(-1, nx)
        next_states = states.copy()
        next_states[:, :nu] += actions.reshape(-1, nu)
        response.next_states = next_states.ravel().tolist()
        response.spread = [0.1] * next_states.size
        response.model_version = 3
        response.success = True
        return response

    node.create_service(PredictBatch, PREDICT_SERVICE, predict)
    say("ready")
    rclpy.spin(node)


def call_predict(batch: str) -> None:
    import numpy as np

    node = rclpy.create_node("predict_client")
    client = node.create_client(PredictBatch, PREDICT_SERVICE)
    if not client.wait_for_service(timeout_sec=15.0):
        say("result " + json.dumps({"service": False}))
        return

    def call(request: PredictBatch.Request) -> PredictBatch.Response:
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        if not future.done():
            raise TimeoutError(f"no reply from {PREDICT_SERVICE} in 10 s")
        return future.result()

    b = int(batch)
    states = np.arange(b * 4, dtype=np.float64)
    actions = np.ones(b * 2)
    good = call(PredictBatch.Request(state_dim=4, action_dim=2, states=states.tolist(), actions=actions.tolist()))
    bad = call(PredictBatch.Request(state_dim=4, action_dim=2, states=[1.0, 2.0, 3.0], actions=[]))
    say("result " + json.dumps({
        "service": True,
        "success": good.success,
        "model_version": good.model_version,
        "next_states": list(good.next_states),
        "spread_len": len(good.spread),
        "bad_success": bad.success,
        "bad_message": bad.message,
    }))


def serialization() -> None:
    """rclpy's CDR both ways: decode the StateVector given (base64) on stdin, encode a known one."""
    from rclpy.serialization import deserialize_message, serialize_message

    incoming = deserialize_message(base64.b64decode(sys.stdin.read()), StateVector)
    outgoing = StateVector(names=["x", "y"], values=[1.5, -2.25], valid=False, reason="stale odometry")
    outgoing.header.stamp.sec = 42
    outgoing.header.stamp.nanosec = 7
    outgoing.header.frame_id = "odom"
    say("result " + json.dumps({
        "decoded": {
            "sec": incoming.header.stamp.sec,
            "nanosec": incoming.header.stamp.nanosec,
            "frame_id": incoming.header.frame_id,
            "names": list(incoming.names),
            "values": list(incoming.values),
            "valid": incoming.valid,
            "reason": incoming.reason,
        },
        "encoded": base64.b64encode(serialize_message(outgoing)).decode(),
    }))


ROLES = {
    "publish-model": publish_model,
    "subscribe-model": subscribe_model,
    "serve-predict": serve_predict,
    "call-predict": call_predict,
    "serialization": serialization,
}

if __name__ == "__main__":
    rclpy.init()
    try:
        ROLES[sys.argv[1]](*sys.argv[2:])
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT/SIGTERM from the test: a normal end
    finally:
        if rclpy.ok():
            rclpy.shutdown()
