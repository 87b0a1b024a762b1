"""The simulated base: ir-sim's differential-drive robot among circular obstacles, plus motor lag and slip.

ROS-free: the sim_base node and the tests step it. ir-sim (``irsim``, pinned in
pyproject.toml) gives the world: the robot's unicycle kinematics with velocity
and acceleration limits (``acce``: m/s^2, rad/s^2), obstacles, and collision
detection (a collision stops the robot and ends the episode). What ir-sim does
not model, and a real base has, is added here before its step:

- motor lag: the wheel speeds follow the commanded twist with a first-order
  response (``motor_lag`` s), integrated exactly over the step;
- slip: skid-steered bases (Husky, Jackal) turn less than commanded the faster
  they go; the yaw rate reached is the motors' times ``1 - slip * |v| / max_speed``.

So the kinematic unicycle the controller starts from (``mbrl_ros.robots.base.unicycle``,
which knows the lag but neither the limits nor the slip) is visibly wrong at
speed, and what is learned from data matters.

State ``[x, y, yaw, v, w]``; action ``[linear_x, angular_z]``, the commanded twist.
Tasks: ``goal`` (reach a goal pose among obstacles: position within
``goal_tolerance`` m and heading within ``yaw_tolerance`` rad, from a random start)
and ``path`` (follow ``reference_path``, a closed loop, for the episode's steps:
success when the mean cross-track error stays below ``path_tolerance``, the base
moved along the loop at ``path_min_speed`` on average, and nothing was hit).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import yaml

from mbrl_ros.core.angles import wrap_angle

TASKS = ("goal", "path")


@dataclass
class BaseStep:
    state: np.ndarray
    success: bool
    crashed: bool
    done: bool
    cross_track_error: float | None = None


@dataclass
class BaseWorldConfig:
    dt: float = 0.1
    task: str = "goal"
    arena_half_size: float = 4.0  # m: the walls are at x, y = +-arena_half_size
    obstacles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [M, 3] x, y, radius
    robot_radius: float = 0.2  # m
    max_speed: float = 0.8  # m/s, forward and back
    max_yaw_rate: float = 2.0  # rad/s
    max_accel: float = 1.0  # m/s^2
    max_yaw_accel: float = 4.0  # rad/s^2
    motor_lag: float = 0.15  # s
    slip: float = 0.35  # fraction of the yaw rate lost at max_speed
    goal_tolerance: float = 0.2  # m
    yaw_tolerance: float = 0.3  # rad
    path_radius: float = 2.5  # m: the path task's loop
    path_tolerance: float = 0.25  # m
    path_min_speed: float = 0.2  # m/s of progress along the loop, on average
    episode_steps: int = 150  # the time limit, in steps of dt

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        self.obstacles = np.asarray(self.obstacles, dtype=float).reshape(-1, 3)


def loop_path(radius: float, spacing: float = 0.1) -> np.ndarray:
    """The path task's reference: a counter-clockwise circle of ``radius`` about the origin, closed, [P, 2]."""
    angles = np.linspace(-np.pi / 2, 1.5 * np.pi, max(16, int(2 * np.pi * radius / spacing)) + 1)
    return np.stack((radius * np.cos(angles), radius * np.sin(angles)), axis=1)


def nearest_on_path(position: np.ndarray, path: np.ndarray) -> tuple[float, float]:
    """Distance from ``position`` to the nearest segment of ``path``, and the arc length there."""
    a, b = path[:-1], path[1:]
    ab = b - a
    lengths = np.linalg.norm(ab, axis=1)
    t = np.clip(np.einsum("ij,ij->i", position - a, ab) / np.einsum("ij,ij->i", ab, ab), 0.0, 1.0)
    distances = np.linalg.norm(a + t[:, None] * ab - position, axis=1)
    i = int(np.argmin(distances))
    return float(distances[i]), float(np.sum(lengths[:i]) + t[i] * lengths[i])


