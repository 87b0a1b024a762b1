"""The car's cost terms: the goal pose with highway-env's parking reward as a form.

``goal_pose`` for the car is the core's ``GoalPoseTerm`` plus ``form:
parking_reward``: the classic highway-env parking reward, negated into a cost,
``(sum_i w_i |f_i(s) - f_i(g)|) ** parking_power`` with
``f = (x/100, y/100, vx/5, vy/5, cos yaw, sin yaw)``, ``vx = v cos yaw``,
``vy = v sin yaw`` (highway-env's velocity points along the heading).

``parked``: the parking task's success, highway-env's ``is_success`` (the
episode's end in sim_car: parking-v0 terminates on it) computed from car states
and the goal state: its reward, with its default weights, above
``-PARKING_SUCCESS_REWARD``. ``crashed``: the car's body reaches one of the
lot's walls (parking-v0 ends the episode there too, unparked).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mbrl_ros.core.costs import SQRT_EPS, GoalPoseTerm, parse_number, parse_vector

__all__ = ["CAR_LENGTH", "CAR_WIDTH", "CarGoalPoseTerm", "PARKING_LOT", "PARKING_SCALES", "PARKING_SUCCESS_REWARD",
           "PARKING_WEIGHTS", "crashed", "parked", "parking_reward"]

# highway-env's ParkingEnv defaults, as sim_car runs parking-v0: the reward's weights on its observation
# (x, y, vx, vy, cos yaw, sin yaw), the observation's scales, and is_success's threshold (success_goal_reward).
PARKING_WEIGHTS = (1.0, 0.3, 0.0, 0.0, 0.02, 0.02)
PARKING_SCALES = (100.0, 100.0, 5.0, 5.0, 1.0, 1.0)
PARKING_SUCCESS_REWARD = 0.12
# Its lot: walls 1 m thick centred on x = +-35 m and y = +-21 m (ParkingEnv's add_walls, 70 m x 42 m), so their inner
# faces at +-34.5 and +-20.5 m; its car's body (Vehicle.LENGTH, WIDTH) a rectangle about its position along its heading.
PARKING_LOT = (34.5, 20.5)
CAR_LENGTH, CAR_WIDTH = 5.0, 2.0

class CarGoalPoseTerm(GoalPoseTerm):
    """``goal_pose`` with the ``parking_reward`` form besides ``quadratic``."""

    forms = ("quadratic", "parking_reward")
    defaults = {
        **GoalPoseTerm.defaults,
        "parking_weights": list(PARKING_WEIGHTS),
        "parking_scales": list(PARKING_SCALES),
        "parking_power": 0.5,
    }

    def configure(self, c: dict[str, Any]) -> None:
        super().configure(c)
        weights = parse_vector("parking_weights", c["parking_weights"], 6, low=0)
        scales = parse_vector("parking_scales", c["parking_scales"], 6)
        if any(s <= 0 for s in scales):
            raise ValueError(f"parking_scales: expected 6 numbers > 0, got {scales}")
        self.parking_power = parse_number("parking_power", c["parking_power"], low=0)
        self.register_buffer("parking_weights", torch.tensor(weights))
        self.register_buffer("parking_inv_scales", 1.0 / torch.tensor(scales))

    def per_state(self, states: torch.Tensor) -> torch.Tensor:
        if self.form != "parking_reward":
            return super().per_state(states)
        x, y, yaw, v = (states[..., i] for i in (self.ix, self.iy, self.iyaw, self.iv))
        g = self.goal
        features = _parking_features(x, y, yaw, v) * self.parking_inv_scales
        goal_features = _parking_features(g[self.ix], g[self.iy], g[self.iyaw], g[self.iv]) * self.parking_inv_scales
        distance = ((features - goal_features).abs() * self.parking_weights).sum(-1)
        return torch.clamp(distance, min=SQRT_EPS) ** self.parking_power


def _parking_features(x, y, yaw, v) -> torch.Tensor:
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    return torch.stack((x, y, v * cos, v * sin, cos, sin), dim=-1)


def parking_reward(
    achieved: torch.Tensor,
    desired: torch.Tensor,
    weights: Sequence[float] = PARKING_WEIGHTS,
    power: float = 0.5,
) -> torch.Tensor:
    """highway-env's ``ParkingEnv.compute_reward`` on its scaled 6-vector observations."""
    w = torch.as_tensor(weights, dtype=achieved.dtype)
    return -(((achieved - desired).abs() * w).sum(-1) ** power)


def parked(states: torch.Tensor, goals: torch.Tensor | None) -> torch.Tensor:
    """[...] bool: highway-env's ``is_success`` for car states ``[..., nx]`` (x, y, yaw, v first) and goal states
    ``[..., >= 3]`` (x, y, yaw: the ``goal`` context), broadcast: its reward between the scaled observations of the
    car and of the spot (whose velocity highway-env gives as 0) above ``-PARKING_SUCCESS_REWARD``."""
    if goals is None:
        raise ValueError("parked: the parking task's success needs the goal (the cost's 'goal' context)")
    scales = torch.as_tensor(PARKING_SCALES, dtype=states.dtype)
    x, y, yaw, v = (states[..., i] for i in range(4))
    achieved = _parking_features(x, y, yaw, v) / scales
    gx, gy, gyaw = (goals[..., i].to(states.dtype) for i in range(3))
    desired = _parking_features(gx, gy, gyaw, torch.zeros_like(gx)) / scales
    return parking_reward(achieved, desired) > -PARKING_SUCCESS_REWARD


def crashed(states: torch.Tensor) -> torch.Tensor:
    """[...] bool: the car's body at states ``[..., nx]`` (x, y, yaw first) touches or crosses a wall of parking-v0's
    lot (a corner at or beyond a wall's inner face). highway-env stops its car at the wall and ends the episode
    (crashed, its step checks the body against the walls 15 times a second); a model knows no walls, so a
    model's car drives through them and is caught at the first state past the face."""
    x, y, yaw = (states[..., i] for i in range(3))
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    # The corners' largest offset from the centre along x and along y, whatever the heading.
    reach_x = (CAR_LENGTH * cos.abs() + CAR_WIDTH * sin.abs()) / 2
    reach_y = (CAR_LENGTH * sin.abs() + CAR_WIDTH * cos.abs()) / 2
    return (x.abs() + reach_x >= PARKING_LOT[0]) | (y.abs() + reach_y >= PARKING_LOT[1])

