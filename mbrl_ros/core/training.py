"""Training of ensemble dynamics (and of the learned residual of a semi-parametric model).

One optimiser over the stacked ``[E, in, out]`` weights: every minibatch step runs
all members in one batched matmul, each member on its own bootstrap resample of
the training set (so members disagree where data is thin: that disagreement is
the epistemic uncertainty planners use). The loss is the Gaussian NLL of the
normalised state deltas plus a small penalty on the width of the log-variance
bounds. Held-out episodes decide early stopping: each member keeps the weights
of its best validation epoch, and training stops once no member has improved
for ``patience`` epochs. The elites are the members with the lowest held-out
MSE.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.models.ensemble import EnsembleDynamics
from mbrl_ros.core.models.semiparametric import SemiparametricDynamics

ProgressCallback = Callable[[int, dict], "bool | None"]


@dataclass
class TrainingHistory:
    """What happened in ``train_ensemble``: per-epoch losses and the final choice of elites."""

    train_loss: list[float] = field(default_factory=list)  # mean NLL + bound penalty per member
    val_loss: list[float] = field(default_factory=list)  # held-out Gaussian NLL, mean over members
    val_mse: list[float] = field(default_factory=list)  # held-out MSE (normalised deltas), mean over members
    member_val_mse: list[float] = field(default_factory=list)  # each member's best held-out MSE (weights kept)
    best_epoch: list[int] = field(default_factory=list)  # per member, the epoch whose weights were kept
    elites: list[int] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member Gaussian negative log-likelihood (without the constant), ``[M, B, d] -> [M]``."""
    return ((mean - target).square() * torch.exp(-logvar) + logvar).mean(dim=(1, 2))


