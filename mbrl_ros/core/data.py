"""Transitions with episode boundaries, and the multi-step error that validates a model.

A ``TransitionDataset`` holds rows ``(state, action, next_state, episode_id)``.
Rows of one episode are contiguous and in time order, so an episode is a
trajectory that can be replayed open loop: ``multistep_error`` rolls a model
from every recorded state with the recorded actions and compares with the
recorded states ``h`` steps later. One-step error flatters a learned model;
planners chain 10-50 predictions, so the trainer judges models on this.

Inputs may be numpy arrays or torch tensors. Bad rows are rejected at
``append`` with the field and row named, so a corrupt log fails where it is
read, not as a NaN loss three epochs later.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from mbrl_ros.core.angles import wrap_angle

_FORMAT_VERSION = 1


def as_rows(
    name: str, value, width: int, *, dtype: torch.dtype = torch.float32, rows: int | None = None
) -> torch.Tensor:
    """Convert ``value`` (numpy, torch or nested lists) to a finite ``[N, width]`` tensor.

    Errors name the field, the expected shape and, for non-finite values, the
    first bad row and column, because "row 1834 of next_states is NaN" is what
    a user needs to find the broken message in a log.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to(device="cpu", dtype=dtype)
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: expected a numeric array of shape [N, {width}] ({err})") from None
    if tensor.dim() != 2 or tensor.shape[1] != width or (rows is not None and tensor.shape[0] != rows):
        want = f"[{rows if rows is not None else 'N'}, {width}]"
        raise ValueError(f"{name}: expected shape {want}, got {list(tensor.shape)}")
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        row, col = (~finite).nonzero()[0].tolist()
        raise ValueError(
            f"{name}: non-finite value {tensor[row, col].item()} at row {row}, column {col}"
        )
    return tensor


