"""Kinematic bicycle with identifiable parameters.

State ``[x, y, yaw, v, steer]`` (m, m, rad, m/s, rad), action ``[u_speed, u_steer]``
normalised to [-1, 1]. Parameters, all identifiable from driving data:

- ``wheelbase`` L and ``rear_axle_to_cg`` l_r: geometry; the slip angle at the
  centre of gravity is ``beta = atan(l_r / L * tan(steer))``.
- ``speed_gain``: m/s^2 per unit ``u_speed`` when ``speed_input="acceleration"``
  (highway-env), or m/s per unit when ``speed_input="velocity"`` (F1TENTH /drive).
- ``steer_gain``: steering angle (rad) per unit ``u_steer``.
- ``lag``: first-order actuator time constant (s) of the steering, and of the
  speed in velocity mode. ``lag <= dt`` means the command is reached in one step.

``steer_rate_limit`` (rad/s, 0: none) is not identified: it is the steering
servo's known slew rate, the estimator's ``steer_rate_limit`` (the race car's
0.4 rad/s). With it the steering follows
``d steer/dt = clip((steer_gain * u_steer - steer) / lag, -limit, limit)``, as the
estimator integrates it; without it a fit explains a slew-limited steering with a
long lag and a large gain, which differ run to run with the data.

One step of ``dt`` is integrated with ``substeps`` explicit Euler steps.

``lateral_states=True``: the state ``[x, y, yaw, v, steer, v_y, yaw_rate]`` of a
task whose car slips (the race). The kinematic car does not slip, so it predicts
them from the step's end: ``v_y = v sin(beta)`` (the centre of gravity's sideways
velocity) and ``yaw_rate = v cos(beta) tan(steer) / L``; it reads neither. What a
slipping car does instead is the residual's to learn, from inputs that show it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace

import numpy as np
import torch

from mbrl_ros.core.models.base import NumpyDynamics, PhysicsModel, SymbolicStep, TimeMajorDynamics

SPEED_INPUTS = ("acceleration", "velocity")


@dataclass
class BicycleParams:
    wheelbase: float = 5.0
    rear_axle_to_cg: float = 2.5
    speed_gain: float = 5.0
    steer_gain: float = 0.7853981633974483  # 45 deg, highway-env's limit
    lag: float = 0.0

    @classmethod
    def from_dict(cls, values: dict, source: str = "bicycle params") -> "BicycleParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**{k: float(v) for k, v in values.items()})

    def as_dict(self) -> dict:
        return asdict(self)


class KinematicBicycle(PhysicsModel):
    """Batched kinematic bicycle; parameters are buffers (or trainable with ``learnable=True``)."""

    robot = "car"

    def __init__(
        self,
        params: BicycleParams | None = None,
        dt: float = 0.2,
        substeps: int = 3,
        speed_input: str = "acceleration",
        learnable: bool = False,
        lateral_states: bool = False,
        steer_rate_limit: float = 0.0,
    ) -> None:
        super().__init__(state_dim=7 if lateral_states else 5, action_dim=2)
        self.lateral_states = bool(lateral_states)
        if not steer_rate_limit >= 0:
            raise ValueError(f"steer_rate_limit must be >= 0 rad/s (0: none), got {steer_rate_limit}")
        self.steer_rate_limit = float(steer_rate_limit)
        if speed_input not in SPEED_INPUTS:
            raise ValueError(f"speed_input: expected one of {SPEED_INPUTS}, got {speed_input!r}")
        if dt <= 0 or substeps < 1:
            raise ValueError(f"dt must be > 0 and substeps >= 1, got dt={dt}, substeps={substeps}")
        self.params = params or BicycleParams()
        if self.params.wheelbase <= 0 or not 0 <= self.params.rear_axle_to_cg <= self.params.wheelbase:
            raise ValueError(
                f"bicycle params: need wheelbase > 0 and 0 <= rear_axle_to_cg <= wheelbase, got {self.params}"
            )
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.speed_input = speed_input
        theta = torch.tensor(
            [getattr(self.params, f.name) for f in fields(BicycleParams)], dtype=torch.float32
        )
        if learnable:
            self.theta = torch.nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        wheelbase, rear, speed_gain, steer_gain, lag = self.theta.unbind()
        x, y, yaw, v, steer = states[..., :5].unbind(-1)
        u_speed, u_steer = actions.unbind(-1)
        h = self.dt / self.substeps
        # Fraction of the gap to the commanded value closed per substep.
        alpha = torch.clamp(h / torch.clamp(lag, min=1e-6), max=1.0)
        most = self.steer_rate_limit * h  # the largest steering change in a substep (0: unlimited)
        for _ in range(self.substeps):
            change = alpha * (steer_gain * u_steer - steer)
            steer = steer + (change.clamp(-most, most) if most else change)
            beta = torch.atan(rear / wheelbase * torch.tan(steer))
            x = x + h * v * torch.cos(yaw + beta)
            y = y + h * v * torch.sin(yaw + beta)
            yaw = yaw + h * v * torch.cos(beta) * torch.tan(steer) / wheelbase
            if self.speed_input == "acceleration":
                v = v + h * speed_gain * u_speed
            else:
                v = v + alpha * (speed_gain * u_speed - v)
        if self.lateral_states:
            return torch.stack((x, y, yaw, v, steer, *kinematic_slip(v, steer, rear, wheelbase)), dim=-1)
        return torch.stack((x, y, yaw, v, steer), dim=-1)

    def jacobians(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Analytic ``df/dx[B, 5, 5]`` and ``df/du[B, 5, 2]`` of ``forward``, for iLQR (see ``_jacobians``).
        With lateral states or a steering rate limit: autograd's (the base's)."""
        if not self.five_state_fast_paths:
            return super().jacobians(states, actions)
        lag = self.theta[4]
        alpha = torch.clamp(self.dt / self.substeps / torch.clamp(lag, min=1e-6), max=1.0)
        eye = torch.eye(7, dtype=states.dtype, device=states.device).expand(states.shape[0], 7, 7)
        return _jacobians(states.unbind(-1), actions.unbind(-1), eye.unbind(1), self.theta.unbind()[:4], alpha,
                          self.dt / self.substeps, self.substeps, self.speed_input == "acceleration", torch)

    @property
    def five_state_fast_paths(self) -> bool:
        """Whether the hand-written forms below apply: the five-state car without a steering rate limit."""
        return not (self.lateral_states or self.steer_rate_limit)

    def time_major(self):
        if not self.five_state_fast_paths:
            return super().time_major()
        return BicycleTimeMajor(self)

    def numpy_dynamics(self) -> "BicycleNumpy | None":
        if not self.five_state_fast_paths:
            return None
        return BicycleNumpy(self)


