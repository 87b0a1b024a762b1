"""The one model interface every planner uses, its time-major view, and a robot's physics prior.

``DynamicsModel``: batched ``(states[B, nx], actions[B, nu]) -> next states``.
``TimeMajorDynamics``: the same model in the sampling planners' layout; a model
may return a faster view of itself from ``time_major()``.
``NumpyDynamics``: the same in float64 numpy, for solvers of tiny batches (iLQR),
where a model offers it.
``PhysicsModel``: a model built from a robot's physics (model kind
``parametric``), with physical parameters its robot can identify from data.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
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

    def jacobians(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``df/dx[B, nx, nx]`` and ``df/du[B, nx, nu]`` at every row of ``states[B, nx], actions[B, nu]``.

        iLQR's linearisation. This default uses ``torch.func.jacrev`` (reverse mode,
        vmapped over the nx output directions) of the batch's outputs summed over
        rows: rows of a batch do not interact, so the derivative of that sum with
        respect to row b's input is row b's Jacobian. All B Jacobians come from nx
        batched vector-Jacobian products through one forward pass; vmapping over the
        rows instead would run each matmul once per row. A model with analytic
        derivatives (a robot's physics prior) overrides this.
        """
        def summed_over_rows(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            return self(states, actions).sum(0)

        jac_x, jac_u = torch.func.jacrev(summed_over_rows, argnums=(0, 1))(states, actions)  # [nx, B, ...]
        return jac_x.transpose(0, 1), jac_u.transpose(0, 1)

    def deterministic(self, member: int | None = None) -> "DynamicsModel":
        """One deterministic model for derivative-based planners (iLQR): this model itself, unless it
        samples. An ensemble returns the mean of its elites' predictions, or elite slot ``member`` alone."""
        return self

    @property
    def deterministic_members(self) -> int:
        """How many members ``deterministic(member)`` picks from (0: the model has no members)."""
        return 0

    def settings(self) -> dict:
        """The non-tensor settings that decide what this model computes (dt, substeps, propagation,
        sizes, ...), of it and of every submodule (a semi-parametric model's prior and residual): what
        copying its weights into another model would not carry."""
        found = {}
        for name, module in self.named_modules():
            own = module.own_settings() if isinstance(module, DynamicsModel) else _plain_attributes(module)
            found.update({f"{name}.{key}" if name else key: value for key, value in own.items()})
        return found

    def own_settings(self) -> dict:
        """This module's part of ``settings``: its plain public attributes (numbers, strings, and lists,
        tuples and dicts of them). A model keeping a setting elsewhere (a property over a private
        field) adds it here."""
        return _plain_attributes(self)

    @property
    def physics_robot(self) -> str:
        """The robot whose physics prior this model holds ('' for none): a checkpoint records it, so that
        loading can ask that robot's plug-in to rebuild the prior."""
        return ""

    def time_major(self) -> "TimeMajorDynamics":
        """This model in the sampling planners' layout. A model with a faster time-major form returns
        it here; planners check it against ``forward`` before they use it."""
        return TimeMajorDynamics(self)

    def numpy_dynamics(self) -> "NumpyDynamics | None":
        """This model in float64 numpy (``NumpyDynamics``) with its current parameters, or None (the
        default). A model whose step is a few dozen elementwise operations offers it: for iLQR's tiny
        sequential batches numpy's per-call overhead is a fraction of torch's."""
        return None


def _plain_attributes(module: nn.Module) -> dict:
    return {key: value for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and _plain(value)}


def _plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class TimeMajorDynamics:
    """A model seen in "time-major, sample-last" layout: states ``[nx, B]``, actions ``[nu, B]``.

    Sampling planners keep their batch as actions ``[H, nu, K]`` and states
    ``[H+1, nx, K]``: every per-sample quantity is a contiguous row of K values,
    which a compiler vectorises, whereas a model's ``[K, nx]`` layout interleaves
    the state components and forces strided, scalar code. Costs see
    ``states.permute(2, 0, 1)``, a ``[K, H+1, nx]`` view.

    This default runs ``model.forward`` on transposed views; a model's own
    subclass (from ``DynamicsModel.time_major``) may do better.
    """

    def __init__(self, model: DynamicsModel) -> None:
        self.model = model

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.model(states.T, actions.T).T

    def rollout(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``state[nx]`` (or ``[nx, K]``), ``actions[H, nu, K]`` -> ``states[H+1, nx, K]``."""
        x = state[:, None].expand(-1, actions.shape[2]) if state.dim() == 1 else state
        states = [x]
        for t in range(actions.shape[0]):
            x = self.step(x, actions[t])
            states.append(x)
        return torch.stack(states)

    def still_valid(self) -> bool:
        """Whether a specialisation made when built still matches the model's parameters."""
        return True


class NumpyDynamics:
    """A model's float64 numpy form, time-major as ``TimeMajorDynamics``, from ``DynamicsModel.numpy_dynamics``.

    ``step(states[nx, B], actions[nu, B]) -> next_states[nx, B]`` and
    ``jacobians(states[B, nx], actions[B, nu]) -> (df/dx[B, nx, nx], df/du[B, nx, nu])``,
    both the model's own ``forward`` and ``jacobians`` to float tolerance. It holds the
    parameters it was built with: build a new one when they may have changed.
    """

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def jacobians(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def symbolic(self) -> "SymbolicStep | None":
        """``step`` in casadi symbols, for a solver that compiles its loops to C (iLQR's native path), or
        None (the default)."""
        return None


class SymbolicStep(NamedTuple):
    """A model step in casadi symbols: ``step(x[nx], u[nu], p[P]) -> x'[nx]`` (``casadi.SX``).

    ``parameters[P]`` (float64) are the values of ``p`` now: they are inputs of the compiled code,
    so new parameter values reuse it. ``key`` names everything else the expression depends on
    (the model, its settings), so a solver rebuilds its compiled code when the key changes."""

    key: tuple
    parameters: np.ndarray
    step: Callable


class PhysicsModel(DynamicsModel):
    """A robot's physics prior (model kind ``parametric``): physical parameters identifiable from data.

    Built and identified by its robot's plug-in (``models.Physics``), which ``robot`` names.
    """

    robot: str = ""  # the robot plug-in that builds this model (its name)

    @property
    def physics_robot(self) -> str:
        return self.robot
