"""What every robot's state estimator gives: an estimate, or a rejection with its reason.

A robot's estimator (``mbrl_ros/robots/<robot>/estimator.py``) turns sensor
values into the model state. Bad sensor data never raises: it gives a
``Rejection`` naming what was wrong and leaves the filter state untouched. A
duplicate stamp is most often an identical re-send (the lockstep simulator
re-publishes an unanswered state, because the first messages after discovery can
be lost); such a rejection carries the estimate it repeats (``repeat_of``), so
the node can re-send it downstream too and a lockstep loop whose state got lost
on the estimator's output cannot stall.
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