class TransitionDataset:
    """Growing store of transitions with episode ids; rows of an episode stay contiguous.

    ``append`` takes chunks (an episode at once, or streamed step by step);
    chunks are concatenated lazily so streaming many small appends stays linear.
    """

    def __init__(self, state_dim: int, action_dim: int, dtype: torch.dtype = torch.float32) -> None:
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim}, {action_dim}")
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.dtype = dtype
        self._chunks: list[tuple[torch.Tensor, ...]] = []
        self._cache: tuple[torch.Tensor, ...] | None = None
        self._closed_episodes: set[int] = set()
        self._last_episode: int | None = None
        self._next_episode = 0

    # ---- building ---------------------------------------------------------------------
    def append(self, states, actions, next_states, episode_ids=None) -> None:
        """Append rows. ``episode_ids``: an int for the whole chunk, one per row, or None.

        None starts a new episode. An episode may be continued only by the very next
        append (streaming); going back to an earlier episode raises, since its rows
        would no longer be contiguous.
        """
        states = as_rows("states", states, self.state_dim, dtype=self.dtype)
        n = states.shape[0]
        actions = as_rows("actions", actions, self.action_dim, dtype=self.dtype, rows=n)
        next_states = as_rows("next_states", next_states, self.state_dim, dtype=self.dtype, rows=n)
        if n == 0:
            return
        if episode_ids is None:
            episode_ids = self._next_episode
        ids = torch.as_tensor(np.asarray(episode_ids), dtype=torch.long)
        if ids.dim() == 0:
            ids = ids.expand(n).clone()
        if ids.shape != (n,):
            raise ValueError(f"episode_ids: expected an int or shape [{n}], got {list(ids.shape)}")
        if bool((ids < 0).any()):
            row = int((ids < 0).nonzero()[0])
            raise ValueError(f"episode_ids: negative id {int(ids[row])} at row {row}")
        # Each run of equal ids is one episode segment; it must be new or continue the last one.
        starts = torch.ones(n, dtype=torch.bool)
        starts[1:] = ids[1:] != ids[:-1]
        last = self._last_episode
        for row in starts.nonzero().flatten().tolist():
            episode = int(ids[row])
            continues_last = row == 0 and episode == last
            if not continues_last and (episode in self._closed_episodes or episode == last):
                raise ValueError(
                    f"episode_ids: row {row} continues episode {episode}, which is already closed; "
                    "rows of an episode must be contiguous and in time order"
                )
            if last is not None and last != episode:
                self._closed_episodes.add(last)
            last = episode
        self._last_episode = last
        self._next_episode = max(self._next_episode, int(ids.max()) + 1)
        self._chunks.append((states, actions, next_states, ids))
        self._cache = None

    def append_trajectory(self, states, actions, episode_id: int | None = None) -> None:
        """Append one episode given as visited ``states[T+1]`` and applied ``actions[T]``."""
        states = as_rows("states", states, self.state_dim, dtype=self.dtype)
        actions = as_rows("actions", actions, self.action_dim, dtype=self.dtype, rows=states.shape[0] - 1)
        self.append(states[:-1], actions, states[1:], episode_id)

    # ---- access -------------------------------------------------------------------------
    def _tensors(self) -> tuple[torch.Tensor, ...]:
        if self._cache is None:
            if not self._chunks:
                self._cache = (
                    torch.zeros(0, self.state_dim, dtype=self.dtype),
                    torch.zeros(0, self.action_dim, dtype=self.dtype),
                    torch.zeros(0, self.state_dim, dtype=self.dtype),
                    torch.zeros(0, dtype=torch.long),
                )
            else:
                self._cache = tuple(torch.cat(parts) for parts in zip(*self._chunks))
                self._chunks = [self._cache]
        return self._cache

    @property
    def states(self) -> torch.Tensor:
        return self._tensors()[0]

    @property
    def actions(self) -> torch.Tensor:
        return self._tensors()[1]

    @property
    def next_states(self) -> torch.Tensor:
        return self._tensors()[2]

    @property
    def episode_ids(self) -> torch.Tensor:
        return self._tensors()[3]

    def __len__(self) -> int:
        return int(self.episode_ids.shape[0])

    def episodes(self) -> list[tuple[int, int, int]]:
        """``(episode_id, first_row, end_row)`` of each episode, in storage order."""
        ids = self.episode_ids
        if len(ids) == 0:
            return []
        starts = torch.ones(len(ids), dtype=torch.bool)
        starts[1:] = ids[1:] != ids[:-1]
        first = starts.nonzero().flatten().tolist()
        ends = first[1:] + [len(ids)]
        return [(int(ids[f]), f, e) for f, e in zip(first, ends)]

    def select_episodes(self, episode_ids: Sequence[int]) -> "TransitionDataset":
        """A new dataset with the given episodes (in this dataset's order)."""
        wanted = torch.as_tensor(list(episode_ids), dtype=torch.long)
        mask = torch.isin(self.episode_ids, wanted)
        return self._subset(mask)

    def _subset(self, mask: torch.Tensor) -> "TransitionDataset":
        out = TransitionDataset(self.state_dim, self.action_dim, self.dtype)
        s, a, ns, ids = self._tensors()
        if bool(mask.any()):
            out.append(s[mask], a[mask], ns[mask], ids[mask])
        return out

    def split_by_episode(self, val_fraction: float = 0.2, seed: int = 0) -> tuple["TransitionDataset", "TransitionDataset"]:
        """Split whole episodes into (train, validation); no episode is in both.

        Validation gets ``round(val_fraction * episodes)`` episodes, at least one and
        at most all but one, so each side is non-empty whenever there are 2+ episodes.
        Splitting rows instead would leak: neighbouring steps of one trajectory are
        nearly identical, so held-out error would look like training error.
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a value in (0, 1), got {val_fraction}")
        ids = [episode for episode, _, _ in self.episodes()]
        if len(ids) < 2:
            raise ValueError(f"split_by_episode: need at least 2 episodes, the dataset has {len(ids)}")
        n_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
        order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
        val_ids = {ids[i] for i in order[:n_val]}
        val_mask = torch.isin(self.episode_ids, torch.tensor(sorted(val_ids), dtype=torch.long))
        return self._subset(~val_mask), self._subset(val_mask)

    def minibatches(
        self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Iterate ``(states, actions, next_states)`` minibatches, shuffled across episodes."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        s, a, ns, _ = self._tensors()
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for first in range(0, stop, batch_size):
            idx = order[first : first + batch_size]
            yield s[idx], a[idx], ns[idx]

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        s, a, ns, ids = self._tensors()
        np.savez(
            path, format_version=_FORMAT_VERSION, states=s.numpy(), actions=a.numpy(),
            next_states=ns.numpy(), episode_ids=ids.numpy(),
        )

    @classmethod
    def load(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> "TransitionDataset":
        with np.load(path) as data:
            missing = [k for k in ("states", "actions", "next_states", "episode_ids") if k not in data]
            if missing:
                raise ValueError(f"{path}: not a transition dataset, missing array(s) {missing}")
            version = int(data["format_version"]) if "format_version" in data else 0
            if version > _FORMAT_VERSION:
                raise ValueError(f"{path}: format version {version} is newer than this code ({_FORMAT_VERSION})")
            states, actions = data["states"], data["actions"]
            if states.ndim != 2 or actions.ndim != 2:
                raise ValueError(f"{path}: states and actions must be 2-D, got {states.shape}, {actions.shape}")
            dataset = cls(states.shape[1], actions.shape[1], dtype)
            try:
                dataset.append(states, actions, data["next_states"], data["episode_ids"])
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        return dataset

    def __repr__(self) -> str:
        return (
            f"TransitionDataset({len(self)} transitions, {len(self.episodes())} episodes, "
            f"state_dim={self.state_dim}, action_dim={self.action_dim})"
        )


@dataclass
class MultiStepError:
    """Open-loop prediction error of a model on a dataset's episodes, per horizon."""

    rmse: dict[int, float]  # RMSE over all windows and state dims (after ``scale``)
    rmse_per_dim: dict[int, torch.Tensor]  # [nx] RMSE per state dim
    num_windows: dict[int, int]  # how many start states had an h-step future in their episode

    def __str__(self) -> str:
        return ", ".join(f"h={h}: {e:.4g} (n={self.num_windows[h]})" for h, e in self.rmse.items())


