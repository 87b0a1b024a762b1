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
- Policies (``policy/candidate`` -> ``policy/model``, ``policy/rollback``): the
  same, with a registry of its own that takes only ModelUpdates of model_kind
  ``policy`` (checksum, loadable actor, finite weights, dimensions, finite test
  actions within the actor's bounds). The trainer decides which policy is better;
  the server checks, versions, publishes latched and rolls back, as for models.
- ``dynamics/predict`` (mbrl_interfaces/PredictBatch): batched one-step
  predictions with the current model; a bad request gets ``success=false`` and a
  message naming the field.
- ``state_dir`` (the launch files give ``<run_dir>/dynamics_server``): the served
  model, the earlier ones kept for rollback and the last version number are
  written there after each change (``ModelRegistry.save``, one JSON file per
  registry, renamed into place), so a respawned server serves the same model
  under the same version, goes on numbering and can still roll back. A file
  that fails its checks, or was kept for another robot or other state or action
  names (a reused run folder), is moved aside (``.bad-<time>``) with an error,
  and the server starts without that history.
- ``/diagnostics`` about once a second: version, checksum prefix, accepted,
  rejected and rollback counts, the last decision, its reason and candidate,
  predict latency p50/p99.
"""

from __future__ import annotations

import array
import os
import sys
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_srvs.srv import Trigger

from mbrl_interfaces.msg import ModelUpdate
from mbrl_interfaces.srv import PredictBatch
from mbrl_ros.io import checkpoint
from mbrl_ros.io.checkpoint import CheckpointError
from mbrl_ros.io.model_registry import ModelRegistry, NoPreviousModel, PredictRequestError, predict_flat
from mbrl_ros.io.model_update import DYNAMICS_KINDS, POLICY_KIND, UpdateThrottle, pack
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
    Param("state_dir", "", "where the served models, their history and version numbers are kept across restarts "
          "(dynamics.json, policy.json); empty: nowhere, a restart starts again at version 1", read_only=True),
]


class Deployments:
    """One kind of update the server deploys (models or policies): its registry, throttle and topics."""

    def __init__(self, node: Node, name: str, registry: ModelRegistry, min_interval: float) -> None:
        self.name, self.registry = name, registry  # name: 'dynamics' or 'policy', the topics' prefix
        self.throttle = UpdateThrottle(min_interval)
        self.publisher = node.create_publisher(ModelUpdate, f"{name}/model", LATCHED)


class DynamicsServerNode(Node):
    def __init__(self) -> None:
        super().__init__("dynamics_server", automatically_declare_parameters_from_overrides=True)
        self.p = declare_all(self, PARAMS)
        # The robot's state and action names (the params file's '/**' section), if given: models must fit them.
        dims = [len(self.get_parameter(n).value) if self.has_parameter(n) else None
                for n in ("state_names", "action_names")]
        # Whose models a state_dir holds: a run folder reused by another robot must not serve them.
        self.owner = {n: self.get_parameter(n).value for n in ("robot", "state_names", "action_names")
                      if self.has_parameter(n)}
        self.owner = {n: v if isinstance(v, str) else list(v) for n, v in self.owner.items()}
        self.models, self.policies = (
            Deployments(self, name, ModelRegistry(state_dim=dims[0], action_dim=dims[1], kinds=kinds,
                                                  history_size=self.p["history_size"],
                                                  max_bytes=self.p["max_model_bytes"]),
                        self.p["min_update_interval"])
            for name, kinds in (("dynamics", DYNAMICS_KINDS), ("policy", (POLICY_KIND,))))
        self.registry = self.models.registry
        self.predict_stats = LoopStats()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for deployments in (self.models, self.policies):
            self.create_subscription(ModelUpdate, f"{deployments.name}/candidate",
                                     lambda msg, d=deployments: self.on_candidate(d, msg), LATCHED)
            self.create_service(Trigger, f"{deployments.name}/rollback",
                                lambda request, response, d=deployments: self.on_rollback(d, request, response))
        self.create_service(PredictBatch, "dynamics/predict", self.on_predict)
        # Wall time, as the throttle counts it: a held lockstep simulation stops the ROS clock, and the candidate
        # it waits for must still be deployed.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics, clock=steady)
        self.create_timer(max(self.p["min_update_interval"], 0.05), self.on_throttle_timer, clock=steady)
        self.restore(self.models)
        self.restore(self.policies)
        if self.p["checkpoint"]:
            self.load_checkpoint(self.p["checkpoint"])
        elif self.registry.current is None:
            self.get_logger().info("no checkpoint given: waiting for the first model on dynamics/candidate")

    # --- across restarts -----------------------------------------------------------------------
    def state_file(self, deployments: Deployments) -> Path | None:
        return Path(self.p["state_dir"]) / f"{deployments.name}.json" if self.p["state_dir"] else None

    def restore(self, deployments: Deployments) -> None:
        """The models served before a restart, served again under their versions (latched): a respawned server
        goes on numbering and can still roll back. An unreadable or failing file is moved aside, not lost."""
        path = self.state_file(deployments)
        if path is None:
            return
        try:
            if not deployments.registry.restore(path, self.owner):
                return
        except CheckpointError as err:
            aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
            os.replace(path, aside)
            self.get_logger().error(f"{err}; moved to {aside}, starting without {deployments.name} history")
            return
        current = deployments.registry.current
        if current is not None:
            self.publish(deployments, current.fields)
        self.get_logger().info(f"restored {deployments.name} from {path}: serving "
                               f"{current.describe() if current else 'nothing yet'}, "
                               f"{len(deployments.registry.previous)} earlier for rollback")

    def save(self, deployments: Deployments) -> None:
        path = self.state_file(deployments)
        if path is None:
            return
        try:
            deployments.registry.save(path, self.owner)
        except OSError as err:  # serving goes on; the next restart starts from the last file written
            self.get_logger().error(f"cannot keep the {deployments.name} models in {path}: {err}",
                                    throttle_duration_sec=10.0)

    def load_checkpoint(self, path: str) -> None:
        # A bad file stops the node (run_node: exit 1 with the message): it was asked for by name.
        model, config, metrics = checkpoint.load(path)  # refuses non-finite weights
        fields = pack(model, config, metrics, version=0, kind=config["type"])
        served = [m for m in (self.registry.current, *self.registry.previous) if m and m.checksum == fields["checksum"]]
        if served:  # a respawn: the restored models came from it, or after it
            self.get_logger().info(f"parameter 'checkpoint': {path} was served already as v{served[0].version}; "
                                   f"serving the restored {self.registry.current.describe()}")
            return
        if not self.consider(self.models, fields, source=path):
            raise ValueError(f"parameter 'checkpoint': refused {path}: {self.registry.last_reason}")

    # --- models ------------------------------------------------------------------------------
    def on_candidate(self, deployments: Deployments, msg: ModelUpdate) -> None:
        if deployments.throttle.offer(msg, time.monotonic()) is not None:
            self.consider(deployments, msg, source=f"candidate v{msg.version} on {deployments.name}/candidate")

    def on_throttle_timer(self) -> None:
        for deployments in (self.models, self.policies):
            msg = deployments.throttle.due(time.monotonic())
            if msg is not None:
                self.consider(deployments, msg, source=f"candidate v{msg.version} on {deployments.name}/candidate")

    def consider(self, deployments: Deployments, update, source: str) -> bool:
        """Offer a model (or policy) to its registry; publish it if accepted. -> whether it is served now."""
        registry = deployments.registry
        verdict = registry.offer(update, source=source)
        if verdict.status == "accepted":
            self.save(deployments)
            self.publish(deployments, verdict.deployed.fields)
            self.get_logger().info(f"accepted {source}: now serving {verdict.deployed.describe()}")
        elif verdict.status == "ignored":
            self.get_logger().info(f"ignored {source}: {verdict.reason}")
        else:
            version = registry.current.version if registry.current else "none"
            # The reason names the source already.
            self.get_logger().warn(f"rejected: {verdict.reason} (candidate: {verdict.candidate or 'unreadable'}; "
                                   f"still serving {deployments.name} version {version})")
        return verdict.status != "rejected"

    def publish(self, deployments: Deployments, fields: dict) -> None:
        msg = ModelUpdate(**fields)
        msg.header.stamp = self.get_clock().now().to_msg()
        deployments.publisher.publish(msg)

    def on_rollback(self, deployments: Deployments, request: Trigger.Request,
                    response: Trigger.Response) -> Trigger.Response:
        try:
            deployed = deployments.registry.rollback()
        except NoPreviousModel as err:
            response.success, response.message = False, str(err)
            self.get_logger().warn(f"{deployments.name}/rollback refused: {err}")
            return response
        self.save(deployments)
        self.publish(deployments, deployed.fields)
        response.success, response.message = True, f"{deployments.registry.last_reason}: {deployed.describe()}"
        self.get_logger().info(f"{deployments.name}/rollback: {response.message}")
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
            "candidates_deferred": str(self.models.throttle.deferred),
        }
        policies, policy = self.policies.registry, self.policies.registry.current
        values.update({
            "policy_version": str(policy.version) if policy else "none",
            "policy_checksum": policy.checksum[:12] if policy else "",
            "policy_accepted": str(policies.accepted),
            "policy_rejected": str(policies.rejected),
            "policy_rollbacks": str(policies.rollbacks),
            "policy_last_decision": policies.last_decision,
            "policy_last_reason": policies.last_reason,
            "policy_last_candidate": policies.last_candidate,
            "policy_candidates_deferred": str(self.policies.throttle.deferred),
            **({f"policy_{name}": f"{value:.6g}" for name, value in policy.metrics.items()} if policy else {}),
        })
        if current is not None:
            values.update({name: f"{value:.6g}" for name, value in current.metrics.items()})
        level, message = (DiagnosticStatus.OK, f"serving {current.describe()}") if current else \
            (DiagnosticStatus.WARN, "no model yet")
        self.diag_pub.publish(diagnostic_array(self, f"{self.get_fully_qualified_name()}", values, level, message))


def main(args: list[str] | None = None) -> int:
    return run_node(DynamicsServerNode, "dynamics_server", args)


if __name__ == "__main__":
    sys.exit(main())
