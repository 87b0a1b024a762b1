"""Random shooting: the simplest sampling planner of model-based RL (Nagabandi et al., 2018).

Each planning step draws ``num_samples`` action sequences uniformly within the
action bounds (rate limits applied), rolls all of them out in one batch through
the model, and applies the cheapest. With ``keep_best`` (default) the previous
step's best sequence, shifted by one step, is one of the candidates, so a good
plan is not lost to an unlucky draw. No distribution is refined: a baseline for
MPPI and CEM, and a planner that needs no tuning beyond the sample count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners.base import (
    Planner,
    PlannerConfig,
    PlanResult,
    _positive_int,
    rollout,
    shift_sequence,
    time_major_dynamics,
)

__all__ = ["RandomShootingConfig", "RandomShootingPlanner"]


@dataclass
class RandomShootingConfig(PlannerConfig):
    num_samples: int = 1000
    keep_best: bool = True  # the previous best, shifted, is one of the candidates
    num_rollouts_returned: int = 0

    def validate(self, source: str = "rs") -> None:
        super().validate(source)
        _positive_int(source, "num_samples", self.num_samples, minimum=1)
        _positive_int(source, "num_rollouts_returned", self.num_rollouts_returned, minimum=0)
        if not isinstance(self.keep_best, bool):
            raise ValueError(f"{source}: keep_best: expected true or false, got {self.keep_best!r}")


class RandomShootingPlanner(Planner):
    """Uniform random action sequences, batched; the cheapest is the plan."""

    config_class = RandomShootingConfig
    name = "rs"
    config: RandomShootingConfig

    def __init__(self, model: DynamicsModel, cost: TrajectoryCost, config: RandomShootingConfig | None = None) -> None:
        super().__init__(model, cost, config)
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self._dynamics = time_major_dynamics(self.model)

    def set_model(self, model: DynamicsModel) -> None:
        super().set_model(model)
        self._dynamics = time_major_dynamics(self.model)

    def _reset(self) -> None:
        self._best: torch.Tensor | None = None

    @torch.no_grad()
    def _plan(self, state: torch.Tensor) -> PlanResult:
        c = self.config
        if not self._dynamics.still_valid():
            self._dynamics = time_major_dynamics(self.model)
        uniform = torch.rand(c.num_samples, self.horizon, self.action_dim, generator=self.generator,
                             dtype=self.dtype, device=self.device)
        samples = self.action_low + uniform * (self.action_high - self.action_low)
        if c.keep_best and self._best is not None:
            samples[-1] = self._best
        samples = self.limit(samples).contiguous()
        states = self._dynamics.rollout(state, samples.permute(1, 2, 0)).permute(2, 0, 1)
        costs = self.cost(states, samples)
        best = int(torch.argmin(costs))
        plan = samples[best]
        predicted = rollout(self.model, state, plan[None])
        self._best = shift_sequence(plan, c.shift_fill, self.action_low, self.action_high)
        return PlanResult(
            action=plan[0],
            nominal_actions=plan,
            predicted_states=predicted[0],
            cost=float(self.cost(predicted, plan[None])[0]),
            rollouts=states[: c.num_rollouts_returned] if c.num_rollouts_returned else None,
            info={"best_sample_cost": float(costs[best])},
        )
