"""What every robot's state estimator gives: an estimate, or a rejection with its reason.

A robot's estimator (``mbrl_ros/robots/<robot>/estimator.py``) turns sensor
values into the model state. Bad sensor data never raises: it gives a
``Rejection`` naming what was wrong and leaves the filter state untouched. A
duplicate stamp is most often an identical re-send (the lockstep simulator
re-publishes an unanswered state, because the first messages after discovery can
be lost); such a rejection carries the estimate it repeats (``repeat_of``), so
the node can re-send it downstream too and a lockstep loop whose state got lost
on the estimator's output cannot stall. ``TimeLineEstimator`` does these checks
(and counts) for every robot's estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StateEstimate:
    stamp_ns: int
    values: np.ndarray  # the model state, float64
    names: tuple[str, ...] = ()  # the state's entries, where the estimator fixes them


@dataclass(frozen=True)
class Rejection:
    reason: str
    # For an identical re-send of the last accepted sample: the estimate it repeats.
    repeat_of: StateEstimate | None = None


def finite(*values) -> bool:
    """Whether every value is a finite number."""
    try:
        return all(math.isfinite(v) for v in values)
    except TypeError:
        return False


def seconds(stamp_ns: int) -> str:
    """A stamp for a message: ``1.200000000 s``."""
    return f"{stamp_ns * 1e-9:.9f} s"


class TimeLineEstimator:
    """What every robot's estimator shares: its counters, rejections, and the checks on a sample's stamp.

    A subclass calls ``_order(stamp_ns, sample, source)`` with each sample (``sample``: a
    tuple of its raw values, to tell an identical re-send from a conflicting one) before
    it uses it, and ``_accept(estimate, sample)`` with the estimate it makes of it:

    - the stamp of the last accepted sample again: an identical re-send is rejected with
      the estimate it repeats (``repeat_of``), different values are rejected;
    - an earlier stamp is rejected as out of order, unless ``resync_after`` such samples
      came in a row (0: never): then the time line restarted (a restarted simulator, a
      bag replayed from the start), ``resync()`` forgets it and the sample is used.
    """

    def __init__(self, resync_after: int) -> None:
        if resync_after < 0 or int(resync_after) != resync_after:
            raise ValueError(f"estimator: 'resync_after' must be an integer >= 0, got {resync_after}")
        self.resync_after = int(resync_after)
        self.accepted = self.rejected = self.repeats = self.resyncs = 0
        self.last_rejection = ""
        self.reset()

    def counters(self) -> dict[str, int]:
        """What the estimator node reports on /diagnostics. Subclasses add their own."""
        return {"accepted": self.accepted, "repeats": self.repeats, "resyncs": self.resyncs}

    def reset(self) -> None:
        """Forget the filter state and the time line (counters are kept). Subclasses extend it."""
        self._last: StateEstimate | None = None
        self._last_sample: tuple | None = None
        self._out_of_order_run = 0

    def resync(self) -> None:
        """Start a new time line; by default forget everything (``reset``)."""
        self.reset()

    def _order(self, stamp_ns: int, sample: tuple, source: str) -> Rejection | None:
        """None when the sample at ``stamp_ns`` comes next on the time line, else its rejection."""
        last = self._last
        if last is not None and stamp_ns == last.stamp_ns:
            self._out_of_order_run = 0
            if sample == self._last_sample:
                self.repeats += 1
                return self._reject(f"{source}: duplicate stamp {seconds(stamp_ns)} (a re-send)", repeat_of=last)
            return self._reject(f"{source}: duplicate stamp {seconds(stamp_ns)} with different values")
        if last is not None and stamp_ns < last.stamp_ns:
            self._out_of_order_run += 1
            if not self.resync_after or self._out_of_order_run < self.resync_after:
                return self._reject(f"{source}: out-of-order stamp {seconds(stamp_ns)} before the last one "
                                    f"{seconds(last.stamp_ns)}")
            # So many in a row: the time line restarted; start over from this sample.
            self.resyncs += 1
            self.resync()
        self._out_of_order_run = 0
        return None

    def _accept(self, estimate: StateEstimate, sample: tuple) -> StateEstimate | Rejection:
        if not np.all(np.isfinite(estimate.values)):
            # Finite but huge inputs can overflow on the way (a derivative over a short step, a filter).
            return self._reject(f"input out of range: the state would be non-finite {estimate.values.tolist()}")
        self._last, self._last_sample = estimate, sample
        self.accepted += 1
        return estimate

    def _reject(self, reason: str, repeat_of: StateEstimate | None = None) -> Rejection:
        self.rejected += 1
        self.last_rejection = reason
        return Rejection(reason, repeat_of)
