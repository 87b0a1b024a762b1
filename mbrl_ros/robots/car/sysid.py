"""Identify the kinematic bicycle's parameters from driving data by nonlinear least squares.

Given recorded transitions ``(state, action, next_state)`` this finds the
BicycleParams (wheelbase, rear axle to CG, speed gain, steering gain, actuator
lag) whose one-step predictions best match the data, solving with ipopt
through casadi (exact derivatives of the whole discretised model).

Why it works: the state includes the steering angle and speed, so the
steering gain and lag show in how ``steer`` approaches ``steer_gain *
u_steer``; the speed gain in how ``v`` responds to ``u_speed``; the wheelbase
in the yaw rate ``v cos(beta) tan(steer) / L``; and the rear-axle distance in
the slip angle ``beta``, i.e. the direction of motion relative to the heading.

The solver is the generic one (``mbrl_ros.core.sysid.fit_parameters``); the car
adds its casadi model, a closed-form starting guess, bounds, the geometry
constraint (rear axle within the wheelbase) and notes on what the data leave open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import casadi as ca
import numpy as np
import torch

from mbrl_ros.core.angles import wrap_angle
from mbrl_ros.core.data import as_rows
from mbrl_ros.core.sysid import SysIdResult, fit_parameters
from mbrl_ros.robots.car.bicycle import SPEED_INPUTS, BicycleParams, KinematicBicycle

from mbrl_ros.robots.car.estimator import STATE_NAMES

PARAM_NAMES = tuple(f.name for f in fields(BicycleParams))
YAW = 2
MIN_TRANSITIONS = 50


@dataclass
class BicycleSysIdResult(SysIdResult):
    """Fitted BicycleParams (``params``), how well they explain the data, and the model's settings."""

    dt: float = 0.2
    substeps: int = 3
    speed_input: str = "acceleration"
    lateral_states: bool = False
    steer_rate_limit: float = 0.0

    def model(self) -> KinematicBicycle:
        """The identified model, ready to plan with."""
        return KinematicBicycle(self.params, self.dt, self.substeps, self.speed_input,
                                lateral_states=self.lateral_states, steer_rate_limit=self.steer_rate_limit)

    def config_params(self) -> dict[str, float]:
        return self.params.as_dict()


def bicycle_step_casadi(state, action, theta, dt: float, substeps: int, speed_input: str,
                        steer_rate_limit: float = 0.0):
    """One step of ``KinematicBicycle.forward`` in casadi symbols.

    This duplicates the torch model on purpose: the torch version is batched and
    differentiated by autograd for planners, while ipopt needs a casadi
    expression graph (exact Jacobians and Hessians in the parameters). The two
    must stay identical; ``tests/core/test_sysid.py`` checks they agree.
    """
    x, y, yaw, v, steer = (state[i] for i in range(5))
    u_speed, u_steer = action[0], action[1]
    wheelbase, rear, speed_gain, steer_gain, lag = (theta[i] for i in range(5))
    h = dt / substeps
    alpha = ca.fmin(h / ca.fmax(lag, 1e-6), 1.0)
    most = steer_rate_limit * h
    for _ in range(substeps):
        change = alpha * (steer_gain * u_steer - steer)
        steer = steer + (ca.fmin(ca.fmax(change, -most), most) if most else change)
        beta = ca.atan(rear / wheelbase * ca.tan(steer))
        x = x + h * v * ca.cos(yaw + beta)
        y = y + h * v * ca.sin(yaw + beta)
        yaw = yaw + h * v * ca.cos(beta) * ca.tan(steer) / wheelbase
        if speed_input == "acceleration":
            v = v + h * speed_gain * u_speed
        else:
            v = v + alpha * (speed_gain * u_speed - v)
    return ca.vertcat(x, y, yaw, v, steer)


