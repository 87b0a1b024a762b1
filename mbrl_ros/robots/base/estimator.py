"""The base's model state ``[x, y, yaw, v, w]`` from odometry alone (``BaseStateEstimator``).

ROS-free (numpy only). A differential-drive base's odometry carries its pose and
its twist (``linear.x``, ``angular.z``), so the state needs no command history
(unlike the car's steering angle). What it adds: yaw from the quaternion,
wrapped to (-pi, pi], an optional low-pass on the two velocities, and the
checks every estimator makes: non-finite fields and degenerate quaternions are
rejected with a reason, and stamps go through ``TimeLineEstimator``
(``mbrl_ros.core.estimation``: re-sends, out-of-order samples, a restarted time line).
"""

from __future__ import annotations

import numpy as np

from mbrl_ros.core.angles import yaw_from_quaternion
from mbrl_ros.core.estimation import Rejection, StateEstimate, TimeLineEstimator, finite

STATE_NAMES = ("x", "y", "yaw", "v", "w")
FIELDS = ("stamp", "x", "y", "qx", "qy", "qz", "qw", "v", "w")


class BaseStateEstimator(TimeLineEstimator):
    def __init__(self, velocity_filter_alpha: float = 1.0, resync_after: int = 10) -> None:
        if not 0.0 < velocity_filter_alpha <= 1.0:
            raise ValueError(f"estimator: 'velocity_filter_alpha' must be in (0, 1], got {velocity_filter_alpha}")
        self.alpha = float(velocity_filter_alpha)
        super().__init__(resync_after)

    def update(self, stamp_ns: int, x: float, y: float, orientation: tuple[float, float, float, float],
               v: float, w: float) -> StateEstimate | Rejection:
        """One odometry sample (``orientation`` as ``(qx, qy, qz, qw)``, ``v``/``w`` the body twist)."""
        sample = (x, y, *orientation, v, w)
        if not finite(stamp_ns, *sample):
            bad = [n for n, value in zip(FIELDS, (stamp_ns, *sample)) if not finite(value)]
            return self._reject(f"odometry: non-finite {', '.join(bad)}")
        if sum(q * q for q in orientation) < 1e-12:
            return self._reject("odometry: zero-length orientation quaternion")
        stamp_ns = int(stamp_ns)
        rejection = self._order(stamp_ns, sample, "odometry")
        if rejection is not None:
            return rejection
        velocities = np.array([v, w], dtype=float)
        if self._last is not None:
            velocities = self.alpha * velocities + (1.0 - self.alpha) * self._last.values[3:]
        values = np.array([float(x), float(y), yaw_from_quaternion(*orientation), *velocities])
        return self._accept(StateEstimate(stamp_ns, values, STATE_NAMES), sample)
