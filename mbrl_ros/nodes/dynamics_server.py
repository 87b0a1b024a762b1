"""dynamics_server: owns the current dynamics model, deploys checked candidates, answers predictions.

- On start, loads the ``checkpoint`` parameter's file if given, else waits for
  the first model. The file goes through the same checks as a candidate; one
  that fails them (unreadable, non-finite weights or predictions, other
  dimensions) ends the node with exit code 1 and a message naming the file:
  it was asked for by name, and serving nothing silently would hide that.
- ``dynamics/candidate`` (ModelUpdate, latched; from the trainer): each
  candidate goes through ``ModelRegistry.offer`` (checksum, finite weights,
  dimensions, finite test predictions). An accepted one is published on
  ``dynamics/model`` (latched) under the next version number, with the
  candidate's weights, checksum and metrics unchanged. Every accept and reject is
  logged with version, metrics and reason.
- ``dynamics/rollback`` (std_srvs/Trigger): re-publishes the previous good model
  on ``dynamics/model`` under a new version (so every controller swaps), and
  answers which model it restored and which it replaced; fails with a message
  when there is none. The rollback service lives here, not in the trainer,
  because this node owns the deployed models and their history.
- ``dynamics/predict`` (mbrl_interfaces/PredictBatch): batched one-step
  predictions with the current model; a bad request gets ``success=false`` and a
  message naming the field.
- ``/diagnostics`` about once a second: version, checksum prefix, accepted,
  rejected and rollback counts, the last decision, its reason and candidate,
  predict latency p50/p99.
"""

from __future__ import annotations

import array
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from std_srvs.srv import Trigger

from mbrl_interfaces.msg import ModelUpdate
from mbrl_interfaces.srv import PredictBatch
from mbrl_ros.io import checkpoint
from mbrl_ros.io.model_registry import ModelRegistry, NoPreviousModel, PredictRequestError, predict_flat
from mbrl_ros.io.model_update import UpdateThrottle, pack
from mbrl_ros.ros.diagnostics import LoopStats, diagnostic_array
from mbrl_ros.ros.run import run_node
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import LATCHED

PARAMS = [
    Param("checkpoint", "", "model checkpoint (.pt) to serve from the start; empty: wait for the first candidate",
          read_only=True),
    Param("history_size", 5, "earlier good models kept for dynamics/rollback", (1, 100), read_only=True),
    Param("max_batch", 100_000, "largest batch dynamics/predict answers", (1, 10_000_000)),
    Param("max_model_bytes", 64 << 20, "largest model (bytes of weights) a candidate may have", (1, 2**31 - 1)),
    Param("min_update_interval", 0.5, "seconds between two candidates considered: a flood is bounded, "
          "the newest candidate waits its turn", (0.0, 3600.0)),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.05, 60.0)),
]


