"""Data-parallel fitting over torch.distributed: each process holds a shard of the transitions.

Every function here is the identity (one process, all the data) unless a process group is
initialised (``torch.distributed.init_process_group``, as ``torchrun`` workers do), so the
single-process fit and a data-parallel one run the same code. Shards are whole episodes; the
ranks' shards concatenated in rank order are the dataset one process would have read.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from mbrl_ros.core.data import TransitionDataset


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (and returned)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's values in ``tensor`` on every rank, in place (and returned)."""
    if active():
        dist.broadcast(tensor, src=0)
    return tensor


def row_offset(rows: int) -> tuple[int, int]:
    """(this rank's first row in the concatenated dataset, total rows over the ranks)."""
    if not active():
        return 0, rows
    counts = gathered(rows)
    return sum(counts[: rank()]), sum(counts)


def broadcast(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value) -> list:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not active():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def gather_dataset(dataset: TransitionDataset, numbered_as: TransitionDataset | None = None
                   ) -> tuple[TransitionDataset, list[int]]:
    """Every rank's shard, concatenated in rank order, on every rank; and each rank's episode-id offset.

    Episode ids stay unique: rank r's ids are shifted by ``offsets[r]``, the episode ids the ranks
    before it use in ``numbered_as`` (default ``dataset``; e.g. the whole shard a split part came
    from, so ids are those one process reading all the bags gives).
    """
    if not active():
        return dataset, [0]
    numbered = numbered_as if numbered_as is not None else dataset
    spans = gathered(int(numbered.episode_ids.max()) + 1 if len(numbered) else 0)
    offsets = [sum(spans[:r]) for r in range(len(spans))]
    whole = TransitionDataset(dataset.state_dim, dataset.action_dim, dataset.dtype)
    for shard, offset in zip(gathered(dataset), offsets):
        if len(shard):
            whole.append(shard.states, shard.actions, shard.next_states, shard.episode_ids + offset)
    return whole, offsets


def split_shards(dataset: TransitionDataset, fractions: Sequence[float], seed: int) -> list[TransitionDataset]:
    """``split_episodes`` of the whole data, each rank keeping its own episodes of each set.

    The split is decided on every episode's first transition gathered from all ranks (the hash
    reads only that, and the sets' minimum sizes need all episodes), so it is the split one
    process would make of the concatenated shards.
    """
    from mbrl_ros.core.retraining import split_episodes  # retraining -> fitting -> training import this module

    if not active():
        return split_episodes(dataset, fractions, seed)
    heads = TransitionDataset(dataset.state_dim, dataset.action_dim, dataset.dtype)
    for episode, first, _ in dataset.episodes():
        rows = slice(first, first + 1)
        heads.append(dataset.states[rows], dataset.actions[rows], dataset.next_states[rows], episode)
    all_heads, offsets = gather_dataset(heads)
    mine = offsets[rank()]
    return [dataset.select_episodes([e - mine for e in part.episode_ids.tolist() if _owner(offsets, e) == rank()])
            for part in split_episodes(all_heads, fractions, seed)]


def _owner(offsets: list[int], episode: int) -> int:
    """The rank whose shard holds the gathered ``episode`` id (an empty shard shares its offset with the next)."""
    return max(r for r, offset in enumerate(offsets) if episode >= offset)
