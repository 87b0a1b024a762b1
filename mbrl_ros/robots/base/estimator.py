"""The base's model state ``[x, y, yaw, v, w]`` from odometry alone (``BaseStateEstimator``).

ROS-free (numpy only). A differential-drive base's odometry carries its pose and
its twist (``linear.x``, ``angular.z``), so the state needs no command history
(unlike the car's steering angle). What it adds: yaw from the quaternion,
wrapped to (-pi, pi], an optional low-pass on the two velocities, and the
checks every estimator makes (``mbrl_ros.core.estimation``): non-finite fields,
degenerate quaternions, out-of-order stamps are rejected with a reason; an
identical re-send of the last sample (the lockstep simulator re-publishes an
unanswered state) carries the estimate it repeats; ``resync_after`` out-of-order
samples in a row start a new time line (a restarted simulator or bag).
"""

from __future__ import annotations

import numpy as np

from mbrl_ros.core.angles import yaw_from_quaternion
from mbrl_ros.core.estimation import Rejection, StateEstimate, finite, seconds

STATE_NAMES = ("x", "y", "yaw", "v", "w")
FIELDS = ("stamp", "x", "y", "qx", "qy", "qz", "qw", "v", "w")


class BaseStateEstimator:
    def __init__(self, velocity_filter_alpha: float = 1.0, resync_after: int = 10) -> None:
        if not 0.0 < velocity_filter_alpha <= 1.0:
            raise ValueError(f"estimator: 'velocity_filter_alpha' must be in (0, 1], got {velocity_filter_alpha}")
        if resync_after < 0:
            raise ValueError(f"estimator: 'resync_after' must be >= 0, got {resync_after}")
        self.alpha = float(velocity_filter_alpha)
        self.resync_after = int(resync_after)
        self.accepted = self.rejected = self.repeats = self.resyncs = 0
        self.last_rejection = ""
        self.reset()

    def reset(self) -> None:
        """Forget the filter state and the time line (counters are kept)."""
        self._last: StateEstimate | None = None
        self._last_sample: tuple | None = None
        self._out_of_order_run = 0

    def update(self, stamp_ns: int, x: float, y: float, orientation: tuple[float, float, float, float],
               v: float, w: float) -> StateEstimate | Rejection:
        """One odometry sample (``orientation`` as ``(qx, qy, qz, qw)``, ``v``/``w`` the body twist)."""
        sample = (x, y, *orientation, v, w)
        if not finite(stamp_ns, *sample):
            bad = [n for n, value in zip(FIELDS, (stamp_ns, *sample)) if not finite(value)]
            return self._reject(f"odometry: non-finite {', '.join(bad)}")
        if sum(q * q for q in orientation) < 1e-12:
            return self._reject("odometry: zero-length orientation quaternion")
        stamp_ns, last = int(stamp_ns), self._last
        if last is not None and stamp_ns == last.stamp_ns:
            self._out_of_order_run = 0
            if sample == self._last_sample:
                self.repeats += 1
                return self._reject(f"odometry: duplicate stamp {seconds(stamp_ns)} (a re-send)", repeat_of=last)
            return self._reject(f"odometry: duplicate stamp {seconds(stamp_ns)} with different values")
        if last is not None and stamp_ns < last.stamp_ns:
            self._out_of_order_run += 1
            if not self.resync_after or self._out_of_order_run < self.resync_after:
                return self._reject(f"odometry: out-of-order stamp {seconds(stamp_ns)} before the last one "
                                    f"{seconds(last.stamp_ns)}")
            self.resyncs += 1
            self.reset()
            last = None
        self._out_of_order_run = 0
        velocities = np.array([v, w], dtype=float)
        if last is not None:
            velocities = self.alpha * velocities + (1.0 - self.alpha) * last.values[3:]
        values = np.array([float(x), float(y), yaw_from_quaternion(*orientation), *velocities])
        self._last, self._last_sample = StateEstimate(stamp_ns, values, STATE_NAMES), sample
        self.accepted += 1
        return self._last

    def _reject(self, reason: str, repeat_of: StateEstimate | None = None) -> Rejection:
        self.rejected += 1
        self.last_rejection = reason
        return Rejection(reason, repeat_of)
