"""The one model interface every planner uses."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mbrl_ros.core.validation import check_state_action_batch


class Prediction(NamedTuple):
    """A model's one-step prediction: next-state mean, and spread where the model has one."""

    mean: torch.Tensor  # [B, nx]
    spread: torch.Tensor | None  # [B, nx] standard deviation across ensemble members, or None


class DynamicsModel(nn.Module):
    """Batched, differentiable discrete-time dynamics ``x[t+1] = f(x[t], u[t])``.

    ``forward(states[B, nx], actions[B, nu]) -> next_states[B, nx]`` is the fast
    path planners call inside rollouts: no input checks, differentiable (iLQR
    takes Jacobians through it). ``predict`` is the checked public entry point
    and also returns the ensemble spread where there is one.
    """

    state_dim: int
    action_dim: int

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> Prediction:
        check_state_action_batch(states, actions, self.state_dim, self.action_dim)
        return Prediction(self(states, actions), None)

    @torch.no_grad()
    def rollout(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Open-loop rollout: ``state[B, nx]``, ``actions[B, H, nu]`` -> ``states[B, H+1, nx]``."""
        states = [state]
        for t in range(actions.shape[1]):
            states.append(self(states[-1], actions[:, t]))
        return torch.stack(states, dim=1)
