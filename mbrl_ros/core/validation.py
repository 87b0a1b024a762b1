"""Input checks for the public core API.

Every check names the argument at fault and says what was expected, so a user
who passes a [B, 3] tensor to a 5-state model learns that from the message.
Checks run once at an API boundary (a planner's ``plan``, a model's
``predict``), never inside rollouts.
"""

from __future__ import annotations

from typing import Sequence

import torch


def check_tensor(
    name: str,
    value: torch.Tensor,
    shape: Sequence[int | None],
    *,
    finite: bool = True,
) -> torch.Tensor:
    """Check ``value`` is a tensor of ``shape`` (None matches any size) and finite."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape)
    ):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: expected shape {want}, got {list(value.shape)}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = (~torch.isfinite(value)).nonzero()[0].tolist()
        raise ValueError(f"{name}: contains a non-finite value at index {bad}")
    return value


def check_state_action_batch(
    states: torch.Tensor, actions: torch.Tensor, state_dim: int, action_dim: int
) -> None:
    """Check a ``(states[B, nx], actions[B, nu])`` pair for a model."""
    check_tensor("states", states, (None, state_dim))
    check_tensor("actions", actions, (states.shape[0], action_dim))