@torch.no_grad()
def multistep_error(
    model,
    dataset: TransitionDataset,
    horizons: Sequence[int] = (1, 5, 10, 20),
    *,
    angle_dims: Sequence[int] = (),
    scale: Sequence[float] | torch.Tensor | None = None,
    max_starts: int | None = None,
    seed: int = 0,
) -> MultiStepError:
    """Open-loop h-step RMSE: roll ``model`` from every recorded state with the recorded actions.

    For a start row t and horizon h (t+h-1 inside the same episode) the model is
    stepped h times from ``states[t]`` with ``actions[t:t+h]`` and compared with
    ``next_states[t+h-1]``. All start states are rolled together as one batch.
    ``angle_dims`` are compared as wrapped angle differences; ``scale`` divides
    each dim's error (so metres and radians can be averaged meaningfully).
    ``max_starts`` subsamples start rows (seeded) for big datasets.
    """
    horizons = sorted({int(h) for h in horizons})
    if not horizons or horizons[0] < 1:
        raise ValueError(f"horizons: expected positive integers, got {horizons}")
    if len(dataset) == 0:
        raise ValueError("multistep_error: the dataset is empty")
    dtype = _model_dtype(model)
    states, actions, next_states = (t.to(dtype) for t in dataset._tensors()[:3])
    n = len(dataset)
    starts = torch.arange(n)
    if max_starts is not None and n > max_starts:
        starts = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_starts].sort().values
    # Rows left in the episode from each row, including it: valid horizons are <= this.
    rows_left = torch.zeros(n, dtype=torch.long)
    for _, first, end in dataset.episodes():
        rows_left[first:end] = torch.arange(end - first, 0, -1)
    left = rows_left[starts]
    angle_mask = torch.zeros(dataset.state_dim, dtype=torch.bool)
    angle_mask[list(angle_dims)] = True
    scale_t = torch.ones(dataset.state_dim) if scale is None else torch.as_tensor(scale, dtype=states.dtype)

    rmse, per_dim, counts = {}, {}, {}
    predicted = states[starts]
    active = torch.ones(len(starts), dtype=torch.bool)
    for step in range(1, horizons[-1] + 1):
        active = active & (left >= step)
        if not bool(active.any()):
            break
        rows = starts + step - 1
        # Rows whose episode has ended are clamped to a valid row and masked out below.
        rows = torch.where(active, rows, starts)
        predicted = model(predicted, actions[rows])
        if step in horizons:
            err = predicted[active] - next_states[rows[active]]
            err = torch.where(angle_mask, wrap_angle(err), err) / scale_t
            per_dim[step] = err.pow(2).mean(0).sqrt()
            rmse[step] = float(err.pow(2).mean().sqrt())
            counts[step] = int(active.sum())
    for h in horizons:
        if h not in rmse:
            rmse[h], per_dim[h], counts[h] = math.nan, torch.full((dataset.state_dim,), math.nan), 0
    return MultiStepError(rmse, per_dim, counts)


def _model_dtype(model) -> torch.dtype:
    """The float dtype a model computes in (its first float parameter or buffer)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()
