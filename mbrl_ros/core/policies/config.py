"""The ``policy:`` section of a robot's config, checked key by key.

::

    policy:
      method: shac                 # shac | mbpo
      candidates: 1                # actors trained per round, candidate i from the method's seed + i; those beating the reference decided on, cheapest on the held-out starts first
      attempts: 1                  # times a round trains every candidate on while none is accepted
      context: goal                # the cost's run-time input the policy sees (goal, fingertip_target, ...); omit for none
      actor: {hidden_sizes: [64, 64], activation: relu, angle_dims: [2], relative_dims: [[0, 0], [1, 1], [2, 2]]}
      shac: {horizon: 16, iterations: 300, ...}
      mbpo: {rollout_length: 5, total_steps: 200, ...}
      validation: {steps: 50, min_improvement: 0.0, prior_starts: 16, prior_alone_ratio: 1.0, prior_steps: 0,
                   success: "", prior_alone_success: 0.9, cross_contexts: false}

The cost is not here: it is the controller's ``cost:`` section, built by
``build_cost``, so the policy and the planners optimise the same named terms.
Every error names the key at fault (``policy.shac.horizon: expected an integer >= 1, got 0``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

__all__ = ["ActorSettings", "MbpoConfig", "PolicyConfig", "ShacConfig", "ValidationConfig", "METHODS"]

METHODS = ("shac", "mbpo")
SHAC_STARTS = ("episode_starts", "logged_states")


def _check(where: str, key: str, value: Any, default: Any, low: float | None, high: float | None,
           open_low: bool) -> Any:
    """``value`` of the same kind as ``default`` (int, float, bool, str, list) within (low, high]."""
    name = f"{where}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        integer = isinstance(default, int)
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (not integer or int(value) == value)
        ok = ok and (low is None or (value > low if open_low else value >= low)) and (high is None or value <= high)
        if not ok:
            kind = "an integer" if integer else "a finite number"
            limits = "" if low is None else f" {'>' if open_low else '>='} {low}"
            limits += "" if high is None else f" and <= {high}"
            raise ValueError(f"{name}: expected {kind}{limits}, got {value!r}")
        return int(value) if integer else float(value)
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    return value


def _known_keys(values: Mapping[str, Any] | None, cls: type, where: str) -> Mapping[str, Any]:
    """``values`` (None: empty), checked to be a mapping of ``cls``'s field names."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {values!r}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    return values


class _Section:
    """A dataclass read from a YAML mapping: unknown keys and bad values raise errors naming them.

    ``_limits`` maps a key to ``(low, high, open_low)``.
    """

    _limits: dict[str, tuple] = {}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str):
        values = _known_keys(values, cls, where)
        defaults = cls()
        checked = {}
        for key, value in values.items():
            low, high, open_low = cls._limits.get(key, (None, None, False))
            checked[key] = _check(where, key, value, getattr(defaults, key), low, high, open_low)
        section = cls(**checked)
        section.validate(where)
        return section

    def validate(self, where: str) -> None:
        """Checks across keys; per-key checks are in ``_limits``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ActorSettings(_Section):
    """The actor's network and features (see ``Actor``); sizes and bounds come from the robot."""

    hidden_sizes: list = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    angle_dims: list = field(default_factory=list)
    ignored_dims: list = field(default_factory=list)
    relative_dims: list = field(default_factory=list)


@dataclass
class ShacConfig(_Section):
    """Analytic-gradient training (SHAC: Xu et al., ICLR 2022), per training round."""

    horizon: int = 16               # model steps each actor gradient backpropagates through
    batch_size: int = 128           # rollouts per iteration, from real logged states
    episode_length: int = 64        # model steps a rollout continues over iterations before restarting
    contexts_per_batch: int = 8     # distinct goals per iteration
    iterations: int = 300
    gamma: float = 0.98
    td_lambda: float = 0.95         # TD(lambda) of the critic's targets
    actor_lr: float = 2e-3
    critic_lr: float = 2e-3
    critic_epochs: int = 4          # passes over each iteration's visited states
    critic_minibatches: int = 4
    critic_hidden_sizes: list = field(default_factory=lambda: [64, 64])
    target_tau: float = 0.2         # target critic: tau * new + (1 - tau) * old, each iteration
    max_grad_norm: float = 1.0
    # Where episodes start: the logged episodes' first states (episode_starts: the task's start
    # distribution, as SHAC starts from its environment's resets; the episodes then go on under the
    # actor for episode_length steps), or any logged state (logged_states). Random exploration's
    # states include fast drives into walls that no action can save: on the car's parking task a third
    # of the rollouts from them hit a wall, whose cost's gradient is ~150x the goal's, and the actor
    # learned to brake instead of to park (scripts/policy_parking_diagnosis.py).
    starts: str = "episode_starts"
    seed: int = 0

    _limits = {
        "horizon": (1, None, False), "batch_size": (1, None, False), "contexts_per_batch": (1, None, False),
        "iterations": (1, None, False), "episode_length": (1, None, False), "gamma": (0.0, 1.0, True), "td_lambda": (0.0, 1.0, False),
        "actor_lr": (0.0, None, True), "critic_lr": (0.0, None, True), "critic_epochs": (1, None, False),
        "critic_minibatches": (1, None, False), "target_tau": (0.0, 1.0, True),
        "max_grad_norm": (0.0, None, True),
    }

    def validate(self, where: str) -> None:
        if self.starts not in SHAC_STARTS:
            raise ValueError(f"{where}.starts: expected one of {list(SHAC_STARTS)}, got {self.starts!r}")


