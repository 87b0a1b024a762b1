"""A race track driven by one of commonroad-vehicle-models' single-track models with tyre slip.

The car the controller drives is dynamic, while the controller's prior is the kinematic bicycle: at speed
the real car slips and lags, so a kinematic prior alone drives the line worse and learning matters.
``model`` picks the car:

- ``st``: the single-track model (7 states: position, steering angle, speed, yaw, yaw rate, slip angle).
  Its tyres are linear (cornering stiffness times the friction coefficient, no saturation): the lateral
  force grows with the slip angle without a limit, so any turn can be driven at any speed, and a
  kinematic prior that ignores grip loses little.
- ``std``: the single-track drift model (9 states: the seven plus the front and rear wheels' angular
  speeds; Pacejka magic-formula tyres with combined slip, the acceleration as engine or brake torque on
  the wheels, load transfer): the tyres' forces saturate at the road's friction (about 1 g), so a turn of
  radius r has a top speed near sqrt(mu g r) (14 m/s on the track's 20 m turns), and a car that enters
  it faster slides off. Its wheel dynamics are stiff at low speed: integrated in 1 ms steps.

Both with the vehicle's steering-rate limit; the steering actuator a first-order lag on the command.

ROS-free, like ``parking``; same state convention ``[x, y, yaw, v, steer]``,
action ``[u_accel, u_steer]`` in [-1, 1]; ``twist`` is what odometry measures:
the body-frame velocity at the centre of gravity (longitudinal, lateral) and the
yaw rate. ``v`` in the state is the longitudinal one, as the odometry's.

An episode is ``laps`` laps (success), or ends when the car leaves the track
(more than ``track_half_width`` from the centre line: an exit) or at the time
limit. ``LapCounter`` counts laps by the arc length travelled along the centre
line, so cutting a corner or turning back counts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def stadium_track(straight: float = 60.0, radius: float = 20.0, spacing: float = 0.5) -> np.ndarray:
    """A closed stadium-shaped centre line [P, 2], counter-clockwise, starting mid-straight."""
    half = straight / 2.0
    arc = np.pi * radius
    length = 2 * straight + 2 * arc
    s = np.arange(0.0, length, spacing)
    points = np.empty((len(s), 2))
    for i, si in enumerate(s):
        if si < half:  # bottom straight, right half
            points[i] = (si, -radius)
        elif si < half + arc:  # right turn
            a = -np.pi / 2 + (si - half) / radius
            points[i] = (half + radius * np.cos(a), radius * np.sin(a))
        elif si < half + arc + straight:  # top straight, right to left
            points[i] = (half - (si - half - arc), radius)
        elif si < half + 2 * arc + straight:  # left turn
            a = np.pi / 2 + (si - half - arc - straight) / radius
            points[i] = (-half + radius * np.cos(a), radius * np.sin(a))
        else:  # bottom straight, left half
            points[i] = (-half + (si - half - 2 * arc - straight), -radius)
    return points


def _nearest_segment(position: np.ndarray, path: np.ndarray) -> tuple[int, float, float, np.ndarray]:
    """The closed polyline's segment nearest to ``position``: its index, the fraction along it of the
    nearest point, the distance to that point, and every segment's vector."""
    a = path
    ab = np.roll(path, -1, axis=0) - a
    t = np.clip(np.einsum("ij,ij->i", position - a, ab) / np.einsum("ij,ij->i", ab, ab), 0.0, 1.0)
    distances = np.linalg.norm(a + t[:, None] * ab - position, axis=1)
    nearest = int(np.argmin(distances))
    return nearest, float(t[nearest]), float(distances[nearest]), ab


def cross_track_error(position: np.ndarray, path: np.ndarray) -> float:
    """Distance from a point to a closed polyline."""
    return _nearest_segment(position, path)[2]


def arc_length(position: np.ndarray, path: np.ndarray) -> float:
    """Arc length along the closed polyline ``path`` of the point on it nearest to ``position``."""
    nearest, t, _, ab = _nearest_segment(position, path)
    lengths = np.linalg.norm(ab, axis=1)
    return float(np.sum(lengths[:nearest]) + t * lengths[nearest])


class LapCounter:
    """Laps driven along a closed centre line, from positions sampled every ``dt`` seconds.

    Progress is the arc length gained between samples (wrapped at the start line, so the
    shorter way round counts: backwards is negative); a lap is done each time the total
    progress passes another track length from where the car started. ``lap_times``: the
    seconds each lap took (the first from the start, at whatever speed the car started).
    """

    def __init__(self, path: np.ndarray, dt: float) -> None:
        self.path = np.asarray(path, dtype=float)
        self.length = float(np.sum(np.linalg.norm(np.roll(self.path, -1, axis=0) - self.path, axis=1)))
        self.dt = dt
        self.reset()

    def reset(self, position: np.ndarray | None = None) -> None:
        self._s = None if position is None else arc_length(np.asarray(position, dtype=float), self.path)
        self.progress = 0.0  # m along the line since the start
        self.time = 0.0
        self.lap_times: list[float] = []
        self._lap_started = 0.0

    @property
    def laps(self) -> int:
        return len(self.lap_times)

    def update(self, position: np.ndarray) -> bool:
        """One sample, ``dt`` after the last; True when it completes a lap."""
        s = arc_length(np.asarray(position, dtype=float), self.path)
        self.time += self.dt
        if self._s is None:
            self._s = s
            return False
        gained = (s - self._s + self.length / 2.0) % self.length - self.length / 2.0
        self._s = s
        self.progress += gained
        if self.progress >= (self.laps + 1) * self.length:
            self.lap_times.append(self.time - self._lap_started)
            self._lap_started = self.time
            return True
        return False


