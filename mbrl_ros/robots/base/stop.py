"""The base's stop: ramp the twist down to zero within the base's deceleration limits, then hold zero.

The base's command is a twist, so a zero twist is already a stop, and a base
whose driver limits its acceleration (the simulated one does, through ir-sim)
brakes within its limits by itself. Not every driver does: a zero twist sent
at full speed makes some bases brake as hard as their motors can. So the stop
commands, from the last measured speed and yaw rate, a twist that falls by at
most ``max_accel * dt`` and ``max_yaw_accel * dt`` per control period (the
base's own limits, the '/**' values sim_base reads too), landing exactly on
zero, then holds zero. When the state goes stale it goes on from its own last
command, so it never winds back up.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BaseStop"]


def toward_zero(value: float, step: float) -> float:
    """``value`` moved toward 0 by at most ``step`` (landing on 0, never past it)."""
    return math.copysign(max(abs(value) - step, 0.0), value)


class BaseStop:
    """``velocity_indices``: (v, w) in the state; ``twist_indices``: (linear_x, angular_z) in the action."""

    def __init__(self, velocity_indices: tuple[int, int], twist_indices: tuple[int, int], action_dim: int,
                 max_accel: float, max_yaw_accel: float, dt: float) -> None:
        for name, value in (("max_accel", max_accel), ("max_yaw_accel", max_yaw_accel), ("dt", dt)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"parameter '{name}' must be a finite number > 0, got {value}")
        self.velocity_indices, self.twist_indices, self.action_dim = velocity_indices, twist_indices, action_dim
        self.steps = (max_accel * dt, max_yaw_accel * dt)  # the largest change of v and w per period
        self.twist: tuple[float, float] | None = None  # what the stop believes the base does

    def command(self, state: np.ndarray | None, last: np.ndarray | None) -> np.ndarray:
        if state is not None:
            self.twist = tuple(float(state[i]) for i in self.velocity_indices)
        elif self.twist is None:  # never measured: from the command sent last, else at rest
            self.twist = (0.0, 0.0) if last is None else tuple(float(last[i]) for i in self.twist_indices)
        self.twist = tuple(toward_zero(value, step) for value, step in zip(self.twist, self.steps))
        action = np.zeros(self.action_dim)
        action[list(self.twist_indices)] = self.twist
        return action

    def reset(self) -> None:
        self.twist = None
