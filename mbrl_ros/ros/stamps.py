"""Header stamps as integer nanoseconds, the one time unit the stack computes with.

``builtin_interfaces/Time`` splits a time into ``sec`` and ``nanosec``; the
estimator, the controller, the drivers and the tools compare and subtract
stamps, which is exact in integer nanoseconds and not in float seconds.
"""

from __future__ import annotations

from builtin_interfaces.msg import Time

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """A ``builtin_interfaces/Time`` (or anything with ``sec`` and ``nanosec``) as nanoseconds."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    """Nanoseconds (>= 0) as a ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)