@dataclass
class RaceStep:
    state: np.ndarray
    cross_track_error: float
    crashed: bool  # left the track
    done: bool
    success: bool  # drove the episode's laps without leaving the track
    laps: int  # completed so far this episode


MODELS = ("st", "std")
# Explicit Euler steps (s) per model: ST's are stable at 5 ms; the drift model's wheel speeds relax at a rate
# ~ R_w^2 K_x / (I_y_w v) (2,000 /s at 5 m/s), unstable at 5 ms and 2 ms at 2 m/s; converged at 1 ms.
INTEGRATION_STEPS = {"st": 0.005, "std": 0.001}


class RaceSim:
    """The single-track car on a stadium track; an episode is ``laps`` laps, an exit or ``episode_steps``."""

    state_dim = 5
    action_dim = 2

    def __init__(
        self,
        dt: float = 0.05,
        integration_step: float | None = None,
        accel_gain: float = 6.0,
        steer_gain: float = 0.4,
        steer_lag: float = 0.1,
        episode_steps: int = 600,
        speed_range: tuple[float, float] = (2.0, 25.0),
        track_half_width: float = 6.0,
        laps: int = 3,
        model: str = "st",
    ) -> None:
        from vehiclemodels.parameters_vehicle2 import parameters_vehicle2

        if model not in MODELS:
            raise ValueError(f"RaceSim: model must be one of {MODELS}, got {model!r}")
        self.model = model
        if model == "st":
            from vehiclemodels.vehicle_dynamics_st import vehicle_dynamics_st as dynamics
        else:
            from vehiclemodels.vehicle_dynamics_std import vehicle_dynamics_std as dynamics
        self._dynamics = dynamics
        self.params = parameters_vehicle2()  # a BMW 320i
        self.dt = dt
        self.substeps = max(1, int(round(dt / (integration_step or INTEGRATION_STEPS[model]))))
        self.accel_gain = self.accel_per_unit = accel_gain
        self.steer_gain = steer_gain
        self.steer_lag = steer_lag
        self.episode_steps = episode_steps
        # A race car in drive: no reversing, no standstill (the single-track model is singular at v = 0).
        self.speed_range = speed_range
        self.track_half_width = track_half_width
        self.path = stadium_track()
        self.laps = laps
        self.lap_counter = LapCounter(self.path, dt)
        self.wheelbase = self.params.a + self.params.b
        self._x = np.zeros(7 if model == "st" else 9)
        self._steps = 0

    @property
    def state(self) -> np.ndarray:
        x, y, steer, v, yaw = self._x[:5]
        return np.array([x, y, yaw, v * np.cos(self._x[6]), steer])

    @property
    def twist(self) -> tuple[float, float, float]:
        """What odometry measures: the centre of gravity's velocity in the body frame (longitudinal,
        lateral; m/s) and the yaw rate (rad/s)."""
        v, yaw_rate, slip = self._x[3], self._x[5], self._x[6]
        return float(v * np.cos(slip)), float(v * np.sin(slip)), float(yaw_rate)

    def reset(self, seed: int | None = None, speed: float = 5.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        # Start on the bottom straight heading +x, a little off the line.
        x = [rng.uniform(-5.0, 5.0), -20.0 + rng.uniform(-0.5, 0.5), 0.0, speed, 0.0, 0.0, 0.0]
        if self.model == "std":  # the wheels rolling at the car's speed
            x += [speed / self.params.R_w] * 2
        self._x = np.array(x)
        self._steps = 0
        self.lap_counter.reset(self._x[:2])
        return self.state

    def step(self, action: np.ndarray) -> RaceStep:
        u_accel, u_steer = np.clip(np.asarray(action, dtype=float).reshape(2), -1.0, 1.0)
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            # The steering actuator tracks the command with a first-order lag,
            # limited by the vehicle's steering-rate bounds inside the model.
            steer_rate = (self.steer_gain * u_steer - self._x[2]) / self.steer_lag
            accel = self.accel_gain * u_accel
            low, high = self.speed_range
            if (self._x[3] <= low and accel < 0) or (self._x[3] >= high and accel > 0):
                accel = 0.0
            f = self._dynamics(list(self._x), [steer_rate, accel], self.params)
            self._x = self._x + h * np.asarray(f)
            if self.model == "std":  # the drift model forbids the wheels to spin backwards
                np.maximum(self._x[7:], 0.0, out=self._x[7:])
        self._steps += 1
        state = self.state
        error = cross_track_error(state[:2], self.path)
        off_track = error > self.track_half_width
        self.lap_counter.update(state[:2])
        done_laps = self.lap_counter.laps >= self.laps and not off_track
        return RaceStep(state, error, off_track, off_track or done_laps or self._steps >= self.episode_steps,
                        done_laps, self.lap_counter.laps)
