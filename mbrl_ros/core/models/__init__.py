"""Dynamics models behind one batched interface, and a factory from YAML-style config.

``build_model`` takes the ``model:`` section of a robot's config::

    type: parametric            # kinematic bicycle
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
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from mbrl_ros.core.models.base import DynamicsModel, Prediction
from mbrl_ros.core.models.bicycle import BicycleParams, KinematicBicycle
from mbrl_ros.core.models.ensemble import EnsembleDynamics
from mbrl_ros.core.models.semiparametric import ResidualDynamics

__all__ = [
    "BicycleParams",
    "DynamicsModel",
    "EnsembleDynamics",
    "KinematicBicycle",
    "Prediction",
    "ResidualDynamics",
    "build_model",
]

MODEL_TYPES = ("parametric", "ensemble", "semiparametric")


def _keyword_names(cls) -> set[str]:
    return {
        name for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _check_keys(config: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


def build_model(config: Mapping[str, Any], where: str = "model") -> DynamicsModel:
    """Build an (untrained) model from a config dict; errors name the offending key path."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"{where}.type: unknown model type {kind!r}; expected one of {list(MODEL_TYPES)}")
    options = {k: v for k, v in config.items() if k != "type"}

    if kind == "parametric":
        _check_keys(options, {"params", "dt", "substeps", "speed_input", "learnable"}, where)
        params = BicycleParams.from_dict(options.pop("params", {}) or {}, source=f"{where}.params")
        return KinematicBicycle(params, **options)

    if kind == "ensemble":
        _check_keys(options, _keyword_names(EnsembleDynamics), where)
        missing = [k for k in ("state_dim", "action_dim") if k not in options]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing} for an ensemble model")
        return EnsembleDynamics(**options)

    _check_keys(options, {"prior", "residual"}, where)
    if "prior" not in options:
        raise ValueError(f"{where}: missing key 'prior' for a semiparametric model")
    prior = build_model(options["prior"], where=f"{where}.prior")
    residual_options = dict(options.get("residual") or {})
    _check_keys(residual_options, _keyword_names(EnsembleDynamics) - {"state_dim", "action_dim"}, f"{where}.residual")
    return ResidualDynamics(prior, **residual_options)
