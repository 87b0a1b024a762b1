"""What a stop is, for the controller (ROS-free, numpy only): each robot's plug-in makes its own.

``RecedingHorizonController`` sends a robot's stop whenever it must not plan:
e-stop, stale or invalid state, missing goal or model, failure, deactivation and
shutdown. Robots implement it in ``mbrl_ros/robots/<robot>/`` (``Robot.stop``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["HoldCommand", "Stop"]


class Stop(Protocol):
    """A robot's stop (ROS-free): the command that brings the robot to rest and holds it there.

    The controller asks it for every command it sends while stopped (e-stop, stale or invalid
    state, missing goal or model, repeated failure, deactivation, shutdown) and sends the
    answer clamped to the action bounds but NOT rate-limited: a stop never waits for a ramp.
    ``state`` is the measured state while it is fresh and valid, else None (then the stop goes on
    from what it knew: the car keeps braking on its own estimate of its speed); a stop that
    begins on a stale state gets the last usable one. ``last`` is the command sent before (None
    if none). ``reset()`` is called when control resumes.
    """

    def command(self, state: np.ndarray | None, last: np.ndarray | None) -> np.ndarray: ...

    def reset(self) -> None: ...


class HoldCommand:
    """The default stop: always the configured ``safe_action`` (right for a robot whose command is a velocity)."""

    def __init__(self, action) -> None:
        self.action = np.asarray(action, dtype=float)

    def command(self, state: np.ndarray | None, last: np.ndarray | None) -> np.ndarray:
        return self.action

    def reset(self) -> None:
        pass
