"""The hand's model state from joint states and fingertip positions (``HandStateEstimator``).

ROS-free (numpy only): the estimator node feeds it message fields, tests feed it numbers.
"""

from __future__ import annotations

import numpy as np

from mbrl_ros.core.estimation import Rejection, StateEstimate, TimeLineEstimator, finite


class HandStateEstimator(TimeLineEstimator):
    """The hand's model state from joint states and fingertip positions of the same stamp.

    The state is the configured joints' positions, then their velocities (in
    ``joint_names`` order, whatever the message's order), then the fingertip
    positions (x, y, z each) when ``fingertips > 0``. A hand driver publishes the
    joint states and the fingertips (its forward kinematics) with one stamp; a
    state is given once both halves of a stamp are in. Joint states without
    velocities get them by finite differences of the positions (zero at the
    first sample). Non-finite values, missing joints, out-of-order or
    mismatched stamps are rejected with a reason, as for the car; an identical
    re-send of the last stamp gives ``Rejection.repeat_of``.
    """

    def __init__(self, joint_names: list[str], fingertips: int = 5, resync_after: int = 10) -> None:
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ValueError(f"estimator: 'joint_names' must be non-empty and unique, got {list(joint_names)}")
        if fingertips < 0:
            raise ValueError(f"estimator: 'fingertips' must be >= 0, got {fingertips}")
        self.joint_names = list(joint_names)
        self.fingertips = int(fingertips)
        super().__init__(resync_after)

    @property
    def state_dim(self) -> int:
        return 2 * len(self.joint_names) + 3 * self.fingertips

    def reset(self) -> None:
        super().reset()
        self._last_positions: np.ndarray | None = None
        self._joints: tuple[int, np.ndarray, np.ndarray | None] | None = None  # stamp, positions, velocities
        self._tips: tuple[int, np.ndarray] | None = None

    def joints(self, stamp_ns: int, names, positions, velocities) -> StateEstimate | Rejection | None:
        """One joint-state message. Returns an estimate when the stamp's fingertips are in too."""
        names, positions, velocities = list(names), np.asarray(positions, float), np.asarray(velocities, float)
        if len(positions) != len(names) or (len(velocities) and len(velocities) != len(names)):
            return self._reject(f"joint_states: {len(names)} names, {len(positions)} positions, "
                                f"{len(velocities)} velocities")
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            return self._reject(f"joint_states: missing joint(s) {missing}")
        order = [names.index(n) for n in self.joint_names]
        positions = positions[order]
        velocities = velocities[order] if len(velocities) else None
        bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(positions))]
        if velocities is not None:
            bad += [f"{self.joint_names[i]} velocity" for i in np.flatnonzero(~np.isfinite(velocities))]
        if bad or not finite(stamp_ns):
            return self._reject(f"joint_states: non-finite {', '.join(bad) or 'stamp'}")
        self._joints = (int(stamp_ns), positions, velocities)
        return self._combine()

    def fingertip_positions(self, stamp_ns: int, points) -> StateEstimate | Rejection | None:
        """One fingertip message ([F, 3] positions). Returns an estimate when the stamp's joints are in too."""
        points = np.asarray(points, float)
        if points.shape != (self.fingertips, 3):
            return self._reject(f"fingertips: expected {self.fingertips} positions, got shape {points.shape}")
        if not np.all(np.isfinite(points)) or not finite(stamp_ns):
            return self._reject("fingertips: non-finite position or stamp")
        self._tips = (int(stamp_ns), points.reshape(-1))
        return self._combine()

    def _combine(self) -> StateEstimate | Rejection | None:
        if self._joints is None or (self.fingertips and self._tips is None):
            return None
        stamp_ns, positions, velocities = self._joints
        if self.fingertips and self._tips[0] != stamp_ns:
            return None  # the other half of this stamp is still on its way
        tips = self._tips[1] if self.fingertips else np.zeros(0)
        self._joints, self._tips = None, None
        sample = (*positions, *(() if velocities is None else velocities), *tips)
        rejection = self._order(stamp_ns, sample, "hand")
        if rejection is not None:
            return rejection
        last = self._last  # None on a new time line
        if velocities is None:
            if last is None or self._last_positions is None:
                velocities = np.zeros_like(positions)
            else:
                velocities = (positions - self._last_positions) / ((stamp_ns - last.stamp_ns) * 1e-9)
        out = self._accept(StateEstimate(stamp_ns, np.concatenate([positions, velocities, tips])), sample)
        if isinstance(out, StateEstimate):
            self._last_positions = positions
        return out
