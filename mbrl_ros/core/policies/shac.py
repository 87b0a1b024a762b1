"""Analytic-gradient policy learning through the model (SHAC: Xu et al., "Accelerated
Policy Learning with Parallel Differentiable Simulation", ICLR 2022).

Each iteration rolls the actor through the differentiable dynamics model for
``horizon`` steps from a batch of states (parallel episodes that start where the
logged episodes started, ``ShacConfig.starts``, and go on under the actor), and descends

    loss = mean over the batch of [ sum_t gamma^t c_t + gamma^H V(x_H) ] / H

by backpropagating through the model, the cost and the (target) critic at the
end: short horizons keep the gradients well behaved, the value carries what
lies beyond. The critic ``V(state, context)`` regresses TD(lambda) targets built
from the same rollouts (detached), and a target critic follows it slowly.

``c_t`` is the cost of step t (``TaskCost.steps``), divided by one scale fixed
from the first batch (the initial policy's mean step cost): the optimum does
not change, and the critic's targets stay of order one. The model is not
trained here: its parameters are frozen while the actor learns through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.policies.actor import Actor, mlp
from mbrl_ros.core.policies.config import ShacConfig
from mbrl_ros.core.policies.rollouts import StartSampler, TaskCost, closed_loop

__all__ = ["ShacHistory", "ShacLearner", "ValueCritic", "frozen", "td_lambda_targets", "train_shac"]


class ValueCritic(nn.Module):
    """``V(states, contexts) -> [B]`` on the actor's (fixed) normalised features."""

    def __init__(self, actor: Actor, hidden_sizes: list[int], activation: str) -> None:
        super().__init__()
        self._actor = (actor,)  # a tuple: the actor's features, not a submodule (its normaliser is fixed)
        self.net = mlp(actor.feature_dim, hidden_sizes, 1, activation)

    def forward(self, states: torch.Tensor, contexts: torch.Tensor | None) -> torch.Tensor:
        return self.net(self._actor[0].features(states, contexts)).squeeze(-1)


def td_lambda_targets(costs: torch.Tensor, next_values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) returns for ``x_0 .. x_{H-1}``: ``costs[B, H]``, ``next_values[B, H]`` = V(x_1 .. x_H).

    ``G_t = c_t + gamma * ((1 - lam) * V(x_{t+1}) + lam * G_{t+1})``, with ``G_{H-1} = c_{H-1} + gamma * V(x_H)``.
    """
    horizon = costs.shape[1]
    targets = torch.empty_like(costs)
    following = next_values[:, -1]
    for t in range(horizon - 1, -1, -1):
        following = costs[:, t] + gamma * ((1 - lam) * next_values[:, t] + lam * following)
        targets[:, t] = following
    return targets


class frozen:
    """Context: the model's parameters take no gradient and the model is in eval mode; restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.training = self.model.training
        for p, _ in self.flags:
            p.requires_grad_(False)
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)
        self.model.train(self.training)


@dataclass
class ShacHistory:
    actor_loss: list[float] = field(default_factory=list)  # per iteration, in scaled cost units
    critic_loss: list[float] = field(default_factory=list)
    cost_scale: float = 1.0
    iterations: int = 0
    seconds: float = 0.0


