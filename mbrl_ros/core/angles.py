"""Angles: wrapping, and the yaw of a quaternion. One convention for the whole stack.

Every wrapped angle is in the half-open interval (-pi, pi]: pi stays pi and -pi
becomes pi. ``wrap_angle`` takes a float, a numpy array, a torch tensor or a
casadi expression and returns the same kind. It subtracts whole turns
(``angle - 2 pi k``), so an angle already in range comes back bit for bit
(``atan2(sin, cos)`` and ``(a + pi) % 2 pi - pi`` both round a small angle off),
and its derivative is 1 everywhere, for autograd and for casadi alike.
"""

from __future__ import annotations

import math

__all__ = ["TWO_PI", "wrap_angle", "yaw_from_quaternion", "quaternion_from_yaw"]

TWO_PI = 2.0 * math.pi


def wrap_angle(angle):
    """``angle`` (float, numpy array, torch tensor or casadi expression) wrapped to (-pi, pi]."""
    return angle - TWO_PI * _ceil(angle / TWO_PI - 0.5)


def _ceil(value):
    if isinstance(value, (int, float)):
        return math.ceil(value)
    ceil = getattr(value, "ceil", None)  # torch tensors
    if ceil is not None:
        return ceil()
    module = type(value).__module__.split(".")[0]
    if module == "casadi":
        import casadi

        return casadi.ceil(value)
    import numpy as np

    return np.ceil(value)


def yaw_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> float:
    """Rotation about z of the quaternion ``(qx, qy, qz, qw)``, in (-pi, pi].

    Written with the squared norm instead of 1 so that a slightly non-normalised
    quaternion (float32 on the wire, a driver's own integration) still gives the
    right angle; a quaternion and its negative give the same yaw. Scaled by its largest entry first (the
    yaw does not depend on the scale), so that huge entries do not overflow into a NaN angle.
    """
    scale = max(abs(qx), abs(qy), abs(qz), abs(qw))
    if 0.0 < scale < math.inf:
        qx, qy, qz, qw = qx / scale, qy / scale, qz / scale, qw / scale
    return wrap_angle(math.atan2(2.0 * (qw * qz + qx * qy), qw * qw + qx * qx - qy * qy - qz * qz))


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """The rotation by ``yaw`` about z as ``(qx, qy, qz, qw)``."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)
