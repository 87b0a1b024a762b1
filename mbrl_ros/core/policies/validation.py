"""Closed-loop validation of a policy on held-out states, and whether to deploy it.

Open-loop action agreement says little about a policy: small action errors
compound in closed loop. A policy is scored by driving it through the model for
``steps`` steps from each held-out start state and scoring the trajectory with
the planners' cost (``TaskCost.trajectory``). Two sets of held-out states, from
episodes no candidate was trained on:

- ``starts``: where held-out episodes began (the task's start distribution);
- ``visited``: states along held-out real episodes (where the robot actually goes,
  goals and obstacles included), each with its episode's context.

``decide`` deploys a candidate only if its mean cost beats the deployed policy's
(or, for the first policy, the constant reference action's) on every set, by
``min_improvement``, and everything it produced is finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.policies.rollouts import PolicyFn, TaskCost, closed_loop
from mbrl_ros.core.validation import check_tensor

__all__ = ["HeldOutStates", "PolicyDecision", "closed_loop_costs", "decide_policy", "evenly_spaced", "worse_sets"]


def evenly_spaced(count: int, most: int) -> torch.Tensor:
    """Indices of at most ``most`` rows spread evenly over ``count``: the same rows every round."""
    if count <= most:
        return torch.arange(count)
    return torch.linspace(0, count - 1, most).round().long()


@dataclass
class HeldOutStates:
    """One set of held-out start states (and their contexts, where the task has one)."""

    name: str
    states: torch.Tensor  # [N, nx]
    contexts: torch.Tensor | None = None  # [N, C]

    def __post_init__(self) -> None:
        check_tensor(f"held-out {self.name}: states", self.states, (None, None))
        if self.contexts is not None:
            check_tensor(f"held-out {self.name}: contexts", self.contexts, (self.states.shape[0], None))

    def subset(self, most: int) -> "HeldOutStates":
        index = evenly_spaced(self.states.shape[0], most)
        return HeldOutStates(self.name, self.states[index], None if self.contexts is None else self.contexts[index])


def worse_sets(ours: dict[str, float], theirs: dict[str, float], min_improvement: float = 0.0) -> list[str]:
    """The held-out sets where cost ``ours`` is not ``min_improvement`` (relative) below ``theirs`` (where theirs is
    not finite, any cost is better)."""
    return [k for k in ours if math.isfinite(theirs[k]) and not ours[k] < theirs[k] - min_improvement * abs(theirs[k])]


@torch.no_grad()
def closed_loop_costs(policy: PolicyFn, model: DynamicsModel, cost: TaskCost, held_out: HeldOutStates,
                      steps: int) -> torch.Tensor:
    """[N]: the cost of the policy's closed-loop model trajectory from each state (inf where not finite)."""
    was_training = model.training
    model.eval()
    try:
        states, actions = closed_loop(policy, model, held_out.states, held_out.contexts, steps)
    finally:
        model.train(was_training)
    costs = cost.trajectory(states, actions, held_out.contexts)
    finite = torch.isfinite(states).flatten(1).all(1) & torch.isfinite(actions).flatten(1).all(1)
    return torch.where(finite & torch.isfinite(costs), costs, torch.full_like(costs, math.inf))


@dataclass
class PolicyDecision:
    accept: bool
    reason: str
    candidate: dict[str, float] = field(default_factory=dict)  # mean closed-loop cost per held-out set
    reference: dict[str, float] = field(default_factory=dict)  # the deployed policy's (or the constant action's)

    def metrics(self) -> dict[str, float]:
        out = {f"candidate_cost_{k}": v for k, v in self.candidate.items()}
        out.update({f"reference_cost_{k}": v for k, v in self.reference.items()})
        return out


def decide_policy(candidate: PolicyFn, reference: PolicyFn, model: DynamicsModel, cost: TaskCost,
                  held_out: list[HeldOutStates], steps: int, min_improvement: float = 0.0,
                  reference_name: str = "deployed policy") -> PolicyDecision:
    """Score both policies on the same held-out sets and model; accept only a candidate better on all."""
    if not held_out or any(h.states.shape[0] == 0 for h in held_out):
        raise ValueError("policy validation needs at least one non-empty set of held-out states")
    if not 0.0 <= min_improvement < 1.0:
        raise ValueError(f"min_improvement: expected a value in [0, 1), got {min_improvement}")
    ours, theirs = {}, {}
    for h in held_out:
        ours[h.name] = float(closed_loop_costs(candidate, model, cost, h, steps).mean())
        theirs[h.name] = float(closed_loop_costs(reference, model, cost, h, steps).mean())
    scores = ", ".join(f"{k}: {ours[k]:.4g} vs {theirs[k]:.4g}" for k in ours)
    bad = [k for k, v in ours.items() if not math.isfinite(v)]
    if bad:
        return PolicyDecision(False, f"candidate's closed-loop cost is not finite on {bad}", ours, theirs)
    worse = worse_sets(ours, theirs, min_improvement)
    if worse:
        needed = f" (needs {min_improvement:.0%} lower)" if min_improvement else ""
        return PolicyDecision(False, f"not better than the {reference_name} on {worse}{needed}: {scores}",
                              ours, theirs)
    return PolicyDecision(True, f"better than the {reference_name}: {scores}", ours, theirs)