def _jacobians(state, action, rows, params, alpha, h: float, substeps: int, acceleration: bool, ops):
    """``KinematicBicycle.forward``'s Jacobians, for torch tensors or numpy arrays (``ops``: the module).

    Forward-mode by hand: each state variable carries its derivative row with
    respect to ``(x0, u)`` (``rows``: the identity's 7 rows, each ``[B, 7]``) through
    the same Euler substeps. About as many array ops as one forward pass, all
    batched over B. Returns ``(df/dx[B, 5, 5], df/du[B, 5, 2])``.
    """
    wheelbase, rear, speed_gain, steer_gain = params
    x, y, yaw, v, steer = state
    u_speed, u_steer = action
    dx, dy, dyaw, dv, dsteer, du_speed, du_steer = rows
    ratio = rear / wheelbase
    for _ in range(substeps):
        steer = steer + alpha * (steer_gain * u_steer - steer)
        dsteer = (1.0 - alpha) * dsteer + (alpha * steer_gain) * du_steer
        tan_steer = ops.tan(steer)
        sec2_steer = 1.0 + tan_steer * tan_steer
        z = ratio * tan_steer
        beta = ops.atan(z)
        dbeta = (ratio * sec2_steer / (1.0 + z * z))[:, None] * dsteer
        heading = yaw + beta
        cos_heading, sin_heading = ops.cos(heading), ops.sin(heading)
        dheading = dyaw + dbeta
        cos_beta, sin_beta = ops.cos(beta), ops.sin(beta)
        rate = cos_beta * tan_steer / wheelbase  # yaw rate per unit speed
        drate = ((-sin_beta * tan_steer)[:, None] * dbeta + (cos_beta * sec2_steer)[:, None] * dsteer) / wheelbase
        x, dx = x + h * v * cos_heading, dx + h * (cos_heading[:, None] * dv - (v * sin_heading)[:, None] * dheading)
        y, dy = y + h * v * sin_heading, dy + h * (sin_heading[:, None] * dv + (v * cos_heading)[:, None] * dheading)
        yaw, dyaw = yaw + h * v * rate, dyaw + h * (rate[:, None] * dv + v[:, None] * drate)
        if acceleration:
            v, dv = v + h * speed_gain * u_speed, dv + (h * speed_gain) * du_speed
        else:
            v, dv = v + alpha * (speed_gain * u_speed - v), (1.0 - alpha) * dv + (alpha * speed_gain) * du_speed
    jacobian = ops.stack((dx, dy, dyaw, dv, dsteer), axis=1)  # [B, 5, 7]
    return jacobian[:, :, :5], jacobian[:, :, 5:]


