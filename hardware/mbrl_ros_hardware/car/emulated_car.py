"""The car behind an emulated F1TENTH driver: a kinematic bicycle tracking the drive command.

ROS-free. What the vendor's speed controller and servo do: the speed follows
the commanded one with a first-order response limited by the command's
acceleration (or by ``max_accel`` when that is 0, "as fast as possible"), and
the steering angle follows the commanded one at a limited rate. The rest is the
kinematic bicycle at the rear axle, integrated with small substeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mbrl_ros.core.angles import wrap_angle


@dataclass
class EmulatedCar:
    wheelbase: float = 0.33  # m (F1TENTH)
    max_steer: float = 0.4189  # rad, the servo's end stop
    max_steer_rate: float = 3.0  # rad/s
    max_accel: float = 5.0  # m/s^2
    speed_time_constant: float = 0.1  # s, of the speed controller
    state: np.ndarray = field(default_factory=lambda: np.zeros(5))  # [x, y, yaw, v, steer]

    def step(self, dt: float, speed: float, acceleration: float, steering_angle: float, substeps: int = 4) -> np.ndarray:
        """Advance by ``dt`` seconds under one drive command; returns the new state."""
        h = dt / substeps
        accel_limit = self.max_accel if acceleration <= 0 else min(acceleration, self.max_accel)
        steer_target = min(self.max_steer, max(-self.max_steer, steering_angle))
        x, y, yaw, v, steer = self.state
        for _ in range(substeps):
            accel = (speed - v) / max(self.speed_time_constant, h)
            v += min(accel_limit, max(-accel_limit, accel)) * h
            steer += min(self.max_steer_rate * h, max(-self.max_steer_rate * h, steer_target - steer))
            x += v * math.cos(yaw) * h
            y += v * math.sin(yaw) * h
            yaw += v * math.tan(steer) / self.wheelbase * h
        yaw = wrap_angle(yaw)
        self.state = np.array([x, y, yaw, v, steer])
        return self.state
