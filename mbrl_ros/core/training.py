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

Data-parallel (``data_parallel=True``, under an initialised torch.distributed process group):
each process holds a shard of the episodes, the ranks' shards in rank order being the whole
training set. Every rank draws the same bootstrap resample and order of the global rows, so a
global minibatch is the single-process one; each rank computes the loss terms of the rows it
holds, divided by the global batch size, and the gradients are summed over the ranks
(all_reduce): the step is the single-process step up to the order of floating-point sums.
Normalisers and held-out errors are sums over all ranks too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from mbrl_ros.core import data_parallel as parallel
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
    gradient_sum_seconds: float = 0.0  # data-parallel: time in the gradients' all_reduce (waits for ranks included)


def gaussian_nll_terms(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood (without the constant) of each entry, ``[M, B, d]``."""
    return (mean - target).square() * torch.exp(-logvar) + logvar


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
    name: str, dataset: TransitionDataset, ensemble: EnsembleDynamics, to_targets: Callable, shard: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(dataset, TransitionDataset):
        raise TypeError(f"{name}: expected a TransitionDataset, got {type(dataset).__name__}")
    if (dataset.state_dim, dataset.action_dim) != (ensemble.state_dim, ensemble.action_dim):
        raise ValueError(
            f"{name}: dataset has state_dim={dataset.state_dim}, action_dim={dataset.action_dim}; "
            f"the model expects {ensemble.state_dim}, {ensemble.action_dim}"
        )
    rows = len(dataset)
    if shard:  # one rank's share may be empty, not all of them
        rows = int(parallel.all_sum(torch.tensor(rows)))
    if rows == 0:
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
    data_parallel: bool = False,
) -> TrainingHistory:
    """Fit ``model`` on ``train``; early-stop and pick elites on ``val`` (held-out episodes).

    ``min_improvement``: relative drop in a member's held-out MSE that resets the
    patience counter. Without ``val`` there is no early stopping, the history's
    ``val_*`` entries are measured on the training set, and elites are picked by
    training MSE. ``progress(epoch, stats)`` is called after every
    epoch; returning True stops training (e.g. a trainer node being shut down).
    ``max_seconds`` bounds wall time. The model ends in eval state with each
    member's best weights and its elites set.

    ``data_parallel``: ``train`` and ``val`` are this rank's shards (see the module's docstring);
    every rank ends with the same model. ``max_seconds`` and ``progress`` are then rank 0's call.
    """
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ValueError(f"epochs, batch_size and patience must be >= 1, got {epochs}, {batch_size}, {patience}")
    ensemble, to_targets = _learned_part(model)
    started = time.perf_counter()
    sum_over = parallel.all_sum if data_parallel else (lambda t: t)
    lead = not data_parallel or parallel.rank() == 0
    if data_parallel:  # the same initial weights on every rank
        for tensor in [*ensemble.parameters(), *ensemble.buffers()]:
            parallel.broadcast_tensor(tensor.data)
    train_s, train_a, train_ns = _tensors("train", train, ensemble, to_targets, shard=data_parallel)
    if fit_normalisers:
        ensemble.fit_normalisers(train_s, train_a, train_ns, sum_over=sum_over)
    with torch.no_grad():
        x_train = ensemble.normalised_inputs(train_s, train_a)
        y_train = ensemble.normalised_targets(train_s, train_ns)
        if val is not None:
            val_s, val_a, val_ns = _tensors("val", val, ensemble, to_targets, shard=data_parallel)
            x_val = ensemble.normalised_inputs(val_s, val_a)
            y_val = ensemble.normalised_targets(val_s, val_ns)
        else:
            x_val, y_val = x_train, y_train

    members = ensemble.ensemble_size
    first_row, rows = parallel.row_offset(x_train.shape[0]) if data_parallel else (0, x_train.shape[0])
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
            index, held = _rows_held(order[:, first : first + batch_size], first_row, x_train.shape[0])
            mean, logvar = ensemble.member_outputs(x_train[index])
            # This rank's part of the mean NLL over the global batch (all of it in one process).
            terms = gaussian_nll_terms(mean, logvar, y_train[index]) * held
            nll = terms.sum(dim=(1, 2)) / (min(batch_size, rows - first) * mean.shape[-1])
            loss = nll.sum() + (logvar_bound_weight * ensemble.logvar_bound_penalty() if lead else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if data_parallel:
                summing = time.perf_counter()
                for param in ensemble.parameters():
                    if param.grad is None:  # unused here; the ranks must still sum the same tensors
                        param.grad = torch.zeros_like(param)
                    parallel.all_sum(param.grad)
                history.gradient_sum_seconds += time.perf_counter() - summing
            optimizer.step()
            total += float(loss.detach()) / members
            batches += 1
        total = float(sum_over(torch.tensor(total)))

        with torch.no_grad():
            mse, val_nll = _held_out_errors(ensemble, x_val, y_val, sum_over)
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
        if progress is not None and lead:
            stats = {"train_loss": history.train_loss[-1], "val_loss": history.val_loss[-1],
                     "val_mse": history.val_mse[-1], "member_val_mse": mse.tolist()}
            stop_requested = bool(progress(epoch, stats))
        out_of_time = max_seconds is not None and time.perf_counter() - started > max_seconds
        if data_parallel:  # rank 0 decides, so every rank stops at the same epoch
            stop_requested, out_of_time = parallel.broadcast((stop_requested, out_of_time))
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
            best_mse, _ = _held_out_errors(ensemble, x_train, y_train, sum_over)
            best_epoch = [history.epochs_run] * members
    ranking = torch.argsort(best_mse).tolist()
    ensemble.set_elites(sorted(ranking[: ensemble.num_elites]))
    ensemble.eval()
    history.member_val_mse = best_mse.tolist()
    history.best_epoch = best_epoch
    history.elites = ensemble.elites
    history.seconds = time.perf_counter() - started
    return history


def _rows_held(index: torch.Tensor, first_row: int, held_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of the global batch ``index`` ``[M, B]`` that this rank holds (rows ``first_row`` on).

    Returns local row indices ``[M, K]`` (K: the most any member has here) and a ``[M, K, 1]`` mask
    of which are real (the rest are padding, to keep one batched matmul). In one process: all of them.
    """
    local = index - first_row
    here = (local >= 0) & (local < held_rows)
    if bool(here.all()):
        return local, torch.ones(*local.shape, 1)
    first_here = torch.argsort((~here).to(torch.int8), dim=1, stable=True)[:, : int(here.sum(1).max())]
    return local.gather(1, first_here).clamp(0, max(held_rows - 1, 0)), here.gather(1, first_here)[..., None].float()


def _held_out_errors(ensemble: EnsembleDynamics, x: torch.Tensor, y: torch.Tensor, sum_over: Callable
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's MSE and Gaussian NLL on ``x, y`` (over all ranks' rows), ``[M]`` each."""
    mean, logvar = ensemble.member_outputs(x)
    sums = torch.stack([(mean - y).square().sum(dim=(1, 2)),
                        gaussian_nll_terms(mean, logvar, y).sum(dim=(1, 2))])
    count = sum_over(torch.tensor(float(y.shape[0] * y.shape[1])))
    mse, nll = sum_over(sums) / count
    return mse, nll