def _check_data(states, actions, next_states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    states = as_rows("states", states, 5, dtype=torch.float64)
    n = states.shape[0]
    actions = as_rows("actions", actions, 2, dtype=torch.float64, rows=n)
    next_states = as_rows("next_states", next_states, 5, dtype=torch.float64, rows=n)
    if n < MIN_TRANSITIONS:
        raise ValueError(
            f"identify_bicycle: need at least {MIN_TRANSITIONS} transitions to identify "
            f"{len(PARAM_NAMES)} parameters, got {n}"
        )
    states, actions, next_states = states.numpy(), actions.numpy(), next_states.numpy()
    for column, name in ((0, "u_speed"), (1, "u_steer")):
        if np.ptp(actions[:, column]) < 1e-6:
            raise ValueError(
                f"actions[:, {column}] ({name}) is constant: the data cannot show how the car responds "
                f"to it; record varied {name} commands"
            )
    if np.mean(np.abs(states[:, 3])) < 1e-3:
        raise ValueError("states[:, 3] (v) is ~0 throughout: the car never moves, so its geometry is unobservable")
    return states, actions, next_states


def _initial_guess(states, actions, next_states, dt, substeps, speed_input) -> BicycleParams:
    """Closed-form estimates from linear regressions, so ipopt starts near the answer.

    The first-order lag makes ``next = c1 * current + c2 * command`` with
    ``c1 = (1 - alpha) ** substeps`` and steady-state gain ``c2 / (1 - c1)``.
    """
    h = dt / substeps
    default = BicycleParams()

    def lag_and_gain(current, command, following):
        (c1, c2), *_ = np.linalg.lstsq(np.stack((current, command), 1), following, rcond=None)
        c1 = float(np.clip(c1, 0.0, 0.999))
        gain = c2 / (1.0 - c1)
        alpha = 1.0 - c1 ** (1.0 / substeps)
        return (h / alpha if alpha < 1.0 else h), gain

    lag, steer_gain = lag_and_gain(states[:, 4], actions[:, 1], next_states[:, 4])
    if speed_input == "acceleration":
        dv = next_states[:, 3] - states[:, 3]
        speed_gain = float(np.dot(actions[:, 0] * dt, dv) / max(np.dot(actions[:, 0] * dt, actions[:, 0] * dt), 1e-12))
    else:
        _, speed_gain = lag_and_gain(states[:, 3], actions[:, 0], next_states[:, 3])
    # Yaw change ~ dt * v * tan(steer) / L, with speed and steering averaged over the step.
    turn = dt * 0.5 * (states[:, 3] + next_states[:, 3]) * np.tan(0.5 * (states[:, 4] + next_states[:, 4]))
    dyaw = wrap_angle(next_states[:, YAW] - states[:, YAW])
    inverse_wheelbase = np.dot(turn, dyaw) / max(np.dot(turn, turn), 1e-12)
    wheelbase = 1.0 / inverse_wheelbase if inverse_wheelbase > 1e-3 else default.wheelbase

    def sane(value, fallback):
        return float(value) if math.isfinite(value) and abs(value) > 1e-6 else fallback

    wheelbase = sane(wheelbase, default.wheelbase)
    return BicycleParams(
        wheelbase=wheelbase,
        rear_axle_to_cg=0.5 * wheelbase,
        speed_gain=sane(speed_gain, default.speed_gain),
        steer_gain=sane(steer_gain, default.steer_gain),
        lag=max(float(lag), 1.5 * h),  # start above h: below it the lag has no effect (zero gradient)
    )


def identify_bicycle(
    states,
    actions,
    next_states,
    dt: float,
    substeps: int = 3,
    speed_input: str = "acceleration",
    initial: BicycleParams | None = None,
    lateral_states: bool = False,
    steer_rate_limit: float = 0.0,
) -> BicycleSysIdResult:
    """Fit BicycleParams to transitions ``states[N, 5]``, ``actions[N, 2]``, ``next_states[N, 5]``.

    ``dt``, ``substeps`` and ``speed_input`` must be those the model will run with.
    ``initial`` overrides the regression-based initial guess. Arrays may be numpy or
    torch; errors name the field and row of bad data. ``lateral_states``: the result's model appends
    v_y and yaw_rate (``KinematicBicycle``); the fit is the same. ``steer_rate_limit``: the steering's
    known slew rate (rad/s, 0: none), fixed in the fit and kept in the result's model.
    """
    if not dt > 0 or substeps < 1:
        raise ValueError(f"dt must be > 0 and substeps >= 1, got dt={dt}, substeps={substeps}")
    if speed_input not in SPEED_INPUTS:
        raise ValueError(f"speed_input: expected one of {SPEED_INPUTS}, got {speed_input!r}")
    states, actions, next_states = _check_data(states, actions, next_states)
    n = states.shape[0]
    start = initial or _initial_guess(states, actions, next_states, dt, substeps, speed_input)
    if start.wheelbase <= 0 or not 0 <= start.rear_axle_to_cg <= start.wheelbase:
        raise ValueError(f"initial: need wheelbase > 0 and 0 <= rear_axle_to_cg <= wheelbase, got {start}")
    # Parameters are optimised as multiples of the initial guess, so all are ~1 for ipopt.
    # Zero entries would freeze a parameter, so they get a scale of the right size.
    scale = np.array([getattr(start, name) for name in PARAM_NAMES], dtype=float)
    scale[1] = scale[1] or 0.5 * scale[0]
    scale[2] = scale[2] or BicycleParams().speed_gain
    scale[3] = scale[3] or BicycleParams().steer_gain
    scale[4] = max(scale[4], 1.5 * dt / substeps)
    # Gains keep the sign of their initial guess (a reversed servo stays reversed) within a
    # factor of 100; the rear-axle distance and the lag may go to 0 (lag up to 10 s).
    lower = np.array([0.01, 0.0, 0.01, 0.01, 0.0])
    upper = np.array([100.0, 100.0, 100.0, 100.0, 10.0 / scale[4]])
    fit = fit_parameters(
        lambda x, u, theta: bicycle_step_casadi(x, u, theta, dt, substeps, speed_input, steer_rate_limit),
        states, actions, next_states, scale, lower, upper, angle_dims=(YAW,),
        constraint=lambda theta: theta[0] - theta[1],  # rear axle within the wheelbase
    )
    theta, status, success = fit.theta, fit.status, fit.success
    # The constraint holds within ipopt's tolerance too: the rear axle within the wheelbase, exactly.
    theta[1] = min(theta[1], theta[0])
    params = BicycleParams(**{name: float(value) for name, value in zip(PARAM_NAMES, theta)})

    notes = []
    h = dt / substeps
    if params.lag <= h * 1.0001:
        notes.append(
            f"lag {params.lag:.4g} s is at or below the integration step dt/substeps = {h:.4g} s, where it has "
            "no effect: the data only bound it from above"
        )
    if not success:
        notes.append(f"ipopt did not converge ({status}); check the data covers varied speeds and steering")
    for name, value, std in zip(PARAM_NAMES, theta, fit.param_std):
        if math.isfinite(std) and std > 0.05 * abs(value) and not (name == "lag" and value <= h * 1.0001):
            notes.append(f"{name} is poorly determined by this data (+-{std:.3g}); drive with more varied commands")

    return BicycleSysIdResult(
        params=params,
        rms_residual=dict(zip(STATE_NAMES, fit.rms_residual.tolist())),
        initial_rms_residual=dict(zip(STATE_NAMES, fit.initial_rms_residual.tolist())),
        param_std=dict(zip(PARAM_NAMES, fit.param_std.tolist())),
        initial_params=start,
        num_transitions=n,
        dt=float(dt),
        substeps=int(substeps),
        speed_input=speed_input,
        lateral_states=lateral_states,
        steer_rate_limit=float(steer_rate_limit),
        success=success,
        solver_status=status,
        notes=notes,
    )
