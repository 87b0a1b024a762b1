"""The robot plug-in interface: what one robot adds to the generic stack.

A robot is a package ``mbrl_ros/robots/<name>/`` holding:

- ``__init__.py``: ``ROBOT``, an instance of a ``Robot`` subclass (ROS-free):
  state and action names, units and angle dimensions (defaults: the robot's
  YAML stays the source of truth for values), its physics prior (model kind
  ``parametric``), its cost terms, its state estimator, and its stop (``Stop``:
  what "safe" means for this robot);
- ``messages.py``: the one module that knows ROS messages: its ``MESSAGES``,
  a ``RobotMessages``, lists the topics the generic estimator node reads
  (``sensor_inputs``) and the goal/context topics the generic controller node
  reads (``context_inputs``), and holds the message <-> vector conversions the
  robot's drivers share.

Everything but ``messages.py`` imports no rclpy, so ``mbrl-ros fit`` and core
tests use a robot without ROS. ``mbrl_ros.robots.get_robot(name)`` finds it.
A plug-in imports its heavy parts (torch models, casadi) only when asked for
them, so a node that only estimates (numpy) loads no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence

import numpy as np

from mbrl_ros.core.estimation import Rejection, StateEstimate
from mbrl_ros.core.stop import HoldCommand, Stop

if TYPE_CHECKING:
    from mbrl_ros.core.costs import CostTerm, TrajectoryCost
    from mbrl_ros.core.models import DynamicsModel, PhysicsModel
    from mbrl_ros.core.sysid import SysIdResult

__all__ = ["ContextInput", "HoldCommand", "Robot", "RobotMessages", "SensorInput", "StateEstimator", "Stop"]


class StateEstimator(Protocol):
    """A robot's estimator core (ROS-free): sensor values in, ``StateEstimate`` or ``Rejection`` out.

    Its inputs are the robot's own (``RobotMessages.sensor_inputs`` feeds them); the
    counters are what the estimator node reports on /diagnostics.
    """

    accepted: int
    rejected: int
    repeats: int
    resyncs: int
    last_rejection: str

    def reset(self) -> None: ...


class Robot:
    """One robot's plug-in. Subclasses set the class attributes and implement ``estimator``."""

    name: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]]  # the model state's entries, in model order
    state_units: ClassVar[tuple[str, ...]]  # one per state entry
    action_names: ClassVar[tuple[str, ...]]  # the command's entries
    action_units: ClassVar[tuple[str, ...]]  # one per action entry ("1": normalised to [-1, 1])
    angle_dims: ClassVar[tuple[int, ...]] = ()  # state entries that are angles (wrapped to (-pi, pi])

    # --- models -------------------------------------------------------------------------------
    def physics_prior(self, options: dict, where: str) -> "PhysicsModel":
        """The model kind ``parametric``: this robot's physics, from its config section (without ``type``)."""
        raise ValueError(f"{where}: robot '{self.name}' has no physics prior, so model kind 'parametric' (and "
                         "'semiparametric', which adds a residual to it) is not available; use 'ensemble'")

    def model_kinds(self, state_names: Sequence[str] | None = None) -> tuple[str, ...]:
        """The model kinds this robot can run (for a task whose state is ``state_names``, when given): every
        kind with a physics prior, else only 'ensemble' (parametric and semiparametric are built on the prior).
        A robot whose prior covers only some of its tasks' states overrides it."""
        from mbrl_ros.core.model_kinds import MODEL_KINDS

        has_prior = type(self).physics_prior is not Robot.physics_prior
        return MODEL_KINDS if has_prior else tuple(k for k in MODEL_KINDS if k == "ensemble")

    def identify(self, model: "PhysicsModel", states, actions, next_states) -> "SysIdResult":
        """``model``'s (a physics prior of this robot) parameters fitted to transitions, starting from its own."""
        raise ValueError(f"robot '{self.name}' has no physics prior to identify")

    def build_model(self, config: Mapping[str, Any], where: str = "model") -> "DynamicsModel":
        """``mbrl_ros.core.models.build_model`` with this robot's physics prior."""
        from mbrl_ros.core.models import build_model

        return build_model(config, where, physics=self)

    # --- costs --------------------------------------------------------------------------------
    def cost_terms(self) -> dict[str, type["CostTerm"]]:
        """The cost term kinds this robot adds to the core's (or extends: a subclass under a core kind's name)."""
        return {}

    def term_kinds(self) -> dict[str, type["CostTerm"]]:
        """The cost term kinds a cost of this robot may use: the core's and the robot's own."""
        from mbrl_ros.core.costs import TERM_KINDS

        return {**TERM_KINDS, **self.cost_terms()}

    def build_cost(self, section: Mapping[str, Any], state_dim: int, action_dim: int,
                   source: str = "config: cost") -> "TrajectoryCost":
        from mbrl_ros.core.costs import build_cost

        return build_cost(section, state_dim, action_dim, source=source, kinds=self.term_kinds())

    # --- planning -----------------------------------------------------------------------------
    def planner_proposal(self, section: Mapping[str, Any] | None, source: str = "config: proposal"):
        """The planner's proposal from the controller's ``proposal`` section (its ``type``; empty: None): a
        robot's per-goal solution the planner samples around beside its shifted plan (``Planner.set_prior``: called
        on states, with ``prepare(state, planner)`` once per plan to read the planner's model, cost and output bias,
        ``act(state)`` for the NumPy rollout, and ``open_loop`` where its action does not depend on the state: then
        no rollout, MPPI scores it as a sample). The base robot has none."""
        if not section:
            return None
        raise ValueError(f"{source}: robot '{self.name}' has no proposal of type {section.get('type')!r}")

    # --- tasks --------------------------------------------------------------------------------
    def success_criteria(self) -> dict[str, Callable]:
        """The robot's tasks' success, by name, as the task's simulator scores an episode:
        ``success(states [B, T+1, nx], contexts [B, C] or None) -> [B] bool``, one per episode (its states from
        the start). The trainer checks a policy as the planner's prior by it (``policy.validation.success``).
        The base robot has none."""
        return {}

    def task_success(self, name: str, where: str) -> Callable:
        """``success_criteria()[name]``, or a ValueError naming ``where`` and the criteria there are."""
        criteria = self.success_criteria()
        if name not in criteria:
            raise ValueError(f"{where}: robot '{self.name}' has no task success {name!r} (it has: "
                             f"{sorted(criteria) or 'none'})")
        return criteria[name]

    # --- estimation ---------------------------------------------------------------------------
    def estimator(self, params: Mapping[str, Any], source: str) -> StateEstimator:
        """The estimator core from the estimator node's parameters (the generic ones: ``state_names``,
        ``action_names``, ``dt``, ``resync_after``; and the robot's ``RobotMessages.estimator_parameters``).
        Raises ValueError naming ``source`` and the parameter when they do not fit the robot."""
        raise NotImplementedError

    def check_estimated_states(self, params: Mapping[str, Any], source: str) -> None:
        """Raise ValueError naming ``source`` when the node's ``state_names`` are not the ones this
        robot's estimator produces (its ``state_names``, in that order)."""
        if list(params["state_names"]) != list(self.state_names):
            raise ValueError(f"{source}: parameter 'state_names' is {list(params['state_names'])}, but the "
                             f"{self.name}'s estimator produces {list(self.state_names)}")

    # --- safety -------------------------------------------------------------------------------
    def stop(self, params: Mapping[str, Any], source: str) -> Stop:
        """This robot's stop (see ``Stop``), from the controller's parameters: the generic ones
        (``dt``, ``state_names``, ``action_names``, ``safe_action``) and the robot's own
        ``RobotMessages.controller_parameters``. Raises ValueError naming ``source`` and the
        parameter when they do not fit. Default: the configured ``safe_action``, always.
        """
        return HoldCommand(params["safe_action"])

    # --- ROS ----------------------------------------------------------------------------------
    def messages(self) -> "RobotMessages":
        """The robot's ROS side (``mbrl_ros.robots.<name>.messages.MESSAGES``); imports rclpy."""
        return importlib.import_module(f"mbrl_ros.robots.{self.name}.messages").MESSAGES

    def __repr__(self) -> str:
        return f"<robot {self.name}>"