class BaseWorld:
    """One arena, one base; each episode a seeded start (and goal)."""

    state_dim = 5
    action_dim = 2

    def __init__(self, config: BaseWorldConfig | None = None) -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import irsim  # it reports each GUI backend it cannot load, while headless needs none

        self.config = c = config or BaseWorldConfig()
        self.dt = c.dt
        world = {
            "world": {"height": 2 * c.arena_half_size, "width": 2 * c.arena_half_size, "step_time": c.dt,
                      "offset": [-c.arena_half_size, -c.arena_half_size], "collision_mode": "stop"},
            "robot": [{"kinematics": {"name": "diff"}, "shape": {"name": "circle", "radius": c.robot_radius},
                       "state": [0.0, 0.0, 0.0], "vel_max": [c.max_speed, c.max_yaw_rate],
                       "vel_min": [-c.max_speed, -c.max_yaw_rate], "acce": [c.max_accel, c.max_yaw_accel]}],
            "obstacle": [{"shape": {"name": "circle", "radius": float(r)}, "state": [float(x), float(y), 0.0]}
                         for x, y, r in c.obstacles],
        }
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
            yaml.safe_dump(world, file)
        try:
            self.env = irsim.make(file.name, headless=True, log_level="ERROR")
        finally:
            os.unlink(file.name)
        self.robot = self.env.robot
        self.path = loop_path(c.path_radius) if c.task == "path" else None
        self.goal: np.ndarray | None = None
        self.motors = np.zeros(2)
        self.errors: list[float] = []
        self.progress = 0.0  # m along the path
        self.arc = 0.0
        self.steps = 0

    @property
    def state(self) -> np.ndarray:
        x, y, yaw = np.asarray(self.robot.state, dtype=float).ravel()[:3]
        v, w = np.asarray(self.robot.velocity, dtype=float).ravel()[:2]
        return np.array([x, y, wrap_angle(yaw), v, w])

    def reset(self, seed: int | None = None) -> np.ndarray:
        rng = np.random.default_rng(seed)
        c = self.config
        if self.path is None:
            start = self._free_pose(rng)
            self.goal = self._free_pose(rng, away_from=start[:2], distance=3.0)
        else:  # on the loop, facing along it, a little off the line
            angle = rng.uniform(0.0, 2 * np.pi)
            r = c.path_radius + rng.uniform(-0.2, 0.2)
            start = np.array([r * np.cos(angle), r * np.sin(angle), wrap_angle(angle + np.pi / 2)])
        self.robot.reset()
        self.robot.set_state(start.reshape(3, 1))
        self.robot.set_velocity(np.zeros((2, 1)))
        self.motors = np.zeros(2)
        self.errors = []
        self.progress = 0.0
        self.steps = 0
        if self.path is not None:
            self.arc = nearest_on_path(start[:2], self.path)[1]
        return self.state

    def _free_pose(self, rng: np.random.Generator, away_from: np.ndarray | None = None,
                   distance: float = 0.0) -> np.ndarray:
        c = self.config
        limit = c.arena_half_size - 3 * c.robot_radius
        for _ in range(1000):
            pose = np.array([*rng.uniform(-limit, limit, 2), rng.uniform(-np.pi, np.pi)])
            clear = all(np.hypot(*(pose[:2] - o[:2])) > o[2] + 3 * c.robot_radius for o in c.obstacles)
            if clear and (away_from is None or np.hypot(*(pose[:2] - away_from)) >= distance):
                return pose
        raise ValueError("no free pose in the arena: fewer or smaller obstacles")

    def step(self, action: np.ndarray) -> BaseStep:
        c = self.config
        command = np.clip(np.asarray(action, dtype=float).reshape(2), [-c.max_speed, -c.max_yaw_rate],
                          [c.max_speed, c.max_yaw_rate])
        self.motors = command + (self.motors - command) * (math.exp(-c.dt / c.motor_lag) if c.motor_lag > 0 else 0.0)
        speed = float(self.robot.velocity.ravel()[0])
        turn = self.motors[1] * (1.0 - c.slip * min(abs(speed) / c.max_speed, 1.0))
        self.env.step(np.array([[self.motors[0]], [turn]]))
        state = self.state
        self.steps += 1
        over = self.steps >= c.episode_steps
        wall = np.max(np.abs(state[:2])) > c.arena_half_size - c.robot_radius
        crashed = bool(self.robot.collision_flag or wall)
        if self.path is None:
            reached = (np.hypot(*(state[:2] - self.goal[:2])) < c.goal_tolerance
                       and abs(wrap_angle(state[2] - self.goal[2])) < c.yaw_tolerance)
            return BaseStep(state, bool(reached) and not crashed, crashed, bool(reached) or crashed or over)
        error, arc = nearest_on_path(state[:2], self.path)
        loop = float(np.sum(np.linalg.norm(np.diff(self.path, axis=0), axis=1)))
        self.progress += (arc - self.arc + loop / 2) % loop - loop / 2  # across the loop's seam too
        self.arc = arc
        self.errors.append(error)
        followed = (over and not crashed and float(np.mean(self.errors)) < c.path_tolerance
                    and self.progress >= c.path_min_speed * self.steps * c.dt)
        return BaseStep(state, followed, crashed, crashed or over, error)
