"""The hand's stop: hold the joints where they were last measured.

The hand's command is each actuator's position target, normalised to [-1, 1]
over its control range (as HandReach maps it), so the configured ``safe_action``
of zeros would drive every joint to mid-range. The stop instead commands each
actuator to its joint's position measured when the stop began, and keeps that
target for as long as the stop lasts (re-measuring each cycle would let the hand
sag under gravity). With no usable state at the start it holds the command sent
last (or, before any, the configured ``safe_action``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CTRL_RANGE", "HoldJoints"]

# The Shadow hand's actuator control ranges (rad), gymnasium-robotics' shadow_hand MJCF;
# each actuator A_<joint> drives the joint <joint>. tests/hardware checks them against the model.
CTRL_RANGE = {
    "A_WRJ1": (-0.489, 0.14), "A_WRJ0": (-0.698, 0.489),
    "A_FFJ3": (-0.349, 0.349), "A_FFJ2": (0.0, 1.571), "A_FFJ1": (0.0, 1.571),
    "A_MFJ3": (-0.349, 0.349), "A_MFJ2": (0.0, 1.571), "A_MFJ1": (0.0, 1.571),
    "A_RFJ3": (-0.349, 0.349), "A_RFJ2": (0.0, 1.571), "A_RFJ1": (0.0, 1.571),
    "A_LFJ4": (0.0, 0.785), "A_LFJ3": (-0.349, 0.349), "A_LFJ2": (0.0, 1.571), "A_LFJ1": (0.0, 1.571),
    "A_THJ4": (-1.047, 1.047), "A_THJ3": (0.0, 1.222), "A_THJ2": (-0.209, 0.209), "A_THJ1": (-0.524, 0.524),
    "A_THJ0": (-1.571, 0.0),
}


class HoldJoints:
    """``joint_indices[i]``: the state entry of actuator i's joint position."""

    def __init__(self, joint_indices: list[int], ranges: list[tuple[float, float]], safe_action) -> None:
        self.joint_indices = np.asarray(joint_indices, dtype=int)
        low, high = np.asarray(ranges, dtype=float).T
        self.centre, self.half = (low + high) / 2.0, (high - low) / 2.0
        self.safe_action = np.asarray(safe_action, dtype=float)
        self.held: np.ndarray | None = None  # the targets of this stop

    def command(self, state: np.ndarray | None, last: np.ndarray | None) -> np.ndarray:
        if self.held is None:
            if state is not None:
                self.held = np.clip((state[self.joint_indices] - self.centre) / self.half, -1.0, 1.0)
            else:
                self.held = self.safe_action if last is None else np.asarray(last, dtype=float).copy()
        return self.held

    def reset(self) -> None:
        self.held = None
