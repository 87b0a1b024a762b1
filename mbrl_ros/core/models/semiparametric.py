"""Semi-parametric dynamics: a physics prior plus a learned residual.

``next = prior(x, u) + r(x, u)``, where ``prior`` is any DynamicsModel (a robot's
physics prior with identified parameters) and ``r`` is an EnsembleDynamics
trained on what the prior gets wrong. The prior carries the structure (it
extrapolates sensibly where there is no data); the residual only has to learn
the small part the prior cannot express (tyre slip, drag, actuator quirks), so
it needs far less data than a model learned from scratch.

The residual ensemble is an ordinary EnsembleDynamics whose "next state" is
``x + (next - prior(x, u))``: its delta is exactly the residual, so its
normalisation, angle wrapping, propagation modes (TS1, TS-inf, mean), elites
and training all apply unchanged.
"""

from __future__ import annotations

import torch

from mbrl_ros.core.models.base import DynamicsModel, Prediction, TimeMajorDynamics
from mbrl_ros.core.models.ensemble import EnsembleDynamics, EnsembleMean
from mbrl_ros.core.validation import check_state_action_batch


class SemiparametricDynamics(DynamicsModel):
    """``prior(x, u)`` plus a learned residual; the prior is frozen while the residual trains."""

    def __init__(self, prior: DynamicsModel, residual: EnsembleDynamics | None = None, **residual_kwargs) -> None:
        if not isinstance(prior, DynamicsModel):
            raise TypeError(f"prior: expected a DynamicsModel, got {type(prior).__name__}")
        super().__init__(prior.state_dim, prior.action_dim)
        if residual is None:
            residual = EnsembleDynamics(prior.state_dim, prior.action_dim, **residual_kwargs)
        elif residual_kwargs:
            raise ValueError(f"pass either a residual model or residual options, not both: {sorted(residual_kwargs)}")
        if not isinstance(residual, EnsembleDynamics):
            raise TypeError(f"residual: expected an EnsembleDynamics, got {type(residual).__name__}")
        if (residual.state_dim, residual.action_dim) != (prior.state_dim, prior.action_dim):
            raise ValueError(
                f"residual: state/action dims ({residual.state_dim}, {residual.action_dim}) differ from "
                f"the prior's ({prior.state_dim}, {prior.action_dim})"
            )
        self.prior = prior
        self.residual = residual

    @property
    def physics_robot(self) -> str:
        return self.prior.physics_robot

    @property
    def propagation(self) -> str:
        return self.residual.propagation

    @propagation.setter
    def propagation(self, mode: str) -> None:
        self.residual.propagation = mode

    def residual_targets(self, states: torch.Tensor, actions: torch.Tensor, next_states: torch.Tensor) -> torch.Tensor:
        """Training "next states" for the residual ensemble: ``x + (next - prior(x, u))``.

        The ensemble wraps angle deltas itself, so a yaw residual across +-pi stays small.
        """
        with torch.no_grad():
            return states + (next_states - self.prior(states, actions))

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.prior(states, actions) + (self.residual(states, actions) - states)

    def time_major(self) -> TimeMajorDynamics:
        """The prior's and the residual's own time-major forms, added (``SemiparametricTimeMajor``)."""
        return SemiparametricTimeMajor(self)

    def deterministic(self, member: int | None = None) -> "SemiparametricMean":
        """The prior plus the residual's ``EnsembleMean`` (the elites' mean, or elite slot ``member``)."""
        return SemiparametricMean(self.prior, self.residual.deterministic(member))

    @property
    def deterministic_members(self) -> int:
        return self.residual.num_elites

    def predict_members(self, states: torch.Tensor, actions: torch.Tensor, elites_only: bool = True) -> torch.Tensor:
        """Next states under each residual member, ``[M, B, nx]``."""
        residuals = self.residual.predict_members(states, actions, elites_only) - states
        return self.prior(states, actions) + residuals

    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> Prediction:
        """Checked: prior plus the elites' mean residual; spread = disagreement of the residual members."""
        check_state_action_batch(states, actions, self.state_dim, self.action_dim)
        members = self.predict_members(states, actions)
        return Prediction(members.mean(0), members.std(0, unbiased=False))

    def check_finite(self) -> None:
        self.residual.check_finite()


class SemiparametricTimeMajor(TimeMajorDynamics):
    """``SemiparametricDynamics.forward`` in the sampling planners' layout: the prior's ``time_major()`` plus
    the residual's. The residual's form (``EnsembleTimeMajor``) holds the elites' folded weights and checks
    them in ``still_valid``, outside a compiled step; ``forward`` would check them inside it, by the
    tensors' data pointers and versions, which ``torch.compile`` cannot trace (the MPPI step fell back to
    eager with "Data pointer comparison")."""

    def __init__(self, model: SemiparametricDynamics) -> None:
        super().__init__(model)
        self.prior = model.prior.time_major()
        self.residual = model.residual.time_major()

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.prior.step(states, actions) + (self.residual.step(states, actions) - states)

    def still_valid(self) -> bool:
        prior_valid = self.prior.still_valid()
        return self.residual.still_valid() and prior_valid  # both run: the residual copies new weights in


class SemiparametricMean(DynamicsModel):
    """``prior(x, u)`` plus a deterministic residual (an ``EnsembleMean``): what iLQR plans on."""

    def __init__(self, prior: DynamicsModel, residual: EnsembleMean) -> None:
        super().__init__(prior.state_dim, prior.action_dim)
        self.prior = prior
        self.residual = residual

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.prior(states, actions) + (self.residual(states, actions) - states)