class DynamicsServerNode(Node):
    def __init__(self) -> None:
        super().__init__("dynamics_server", automatically_declare_parameters_from_overrides=True)
        self.p = declare_all(self, PARAMS)
        # The robot's state and action names (the params file's '/**' section), if given: models must fit them.
        dims = [len(self.get_parameter(n).value) if self.has_parameter(n) else None
                for n in ("state_names", "action_names")]
        self.registry = ModelRegistry(state_dim=dims[0], action_dim=dims[1], history_size=self.p["history_size"],
                                      max_bytes=self.p["max_model_bytes"])
        self.throttle = UpdateThrottle(self.p["min_update_interval"])
        self.predict_stats = LoopStats()
        self.model_pub = self.create_publisher(ModelUpdate, "dynamics/model", LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ModelUpdate, "dynamics/candidate", self.on_candidate, LATCHED)
        self.create_service(PredictBatch, "dynamics/predict", self.on_predict)
        self.create_service(Trigger, "dynamics/rollback", self.on_rollback)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics)
        self.create_timer(max(self.p["min_update_interval"], 0.05), self.on_throttle_timer)
        if self.p["checkpoint"]:
            self.load_checkpoint(self.p["checkpoint"])
        else:
            self.get_logger().info("no checkpoint given: waiting for the first model on dynamics/candidate")

    def load_checkpoint(self, path: str) -> None:
        # A bad file stops the node (run_node: exit 1 with the message): it was asked for by name.
        model, config, metrics = checkpoint.load(path)  # refuses non-finite weights
        if not self.consider(pack(model, config, metrics, version=0, kind=config["type"]), source=path):
            raise ValueError(f"parameter 'checkpoint': refused {path}: {self.registry.last_reason}")

    # --- models ------------------------------------------------------------------------------
    def on_candidate(self, msg: ModelUpdate) -> None:
        if self.throttle.offer(msg, time.monotonic()) is not None:
            self.consider(msg, source=f"candidate v{msg.version} on dynamics/candidate")

    def on_throttle_timer(self) -> None:
        msg = self.throttle.due(time.monotonic())
        if msg is not None:
            self.consider(msg, source=f"candidate v{msg.version} on dynamics/candidate")

    def consider(self, update, source: str) -> bool:
        """Offer a model to the registry; publish it if accepted. -> whether it is served now."""
        verdict = self.registry.offer(update, source=source)
        if verdict.status == "accepted":
            self.publish(verdict.deployed.fields)
            self.get_logger().info(f"accepted {source}: now serving {verdict.deployed.describe()}")
        elif verdict.status == "ignored":
            self.get_logger().info(f"ignored {source}: {verdict.reason}")
        else:
            version = self.registry.current.version if self.registry.current else "none"
            # The reason names the source already.
            self.get_logger().warn(f"rejected: {verdict.reason} (candidate: {verdict.candidate or 'unreadable'}; "
                                   f"still serving version {version})")
        return verdict.status != "rejected"

    def publish(self, fields: dict) -> None:
        msg = ModelUpdate(**fields)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.model_pub.publish(msg)

    def on_rollback(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            deployed = self.registry.rollback()
        except NoPreviousModel as err:
            response.success, response.message = False, str(err)
            self.get_logger().warn(f"rollback refused: {err}")
            return response
        self.publish(deployed.fields)
        response.success, response.message = True, f"{self.registry.last_reason}: {deployed.describe()}"
        self.get_logger().info(f"rollback: {response.message}")
        return response

    # --- predictions ---------------------------------------------------------------------------
    def on_predict(self, request: PredictBatch.Request, response: PredictBatch.Response) -> PredictBatch.Response:
        started = time.perf_counter()
        current = self.registry.current
        if current is None:
            response.success, response.message = False, "no model yet: the dynamics_server has not received one"
            return response
        try:
            next_states, spread = predict_flat(current.model, request.state_dim, request.action_dim,
                                               request.states, request.actions, self.p["max_batch"])
        except PredictRequestError as err:
            response.success, response.message = False, str(err)
            self.predict_stats.reject(str(err))
            return response
        response.next_states = array.array("d", next_states.tobytes())
        if spread is not None:
            response.spread = array.array("d", spread.tobytes())
        response.model_version = current.version
        response.success = True
        self.predict_stats.record((time.perf_counter() - started) * 1e3)
        return response

    # --- diagnostics ---------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        current = self.registry.current
        p50, p99 = self.predict_stats.percentiles()
        values = {
            "model_version": str(current.version) if current else "none",
            "model_kind": current.fields["model_kind"] if current else "",
            "checksum": current.checksum[:12] if current else "",
            "accepted": str(self.registry.accepted),
            "rejected": str(self.registry.rejected),
            "rollbacks": str(self.registry.rollbacks),
            "last_decision": self.registry.last_decision,
            "last_reason": self.registry.last_reason,
            "last_candidate": self.registry.last_candidate,
            "rollback_available": str(len(self.registry.previous)),
            "predict_calls": str(self.predict_stats.cycles),
            "predict_latency_p50_ms": f"{p50:.3f}",
            "predict_latency_p99_ms": f"{p99:.3f}",
            "predict_rejected": str(self.predict_stats.rejected),
            "last_predict_rejection": self.predict_stats.last_rejection,
            "candidates_deferred": str(self.throttle.deferred),
        }
        if current is not None:
            values.update({name: f"{value:.6g}" for name, value in current.metrics.items()})
        level, message = (DiagnosticStatus.OK, f"serving {current.describe()}") if current else \
            (DiagnosticStatus.WARN, "no model yet")
        self.diag_pub.publish(diagnostic_array(self, f"{self.get_fully_qualified_name()}", values, level, message))


def main(args: list[str] | None = None) -> int:
    return run_node(DynamicsServerNode, "dynamics_server", args)


if __name__ == "__main__":
    sys.exit(main())