@dataclass
class MbpoConfig(_Section):
    """Model data generation (MBPO: Janner et al., NeurIPS 2019) with stable-baselines3's SAC."""

    rollout_length: int = 5         # k: model steps of each rollout branched from a real state
    rollouts: int = 128             # rollouts in parallel (the model-backed vector environment's size)
    contexts_per_batch: int = 8     # distinct goals among them
    total_steps: int = 200          # model steps per round (each gives `rollouts` transitions)
    gradient_steps: int = 10        # SAC updates per model step
    batch_size: int = 256
    buffer_size: int = 100000
    learning_starts: int = 1000     # transitions in the buffer before the first update
    learning_rate: float = 3e-4
    gamma: float = 0.98
    tau: float = 0.005
    initial_entropy_coef: float = 0.1  # SAC's entropy weight at the start, then tuned to a target entropy
    critic_hidden_sizes: list = field(default_factory=lambda: [64, 64])
    seed: int = 0

    _limits = {
        "rollout_length": (1, None, False), "rollouts": (1, None, False), "contexts_per_batch": (1, None, False),
        "total_steps": (1, None, False), "gradient_steps": (1, None, False), "batch_size": (1, None, False),
        "buffer_size": (1, None, False), "learning_starts": (0, None, False),
        "learning_rate": (0.0, None, True), "gamma": (0.0, 1.0, True), "tau": (0.0, 1.0, True),
        "initial_entropy_coef": (0.0, None, True),
    }


@dataclass
class ValidationConfig(_Section):
    """Closed-loop scoring on held-out states; a candidate is deployed only if it scores lower."""

    steps: int = 50                 # closed-loop model steps scored per start state
    max_starts: int = 256           # held-out start states scored (evenly spaced over the held-out data)
    min_improvement: float = 0.0    # relative cost drop a candidate needs over the deployed policy
    # Where the controller's planner samples around the policy (its prior): held-out starts from which that planner
    # is driven on the model with the candidate as prior and with the deployed one (or none); a candidate with
    # which the planner does worse is not deployed (``decide_prior``). 0: no such check.
    prior_starts: int = 16
    # ... and the candidate alone may cost at most this many times what that planner alone costs there (without
    # ``success``), or with ``success`` must succeed in at least this share of the episodes that planner alone
    # succeeds in (``prior_alone_success``).
    prior_alone_ratio: float = 1.0
    prior_alone_success: float = 0.9
    # Steps of each of those episodes (0: ``steps``): the task's whole episode, so that its success is judged as the
    # simulator judges it (parking: sim_car's 100 steps).
    prior_steps: int = 0
    # The task's success criterion (a name in the robot's ``success_criteria``: the car's ``parked``; empty: none):
    # with it the planner must succeed in as many of those episodes with the candidate as without, and the cost
    # only breaks ties.
    success: str = ""
    # Score on every held-out start paired with every held-out episode's context (goal), not only its own
    # (``HeldOutStates.crossed``): for a task whose start and goal are drawn independently, N held-out episodes
    # give N x N held-out tasks, so a first round's 10-13 held-out episodes still fill max_starts and prior_starts.
    cross_contexts: bool = False

    _limits = {"steps": (1, None, False), "max_starts": (1, None, False), "min_improvement": (0.0, 1.0, False),
               "prior_starts": (0, None, False), "prior_alone_ratio": (0.0, None, True),
               "prior_steps": (0, None, False), "prior_alone_success": (0.0, 1.0, False)}

    def validate(self, where: str) -> None:
        if self.min_improvement >= 1.0:
            raise ValueError(f"{where}.min_improvement: expected a value in [0, 1), got {self.min_improvement}")


@dataclass
class PolicyConfig:
    method: str = "shac"
    context: str | None = None
    # Actors trained per round, one after another in the caller's thread (so a round takes ``candidates`` times
    # as long and no more CPU at once): candidate i from the method's seed + i (its first weights, its critic or
    # SAC, its start sampling); those that beat the reference (deployed policy or stop) on every held-out set are
    # decided on (``decide_policy``, ``decide_prior``), the lowest closed-loop cost on the held-out starts first,
    # until one is accepted (``ranked_candidates``). One round's
    # policy is a lottery over seeds (issue 12: the same data gave a policy parking 19/20 with seed 0, 11/20 with 1).
    candidates: int = 1
    # Times a round trains its lineages (each on from where it stopped) while none of their candidates is accepted:
    # a rejected round tries again at once instead of waiting for a new model or policy_retrain_every new data; a
    # round that deploys nothing takes that many times as long.
    attempts: int = 1
    actor: ActorSettings = field(default_factory=ActorSettings)
    shac: ShacConfig = field(default_factory=ShacConfig)
    mbpo: MbpoConfig = field(default_factory=MbpoConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "policy") -> "PolicyConfig":
        values = _known_keys(values, cls, where)
        method = values.get("method", cls.method)
        if method not in METHODS:
            raise ValueError(f"{where}.method: expected one of {list(METHODS)}, got {method!r}")
        context = values.get("context")
        if context is not None and (not isinstance(context, str) or not context.isidentifier()):
            raise ValueError(f"{where}.context: expected the name of a cost context (e.g. goal), got {context!r}")
        candidates = _check(where, "candidates", values.get("candidates", cls.candidates), cls.candidates, 1, None, False)
        attempts = _check(where, "attempts", values.get("attempts", cls.attempts), cls.attempts, 1, None, False)
        return cls(
            method=method, context=context, candidates=candidates, attempts=attempts,
            actor=ActorSettings.from_dict(values.get("actor"), f"{where}.actor"),
            shac=ShacConfig.from_dict(values.get("shac"), f"{where}.shac"),
            mbpo=MbpoConfig.from_dict(values.get("mbpo"), f"{where}.mbpo"),
            validation=ValidationConfig.from_dict(values.get("validation"), f"{where}.validation"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
