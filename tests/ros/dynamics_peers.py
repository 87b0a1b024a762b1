"""The test's hands on the DDS side of tests/ros/test_dynamics_trainer.py: one rclpy process driven by stdin.

    python dynamics_peers.py NAMESPACE

Reads one JSON command per line and answers each with one line ``result {json}``.
Its node (in NAMESPACE) publishes candidates, records every ``dynamics/model`` and
``/diagnostics`` message it sees, and calls the services. Commands:

- ``{"op": "publish_candidate", "fields": PICKLE_FILE, "topic": T}``: publish the pickled
  ModelUpdate fields on ``dynamics/candidate`` (or on ``T``: ``dynamics/model``, as a server would,
  or ``policy/candidate``);
  ``"fields"`` may be a list of files, published back to back
- ``{"op": "wait_model", "checksum": HEX, "version": N, "timeout": S}``: the first
  ``dynamics/model`` with that checksum and version (either omitted: any), or ``{"received": false}``;
  with ``"topic": "policy/model"``, the first such policy
- ``{"op": "models"}``: every ``dynamics/model`` (or ``"topic"``'s message) received so far
- ``{"op": "predict", "request": {...PredictBatch fields...}}``
- ``{"op": "trigger", "service": NAME}``: call a std_srvs/Trigger service
- ``{"op": "episodes"}``: the reports of the simulated episodes finished so far (``sim/episodes``), in order
- ``{"op": "latest", "node": NAME_PART}``: the values of the newest /diagnostics status of that node
  (``{}`` if none yet)
- ``{"op": "wait_diagnostics", "node": NAME_PART, "key": K, "value": V, "timeout": S}``:
  the values of the first /diagnostics status of that node with ``values[K] == V`` (with ``"at_least": true``,
  an integer ``values[K] >= V``)

Needs the environment of ``mbrl_ros.ros_env.workspace_env()`` (it imports mbrl_interfaces).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from mbrl_interfaces.msg import ModelUpdate
from mbrl_interfaces.srv import PredictBatch
from mbrl_ros.ros.qos import LATCHED


class Peer(Node):
    def __init__(self, namespace: str) -> None:
        super().__init__("test_peer", namespace=namespace)
        self.lock = threading.Lock()
        self.received: dict[str, list[dict]] = {"dynamics/model": [], "policy/model": []}
        self.statuses: list[tuple[str, dict]] = []
        self.episodes: dict[int, dict] = {}
        self.publishers_by_topic = {topic: self.create_publisher(ModelUpdate, topic, LATCHED)
                                    for topic in ("dynamics/candidate", "dynamics/model", "policy/candidate")}
        for topic, models in self.received.items():
            self.create_subscription(ModelUpdate, topic, lambda msg, m=models: self.on_model(msg, m), LATCHED)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        self.create_subscription(DiagnosticArray, "sim/episodes", self.on_episodes,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.clients_by_name: dict[str, object] = {}

    def on_model(self, msg: ModelUpdate, models: list[dict]) -> None:
        weights = msg.weights.tobytes()
        with self.lock:
            models.append({
                "version": msg.version, "model_kind": msg.model_kind, "checksum": msg.checksum,
                "sha256": hashlib.sha256(weights).hexdigest(), "num_bytes": len(weights),
                "metrics": dict(zip(msg.metric_names, msg.metric_values)), "config_yaml": msg.config_yaml,
            })

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.statuses.append((status.name, {kv.key: kv.value for kv in status.values}))

    def on_episodes(self, msg: DiagnosticArray) -> None:
        with self.lock:  # one status per finished episode, by number (a late joiner gets the latched last one)
            for status in msg.status:
                report = {kv.key: kv.value for kv in status.values}
                self.episodes[int(report["episode"])] = report

    def client(self, kind, name: str):
        if name not in self.clients_by_name:
            self.clients_by_name[name] = self.create_client(kind, name)
        return self.clients_by_name[name]


def call(peer: Peer, kind, name: str, request, timeout: float = 20.0):
    client = peer.client(kind, name)
    if not client.wait_for_service(timeout_sec=timeout):
        return None
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: done.set())
    done.wait(timeout)
    return future.result() if future.done() else None


def wait_until(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        time.sleep(0.05)
    return None


def handle(peer: Peer, command: dict) -> dict:
    op = command["op"]
    if op == "publish_candidate":
        files = command["fields"] if isinstance(command["fields"], list) else [command["fields"]]
        published = []
        for path in files:
            with open(path, "rb") as f:
                fields = pickle.load(f)
            msg = ModelUpdate(**fields)
            msg.header.stamp = peer.get_clock().now().to_msg()
            peer.publishers_by_topic[command.get("topic", "dynamics/candidate")].publish(msg)
            published.append(fields["checksum"])
        return {"published": published[0] if len(published) == 1 else published}
    if op == "wait_model":
        def found():
            with peer.lock:
                return next((m for m in peer.received[command.get("topic", "dynamics/model")]
                             if command.get("checksum") in (None, m["checksum"])
                             and command.get("version") in (None, m["version"])), None)
        model = wait_until(found, command.get("timeout", 20.0))
        return {"received": model is not None, **(model or {})}
    if op == "models":
        with peer.lock:
            return {"models": list(peer.received[command.get("topic", "dynamics/model")])}
    if op == "predict":
        response = call(peer, PredictBatch, "dynamics/predict", PredictBatch.Request(**command["request"]))
        if response is None:
            return {"answered": False}
        return {"answered": True, "success": response.success, "message": response.message,
                "model_version": response.model_version, "next_states": list(response.next_states),
                "spread": list(response.spread)}
    if op == "trigger":
        response = call(peer, Trigger, command["service"], Trigger.Request())
        return {"answered": False} if response is None else \
            {"answered": True, "success": response.success, "message": response.message}
    if op == "episodes":
        with peer.lock:
            return {"episodes": [peer.episodes[k] for k in sorted(peer.episodes)]}
    if op == "latest":
        with peer.lock:
            return next((values for name, values in reversed(peer.statuses) if command["node"] in name), {})
    if op == "wait_diagnostics":
        def found():
            with peer.lock:
                return next((values for name, values in peer.statuses
                             if command["node"] in name and matches(values.get(command["key"]))), None)

        def matches(value: str | None) -> bool:
            if command.get("at_least"):
                return value is not None and value.lstrip("-").isdigit() and int(value) >= int(command["value"])
            return value == command["value"]
        values = wait_until(found, command.get("timeout", 20.0))
        if values is None:
            with peer.lock:
                last = next((v for n, v in reversed(peer.statuses) if command["node"] in n), None)
            return {"found": False, "last": last}
        return {"found": True, "values": values}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    rclpy.init()
    peer = Peer(sys.argv[1])
    executor = SingleThreadedExecutor()
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            if line.strip():
                print("result " + json.dumps(handle(peer, json.loads(line))), flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)
        peer.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
