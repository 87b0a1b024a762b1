"""hw/command ``[u_accel, u_steer]`` (normalised, as sim_car takes it) -> an Ackermann drive command.

ROS-free, so the mapping is tested without DDS. Two ways to turn ``u_accel``
into what an Ackermann driver takes (``speed`` plus an ``acceleration`` limit):

- ``integrate``: the commanded speed grows by ``u_accel * max_accel`` per
  second, as the car model's ``v' = v + a dt``: over the real time since the
  previous command (at most one control period; a full period for the first
  command), so commands that come faster than 1/dt do not ramp faster. Most
  vendor drivers (VESC, F1TENTH) track a speed, so this is the default.
- ``acceleration``: drive toward the top speed in the direction of ``u_accel``
  with the acceleration limit ``|u_accel| * max_accel``; ``u_accel = 0`` holds
  the speed last measured. For drivers that honour the acceleration field.

The steering angle is ``u_steer * max_steer`` in both. Inputs are clipped to
[-1, 1] (the stack's contract) and speeds to ``[-max_reverse_speed, max_speed]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPEED_MODES = ("integrate", "acceleration")


@dataclass(frozen=True)
class Drive:
    speed: float  # m/s, negative for reverse
    acceleration: float  # m/s^2, a magnitude limit; 0 means "as fast as possible"
    steering_angle: float  # rad, positive left


@dataclass
class DriveMapper:
    max_steer: float = 0.4189  # rad (F1TENTH: 24 deg)
    max_accel: float = 3.0  # m/s^2 at u_accel = 1
    max_speed: float = 3.0  # m/s
    max_reverse_speed: float = 1.0  # m/s
    control_period: float = 0.2  # s, how long one command holds (integrate mode)
    speed_mode: str = "integrate"

    def __post_init__(self) -> None:
        if self.speed_mode not in SPEED_MODES:
            raise ValueError(f"speed_mode must be one of {list(SPEED_MODES)}, got {self.speed_mode!r}")
        for name in ("max_steer", "max_accel", "max_speed", "control_period"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not math.isfinite(self.max_reverse_speed) or self.max_reverse_speed < 0:
            raise ValueError(f"max_reverse_speed must be a finite number >= 0, got {self.max_reverse_speed}")
        self.speed = 0.0  # the speed commanded last (integrate mode's running value)

    def command(self, u_accel: float, u_steer: float, measured_speed: float | None = None,
                elapsed: float | None = None) -> Drive:
        """The drive for one command; ``measured_speed`` (odometry) is what ``u_accel = 0`` holds in
        acceleration mode; ``elapsed``: wall seconds since the previous command (None: the first one),
        what integrate mode integrates over, at most ``control_period``."""
        if not (math.isfinite(u_accel) and math.isfinite(u_steer)):
            raise ValueError(f"non-finite command [u_accel {u_accel}, u_steer {u_steer}]")
        u_accel, u_steer = _clip(u_accel, -1.0, 1.0), _clip(u_steer, -1.0, 1.0)
        steer = u_steer * self.max_steer
        if self.speed_mode == "integrate":
            period = self.control_period if elapsed is None else min(max(elapsed, 0.0), self.control_period)
            self.speed = self._clip_speed(self.speed + u_accel * self.max_accel * period)
            return Drive(self.speed, abs(u_accel) * self.max_accel, steer)
        if u_accel > 0:
            target = self.max_speed
        elif u_accel < 0:
            target = -self.max_reverse_speed
        else:
            target = self._clip_speed(self.speed if measured_speed is None else measured_speed)
        self.speed = target
        return Drive(target, abs(u_accel) * self.max_accel, steer)

    def stop(self, u_accel: float = 0.0) -> Drive:
        """The safe drive: zero speed, wheels straight, braking at ``|u_accel| * max_accel`` (the stop's
        deceleration; 0: as fast as the driver can)."""
        self.speed = 0.0
        u_accel = _clip(u_accel, -1.0, 1.0) if math.isfinite(u_accel) else 0.0
        return Drive(0.0, abs(u_accel) * self.max_accel, 0.0)

    def _clip_speed(self, speed: float) -> float:
        return _clip(speed, -self.max_reverse_speed, self.max_speed)


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, float(value)))
