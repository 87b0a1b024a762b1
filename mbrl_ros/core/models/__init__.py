"""Dynamics models behind one batched interface, and a factory from YAML-style config.

``build_model`` takes the ``model:`` section of a robot's config; ``type`` is
one of ``MODEL_KINDS``::

    type: parametric            # the robot's physics prior, e.g. the car's kinematic bicycle
    params: {wheelbase: 0.33, rear_axle_to_cg: 0.17, speed_gain: 3.0, steer_gain: 0.4, lag: 0.1}
    dt: 0.1
    substeps: 3
    speed_input: velocity

    type: ensemble
    state_dim: 5
    action_dim: 2
    ensemble_size: 5
    hidden_sizes: [128, 128]
    angle_dims: [2]

    type: semiparametric
    prior: {type: parametric, ...}
    residual: {ensemble_size: 5, hidden_sizes: [64, 64], angle_dims: [2]}   # dims come from the prior

The core knows no robot: a ``parametric`` model is built by the ``physics``
a robot plug-in passes in (``Robot.build_model`` passes itself), from the
section's keys other than ``type``.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Protocol

from mbrl_ros.core.model_kinds import MODEL_KINDS
from mbrl_ros.core.models.base import DynamicsModel, NumpyDynamics, PhysicsModel, Prediction, TimeMajorDynamics
from mbrl_ros.core.models.ensemble import EnsembleDynamics
from mbrl_ros.core.models.semiparametric import SemiparametricDynamics

__all__ = [
    "DynamicsModel",
    "EnsembleDynamics",
    "MODEL_KINDS",
    "NumpyDynamics",
    "Physics",
    "PhysicsModel",
    "Prediction",
    "SemiparametricDynamics",
    "TimeMajorDynamics",
    "build_model",
]

class Physics(Protocol):
    """A robot's physics as the core uses it (a robot plug-in, ``mbrl_ros.robots.robot.Robot``, is one)."""

    name: str

    def physics_prior(self, options: dict, where: str) -> PhysicsModel:
        """The model kind ``parametric`` from its config section (without ``type``); errors name ``where``."""

    def identify(self, model: PhysicsModel, states, actions, next_states):
        """``model``'s parameters fitted to transitions, starting from its own: a ``core.sysid.SysIdResult``."""


def _keyword_names(cls) -> set[str]:
    return {
        name for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_keys(config: Mapping, allowed: set[str], where: str) -> None:
    """Raise a ValueError naming ``where`` for keys of ``config`` outside ``allowed``."""
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


def build_model(config: Mapping[str, Any], where: str = "model", physics: Physics | None = None) -> DynamicsModel:
    """Build an (untrained) model from a config dict; errors name the offending key path.

    ``physics`` builds the ``parametric`` kind (and a semiparametric model's prior); without
    it those kinds are an error.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in MODEL_KINDS:
        raise ValueError(f"{where}.type: unknown model type {kind!r}; expected one of {list(MODEL_KINDS)}")
    options = {k: v for k, v in config.items() if k != "type"}

    if kind == "parametric":
        if physics is None:
            raise ValueError(f"{where}.type: model kind 'parametric' needs a robot's physics prior, and none "
                             "was given")
        return physics.physics_prior(options, where)

    if kind == "ensemble":
        check_keys(options, _keyword_names(EnsembleDynamics), where)
        missing = [k for k in ("state_dim", "action_dim") if k not in options]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing} for an ensemble model")
        return EnsembleDynamics(**options)

    check_keys(options, {"prior", "residual"}, where)
    if "prior" not in options:
        raise ValueError(f"{where}: missing key 'prior' for a semiparametric model")
    prior = build_model(options["prior"], where=f"{where}.prior", physics=physics)
    residual_options = dict(options.get("residual") or {})
    check_keys(residual_options, _keyword_names(EnsembleDynamics) - {"state_dim", "action_dim"}, f"{where}.residual")
    return SemiparametricDynamics(prior, **residual_options)
