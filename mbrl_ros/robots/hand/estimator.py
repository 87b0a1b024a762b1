"""The hand's model state from joint states, fingertip positions and a held object's pose (``HandStateEstimator``).

ROS-free (numpy only): the estimator node feeds it message fields, tests feed it numbers.
"""

from __future__ import annotations

import numpy as np

from mbrl_ros.core.estimation import Rejection, StateEstimate, TimeLineEstimator, finite


# The block's entries of the state (``block: true``): its pose as the driver's odometry gives it (position in the
# world frame, orientation quaternion w, x, y, z) and its twist (in the block's own frame, as nav_msgs/Odometry).
BLOCK_STATE_NAMES = ("block_x", "block_y", "block_z", "block_qw", "block_qx", "block_qy", "block_qz",
                     "block_vx", "block_vy", "block_vz", "block_wx", "block_wy", "block_wz")


class HandStateEstimator(TimeLineEstimator):
    """The hand's model state from joint states, fingertip positions and the block's odometry of the same stamp.

    The state is the configured joints' positions, then their velocities (in
    ``joint_names`` order, whatever the message's order), then the fingertip
    positions (x, y, z each) when ``fingertips > 0``, then the block's pose and
    twist (``BLOCK_STATE_NAMES``) when ``block``. A hand driver publishes the
    joint states, the fingertips (its forward kinematics) and the block with one
    stamp; a state is given once every part of a stamp is in. The block's
    quaternion is normalised (its sign kept: HandManipulate's success tells a
    quaternion from its negative). Joint states without
    velocities get them by finite differences of the positions (zero at the
    first sample). Non-finite values, missing joints, out-of-order or
    mismatched stamps are rejected with a reason, as for the car; an identical
    re-send of the last stamp gives ``Rejection.repeat_of``.
    """

    def __init__(self, joint_names: list[str], fingertips: int = 5, resync_after: int = 10,
                 block: bool = False) -> None:
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ValueError(f"estimator: 'joint_names' must be non-empty and unique, got {list(joint_names)}")
        if fingertips < 0:
            raise ValueError(f"estimator: 'fingertips' must be >= 0, got {fingertips}")
        self.joint_names = list(joint_names)
        self.fingertips = int(fingertips)
        self.block = bool(block)
        super().__init__(resync_after)

    @property
    def state_dim(self) -> int:
        return 2 * len(self.joint_names) + 3 * self.fingertips + len(BLOCK_STATE_NAMES) * self.block

    def reset(self) -> None:
        super().reset()
        self._last_positions: np.ndarray | None = None
        self._joints: tuple[int, np.ndarray, np.ndarray | None] | None = None  # stamp, positions, velocities
        self._tips: tuple[int, np.ndarray] | None = None
        self._block: tuple[int, np.ndarray] | None = None

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

    def block_odometry(self, stamp_ns: int, position, orientation, linear, angular) -> StateEstimate | Rejection | None:
        """One block message: position (x, y, z), orientation (w, x, y, z), twist (linear, angular: 3 each).
        Returns an estimate when the stamp's joints (and fingertips) are in too."""
        if not self.block:
            return self._reject("block: this estimator has no block (parameter 'block' is false)")
        values = np.asarray([*position, *orientation, *linear, *angular], float)
        if values.shape != (len(BLOCK_STATE_NAMES),):
            return self._reject(f"block: expected {len(BLOCK_STATE_NAMES)} values (position 3, orientation 4, "
                                f"linear 3, angular 3), got {values.shape[0]}")
        bad = [name for name, v in zip(BLOCK_STATE_NAMES, values) if not np.isfinite(v)]
        if bad or not finite(stamp_ns):
            return self._reject(f"block: non-finite {', '.join(bad) or 'stamp'}")
        norm = float(np.linalg.norm(values[3:7]))
        if norm < 1e-6:
            return self._reject("block: zero-length orientation quaternion")
        values[3:7] /= norm
        self._block = (int(stamp_ns), values)
        return self._combine()

    def _combine(self) -> StateEstimate | Rejection | None:
        parts = [(self.fingertips, self._tips), (self.block, self._block)]
        if self._joints is None or any(wanted and part is None for wanted, part in parts):
            return None
        stamp_ns, positions, velocities = self._joints
        if any(wanted and part[0] != stamp_ns for wanted, part in parts):
            return None  # another part of this stamp is still on its way
        tips = self._tips[1] if self.fingertips else np.zeros(0)
        block = self._block[1] if self.block else np.zeros(0)
        self._joints, self._tips, self._block = None, None, None
        sample = (*positions, *(() if velocities is None else velocities), *tips, *block)
        rejection = self._order(stamp_ns, sample, "hand")
        if rejection is not None:
            return rejection
        last = self._last  # None on a new time line
        if velocities is None:
            if last is None or self._last_positions is None:
                velocities = np.zeros_like(positions)
            else:
                velocities = (positions - self._last_positions) / ((stamp_ns - last.stamp_ns) * 1e-9)
        out = self._accept(StateEstimate(stamp_ns, np.concatenate([positions, velocities, tips, block])), sample)
        if isinstance(out, StateEstimate):
            self._last_positions = positions
        return out
