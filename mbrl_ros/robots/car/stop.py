"""The car's stop: brake to a standstill at a set deceleration, then hold zero speed.

The car's command is an acceleration (``u_accel`` times ``accel_per_unit`` m/s^2),
so the configured ``safe_action`` of zero keeps whatever speed the car has. The
stop instead brakes from the last measured speed at ``deceleration``, the last
step just enough to land on zero, then commands zero acceleration at zero speed,
wheels straight. When the state goes stale it keeps braking on its own estimate
of the speed (what it commanded), so it never brakes on into reverse.

A driver that tracks a speed (real_car) gets the stop's commands marked as such
(``mbrl_ros.ros.commands``) and commands speed zero itself.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CarStop", "braking_acceleration", "held_stop"]

STANDSTILL = 0.01  # m/s: slower than this is standing still


def braking_acceleration(speed: float, deceleration: float, dt: float) -> float:
    """The acceleration (m/s^2) that brakes ``speed`` toward zero at most at ``deceleration`` over ``dt``
    without passing zero: ``-speed / dt`` on the last step."""
    if abs(speed) < STANDSTILL:
        return 0.0
    return -math.copysign(min(deceleration, abs(speed) / dt), speed)


def held_stop(speed: float, stop, accel_per_unit: float, dt: float) -> np.ndarray:
    """What a simulator running in real time applies while the controller's last command, ``stop``, holds
    (deactivated, shut down): braking from ``speed`` at the stop's deceleration (``|u_accel|``; full braking
    if that was zero while still moving) to a standstill, wheels as commanded, never on into reverse."""
    deceleration = abs(float(stop[0])) * accel_per_unit or accel_per_unit
    return np.array([braking_acceleration(speed, deceleration, dt) / accel_per_unit, float(stop[1])])


class CarStop:
    """``speed_index``: the speed's entry in the state; ``accel_index``: the acceleration command's in the action."""

    def __init__(self, speed_index: int, accel_index: int, action_dim: int, accel_per_unit: float,
                 deceleration: float, dt: float) -> None:
        for name, value in (("accel_per_unit", accel_per_unit), ("stop_deceleration", deceleration), ("dt", dt)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"parameter '{name}' must be a finite number > 0, got {value}")
        if deceleration > accel_per_unit:
            raise ValueError(f"parameter 'stop_deceleration' ({deceleration} m/s^2) is more than the car can brake: "
                             f"'accel_per_unit' is {accel_per_unit} m/s^2 at u_accel = -1")
        self.speed_index, self.accel_index, self.action_dim = speed_index, accel_index, action_dim
        self.accel_per_unit, self.deceleration, self.dt = accel_per_unit, deceleration, dt
        self.speed: float | None = None  # the speed the stop believes the car has

    def command(self, state: np.ndarray | None, last: np.ndarray | None) -> np.ndarray:
        if state is not None:
            self.speed = float(state[self.speed_index])
        # Never measured (no state yet): zero acceleration, which every car driver brakes on from its own speed
        # as it is marked as the stop (real_car: speed zero; sim_car: held_stop, real time and lockstep).
        speed = self.speed or 0.0
        accel = braking_acceleration(speed, self.deceleration, self.dt)
        self.speed = speed + accel * self.dt
        action = np.zeros(self.action_dim)
        action[self.accel_index] = accel / self.accel_per_unit
        return action

    def reset(self) -> None:
        self.speed = None
