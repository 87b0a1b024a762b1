"""Fit any model kind to a TransitionDataset: the one function every learner calls.

The trainer node, ``mbrl-ros fit`` and the demo all go through ``fit_model``,
so online and offline learning are the same code:

- ``parametric``: the robot's physics prior, its parameters identified by least
  squares (``PhysicsModel.identify``) starting from the config's;
- ``ensemble``: probabilistic MLPs trained by Gaussian NLL (``training``);
- ``semiparametric``: the parametric prior identified first, then frozen, and
  the residual ensemble trained on what it gets wrong.

Every fit is scored the same way, by open-loop multi-step error on held-out
episodes, so models of different kinds can be compared and the trainer can
accept only a better one.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mbrl_ros.core import data_parallel as parallel
from mbrl_ros.core.data import MultiStepError, TransitionDataset, multistep_error
from mbrl_ros.core.models import Physics, SemiparametricDynamics, build_model
from mbrl_ros.core.models.base import DynamicsModel, PhysicsModel
from mbrl_ros.core.training import train_ensemble

TRAINING_KEYS = frozenset(
    name for name, p in inspect.signature(train_ensemble).parameters.items() if p.kind == p.KEYWORD_ONLY
) - {"progress", "data_parallel"}


@dataclass
class FitResult:
    model: DynamicsModel
    config: dict  # the model section, with identified parameters filled in
    val_error: MultiStepError | None  # on the episodes it was scored on (fit_model's score_on, else val)
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat validation metrics, e.g. ``{'val_rmse_h1': ..., 'val_rmse_h10': ...}``."""
        if self.val_error is None:
            return {}
        return {f"val_rmse_h{h}": float(e) for h, e in self.val_error.rmse.items()}


def check_training_options(options: Mapping[str, Any], source: str = "training") -> dict:
    unknown = sorted(set(options) - TRAINING_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(TRAINING_KEYS)}")
    return dict(options)


def fit_model(
    config: Mapping[str, Any],
    train: TransitionDataset,
    val: TransitionDataset | None = None,
    *,
    score_on: TransitionDataset | None = None,
    training: Mapping[str, Any] | None = None,
    horizons: Sequence[int] = (1, 5, 10, 20),
    angle_dims: Sequence[int] = (),
    error_scale: Sequence[float] | None = None,
    progress: Callable[[int, dict], bool | None] | None = None,
    source: str = "model",
    physics: Physics | None = None,
    data_parallel: bool = False,
) -> FitResult:
    """Build the model ``config`` describes and fit it to ``train``; score it on ``score_on`` (default ``val``).

    ``val``: the held-out episodes that stop training early and choose the elites. Scored on those
    a model is flattered (they chose it); ``score_on`` gives episodes that had no say.

    ``physics``: the robot's (its plug-in), which builds and identifies the kinds built on its physics prior.

    ``data_parallel``: ``train`` and ``val`` are this rank's shards of the data (``core.data_parallel``);
    ensembles train data-parallel, a physics prior is identified by rank 0 on all ranks' training
    data, ``score_on`` is whole on each rank. Every rank returns the same model.
    """
    training = check_training_options(training or {}, source=f"{source}: training")
    started = time.perf_counter()
    config = copy.deepcopy(dict(config))
    model = build_model(config, where=source, physics=physics)
    details: dict[str, Any] = {}
    identify = _identify_on_rank_0 if data_parallel else _identify
    if isinstance(model, PhysicsModel):
        model = identify(physics, model, train, config, details)
    elif isinstance(model, SemiparametricDynamics):
        if isinstance(model.prior, PhysicsModel):
            model.prior = identify(physics, model.prior, train, config["prior"], details)
        history = train_ensemble(model, train, val, progress=progress, data_parallel=data_parallel, **training)
        details["training"] = _history_summary(history)
    else:
        history = train_ensemble(model, train, val, progress=progress, data_parallel=data_parallel, **training)
        details["training"] = _history_summary(history)
    model.eval()
    val_error = None
    scored = val if score_on is None else score_on
    if scored is not None and len(scored):
        val_error = multistep_error(model, scored, horizons, angle_dims=angle_dims, scale=error_scale)
    return FitResult(model, config, val_error, time.perf_counter() - started, details)


def _identify(physics: Physics, model: PhysicsModel, data: TransitionDataset, config: dict,
              details: dict) -> PhysicsModel:
    result = physics.identify(model, data.states, data.actions, data.next_states)
    if not result.success and not result.fits_at_least_as_well_as_the_start():
        raise RuntimeError(f"system identification did not converge ({result.solver_status}) and its parameters "
                           f"fit worse than the initial ones: {result.rms_residual} vs {result.initial_rms_residual}")
    # ipopt can stop short (Error_In_Step_Computation) at parameters that already fit well, e.g. when some
    # states are fitted exactly and a few outliers dominate; those are kept, and the held-out validation
    # that follows every fit decides whether the model is any good.
    config["params"] = result.config_params()
    details["sysid"] = {
        "params": result.config_params(),
        "rms_residual": result.rms_residual,
        "num_transitions": result.num_transitions,
        "solver_status": result.solver_status,
        "converged": result.success,
    }
    return result.model()


def _identify_on_rank_0(physics: Physics, model: PhysicsModel, shard: TransitionDataset, config: dict,
                        details: dict) -> PhysicsModel:
    """``_identify`` on all ranks' training data, run once (least squares is not data-parallel here)."""
    data, _ = parallel.gather_dataset(shard)
    outcome = None
    if parallel.rank() == 0:
        try:
            outcome = (_identify(physics, model, data, config, details), config["params"], details["sysid"])
        except (ValueError, RuntimeError) as err:  # every rank raises it, as one process would
            outcome = err
    outcome = parallel.broadcast(outcome)
    if isinstance(outcome, Exception):
        raise outcome
    identified, config["params"], details["sysid"] = outcome
    return identified


def _history_summary(history) -> dict:
    return {
        "epochs": history.epochs_run,
        "stopped_early": history.stopped_early,
        "elites": list(history.elites),
        "best_epoch": list(history.best_epoch),  # per member, the epoch whose weights were kept
        "best_val_mse": min(history.val_mse) if history.val_mse else None,
        "seconds": history.seconds,
        "gradient_sum_seconds": history.gradient_sum_seconds,
    }
