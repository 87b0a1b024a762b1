"""highway-env's ``parking-v0`` as a car simulator with our state convention.

ROS-free: the sim_car driver node and the in-process demo both step it. The car
is read the way a robot's sensors would give it: position, velocity and heading
from the observation (highway-env scales them), never the simulator's internals.
The steering angle is not observed; highway-env applies the command at once, so
the state's steer is the last command times the steering range.

State ``[x, y, yaw, v, steer]``; action ``[u_accel, u_steer]`` in [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

OBS_SCALES = np.array([100.0, 100.0, 5.0, 5.0, 1.0, 1.0])
# The lot's walls (highway-env ParkingEnv._create_vehicles): a 70 m x 42 m box.
WALL_HALF_X = 35.0
WALL_HALF_Y = 21.0
CAR_LENGTH = 5.0
CAR_WIDTH = 2.0
# sim_car's parking episode: 20 s at highway-env's 5 Hz (highway-env's own default is 100 s).
EPISODE_STEPS = 100
POLICY_HZ = 5.0


@dataclass
class ParkingStep:
    state: np.ndarray
    success: bool
    crashed: bool
    done: bool
    reward: float


def state_from_observation(observation: np.ndarray, steer: float) -> np.ndarray:
    """highway-env's scaled (x, y, vx, vy, cos h, sin h) -> [x, y, yaw, v, steer]."""
    x, y, vx, vy, cos_h, sin_h = np.asarray(observation, dtype=float) * OBS_SCALES
    # Signed speed: the velocity projected on the heading (reversing is negative).
    return np.array([x, y, np.arctan2(sin_h, cos_h), vx * cos_h + vy * sin_h, steer])


def goal_from_observation(desired_goal: np.ndarray) -> np.ndarray:
    x, y, _, _, cos_h, sin_h = np.asarray(desired_goal, dtype=float) * OBS_SCALES
    return np.array([x, y, np.arctan2(sin_h, cos_h), 0.0, 0.0])


def make_parking_env(max_episode_steps: int | None = None):
    """highway-env's ``parking-v0`` as the stack simulates it: its default config (walls on, its goal
    reward and ``is_success``), the episode truncated after ``max_episode_steps`` steps. A gymnasium
    TimeLimit does that: highway-env's own ``duration`` alone ends it one step late (its clock sums 0.2 s
    steps and 100 of them fall short of 20.0 s), where sim_car counts its steps."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the environments)

    if max_episode_steps is None:
        return gym.make("parking-v0")
    return gym.make("parking-v0", config={"duration": max_episode_steps / POLICY_HZ},
                    max_episode_steps=max_episode_steps)


class ParkingSim:
    """One parking lot, one car, one goal spot per episode."""

    state_dim = 5
    action_dim = 2
    dt = 1.0 / POLICY_HZ
    accel_per_unit = 5.0  # m/s^2 at u_accel = 1: highway-env's acceleration range

    def __init__(self, max_episode_steps: int | None = None) -> None:
        self.env = make_parking_env(max_episode_steps)
        self.steer_range = float(self.env.unwrapped.config["steering_range"])
        self.state = np.zeros(self.state_dim)
        self.goal = np.zeros(self.state_dim)

    def reset(self, seed: int | None = None) -> np.ndarray:
        observation, _ = self.env.reset(seed=seed)
        self.state = state_from_observation(observation["observation"], steer=0.0)
        self.goal = goal_from_observation(observation["desired_goal"])
        return self.state

    def step(self, action: np.ndarray) -> ParkingStep:
        action = np.clip(np.asarray(action, dtype=float).reshape(2), -1.0, 1.0)
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.state = state_from_observation(observation["observation"], steer=self.steer_range * action[1])
        return ParkingStep(
            state=self.state,
            success=bool(info["is_success"]),
            crashed=bool(info["crashed"]),
            done=bool(terminated or truncated),
            reward=float(reward),
        )

    def close(self) -> None:
        self.env.close()