def kinematic_slip(v: torch.Tensor, steer: torch.Tensor, rear: torch.Tensor, wheelbase: torch.Tensor):
    """The kinematic bicycle's lateral velocity and yaw rate at speed ``v`` and steering ``steer``."""
    beta = torch.atan(rear / wheelbase * torch.tan(steer))
    return v * torch.sin(beta), v * torch.cos(beta) * torch.tan(steer) / wheelbase


class BicycleTimeMajor(TimeMajorDynamics):
    """``KinematicBicycle.forward``, time-major, with fewer transcendental functions.

    The same explicit Euler substeps, rewritten with ``z = l_r / L * tan(steer)``:
    ``cos(beta) = 1 / sqrt(1 + z^2)``, ``sin(beta) = z cos(beta)`` and
    ``cos/sin(yaw + beta)`` by the angle-sum identities, so a substep needs
    ``tan, cos, sin`` instead of ``tan, atan, cos, cos, sin``. When the steering lag
    is at most one substep (highway-env's car: no lag) the steering reaches its
    command in the first substep and ``tan(steer)`` is computed once per step.
    Parameters are read from ``model.theta`` at every call; whether the lag fits in
    one substep is fixed when built and re-checked by ``still_valid``. The rollout
    stacks all (H+1) * nx rows once at the end, so a compiler writes every row
    straight into the output (no per-step [nx, K] copies).
    """

    def __init__(self, model: "KinematicBicycle") -> None:
        super().__init__(model)
        self.substep = model.dt / model.substeps
        self.acceleration = model.speed_input == "acceleration"
        self.steer_settles = self._settles()

    def _settles(self) -> bool:
        return float(self.model.theta[4]) <= self.substep

    def still_valid(self) -> bool:
        return self._settles() == self.steer_settles

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._step(tuple(states.unbind(0)), actions[0], actions[1]))

    def rollout(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        count = actions.shape[2]
        current = tuple(state[i].expand(count) if state.dim() == 1 else state[i] for i in range(5))
        rows = list(current)
        for t in range(actions.shape[0]):
            current = self._step(current, actions[t, 0], actions[t, 1])
            rows.extend(current)
        return torch.stack(rows).view(actions.shape[0] + 1, 5, count)

    def _step(self, current: tuple[torch.Tensor, ...], u_speed: torch.Tensor, u_steer: torch.Tensor) -> tuple:
        wheelbase, rear, speed_gain, steer_gain, lag = self.model.theta.unbind()
        alpha = None
        if not (self.steer_settles and self.acceleration):  # the lag's first-order step is used
            alpha = torch.clamp(self.substep / torch.clamp(lag, min=1e-6), max=1.0)
        return _time_major_step(current, u_speed, u_steer, (wheelbase, rear, speed_gain, steer_gain), alpha,
                                self.substep, self.model.substeps, self.steer_settles, self.acceleration, torch)


def _time_major_step(current, u_speed, u_steer, params, alpha, h: float, substeps: int, steer_settles: bool,
                     acceleration: bool, ops) -> tuple:
    """One step of ``BicycleTimeMajor`` on rows of torch tensors or numpy arrays (``ops``: the module, or
    one with numpy's functions and an ``rsqrt``)."""
    wheelbase, rear, speed_gain, steer_gain = params
    ratio = rear / wheelbase
    x, y, yaw, v, steer = current
    steer_command = steer_gain * u_steer
    speed_command = speed_gain * u_speed

    def steering(steer):
        tan_steer = ops.tan(steer)
        z = ratio * tan_steer
        cos_beta = ops.rsqrt(1.0 + z * z)
        return cos_beta, z * cos_beta, cos_beta * tan_steer / wheelbase

    if steer_settles:
        steer = steer_command
        cos_beta, sin_beta, yaw_rate_per_speed = steering(steer)
    for _ in range(substeps):
        if not steer_settles:
            steer = steer + alpha * (steer_command - steer)
            cos_beta, sin_beta, yaw_rate_per_speed = steering(steer)
        cos_yaw, sin_yaw = ops.cos(yaw), ops.sin(yaw)
        distance = h * v
        x = x + distance * (cos_yaw * cos_beta - sin_yaw * sin_beta)
        y = y + distance * (sin_yaw * cos_beta + cos_yaw * sin_beta)
        yaw = yaw + distance * yaw_rate_per_speed
        v = v + h * speed_command if acceleration else v + alpha * (speed_command - v)
    return x, y, yaw, v, steer


class _NumpyOps:
    """numpy's functions under the names ``_time_major_step`` and ``_jacobians`` call."""

    tan, atan, cos, sin, stack = np.tan, np.atan, np.cos, np.sin, np.stack

    @staticmethod
    def rsqrt(a: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(a)


class BicycleNumpy(NumpyDynamics):
    """``BicycleTimeMajor`` and ``KinematicBicycle.jacobians`` in float64 numpy, with the model's parameters
    as they are when built (a solver builds one per solve)."""

    def __init__(self, model: KinematicBicycle) -> None:
        wheelbase, rear, speed_gain, steer_gain, lag = (float(v) for v in model.theta.detach().cpu().tolist())
        self.params = (wheelbase, rear, speed_gain, steer_gain)
        self.h, self.substeps = model.dt / model.substeps, model.substeps
        self.alpha = min(self.h / max(lag, 1e-6), 1.0)
        self.acceleration = model.speed_input == "acceleration"
        self.steer_settles = lag <= self.h

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        rows = _time_major_step(tuple(states), actions[0], actions[1], self.params, self.alpha, self.h,
                                self.substeps, self.steer_settles, self.acceleration, _NumpyOps)
        out = np.empty((len(rows), actions.shape[1]))
        out[0], out[1], out[2], out[3], out[4] = rows  # np.stack costs several times these copies
        return out

    def symbolic(self) -> SymbolicStep:
        """``step`` in casadi symbols; the parameters (and ``alpha``, from the lag) are its inputs.

        Always the lagged steering's form: with ``alpha = 1`` (a lag within one substep) it reaches the
        command in the first substep, as ``steer_settles`` does, so a refit that moves the lag across a
        substep keeps the compiled code (its key names only the settings)."""
        import casadi  # only where a solver compiles

        ops = SimpleNamespace(tan=casadi.tan, cos=casadi.cos, sin=casadi.sin, rsqrt=lambda a: 1.0 / casadi.sqrt(a))

        def step(x, u, p):
            return casadi.vertcat(*_time_major_step(tuple(x[i] for i in range(5)), u[0], u[1],
                                                    tuple(p[i] for i in range(4)), p[4], self.h, self.substeps,
                                                    False, self.acceleration, ops))

        key = ("KinematicBicycle", self.h, self.substeps, self.acceleration)
        return SymbolicStep(key, np.array([*self.params, self.alpha]), step)

    def jacobians(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = tuple(np.broadcast_to(np.eye(7), (states.shape[0], 7, 7)).transpose(1, 0, 2))
        return _jacobians(tuple(states.T), tuple(actions.T), rows, self.params, self.alpha, self.h, self.substeps,
                          self.acceleration, _NumpyOps)
