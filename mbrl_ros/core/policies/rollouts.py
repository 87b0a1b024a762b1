"""Policy rollouts through a model, scored by the planners' own cost.

- ``closed_loop``: a policy driven through a model from a batch of start states
  (differentiable when autograd is on, which is what analytic-gradient training
  backpropagates through).
- ``TaskCost``: the planners' ``TrajectoryCost`` for a batch whose samples have
  different run-time contexts (goals). A ``TrajectoryCost`` holds one goal for
  the whole batch, as a planner needs; here each distinct context gets a copy of
  the cost with that context set. It scores whole trajectories (``trajectory``:
  the planners' score, with each term's stage and terminal weights) and single
  steps (``steps``: the cost of each one-step trajectory ``(x_t, u_t, x_t+1)``,
  where a term's stage and terminal weights both weigh every step, as for a
  planner of horizon 1: the per-step cost a value function sums).
- ``StartSampler``: start states drawn from real logged states, each batch in
  groups that share one context drawn from the logged contexts.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.validation import check_tensor

__all__ = ["PolicyFn", "StartSampler", "TaskCost", "closed_loop"]

# policy(states[B, nx], contexts[B, C] or None) -> actions[B, nu]: an Actor, a ConstantPolicy, ...
PolicyFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def closed_loop(policy: PolicyFn, model: DynamicsModel, starts: torch.Tensor, contexts: torch.Tensor | None,
                steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``starts[B, nx]`` -> ``(states[B, steps+1, nx], actions[B, steps, nu])``, the policy acting on each state."""
    states, actions = [starts], []
    for _ in range(steps):
        actions.append(policy(states[-1], contexts))
        states.append(model(states[-1], actions[-1]))
    return torch.stack(states, dim=1), torch.stack(actions, dim=1)


class TaskCost:
    """``cost`` scored per sample with each sample's own context; see the module docstring.

    ``context`` names the cost's run-time input the policy is conditioned on
    (``goal``, ``fingertip_target``, ``joint_target``: set through the cost's
    ``set_<context>``), or None for a task without one (the cost's context, if it
    reads any, then is what the caller set on ``cost``).
    """

    def __init__(self, cost: TrajectoryCost, context: str | None = None, where: str = "policy.context") -> None:
        self.cost = copy.deepcopy(cost)  # its context is overwritten here: never the caller's cost
        self.context = context
        self.where = where
        self._copies: list[TrajectoryCost] = []
        if context is not None and context not in cost.contexts:
            raise ValueError(f"{where}: the cost has no run-time context {context!r} (contexts: {sorted(cost.contexts)})")
        # Training rolls out from many states at once: no one previous action applies to them all.
        self.cost.set_context("previous_action", None)

    def _copy(self, index: int) -> TrajectoryCost:
        while len(self._copies) <= index:
            self._copies.append(copy.deepcopy(self.cost))
        return self._copies[index]

    def _set(self, cost: TrajectoryCost, context: torch.Tensor) -> None:
        if cost.set_context(self.context, context) == 0:
            raise ValueError(f"{self.where}: no term of the cost reads {self.context!r}; "
                             f"terms: {cost.names}")

    def _grouped(self, score: Callable[[TrajectoryCost, torch.Tensor], torch.Tensor], count: int,
                 contexts: torch.Tensor | None) -> torch.Tensor:
        """Run ``score(cost, rows)`` once per distinct context on that context's rows; [count, ...] back."""
        if self.context is None:
            return score(self.cost, torch.arange(count, device=contexts.device if contexts is not None else None))
        if contexts is None:
            raise ValueError(f"{self.where}: the task is conditioned on {self.context!r}: contexts are required")
        unique, inverse = torch.unique(contexts.detach(), dim=0, return_inverse=True)
        # Under autograd every group keeps its own copy: a term that keeps its context tensor for
        # the backward pass would fail ("modified by an inplace operation") if the next group's
        # context overwrote it in one shared cost.
        separate = torch.is_grad_enabled()
        out = None
        for g in range(unique.shape[0]):
            cost = self._copy(g if separate else 0)
            self._set(cost, unique[g])
            rows = (inverse == g).nonzero().squeeze(1)
            value = score(cost, rows)
            if out is None:
                out = value.new_zeros((count, *value.shape[1:]))
            out = out.index_copy(0, rows, value)
        return out

    def trajectory(self, states: torch.Tensor, actions: torch.Tensor,
                   contexts: torch.Tensor | None = None) -> torch.Tensor:
        """``states[B, T+1, nx]``, ``actions[B, T, nu]`` -> [B]: the planners' cost of each trajectory."""
        return self._grouped(lambda cost, rows: cost(states[rows], actions[rows]), states.shape[0], contexts)

    def steps(self, states: torch.Tensor, actions: torch.Tensor,
              contexts: torch.Tensor | None = None) -> torch.Tensor:
        """-> [B, T]: the cost of each step ``(x_t, u_t, x_t+1)`` as a one-step trajectory."""
        def score(cost: TrajectoryCost, rows: torch.Tensor) -> torch.Tensor:
            s, a = states[rows], actions[rows]
            count, horizon = a.shape[0], a.shape[1]
            windows = torch.stack((s[:, :-1], s[:, 1:]), dim=2).reshape(count * horizon, 2, s.shape[-1])
            return cost(windows, a.reshape(count * horizon, 1, a.shape[-1])).reshape(count, horizon)
        return self._grouped(score, states.shape[0], contexts)


class StartSampler:
    """Start states from real logged states; contexts from the logged contexts, shared in groups.

    ``sample(batch, groups)`` gives ``batch`` start states, each drawn at random,
    and per-sample contexts that take ``groups`` distinct values (drawn at random
    from ``contexts``), so a batch costs ``groups`` cost evaluations, not ``batch``.
    Pairing any start with any logged goal is a valid task: the policy learns
    more goal-state combinations than were driven.
    """

    def __init__(self, states: torch.Tensor, contexts: torch.Tensor | None = None, seed: int = 0,
                 where: str = "policy data") -> None:
        check_tensor(f"{where}: start states", states, (None, None))
        if states.shape[0] < 1:
            raise ValueError(f"{where}: no start states")
        if contexts is not None:
            check_tensor(f"{where}: contexts", contexts, (None, None))
            if contexts.shape[0] < 1:
                raise ValueError(f"{where}: no contexts")
        self.states = states
        self.contexts = contexts
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch: int, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = torch.randint(self.states.shape[0], (batch,), generator=self.generator)
        starts = self.states[index]
        if self.contexts is None:
            return starts, None
        groups = max(1, min(groups, batch))
        chosen = self.contexts[torch.randint(self.contexts.shape[0], (groups,), generator=self.generator)]
        return starts, chosen[torch.arange(batch) * groups // batch]
