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

A policy the controller's planner samples around (its prior: MPPI or CEM with
``policy_prior_fraction``) must also not leave that planner worse off: ``decide_prior``
drives the planner in closed loop on the model from held-out starts with the candidate
as prior, with the deployed one (or none) and alone, the same noise each time, and rejects
a candidate with which the planner succeeds in fewer episodes by the task's own criterion
(the robot's ``success_criteria``, e.g. the car's ``parked``: highway-env's ``is_success``),
or as many at a higher mean episode cost (without a criterion: a higher cost), or which
alone does worse than the planner alone. (A policy can beat standing still by far and still
mislead the planner: through the stack a round's policy that parked 0/50 alone took MPPI at
100 samples from 47/50 to 37/50 as its prior; and the episode cost alone passed priors that
lead MPPI to the spot sooner but end beside it: 70.8 with one against 86.0 without, then
40/50 parked against 47/50.)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.policies.rollouts import PolicyFn, TaskCost, closed_loop
from mbrl_ros.core.validation import check_tensor

__all__ = ["Episodes", "HeldOutStates", "PolicyDecision", "Success", "closed_loop_costs", "closed_loop_episodes",
           "decide_policy", "decide_prior", "evenly_spaced", "planner_episodes", "worse_sets"]

# success(states[B, T+1, nx], contexts[B, C] or None) -> [B] bool: whether each episode succeeded by the task's own
# criterion, as its simulator scores it (``Robot.success_criteria``).
Success = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


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

    def crossed(self) -> "HeldOutStates":
        """Every state paired with every distinct context of the set, state-major (``validation.cross_contexts``).
        Valid where the task draws its start and its goal independently (parking-v0: the car at the lot's centre
        with a random heading, the goal a random free spot): N held-out episodes then give up to N x N held-out
        tasks instead of N. Without contexts: the set itself."""
        if self.contexts is None:
            return self
        contexts = torch.unique(self.contexts, dim=0)
        count = contexts.shape[0]
        return HeldOutStates(self.name, self.states.repeat_interleave(count, dim=0),
                             contexts.repeat(self.states.shape[0], 1))

    def subset(self, most: int) -> "HeldOutStates":
        index = evenly_spaced(self.states.shape[0], most)
        return HeldOutStates(self.name, self.states[index], None if self.contexts is None else self.contexts[index])


def worse_sets(ours: dict[str, float], theirs: dict[str, float], min_improvement: float = 0.0) -> list[str]:
    """The held-out sets where cost ``ours`` is not ``min_improvement`` (relative) below ``theirs`` (where theirs is
    not finite, any cost is better)."""
    return [k for k in ours if math.isfinite(theirs[k]) and not ours[k] < theirs[k] - min_improvement * abs(theirs[k])]


@contextmanager
def _evaluating(model: DynamicsModel):
    """``model`` in eval mode inside, its own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _score(cost: TaskCost, states: torch.Tensor, actions: torch.Tensor, contexts: torch.Tensor | None,
           score: str) -> torch.Tensor:
    """[B]: ``trajectory`` (the planners' cost of each trajectory) or ``episode`` (each step's cost, summed)."""
    if score == "episode":
        return cost.steps(states, actions, contexts).sum(1)
    return cost.trajectory(states, actions, contexts)


@dataclass
class Episodes:
    """Closed-loop model episodes, one per held-out start."""

    costs: torch.Tensor  # [N]: inf where not finite
    success: torch.Tensor | None = None  # [N] bool by the task's criterion (never where not finite); None: none given

    @property
    def mean(self) -> float:
        return float(self.costs.mean())

    @property
    def successes(self) -> int | None:
        return None if self.success is None else int(self.success.sum())


def _episodes(states: torch.Tensor, actions: torch.Tensor, contexts: torch.Tensor | None, cost: TaskCost,
              score: str, success: Success | None) -> Episodes:
    """Score trajectories ``states [B, T+1, nx]``, ``actions [B, T, nu]``: cost (inf where anything is not finite)
    and, with ``success``, the task's success of each (False where not finite)."""
    costs = _score(cost, states, actions, contexts, score)
    finite = torch.isfinite(states).flatten(1).all(1) & torch.isfinite(actions).flatten(1).all(1) & torch.isfinite(costs)
    return Episodes(torch.where(finite, costs, torch.full_like(costs, math.inf)),
                    None if success is None else success(states, contexts).bool() & finite)


@torch.no_grad()
def closed_loop_episodes(policy: PolicyFn, model: DynamicsModel, cost: TaskCost, held_out: HeldOutStates,
                         steps: int, score: str = "trajectory", success: Success | None = None) -> Episodes:
    """The policy's closed-loop model trajectory from each state: its cost (``score``: trajectory or episode, see
    ``_score``; inf where not finite) and, with ``success``, whether it succeeded by the task's criterion."""
    with _evaluating(model):
        states, actions = closed_loop(policy, model, held_out.states, held_out.contexts, steps)
    return _episodes(states, actions, held_out.contexts, cost, score, success)


def closed_loop_costs(policy: PolicyFn, model: DynamicsModel, cost: TaskCost, held_out: HeldOutStates,
                      steps: int, score: str = "trajectory") -> torch.Tensor:
    """[N]: ``closed_loop_episodes``' costs."""
    return closed_loop_episodes(policy, model, cost, held_out, steps, score).costs


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


def _with_context(policy: PolicyFn, context: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``policy`` as a planner's prior calls it (``prior(states)``), with one start's context for every row."""
    if context is None:
        return lambda states: policy(states, None)
    return lambda states: policy(states, context.expand(states.shape[0], -1))


@torch.no_grad()
def planner_episodes(make_planner: Callable[[DynamicsModel], object], prior: PolicyFn | None,
                     model: DynamicsModel, cost: TaskCost, held_out: HeldOutStates, steps: int,
                     success: Success | None = None) -> Episodes:
    """The closed-loop model episodes the planner ``make_planner(model)`` drives from each held-out state, with
    ``prior`` as its policy prior (None: without one): each one's episode cost (each step's cost summed,
    ``TaskCost.steps``: how soon the task is done and how well; inf where not finite) and, with ``success``, whether
    it succeeded by the task's criterion. A fresh planner per start: its noise is a function of its seed and step
    count, so two priors are compared on the same noise. (The planners' trajectory cost, whose terminal term weighs
    only the last state, ranked a parking prior that helps below none.)"""
    episodes = []
    with _evaluating(model):
        for i in range(held_out.states.shape[0]):
            context = None if held_out.contexts is None else held_out.contexts[i:i + 1]
            planner = make_planner(model)
            if context is not None:
                planner.cost.set_context(cost.context, context[0])
            planner.set_prior(None if prior is None else _with_context(prior, context))
            x, states, actions = held_out.states[i], [held_out.states[i]], []
            for _ in range(steps):
                actions.append(planner.plan(x).action)
                x = model(x[None], actions[-1][None])[0]
                states.append(x)
            episodes.append(_episodes(torch.stack(states)[None], torch.stack(actions)[None], context, cost,
                                      "episode", success))
    return Episodes(torch.cat([e.costs for e in episodes]),
                    None if success is None else torch.cat([e.success for e in episodes]))


def decide_prior(candidate: PolicyFn, reference: PolicyFn | None, make_planner: Callable[[DynamicsModel], object],
                 model: DynamicsModel, cost: TaskCost, held_out: HeldOutStates, steps: int,
                 planner_name: str = "the planner", reference_name: str = "deployed policy",
                 alone_ratio: float = 1.0, success: Success | None = None,
                 alone_success: float = 0.9, baseline: dict | None = None) -> PolicyDecision:
    """Accept ``candidate`` as the prior of the planner ``make_planner`` builds only if, from the held-out states
    on the model over ``steps`` steps (``planner_episodes``; ``steps``: a whole episode of the task):

    1. the planner does not do worse with it than with ``reference`` (the deployed policy; None: no prior): with
       ``success`` (the task's criterion, ``Robot.success_criteria``) it succeeds in at least as many episodes,
       and where in as many, at no higher mean episode cost; without, at no higher mean episode cost. The
       episode cost alone passed priors that bring the car near the spot sooner and leave it beside it (through
       the stack seed 2's: 70.8 with it against 86.0 without, then 40/50 parked against 47/50; in process one
       that lowered it from 101.6 to 96.0 while MPPI 100 parked 45/50 against 47/50);
    2. with ``success``, the candidate alone succeeds in at least ``alone_success`` times as many episodes as the
       planner alone (through the stack seed 0's round-1 policy, 31/32 alone against MPPI 100's 32/32 and 32/32
       with it at a lower cost, was rejected by the cost ratio below at 1.005, while the cost ratio passed the
       policies that then cost parks: seed 2's at 0.94, 10/32 alone on the evaluation starts, 40/50 in the stack;
       seed 1's at 0.85, 42/50 alone; 0.9 passes the first and rejects those); without ``success``,
       the candidate alone costs at most ``alone_ratio`` times what the planner alone costs: a policy far worse
       than the planner it would guide is a lottery as its prior (through the stack a round's policy that parked
       0/50 alone took MPPI at 100 samples from 47/50 to 37/50; in process one that parks 6/50 alone, at 1.9 times
       MPPI's episode cost, took it from 47/50 to 41/50, while on 16 starts the planner's cost with it was within
       noise of its cost without it; one that parks 48/50 costs 0.85 times MPPI's). The default, 1.0 (no worse
       than the planner alone), separated the four policies of stop 22's stack runs on the trainer's own held-out
       starts: 0.88 and 0.85 (as priors they raised MPPI 100 and 500 to 49/50), 1.045 and 1.22 (they lowered MPPI
       100 to 42/50 and 500 to 46/50, against 47/50 for each alone).

    The costs are reported under ``planner`` and ``alone`` (candidate) and ``planner`` and ``planner_alone``
    (reference), with ``success``, the successes under the same names with ``_successes`` appended.

    ``baseline``: a dict the caller keeps while it decides on several candidates with the same arguments but the
    candidate: the planner's episodes alone and with ``reference`` are driven once, at the first call."""
    if held_out.states.shape[0] == 0:
        raise ValueError("the prior's validation needs at least one held-out start state")
    baseline = {} if baseline is None else baseline
    if not baseline:
        baseline["alone"] = planner_episodes(make_planner, None, model, cost, held_out, steps, success)
        baseline["reference"] = baseline["alone"] if reference is None else planner_episodes(
            make_planner, reference, model, cost, held_out, steps, success)
    alone, theirs = baseline["alone"], baseline["reference"]
    ours = planner_episodes(make_planner, candidate, model, cost, held_out, steps, success)
    policy = closed_loop_episodes(candidate, model, cost, held_out, steps, "episode", success)
    other = f"the {reference_name} as its prior" if reference is not None else "no prior"
    count = held_out.states.shape[0]

    def parks(episodes: Episodes) -> str:
        return "" if success is None else f" ({episodes.successes}/{count} succeed)"

    scores = (f"{planner_name}'s episode cost from {count} held-out {held_out.name} {ours.mean:.4g}{parks(ours)} "
              f"with it vs {theirs.mean:.4g}{parks(theirs)} with {other}; the policy alone {policy.mean:.4g}"
              f"{parks(policy)} vs {planner_name} alone {alone.mean:.4g}{parks(alone)}")
    candidate_metrics, reference_metrics = {"planner": ours, "alone": policy}, {"planner": theirs,
                                                                                  "planner_alone": alone}
    metrics = ({k: e.mean for k, e in candidate_metrics.items()}, {k: e.mean for k, e in reference_metrics.items()})
    if success is not None:
        for values, episodes in zip(metrics, (candidate_metrics, reference_metrics)):
            values.update({f"{k}_successes": float(e.successes) for k, e in episodes.items()})
    if not math.isfinite(ours.mean):
        return PolicyDecision(False, f"as a prior: {scores} (not finite)", *metrics)
    if success is not None and ours.successes < theirs.successes:
        return PolicyDecision(False, f"{planner_name} succeeds in fewer episodes with it: {scores}", *metrics)
    tied = success is None or ours.successes == theirs.successes
    if tied and math.isfinite(theirs.mean) and ours.mean > theirs.mean:
        more = "" if success is None else " (in as many episodes)"
        return PolicyDecision(False, f"{planner_name} does better without it{more}: {scores}", *metrics)
    if success is not None:
        if not policy.successes >= alone_success * alone.successes:
            return PolicyDecision(False, f"alone it succeeds in fewer than {alone_success:g} times the episodes "
                                         f"{planner_name} alone succeeds in, so it is no prior for it: {scores}",
                                  *metrics)
    elif math.isfinite(alone.mean) and not policy.mean <= alone_ratio * alone.mean:
        return PolicyDecision(False, f"alone it costs more than {alone_ratio:g} times what {planner_name} alone "
                                     f"costs, so it is no prior for it: {scores}", *metrics)
    return PolicyDecision(True, f"it helps {planner_name} as a prior: {scores}", *metrics)
