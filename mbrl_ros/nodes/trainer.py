"""trainer: retrains the dynamics model from the data_logger's bags and offers better models.

A separate, niced process with bounded torch threads, so it never competes
with the control loop for long. A worker thread does the slow work; the node
keeps spinning for the service, the model subscription and diagnostics.

Every ``poll_period`` the worker lists the closed bags under ``bag_dir`` and
reads only the new ones (``PerBagTransitions``: a closed bag never changes, so
none is parsed twice), with ``mbrl_ros.io.bags``, the same code as
``mbrl-ros fit``. A bag that cannot be read is reported and skipped (one whose files raise OSError,
after 3 looks in a row), until its metadata.yaml changes. A malformed message
is dropped alone: the drops per topic and reason are logged per bag and shown
in /diagnostics (``dropped_messages``, ``dropped_by_topic``). A round of training
runs once there are ``random_transitions`` transitions, then after every
``retrain_every`` new ones, and whenever ``trainer/train`` (std_srvs/Trigger) is
called. A round fits the ``model_kind`` model with ``fit_model`` on the training
episodes (early stopping and elites on the selection episodes, ``val_fraction``),
scores it and the deployed model (the latest on ``dynamics/model``) by multi-step
error on the same gate episodes (``gate_fraction``, seen by neither: see
``core.retraining.train_candidate``) and, with ``hold_out_recent``, on the transitions recorded since the
last round, which the candidate is not fitted on either (the gate episodes alone, a fifth of the episodes by
hash, are mostly random exploration: on the race they scored models on slow driving while the controller
lapped at 20 m/s), and, only if the candidate is better (or nothing is
deployed), saves it as ``<checkpoint_dir>/model_v<N>.pt`` and publishes it on
``dynamics/candidate`` for the dynamics_server. A candidate with non-finite
weights or predictions is rejected whatever its score.

Every round's decision (accepted, rejected or failed) is logged with the round,
the candidate's version (if accepted), the deployed version it was compared
with, the validation error per horizon of both, and the reason; it is appended
to ``<checkpoint_dir>/decisions.jsonl`` and shown in /diagnostics (``last_*``,
``candidate_val_rmse_h<H>``, ``deployed_val_rmse_h<H>``, counts).
``trainer/train`` only queues a round (a service callback must not block the
executor for a minute): its outcome is in the log, the file and diagnostics.
Rollback is the dynamics_server's (``dynamics/rollback``): it owns the models
that were deployed; the trainer then compares candidates with the restored one.

Policies (off unless ``learn_policy`` is true: the ``policy`` section, with the robot config's
``cost`` section and ``action_low``/``action_high``, written once in its ``/**`` section for the
controller and the trainer; the launch files set ``learn_policy`` under ``controller:=policy``): every time a model is deployed on
``dynamics/model`` (and on ``trainer/train_policy``), the worker trains a policy
(``core.policies.learning.PolicyLearner``, ``policy.method`` shac | mbpo) through that
model from the logged real states (``policy.candidates`` actors in turn, each its own seed, the best on the
held-out starts kept: each one's costs in decisions.jsonl's ``candidates`` and /diagnostics'
``policy_candidates_cost_<set>``), scores it and the deployed policy (``policy/model``,
or the robot's stop for the first: the car brakes and holds) in closed loop on the model from held-out real
episodes (the ``gate_fraction`` episodes), and, only if it is better, saves it as
``policy_v<N>.pt`` and publishes it on ``policy/candidate`` as a ModelUpdate of
model_kind ``policy``: the dynamics_server checks, versions, latches and rolls it back
(``policy/rollback``) as it does models. Goals, for a policy with ``policy.context``: each
episode's logged goal, the message on ``policy_context_topic`` (default: the robot plug-in's
input of that context, the car's ``goal_pose``, which the data_logger records) in effect at
the episode's first state (``io.bags.messages_in_effect``), converted by the plug-in as the
controller converts it; an episode without one (or whose message is malformed: dropped and
counted with the bag's dropped messages) takes its last state (``logged_or_final_goals``,
hindsight). How many took which is in the log line, decisions.jsonl (``goals``) and
/diagnostics (``policy_goals_logged``, ``policy_goals_final_state``). Decisions go to the same
decisions.jsonl (``"kind": "policy"``) and to /diagnostics (``policy_*``). ROS parameters
hold no nested lists: ``policy.actor.relative_dims`` is written flat
([state index, context index, ...]).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_srvs.srv import Trigger

from mbrl_interfaces.msg import ModelUpdate
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import check_training_options
from mbrl_ros.core.model_kinds import MODEL_KINDS
from mbrl_ros.core.retraining import PerBagTransitions, RetrainSchedule, TrainingRound, train_candidate
from mbrl_ros.io import checkpoint
from mbrl_ros.io.bags import BagError, list_bags, load_transitions, messages_in_effect, recorded_episodes
from mbrl_ros.io.config import model_section_at
from mbrl_ros.io import policy_checkpoint
from mbrl_ros.io.model_update import pack, pack_policy, unpack
from mbrl_ros.robots import available_robots, get_robot
from mbrl_ros.ros.diagnostics import diagnostic_array
from mbrl_ros.ros.run import run_node
from mbrl_ros.ros.params import Param, declare_all, section
from mbrl_ros.ros.qos import LATCHED

PARAMS = [
    Param("robot", "car", f"the robot plug-in (mbrl_ros.robots.<robot>: {', '.join(available_robots())}): its "
          "physics prior", read_only=True),
    Param("model_kind", "parametric", "model to train: parametric | ensemble | semiparametric (settings: the section of that name)"),
    Param("bag_dir", "bags", "folder of the data_logger's bags; closed bags (with metadata.yaml) are read"),
    Param("state_topic", "state", "StateVector topic in the bags (relative names resolve in this node's namespace)"),
    Param("command_topic", "hw/command", "CommandVector topic in the bags"),
    Param("dt", 0.2, "control period (s), the robot config's '/**' dt: a transition's next state is stamped dt "
          "after its state, and the model steps dt", (1e-3, 10.0)),
    Param("max_stamp_error", 0.05, "tolerance (s) on the next state's stamp; must be < dt/2", (0.0, 5.0)),
    Param("max_jump", 2.0, "a position change (m) larger than this in one step is a reset, not motion", (0.0, 1e6)),
    Param("random_transitions", 2000, "transitions before the first model (the robot config's '/**' exploration "
          "budget)", (2, 100_000_000)),
    Param("learn_policy", False, "learn a policy on each deployed model (the 'policy' section, the '/**' cost and "
          "action bounds): true under controller:=policy or a planner's policy_prior_fraction", read_only=True),
    Param("prior_planner", "", "the controller's planner (the launch files give controller:=...): where its section "
          "(the robot config's '/**', as the cost) has policy_prior_fraction > 0, each policy is also checked as that "
          "planner's prior (policy.validation.prior_starts) and one it does worse with is not deployed", read_only=True),
    Param("policy_context_topic", "", "topic in the bags whose message in effect at an episode's first state is that "
          "episode's policy context (policy.context: the goal it was given), converted as the controller converts "
          "it; '' : the robot plug-in's input of that context (the car's goal_pose); 'none': every episode's final "
          "state (hindsight). Episodes without a logged goal take their final state", read_only=True),
    Param("retrain_every", 1000, "new transitions between training rounds", (1, 100_000_000)),
    Param("policy_retrain_every", 0, "with a policy (learn_policy): new transitions after which the policy is learned "
          "again on the same deployed model (0: only on a new model or a train_policy request); the first policy "
          "is learned on the exploration's data, a later one on the controller's episodes", (0, 100_000_000)),
    Param("poll_period", 5.0, "seconds between looks at bag_dir", (0.05, 3600.0)),
    Param("val_fraction", 0.2, "fraction of the episodes that stop training early and choose the elites "
          "(selection)", (0.01, 0.99)),
    Param("gate_fraction", 0.2, "fraction of the episodes held out from fitting and selection: the candidate and "
          "the deployed model are scored on them, and that decides", (0.01, 0.99)),
    Param("horizons", [1, 5, 10, 20], "horizons (steps) of the multi-step validation error"),
    Param("hold_out_recent", True, "hold the transitions recorded since the last round out of fitting and score the "
          "candidate and the deployed model on them too (with the gate episodes): the gate then covers where the "
          "controller drives now, not only the hash-chosen episodes, mostly random exploration"),
    Param("min_improvement", 0.0, "relative improvement of the validation score a candidate needs", (0.0, 0.99)),
    Param("split_seed", 0, "seed of the episode-stable validation split", (0, 2**31 - 1)),
    Param("checkpoint_dir", "checkpoints", "where accepted models are saved as model_v<N>.pt"),
    Param("threads", 1, "torch threads for training", (1, 256), read_only=True),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.05, 60.0)),
    Param("stop_timeout", 10.0, "seconds a shutdown waits for a training round to stop at its next epoch; past "
          "it the process ends with exit code 1", (0.0, 600.0)),
]


def next_numbered_path(folder: str | os.PathLike, stem: str) -> tuple[int, Path]:
    """``<stem>_v<N>.pt`` with N one past the highest already there (so a restart never overwrites)."""
    folder = Path(folder)
    pattern = re.compile(rf"{re.escape(stem)}_v(\d+)\.pt$")
    taken = [int(m.group(1)) for f in folder.glob(f"{stem}_v*.pt") if (m := pattern.search(f.name))]
    number = max(taken, default=0) + 1
    return number, folder / f"{stem}_v{number}.pt"


def save_numbered_checkpoint(folder: str | os.PathLike, model, config: dict, metrics: dict) -> tuple[int, Path]:
    """Save as ``model_v<N>.pt`` (``next_numbered_path``)."""
    number, path = next_numbered_path(folder, "model")
    checkpoint.save(path, model, config, metrics)
    return number, path


class TrainerNode(Node):
    def __init__(self) -> None:
        super().__init__("trainer", automatically_declare_parameters_from_overrides=True)
        self.p = declare_all(self, PARAMS)
        self.robot = get_robot(self.p["robot"], f"{self.get_fully_qualified_name()}: parameter 'robot'")
        torch.set_num_threads(self.p["threads"])
        kind = self.p["model_kind"]
        if kind not in MODEL_KINDS:
            raise ValueError(f"parameter 'model_kind': expected one of {list(MODEL_KINDS)}, got {kind!r}")
        self.model_config = section(self, kind)
        if not self.model_config:
            raise ValueError(f"parameter '{kind}': no model section of that name in the parameters")
        # The model steps the control period the transitions are read at: dt, written once.
        self.model_config = model_section_at(self.model_config, self.p["dt"], f"trainer parameter '{kind}'")
        self.robot.build_model(self.model_config, where=f"trainer parameter '{kind}'")  # fail now, not in a round
        self.training = check_training_options(section(self, "training"), source="trainer parameter 'training'")
        self.angle_dims = list(self.optional("angle_dims", []))
        self.max_change = section(self, "max_change")  # {state name: largest change in one step}
        self.error_scale = self.optional("error_scale", None)
        self.state_names = self.optional("state_names", None)
        self.action_names = self.optional("action_names", None)
        self.state_topic = self.resolve_topic_name(self.p["state_topic"])
        self.command_topic = self.resolve_topic_name(self.p["command_topic"])
        self.schedule = RetrainSchedule(self.p["random_transitions"], self.p["retrain_every"])
        self.policy = self.policy_settings()  # None: no policy learning
        self.context_input = self.policy_context_input()  # None: final-state goals only

        self.lock = threading.Lock()  # guards what the worker and the callbacks share below
        self.deployed = None  # (version, model) from dynamics/model
        self.train_requested = False
        self.training_now = False
        self.bag_cache = PerBagTransitions(self.read_bag)
        self.dropped: dict[Path, dict[str, dict[str, int]]] = {}  # bag -> topic -> reason -> messages dropped
        self.bag_goals: dict[Path, dict[int, list[float] | None]] = {}  # bag -> its episode id -> logged goal
        # What read_bag found, taken into ``dropped`` and ``bag_goals`` together with the dataset (worker only),
        # so /diagnostics never shows a bag's drops beside a dataset that does not hold the bag yet.
        self.bag_reports: dict[Path, tuple[dict, dict]] = {}
        # bag -> (per its episode id: first state's and last next state's stamps, its reported resets) (worker only)
        self.bag_spans: dict[Path, tuple[list[tuple[int, int]], list[int]]] = {}
        self.recorded_episodes = 0  # the recording's episodes in the dataset (its episodes cut at bag splits joined)
        self.round_epochs = 0
        self.origins: dict[int, tuple[Path, int]] = {}  # dataset episode -> (bag, its id there)
        self.bags: list[Path] = []
        self.dataset: TransitionDataset | None = None
        self.data_error = ""
        self.trained_at: int | None = None
        self.rounds = self.accepted = self.rejected = self.failed = 0
        self.last_round: dict[str, str] = {}
        self.decision_log = Path(self.p["checkpoint_dir"]) / "decisions.jsonl"
        self.deployed_policy = None  # (version, actor) from policy/model
        self.policy_requested = ""  # why a policy round is due ('' if none)
        self.policy_trained_at: int | None = None  # transitions the last policy round learned from
        self.policy_rounds = self.policy_accepted = self.policy_rejected = self.policy_failed = 0
        self.last_policy_round: dict[str, str] = {}

        self.candidate_pub = self.create_publisher(ModelUpdate, "dynamics/candidate", LATCHED)
        if self.policy is not None:
            self.policy_pub = self.create_publisher(ModelUpdate, "policy/candidate", LATCHED)
            self.create_subscription(ModelUpdate, "policy/model", self.on_policy, LATCHED)
            self.create_service(Trigger, "trainer/train_policy", self.on_train_policy)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ModelUpdate, "dynamics/model", self.on_model, LATCHED)
        self.create_service(Trigger, "trainer/train", self.on_train)
        # Wall time: a held lockstep simulation stops the ROS clock while the demo waits on these diagnostics.
        self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.worker: threading.Thread | None = None  # started by start(), once run_node has checked everything
        self.get_logger().info(
            f"training '{kind}' from {self.state_topic} and {self.command_topic} in {self.p['bag_dir']}: first model "
            f"at {self.p['random_transitions']} transitions, then every {self.p['retrain_every']}"
        )

    def read_bag(self, bag: Path) -> TransitionDataset:
        """One closed bag's transitions; the messages dropped from it (malformed ones) are kept in
        ``dropped[bag]`` ({topic: {reason: count}}) for the log and diagnostics."""
        report: dict = {}
        goals: dict[int, list[float] | None] = {}
        try:
            dataset = load_transitions([bag], section(self, "transitions"), self.p["dt"],
                                       max_stamp_error=self.p["max_stamp_error"], max_jump=self.p["max_jump"],
                                       max_change=self.max_change, angle_dims=self.angle_dims,
                                       state_names=self.state_names, action_names=self.action_names,
                                       namespace=self.get_namespace(), source="trainer parameter 'transitions'",
                                       report=report)
            if self.context_input is not None:
                goals = self.read_goals(bag, report["episode_starts"], report.setdefault("dropped", {}))
            return dataset
        finally:
            self.bag_reports[bag] = (report.get("dropped", {}), goals)
            self.bag_spans[bag] = (report.get("episode_spans", []), report.get("reset_stamps", []))

    def read_goals(self, bag: Path, starts: list[tuple[int, int]], dropped: dict) -> dict[int, list[float] | None]:
        """Each episode's logged goal (the context input's message in effect at its first state, converted by the
        robot plug-in), None where there is none; a malformed message is dropped and counted in ``dropped``."""
        context = self.context_input
        where = f"bag {bag}: topic '{context.topic}'"
        report: dict = {}
        try:
            messages = messages_in_effect([bag], context.topic, message_type_name(context.message_type), starts,
                                          namespace=self.get_namespace(), report=report)
        except BagError as err:  # the transitions were read: the bag's episodes keep their final states as goals
            self.get_logger().warn(f"{where}: cannot read the logged goals ({err}); its episodes take their final "
                                   "states")
            return {}
        for topic, reasons in report.get("dropped", {}).items():
            for reason, count in reasons.items():
                dropped.setdefault(topic, {})[reason] = dropped.get(topic, {}).get(reason, 0) + count
        goals: dict[int, list[float] | None] = {}
        for episode, message in enumerate(messages):
            goal = None
            if message is not None:
                try:
                    goal = [float(v) for v in context.convert(message)]
                except (ValueError, TypeError, AttributeError) as err:  # a goal the controller would refuse too
                    reason = f"goal not converted: {type(err).__name__}: {err}"
                    topic = dropped.setdefault(self.resolve_topic_name(context.topic), {})
                    topic[reason] = topic.get(reason, 0) + 1
                    self.get_logger().warn(f"{where}: episode {episode}'s goal message dropped: {reason}")
            goals[episode] = goal
        return goals

    def policy_context_input(self):
        """The robot's input for ``policy.context`` (topic and conversion), on ``policy_context_topic``; None for
        final-state goals only."""
        if self.policy is None or self.policy[0].context is None or self.p["policy_context_topic"] == "none":
            return None
        context = self.policy[0].context
        inputs = [c for c in self.robot.messages().context_inputs() if c.context == context]
        if not inputs:
            if self.p["policy_context_topic"]:
                raise ValueError(f"trainer parameter 'policy_context_topic' is '{self.p['policy_context_topic']}' "
                                 f"but robot '{self.robot.name}' has no input for the cost context '{context}' "
                                 f"(policy.context) to convert its messages with")
            self.get_logger().warn(f"robot '{self.robot.name}' has no input for the cost context '{context}': "
                                   "every episode's goal is its final state")
            return None
        return replace(inputs[0], topic=self.p["policy_context_topic"] or inputs[0].topic)

    def policy_settings(self):
        """The ``policy`` section checked, its cost built and a learner made, or None unless ``learn_policy``."""
        if not self.p["learn_policy"]:
            return None
        values = section(self, "policy")
        if not values:
            raise ValueError("trainer parameter 'learn_policy' is true but there is no 'policy' section (method, "
                             "actor, ...) in the parameters")
        from mbrl_ros.core.policies.config import PolicyConfig
        from mbrl_ros.core.policies.learning import PolicyLearner

        actor = values.get("actor", {})
        flat = actor.get("relative_dims")
        if flat and not isinstance(flat[0], (list, tuple)):  # a params file holds them flat: pair them up
            if len(flat) % 2:
                raise ValueError(f"parameter 'policy.actor.relative_dims': expected [state index, context index, "
                                 f"...] (an even count), got {flat}")
            actor["relative_dims"] = [list(flat[i:i + 2]) for i in range(0, len(flat), 2)]
        config = PolicyConfig.from_dict(values, where="trainer parameter 'policy'")
        bounds = [self.optional(name, None) for name in ("action_low", "action_high")]
        if None in bounds:
            raise ValueError("trainer parameters 'action_low' and 'action_high' (the controller's, in the robot "
                             "config's '/**' section) are needed with the 'policy' section")
        cost_section = section(self, "cost")
        if not cost_section:
            raise ValueError("trainer parameter 'cost' (the controller's cost section, in the robot config's '/**' "
                             "section) is needed with the 'policy' section: the policy learns the planners' cost")
        dims = self.robot.build_model(self.model_config, where="trainer").state_dim, len(bounds[0])
        cost = self.robot.build_cost(cost_section, *dims, source="trainer parameter 'cost'")
        success = config.validation.success and self.robot.task_success(
            config.validation.success, "trainer parameter 'policy.validation.success'")
        return config, cost, PolicyLearner(config, *bounds, first_reference=self.stop_reference(bounds),
                                           prior_planner=self.prior_planner(cost, bounds), success=success or None)

    def prior_planner(self, cost, bounds) -> tuple | None:
        """(make_planner(model), name): the controller's planner where it samples around the policy (its section
        in the '/**' parameters with policy_prior_fraction > 0), built as the controller builds it but eager;
        else None."""
        name = self.p["prior_planner"]
        settings = section(self, name) if name else {}
        if not settings or float(settings.get("policy_prior_fraction", 0.0)) <= 0:
            return None
        import copy

        from mbrl_ros.core.planners import build_planner

        settings = {**settings, "action_low": bounds[0], "action_high": bounds[1], "compile": False}
        max_rate = self.optional("max_rate", [0.0])
        if list(max_rate) != [0.0]:
            settings["max_rate"] = max_rate

        def make_planner(model):
            return build_planner(name, model, copy.deepcopy(cost), settings, source=f"trainer: the prior's {name}")

        make_planner(self.robot.build_model(self.model_config, where="trainer"))  # its settings checked now
        self.get_logger().info(f"policies are also checked as the prior of '{name}' (policy_prior_fraction "
                               f"{settings['policy_prior_fraction']})")
        return make_planner, name

    def stop_reference(self, bounds) -> tuple:
        """The robot's stop as a policy (the car: brake to a standstill and hold it): what the stack does without
        a policy, so what a first policy must beat; built from the robot's stop parameters, which the robot
        config writes in its '/**' section for the controller and the trainer alike."""
        from mbrl_ros.core.policies import StopPolicy

        if self.state_names is None or self.action_names is None:
            raise ValueError("trainer parameters 'state_names' and 'action_names' (the robot config's '/**' section) "
                             "are needed with the 'policy' section: the robot's stop is the first policy's reference")
        params = {"state_names": self.state_names, "action_names": self.action_names, "dt": self.p["dt"]}
        for name in [p.name for p in self.robot.messages().controller_parameters] + ["safe_action"]:
            if self.has_parameter(name):
                params[name] = self.get_parameter(name).value
        try:
            stop = self.robot.stop(params, "trainer")
        except KeyError as err:
            raise ValueError(f"trainer: the robot's stop, the reference a first policy must beat, needs parameter "
                             f"{err} in the robot config's '/**' section (the controller reads it there too)") from None
        return StopPolicy(stop, *bounds), "robot's stop (standing still)"

    def optional(self, name: str, default):
        return list(self.get_parameter(name).value) if self.has_parameter(name) else default

    # --- callbacks (executor thread) ---------------------------------------------------------
    def on_model(self, msg: ModelUpdate) -> None:
        try:
            model, _, _ = unpack(msg, source=f"dynamics/model v{msg.version}")
        except ValueError as err:
            self.get_logger().error(f"ignoring the deployed model: {err}")
            return
        with self.lock:
            self.deployed = (msg.version, model)
            if self.policy is not None:
                self.policy_requested = f"model v{msg.version} deployed"
        self.wake.set()
        self.get_logger().info(f"deployed model is now v{msg.version}: candidates are compared with it")

    def on_policy(self, msg: ModelUpdate) -> None:
        try:
            actor, _, _ = unpack(msg, source=f"policy/model v{msg.version}")
        except ValueError as err:
            self.get_logger().error(f"ignoring the deployed policy: {err}")
            return
        with self.lock:
            self.deployed_policy = (msg.version, actor)
        self.get_logger().info(f"deployed policy is now v{msg.version}: policy candidates are compared with it")

    def on_train_policy(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            self.policy_requested = "requested"
            model = f"model v{self.deployed[0]}" if self.deployed else "no deployed model yet (it waits for one)"
        self.wake.set()
        response.success, response.message = True, f"queued a policy round on {model}"
        return response

    def on_train(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            self.train_requested = True
            busy, transitions, bags = self.training_now, len(self.dataset or ()), len(self.bags)
        self.wake.set()
        response.success = True
        response.message = (f"queued a training round ({'after the round in progress; ' if busy else ''}"
                            f"last look: {bags} bags, {transitions} transitions)")
        self.get_logger().info(f"trainer/train: {response.message}")
        return response

    # --- the worker --------------------------------------------------------------------------
    def work(self) -> None:
        while not self.stopping.is_set():
            try:
                # The request first, then the bags: a round requested after a bag was closed learns from it
                # (the demo closes the logger's bag of a held episode, then asks for this round).
                with self.lock:
                    requested, self.train_requested = self.train_requested, False
                self.look_at_bags()
                with self.lock:
                    transitions = len(self.dataset) if self.dataset is not None else 0
                    due = requested or self.schedule.due(transitions, self.trained_at)
                if due and self.dataset is not None:
                    self.train_round(self.dataset, "requested" if requested else "scheduled")
                elif requested:
                    self.get_logger().warn(f"training requested but there is no data: {self.data_error or 'no bags'}")
                with self.lock:
                    policy_due = self.policy_requested or self.policy_grown()
                    policy_due = policy_due if self.deployed and self.dataset is not None else ""
                    if policy_due:
                        self.policy_requested = ""
                if policy_due and not self.stopping.is_set():
                    self.policy_round(self.dataset, policy_due)
            except Exception as err:  # the worker must survive anything one round does
                self.get_logger().error(f"trainer worker: {type(err).__name__}: {err}\n{traceback.format_exc()}")
            self.wake.wait(self.p["poll_period"])
            self.wake.clear()

    def look_at_bags(self) -> None:
        fresh = self.bag_cache.update(list_bags(self.p["bag_dir"]))
        if not fresh and self.bag_cache.bags == self.bags:
            return
        dataset, errors = self.bag_cache.dataset, self.bag_cache.errors
        for bag in fresh:
            if bag in errors:
                self.get_logger().warn(f"skipping bag {bag}: {errors[bag]}")
            elif dropped := self.bag_reports.get(bag, ({}, {}))[0]:
                self.get_logger().warn(f"bag {bag}: dropped {dropped_count(dropped)} malformed message(s), kept the "
                                       f"rest: {dropped_summary(dropped)}")
        error = "; ".join(errors.values()) if dataset is None or errors else ""
        recorded = self.count_recorded_episodes(dataset, self.bag_cache.origins) if dataset is not None else 0
        with self.lock:
            self.recorded_episodes = recorded
            self.bags, self.dataset, self.data_error = list(self.bag_cache.bags), dataset, error
            self.origins = dict(self.bag_cache.origins)
            self.bag_reports = {bag: self.bag_reports[bag] for bag in self.bags if bag in self.bag_reports}
            self.bag_spans = {bag: self.bag_spans[bag] for bag in self.bags if bag in self.bag_spans}
            self.dropped = {bag: dropped for bag, (dropped, _) in self.bag_reports.items()}
            self.bag_goals = {bag: goals for bag, (_, goals) in self.bag_reports.items()}
        if dataset is not None:
            pieces = len(dataset.episodes())
            self.get_logger().info(
                f"read {len(fresh)} new bag(s): {len(dataset)} transitions in {recorded} episodes"
                + (f" (stored as {pieces} pieces: {pieces - recorded} cut(s) at a bag split or a lost message)"
                   if pieces != recorded else "") + f" from {len(self.bags) - len(errors)} bags")

    def count_recorded_episodes(self, dataset: TransitionDataset, origins: dict[int, tuple[Path, int]]) -> int:
        """The recording's episodes in ``dataset``: read bag by bag, an episode running across a bag split is
        stored as two (``PerBagTransitions``); the log once counted those, about twice the episodes driven."""
        return recorded_episodes([origins[episode] for episode, _, _ in dataset.episodes()], self.bag_spans,
                                 self.p["dt"], self.p["max_stamp_error"])

    def train_round(self, dataset: TransitionDataset, why: str) -> None:
        with self.lock:
            self.training_now = True
            self.round_epochs = 0
            deployed = self.deployed
            # The rows the last round saw: the deployed model was fitted on at most those.
            recent_from = self.trained_at if self.p["hold_out_recent"] and deployed else None
            self.trained_at = len(dataset)
            round_number = self.rounds + 1
        started = time.perf_counter()
        against = f"deployed v{deployed[0]}" if deployed else "no deployed model"
        try:
            result = train_candidate(
                dataset, self.model_config, deployed[1] if deployed else None,
                val_fraction=self.p["val_fraction"], gate_fraction=self.p["gate_fraction"], training=self.training, horizons=list(self.p["horizons"]),
                angle_dims=self.angle_dims, error_scale=self.error_scale,
                min_improvement=self.p["min_improvement"], split_seed=self.p["split_seed"],
                source=f"trainer '{self.p['model_kind']}'", physics=self.robot,
                progress=self.on_epoch, recent_from=recent_from,
            )
        except (ValueError, RuntimeError, ArithmeticError) as err:
            # Too few episodes, identification did not converge, training diverged (FloatingPointError), ...
            self.record_decision(round_number, why, started, "failed", f"{type(err).__name__}: {err}", against,
                                 len(dataset))
            return
        finally:
            with self.lock:
                self.training_now = False
        if self.stopping.is_set():  # cut short by a shutdown: a half-trained candidate is never deployed
            self.get_logger().info(f"round {round_number} abandoned: shutting down")
            return
        if not result.decision.accept:
            self.record_decision(round_number, why, started, "rejected", result.decision.reason, against,
                                 len(dataset), result)
            return
        number, path = save_numbered_checkpoint(self.p["checkpoint_dir"], result.fit.model, result.fit.config,
                                                result.metrics())
        fields = pack(result.fit.model, result.fit.config, result.metrics(), number, self.p["model_kind"])
        msg = ModelUpdate(**fields)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.candidate_pub.publish(msg)
        self.record_decision(round_number, why, started, "accepted", result.decision.reason, against, len(dataset),
                             result, version=number, note=f"saved {path}, published on dynamics/candidate")

    def on_epoch(self, epoch: int, stats: dict) -> bool:
        """After each training epoch of a round: counted for /diagnostics; True (a shutdown) ends the round."""
        with self.lock:
            self.round_epochs = epoch
        return self.stopping.is_set()

    def policy_grown(self) -> str:
        """Why a policy round is due because the data grew (policy_retrain_every), or ''; under the lock."""
        every, since = self.p["policy_retrain_every"], self.policy_trained_at
        if not every or since is None or self.policy is None or self.dataset is None:
            return ""
        grown = len(self.dataset) - since
        return f"{grown} transitions since the last policy round" if grown >= every else ""

    def policy_round(self, dataset: TransitionDataset, why: str) -> None:
        """Train a policy through the deployed model; publish it on policy/candidate only if it beats the deployed one."""
        from mbrl_ros.core.policies.learning import PolicyData, logged_or_final_goals

        config, cost, learner = self.policy
        with self.lock:
            self.training_now = True
            (model_version, model), deployed = self.deployed, self.deployed_policy
            round_number = self.policy_rounds + 1
        started = time.perf_counter()
        against = f"deployed policy v{deployed[0]}" if deployed else "the robot's stop (no deployed policy)"
        self.policy_trained_at = len(dataset)
        record = {"kind": "policy", "round": round_number, "why": why, "method": config.method,
                  "model_version": model_version, "compared_with": against, "transitions": len(dataset)}
        try:
            goals = None
            if config.context:
                with self.lock:
                    logged = {episode: self.bag_goals.get(bag, {}).get(own)
                              for episode, (bag, own) in self.origins.items()}
                goals, sources = logged_or_final_goals(dataset, logged)
                topic = self.resolve_topic_name(self.context_input.topic) if self.context_input else "none"
                record["goals"] = {**sources, "topic": topic}
            data = PolicyData.from_dataset(dataset, self.p["gate_fraction"], self.p["split_seed"], goals)
            result = learner.round(model, cost, data, deployed[1] if deployed else None,
                                   stop=self.stopping.is_set)
        except (ValueError, RuntimeError, ArithmeticError) as err:
            record.update(decision="failed", reason=f"{type(err).__name__}: {err}")
            self.record_policy_decision(record, started)
            return
        finally:
            with self.lock:
                self.training_now = False
        if self.stopping.is_set():  # cut short: never deployed
            self.get_logger().info(f"policy round {round_number} abandoned: shutting down")
            return
        record.update(decision="accepted" if result.decision.accept else "rejected", reason=result.decision.reason,
                      metrics=result.metrics())
        if len(result.candidates) > 1:  # policy.candidates: each one's seed and held-out costs, and which was kept
            record.update(chosen_candidate=result.chosen, candidates=[asdict(c) for c in result.candidates])
        if result.decision.accept:
            number, path = next_numbered_path(self.p["checkpoint_dir"], "policy")
            metrics = {**result.metrics(), "model_version": float(model_version)}
            policy_checkpoint.save(path, result.actor, metrics)  # the same bytes as the message's weights
            msg = ModelUpdate(**pack_policy(result.actor, metrics, number))
            msg.header.stamp = self.get_clock().now().to_msg()
            self.policy_pub.publish(msg)
            record.update(candidate_version=number, note=f"saved {path}, published on policy/candidate")
        self.record_policy_decision(record, started)

    def record_policy_decision(self, record: dict, started: float) -> None:
        record.update(seconds=round(time.perf_counter() - started, 3), wall_time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        named = f"policy v{record['candidate_version']}" if "candidate_version" in record else "policy candidate"
        line = (f"policy round {record['round']} ({record['why']}, {record['method']} on model "
                f"v{record['model_version']}, {record['seconds']:.1f} s): {named} {record['decision']} against "
                f"{record['compared_with']}: {record['reason']}" + (f"; {record['note']}" if "note" in record else "")
                + (f"; goals: {g['logged']} episodes' logged on {g['topic']}, {g['final_state']} final states"
                   if (g := record.get("goals")) else ""))
        if record["decision"] == "failed":
            self.get_logger().error(line)
        else:
            self.get_logger().info(line)
        self.append_decision(record)
        summary = {
            "policy_last_decision": record["decision"], "policy_last_reason": record["reason"],
            "policy_last_round": record["why"], "policy_last_compared_with": record["compared_with"],
            "policy_last_candidate_version": str(record.get("candidate_version", "none")),
            "policy_last_round_seconds": f"{record['seconds']:.2f}",
            **{f"policy_candidate_{k}": f"{v:.6g}" for k, v in record.get("metrics", {}).items()},
            **{f"policy_goals_{k}": str(v) for k, v in record.get("goals", {}).items()},
            **({"policy_chosen_candidate": str(record["chosen_candidate"])} if "candidates" in record else {}),
            **{f"policy_candidates_cost_{k}": ", ".join(f"{c['cost'][k]:.6g}" for c in record["candidates"])
               for k in (record["candidates"][0]["cost"] if "candidates" in record else {})},
        }
        with self.lock:
            self.policy_rounds += 1
            self.policy_accepted += record["decision"] == "accepted"
            self.policy_rejected += record["decision"] == "rejected"
            self.policy_failed += record["decision"] == "failed"
            self.last_policy_round = summary

    def append_decision(self, record: dict) -> None:
        """One line of decisions.jsonl; a failure to write is logged (the decision is in the log and diagnostics)."""
        try:
            self.decision_log.parent.mkdir(parents=True, exist_ok=True)
            with self.decision_log.open("a") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")
        except OSError as err:
            self.get_logger().error(f"cannot append to {self.decision_log}: {err}")

    def record_decision(self, round_number: int, why: str, started: float, decision: str, reason: str,
                        against: str, transitions: int, result: TrainingRound | None = None,
                        version: int | None = None, note: str = "") -> None:
        """Log one round's decision, append it to decisions.jsonl, and show it in diagnostics."""
        seconds = time.perf_counter() - started
        candidate = result.metrics() if result is not None else {}
        current = result.current_metrics() if result is not None else {}
        record = {
            "round": round_number, "why": why, "decision": decision, "reason": reason,
            "candidate_version": version, "compared_with": against, "transitions": transitions,
            "seconds": round(seconds, 3), "wall_time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "candidate": candidate, "deployed": current,
        }
        errors = " ".join(f"val_rmse_h{h}={candidate.get(f'val_rmse_h{h}', float('nan')):.4g}"
                          f"{f' (deployed {current[k]:.4g})' if (k := f'val_rmse_h{h}') in current else ''}"
                          for h in self.p["horizons"]) if result is not None else ""
        named = f"candidate v{version}" if version is not None else "candidate"
        line = (f"round {round_number} ({why}, {transitions} transitions, {seconds:.1f} s): {named} {decision} "
                f"against {against}: {reason}" + (f" [{errors}]" if errors else "") + (f"; {note}" if note else ""))
        # Two call sites: rclpy fixes a call site's severity at its first call and raises if it changes.
        if decision == "failed":
            self.get_logger().error(line)
        else:
            self.get_logger().info(line)
        self.append_decision(record)
        summary = {
            "last_round": why,
            "last_round_number": str(round_number),
            "last_decision": decision,
            "last_reason": reason,
            "last_round_outcome": f"{decision}: {reason}",
            "last_candidate_version": str(version) if version is not None else "none",
            "last_compared_with": against,
            "last_round_seconds": f"{seconds:.2f}",
            "last_round_wall_time": record["wall_time"],
            **{f"candidate_{k}": f"{v:.6g}" for k, v in candidate.items()},
            **{f"deployed_{k}": f"{v:.6g}" for k, v in current.items()},
        }
        with self.lock:
            self.rounds += 1
            self.accepted += decision == "accepted"
            self.rejected += decision == "rejected"
            self.failed += decision == "failed"
            self.last_round = summary

    # --- diagnostics ---------------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        with self.lock:
            dropped: dict[str, dict[str, int]] = {}
            for per_topic in self.dropped.values():
                for topic, reasons in per_topic.items():
                    for reason, count in reasons.items():
                        dropped.setdefault(topic, {})[reason] = dropped.get(topic, {}).get(reason, 0) + count
            values = {
                "model_kind": self.p["model_kind"],
                "bags": str(len(self.bags)),
                "bags_read": str(self.bag_cache.reads),
                "bags_skipped": str(len(self.bag_cache.errors)),
                "dropped_messages": str(dropped_count(dropped)),
                "dropped_by_topic": dropped_summary(dropped),
                "transitions": str(len(self.dataset) if self.dataset is not None else 0),
                "episodes": str(self.recorded_episodes),  # as recorded: those cut at a bag split once
                "episodes_stored": str(len(self.dataset.episodes()) if self.dataset is not None else 0),
                "data_error": self.data_error,
                "training_now": str(self.training_now),
                "round_epochs": str(self.round_epochs),  # epochs of the round in progress, or of the last one
                "trained_at_transitions": str(self.trained_at if self.trained_at is not None else "never"),
                "rounds": str(self.rounds),
                "accepted": str(self.accepted),
                "rejected": str(self.rejected),
                "failed": str(self.failed),
                "deployed_version": str(self.deployed[0]) if self.deployed else "none",
                **self.last_round,
            }
            if self.policy is not None:
                values.update({
                    "policy_method": self.policy[0].method,
                    "policy_rounds": str(self.policy_rounds), "policy_accepted": str(self.policy_accepted),
                    "policy_rejected": str(self.policy_rejected), "policy_failed": str(self.policy_failed),
                    "deployed_policy_version": str(self.deployed_policy[0]) if self.deployed_policy else "none",
                    **self.last_policy_round,
                })
        outcome = values.get("last_round_outcome", "")
        level = DiagnosticStatus.WARN if values["data_error"] or values.get("last_decision") == "failed" \
            else DiagnosticStatus.OK
        message = "training" if values["training_now"] == "True" else (outcome or "waiting for data")
        self.diag_pub.publish(diagnostic_array(self, self.get_fully_qualified_name(), values, level, message))

    def start(self) -> None:
        """Start the training worker: after the node is built and its parameters and params files have passed
        every check (run_node), so a node refused for a bad key never reads a bag, and no thread of ours runs
        while rclpy is still being set up in the main thread."""
        self.worker = threading.Thread(target=self.work, name="trainer-worker", daemon=True)
        self.worker.start()

    def close(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.worker is None:
            return
        # A round in progress stops at its next training epoch (train_round's progress callback); the worker
        # must be gone before the interpreter exits, or a torch thread it runs aborts the process (SIGABRT).
        self.worker.join(timeout=self.p["stop_timeout"])
        if self.worker.is_alive():
            # An epoch longer than the timeout (a large model on a loaded machine): leaving the interpreter now
            # would abort the process in the worker's torch thread ("terminate called without an active
            # exception", SIGABRT). End it here instead, with a code that says the round did not stop; nothing
            # of the round is written (a candidate is saved only after its training).
            print(f"[trainer] the training round did not stop within {self.p['stop_timeout']} s: exiting with "
                  "code 1", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)


def message_type_name(message_type: type) -> str:
    """rclpy's ``geometry_msgs.msg.PoseStamped`` -> ``geometry_msgs/msg/PoseStamped`` (the name in bags)."""
    return f"{message_type.__module__.split('.')[0]}/msg/{message_type.__name__}"


def dropped_count(dropped: dict[str, dict[str, int]]) -> int:
    return sum(sum(reasons.values()) for reasons in dropped.values())


def dropped_summary(dropped: dict[str, dict[str, int]]) -> str:
    """``{topic: {reason: count}}`` in one line: ``/car/state: 2 (reason; reason), ...``."""
    return ", ".join(f"{topic}: {sum(reasons.values())} ({'; '.join(reasons)})" for topic, reasons in dropped.items())


def main(args: list[str] | None = None) -> int:
    os.nice(10)  # below the control loop whenever the two compete for a core
    return run_node(TrainerNode, "trainer", args)


if __name__ == "__main__":
    sys.exit(main())