@dataclass(frozen=True)
class SensorInput:
    """A topic the estimator node subscribes to, and what one of its messages does to the estimator.

    ``read(message)`` feeds the estimator and returns its outcome: a new estimate to
    publish, a ``Rejection`` (with its reason), None (nothing to publish yet), or a list of
    them in order. ``measures``: its messages are measurements of the state, whose header's
    frame the published states take (a command input's are not).
    """

    topic: str
    message_type: type
    qos: Any  # rclpy.qos.QoSProfile
    read: Callable[[Any], StateEstimate | Rejection | None | list]
    measures: bool = True


@dataclass(frozen=True)
class ContextInput:
    """A latched topic the controller node subscribes to, and the cost context it sets.

    ``convert(message)`` gives the value for ``cost.set_context(context, value)`` or raises
    ValueError with what is wrong with the message. A ``goal`` starts a new episode (the
    planner's warm start is dropped) and is what a controller with ``needs_goal`` waits for.
    """

    topic: str
    message_type: type
    context: str
    convert: Callable[[Any], Any]
    goal: bool = False


class RobotMessages:
    """A robot's ROS side: its topics for the generic nodes and its message conversions."""

    # mbrl_ros.ros.params.Param rows the estimator node declares for this robot's estimator.
    estimator_parameters: ClassVar[list] = []
    # Param rows the controller node declares for this robot's stop (``Robot.stop`` reads them).
    controller_parameters: ClassVar[list] = []

    def sensor_inputs(self, estimator: StateEstimator, action_names: list[str]) -> list[SensorInput]:
        """The estimator node's inputs, in the order their subscriptions are created."""
        raise NotImplementedError

    def context_inputs(self) -> list[ContextInput]:
        """The controller node's goal and context inputs."""
        return []