class ShacLearner:
    """SHAC's state across training rounds: the actor, its critic and target critic, the optimisers.

    Each ``train`` call runs ``config.iterations`` iterations on the model and data it is
    given (a new model each round, say); the critic and the cost scale carry over, so a
    later round starts from what the last one learned.
    """

    def __init__(self, actor: Actor, config: ShacConfig, activation: str = "relu") -> None:
        self.actor, self.config = actor, config
        torch.manual_seed(config.seed)
        self.critic = ValueCritic(actor, config.critic_hidden_sizes, activation)
        self.target = ValueCritic(actor, config.critic_hidden_sizes, activation)
        self.target.load_state_dict(self.critic.state_dict())
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(actor.net.parameters(), lr=config.actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.net.parameters(), lr=config.critic_lr, fused=True)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.cost_scale: float | None = None

    def train(self, model: DynamicsModel, cost: TaskCost, sampler: StartSampler,
              stop: Callable[[], bool] | None = None) -> ShacHistory:
        """Improve the actor in place; returns this round's losses. ``stop()`` true ends it at the next iteration."""
        started = time.perf_counter()
        config, actor = self.config, self.actor
        history = ShacHistory()
        gamma, horizon = config.gamma, config.horizon
        discounts = gamma ** torch.arange(horizon, dtype=torch.float32)
        with frozen(model):
            episodes = _Episodes(sampler, config)
            for _ in range(config.iterations):
                if stop is not None and stop():
                    break
                starts, contexts = episodes.starts()
                states, actions = closed_loop(actor, model, starts, contexts, horizon)
                step_costs = cost.steps(states, actions, contexts)
                if not bool(torch.isfinite(step_costs).all()):
                    raise FloatingPointError("SHAC: the model rollout of the actor gives non-finite costs")
                if self.cost_scale is None:
                    self.cost_scale = max(float(step_costs.detach().mean()), 1e-6)
                step_costs = step_costs / self.cost_scale
                end_value = self.target(states[:, -1], contexts)
                loss = ((step_costs * discounts).sum(1) + gamma ** horizon * end_value).mean() / horizon
                self.actor_opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(actor.net.parameters(), config.max_grad_norm)
                self.actor_opt.step()
                history.actor_loss.append(float(loss.detach()))
                history.critic_loss.append(self._fit_critic(states.detach(), step_costs.detach(), contexts))
                with torch.no_grad():
                    for p, q in zip(self.critic.parameters(), self.target.parameters()):
                        q.lerp_(p, config.target_tau)
                episodes.advance(states[:, -1].detach())
                history.iterations += 1
        history.cost_scale = self.cost_scale or 1.0
        history.seconds = time.perf_counter() - started
        return history

    def _fit_critic(self, states: torch.Tensor, step_costs: torch.Tensor, contexts: torch.Tensor | None) -> float:
        """Regress V on the TD(lambda) targets of this iteration's rollouts, in minibatches."""
        config = self.config
        batch, horizon = step_costs.shape
        with torch.no_grad():
            flat_contexts = None if contexts is None else contexts.repeat_interleave(horizon, 0)
            next_states = states[:, 1:].reshape(batch * horizon, -1)
            next_values = self.target(next_states, flat_contexts).reshape(batch, horizon)
            targets = td_lambda_targets(step_costs, next_values, config.gamma, config.td_lambda).reshape(-1)
        inputs = states[:, :-1].reshape(batch * horizon, -1)
        rows = inputs.shape[0]
        size = max(1, rows // config.critic_minibatches)
        loss = torch.zeros(())
        for _ in range(config.critic_epochs):
            order = torch.randperm(rows, generator=self.generator)
            for k in range(config.critic_minibatches):
                idx = order[k * size:(k + 1) * size]
                value = self.critic(inputs[idx], None if flat_contexts is None else flat_contexts[idx])
                loss = (value - targets[idx]).square().mean()
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.critic.net.parameters(), config.max_grad_norm)
                self.critic_opt.step()
        return float(loss.detach())


def train_shac(actor: Actor, model: DynamicsModel, cost: TaskCost, sampler: StartSampler,
               config: ShacConfig, activation: str = "relu") -> ShacHistory:
    """One round from scratch (a new critic): improve ``actor`` in place; returns the losses."""
    return ShacLearner(actor, config, activation).train(model, cost, sampler)


class _Episodes:
    """SHAC's parallel episodes over the model: each iteration continues from where the last one ended.

    The batch is ``contexts_per_batch`` groups sharing one context; a group
    restarts from the sampler's real states (with a new context) after ``episode_length``
    model steps, groups staggered so a few restart each iteration. Continuing
    lets the critic learn the values of the states the actor drives to, beyond
    one horizon; restarting keeps the rollouts near the data the model knows.
    """

    def __init__(self, sampler: StartSampler, config: ShacConfig) -> None:
        self.sampler = sampler
        self.groups = min(config.contexts_per_batch, config.batch_size)
        self.group_size = -(-config.batch_size // self.groups)
        self.length = config.episode_length
        self.step = config.horizon
        slots = max(1, -(-self.length // self.step))
        self.ages = [self.length] * self.groups  # every group starts from real states ...
        self.offsets = [(g * slots // self.groups) * self.step for g in range(self.groups)]  # ... staggered
        self.states: list[torch.Tensor | None] = [None] * self.groups
        self.contexts: list[torch.Tensor | None] = [None] * self.groups

    def starts(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        for g in range(self.groups):
            if self.ages[g] >= self.length:
                self.states[g], self.contexts[g] = self.sampler.sample(self.group_size, 1)
                self.ages[g], self.offsets[g] = self.offsets[g], 0
        contexts = None if self.contexts[0] is None else torch.cat(self.contexts)
        return torch.cat(self.states), contexts

    def advance(self, end_states: torch.Tensor) -> None:
        for g, chunk in enumerate(end_states.split(self.group_size)):
            self.states[g] = chunk
            self.ages[g] += self.step