def _fast_optimizer_options(device: torch.device) -> dict:
    """One fused kernel per step instead of a Python loop over tensors (CPU and CUDA)."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


def _learned_part(model) -> tuple[EnsembleDynamics, Callable]:
    """The ensemble to train and how to turn recorded next states into its targets."""
    if isinstance(model, EnsembleDynamics):
        return model, lambda states, actions, next_states: next_states
    if isinstance(model, SemiparametricDynamics):
        return model.residual, model.residual_targets
    raise TypeError(
        f"train_ensemble: expected an EnsembleDynamics or SemiparametricDynamics, got {type(model).__name__}"
    )


def _tensors(
    name: str, dataset: TransitionDataset, ensemble: EnsembleDynamics, to_targets: Callable
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(dataset, TransitionDataset):
        raise TypeError(f"{name}: expected a TransitionDataset, got {type(dataset).__name__}")
    if (dataset.state_dim, dataset.action_dim) != (ensemble.state_dim, ensemble.action_dim):
        raise ValueError(
            f"{name}: dataset has state_dim={dataset.state_dim}, action_dim={dataset.action_dim}; "
            f"the model expects {ensemble.state_dim}, {ensemble.action_dim}"
        )
    if len(dataset) == 0:
        raise ValueError(f"{name}: the dataset is empty")
    like = ensemble.input_mean
    states, actions, next_states = (t.to(like) for t in (dataset.states, dataset.actions, dataset.next_states))
    with torch.no_grad():
        next_states = to_targets(states, actions, next_states)
    return states, actions, next_states


def train_ensemble(
    model: EnsembleDynamics | SemiparametricDynamics,
    train: TransitionDataset,
    val: TransitionDataset | None = None,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    patience: int = 10,
    min_improvement: float = 0.01,
    bootstrap: bool = True,
    logvar_bound_weight: float = 0.01,
    fit_normalisers: bool = True,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingHistory:
    """Fit ``model`` on ``train``; early-stop and pick elites on ``val`` (held-out episodes).

    ``min_improvement``: relative drop in a member's held-out MSE that resets the
    patience counter. Without ``val`` there is no early stopping, the history's
    ``val_*`` entries are measured on the training set, and elites are picked by
    training MSE. ``progress(epoch, stats)`` is called after every
    epoch; returning True stops training (e.g. a trainer node being shut down).
    ``max_seconds`` bounds wall time. The model ends in eval state with each
    member's best weights and its elites set.
    """
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ValueError(f"epochs, batch_size and patience must be >= 1, got {epochs}, {batch_size}, {patience}")
    ensemble, to_targets = _learned_part(model)
    started = time.perf_counter()
    train_s, train_a, train_ns = _tensors("train", train, ensemble, to_targets)
    if fit_normalisers:
        ensemble.fit_normalisers(train_s, train_a, train_ns)
    with torch.no_grad():
        x_train = ensemble.normalised_inputs(train_s, train_a)
        y_train = ensemble.normalised_targets(train_s, train_ns)
        if val is not None:
            val_s, val_a, val_ns = _tensors("val", val, ensemble, to_targets)
            x_val = ensemble.normalised_inputs(val_s, val_a)
            y_val = ensemble.normalised_targets(val_s, val_ns)
        else:
            x_val, y_val = x_train, y_train

    members, rows = ensemble.ensemble_size, x_train.shape[0]
    generator = torch.Generator().manual_seed(seed)
    if bootstrap:
        resample = torch.randint(rows, (members, rows), generator=generator)
    else:
        resample = torch.arange(rows).expand(members, rows)
    decayed = list(ensemble.layer_weights)
    optimizer = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": [*ensemble.layer_biases, ensemble.max_logvar, ensemble.min_logvar], "weight_decay": 0.0},
        ],
        lr=lr,
        **_fast_optimizer_options(ensemble.input_mean.device),
    )
    member_params = [*ensemble.layer_weights, *ensemble.layer_biases]
    best_params = [p.detach().clone() for p in member_params]
    best_bounds = (ensemble.max_logvar.detach().clone(), ensemble.min_logvar.detach().clone())
    best_mse = torch.full((members,), math.inf)
    best_epoch = [0] * members
    best_mean_mse = math.inf
    history = TrainingHistory()
    epochs_since_improvement = 0

    ensemble.train()
    for epoch in range(1, epochs + 1):
        # Each member visits its own bootstrap sample in its own random order.
        shuffle = torch.argsort(torch.rand(members, rows, generator=generator), dim=1)
        order = resample.gather(1, shuffle)
        total, batches = 0.0, 0
        for first in range(0, rows, batch_size):
            index = order[:, first : first + batch_size]
            mean, logvar = ensemble.member_outputs(x_train[index])
            nll = gaussian_nll(mean, logvar, y_train[index])
            loss = nll.sum() + logvar_bound_weight * ensemble.logvar_bound_penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) / members
            batches += 1

        with torch.no_grad():
            mean, logvar = ensemble.member_outputs(x_val)
            mse = (mean - y_val).square().mean(dim=(1, 2))
            val_nll = gaussian_nll(mean, logvar, y_val)
        if not bool(torch.isfinite(mse).all()):
            raise FloatingPointError(
                f"train_ensemble: held-out MSE became non-finite at epoch {epoch} "
                f"(member MSE {mse.tolist()}); lower lr or check the data"
            )
        improved = mse < best_mse
        significant = bool((mse < best_mse * (1.0 - min_improvement)).any())
        if bool(improved.any()):
            with torch.no_grad():
                for kept, param in zip(best_params, member_params):
                    kept[improved] = param.detach()[improved]
            best_mse = torch.where(improved, mse, best_mse)
            for member in improved.nonzero().flatten().tolist():
                best_epoch[member] = epoch
        if float(mse.mean()) < best_mean_mse:
            best_mean_mse = float(mse.mean())
            best_bounds = (ensemble.max_logvar.detach().clone(), ensemble.min_logvar.detach().clone())
        epochs_since_improvement = 0 if significant else epochs_since_improvement + 1

        history.train_loss.append(total / batches)
        history.val_loss.append(float(val_nll.mean()))
        history.val_mse.append(float(mse.mean()))
        history.epochs_run = epoch
        stop_requested = False
        if progress is not None:
            stats = {"train_loss": history.train_loss[-1], "val_loss": history.val_loss[-1],
                     "val_mse": history.val_mse[-1], "member_val_mse": mse.tolist()}
            stop_requested = bool(progress(epoch, stats))
        out_of_time = max_seconds is not None and time.perf_counter() - started > max_seconds
        if val is not None and epochs_since_improvement >= patience:
            history.stopped_early = True
            break
        if stop_requested or out_of_time:
            history.stopped_early = True
            break

    with torch.no_grad():
        if val is not None:
            for kept, param in zip(best_params, member_params):
                param.copy_(kept)
            ensemble.max_logvar.copy_(best_bounds[0])
            ensemble.min_logvar.copy_(best_bounds[1])
        else:  # no held-out data: keep the last weights, rank members on the training set
            mean, _ = ensemble.member_outputs(x_train)
            best_mse = (mean - y_train).square().mean(dim=(1, 2))
            best_epoch = [history.epochs_run] * members
    ranking = torch.argsort(best_mse).tolist()
    ensemble.set_elites(sorted(ranking[: ensemble.num_elites]))
    ensemble.eval()
    history.member_val_mse = best_mse.tolist()
    history.best_epoch = best_epoch
    history.elites = ensemble.elites
    history.seconds = time.perf_counter() - started
    return history
