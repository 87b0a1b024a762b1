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

The fit runs twice: first with each state's residual scaled by the spread of
that state's step-to-step change, then re-weighted by the residual RMS of the
first fit (an estimate of each state's noise), which is the maximum-likelihood
weighting for independent Gaussian noise per state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import casadi as ca
import numpy as np
import torch

from mbrl_ros.core.angles import wrap_angle
from mbrl_ros.core.data import as_rows
from mbrl_ros.core.models.bicycle import SPEED_INPUTS, BicycleParams, KinematicBicycle

PARAM_NAMES = tuple(f.name for f in fields(BicycleParams))
STATE_NAMES = ("x", "y", "yaw", "v", "steer")
YAW = 2
MIN_TRANSITIONS = 50


@dataclass
class SysIdResult:
    """Fitted parameters and how well they explain the data."""

    params: BicycleParams
    rms_residual: dict[str, float]  # per state, one-step residual RMS at the fitted params (yaw wrapped)
    initial_rms_residual: dict[str, float]  # the same at the initial guess, for comparison
    param_std: dict[str, float]  # approx. 1-sigma from the Gauss-Newton covariance (nan if singular)
    initial_params: BicycleParams
    num_transitions: int
    dt: float
    substeps: int
    speed_input: str
    success: bool
    solver_status: str
    notes: list[str] = field(default_factory=list)

    def model(self) -> KinematicBicycle:
        """The identified model, ready to plan with."""
        return KinematicBicycle(self.params, self.dt, self.substeps, self.speed_input)


def bicycle_step_casadi(state, action, theta, dt: float, substeps: int, speed_input: str):
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
    for _ in range(substeps):
        steer = steer + alpha * (steer_gain * u_steer - steer)
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


class _Problem:
    """The least-squares problem in parameters scaled by the initial guess (all ~1)."""

    def __init__(self, states, actions, next_states, dt, substeps, speed_input, scale: np.ndarray):
        n = states.shape[0]
        x, u, theta = ca.SX.sym("x", 5), ca.SX.sym("u", 2), ca.SX.sym("theta", 5)
        x_next, weights = ca.SX.sym("x_next", 5), ca.SX.sym("w", 5)
        residual = bicycle_step_casadi(x, u, theta, dt, substeps, speed_input) - x_next
        residual[YAW] = wrap_angle(residual[YAW])
        step_residual = ca.Function("residual", [x, u, x_next, theta], [residual])
        mapped = step_residual.map(n)

        self.scaled = ca.MX.sym("p", 5)
        self.weights = ca.MX.sym("w", 5)
        theta_mx = self.scaled * ca.DM(scale)
        r = mapped(ca.DM(states.T), ca.DM(actions.T), ca.DM(next_states.T), theta_mx)  # [5, N]
        weighted = r * ca.repmat(ca.sqrt(self.weights), 1, n)
        self.residuals = ca.Function("residuals", [self.scaled], [r])
        jacobian = ca.jacobian(ca.vec(weighted), self.scaled)  # [5N, 5], by forward AD
        self.weighted_jacobian = ca.Function("jacobian", [self.scaled, self.weights], [jacobian])
        objective = ca.sumsqr(weighted) / n
        # The Gauss-Newton Hessian 2/n J'J: near a good fit it is the exact Hessian up to
        # terms weighted by the (small) residuals, and ~10x cheaper to evaluate.
        lam_f, lam_g = ca.MX.sym("lam_f"), ca.MX.sym("lam_g")
        gauss_newton = ca.Function(
            "hess_lag", [self.scaled, self.weights, lam_f, lam_g],
            [ca.triu(lam_f * 2.0 / n * ca.mtimes(jacobian.T, jacobian))],
            ["x", "p", "lam:f", "lam:g"], ["hess:gamma:x:x"],
        )
        # rear axle within the wheelbase: wheelbase - rear >= 0 (in unscaled units)
        constraint = theta_mx[0] - theta_mx[1]
        self.solver = ca.nlpsol(
            "bicycle_sysid", "ipopt",
            {"x": self.scaled, "p": self.weights, "f": objective, "g": constraint},
            {"print_time": False, "hess_lag": gauss_newton,
             "ipopt": {"print_level": 0, "sb": "yes", "tol": 1e-10, "max_iter": 500}},
        )

    def rms(self, scaled: np.ndarray) -> np.ndarray:
        r = np.asarray(self.residuals(scaled))
        return np.sqrt(np.mean(r**2, axis=1))


def identify_bicycle(
    states,
    actions,
    next_states,
    dt: float,
    substeps: int = 3,
    speed_input: str = "acceleration",
    initial: BicycleParams | None = None,
) -> SysIdResult:
    """Fit BicycleParams to transitions ``states[N, 5]``, ``actions[N, 2]``, ``next_states[N, 5]``.

    ``dt``, ``substeps`` and ``speed_input`` must be those the model will run with.
    ``initial`` overrides the regression-based initial guess. Arrays may be numpy or
    torch; errors name the field and row of bad data.
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
    problem = _Problem(states, actions, next_states, dt, substeps, speed_input, scale)
    # Gains keep the sign of their initial guess (a reversed servo stays reversed) within a
    # factor of 100; the rear-axle distance and the lag may go to 0 (lag up to 10 s).
    lower = np.array([0.01, 0.0, 0.01, 0.01, 0.0])
    upper = np.array([100.0, 100.0, 100.0, 100.0, 10.0 / scale[4]])

    delta = next_states - states
    delta[:, YAW] = wrap_angle(delta[:, YAW])
    spread = np.maximum(delta.std(axis=0), 1e-9)
    p = np.ones(5)
    initial_rms = problem.rms(p)
    weights = 1.0 / spread**2
    status, success = "", False
    for attempt in range(2):
        solution = problem.solver(x0=p, p=weights, lbx=lower, ubx=upper, lbg=0.0, ubg=np.inf)
        stats = problem.solver.stats()
        round_status = str(stats["return_status"])
        # "Search direction too small" is ipopt at a point it cannot improve: with noise-free
        # data (a simulator) that is the exact fit, so it counts as converged.
        round_success = bool(stats["success"]) or round_status == "Search_Direction_Becomes_Too_Small"
        if attempt and not round_success and success:
            break  # the re-weighted round failed: keep the first round's solution
        status, success = round_status, round_success
        p = np.asarray(solution["x"]).flatten()
        # Re-weight by each state's residual RMS (its noise level). The floor keeps the weights
        # finite for noise-free data, where ipopt would otherwise fail on a badly scaled problem.
        weights = 1.0 / np.maximum(problem.rms(p), 1e-3 * spread) ** 2

    theta = p * scale
    params = BicycleParams(**{name: float(value) for name, value in zip(PARAM_NAMES, theta)})
    rms = problem.rms(p)
    # Gauss-Newton covariance of the scaled parameters, with residuals weighted by 1/noise.
    jac = np.asarray(problem.weighted_jacobian(p, weights))
    dof = max(jac.shape[0] - 5, 1)
    sigma2 = float(np.sum(rms**2 * weights) * n / dof)
    try:
        covariance = np.linalg.inv(jac.T @ jac) * sigma2
        param_std = np.sqrt(np.clip(np.diag(covariance), 0.0, None)) * np.abs(scale)
    except np.linalg.LinAlgError:
        param_std = np.full(5, np.nan)

    notes = []
    h = dt / substeps
    if params.lag <= h * 1.0001:
        notes.append(
            f"lag {params.lag:.4g} s is at or below the integration step dt/substeps = {h:.4g} s, where it has "
            "no effect: the data only bound it from above"
        )
    if not success:
        notes.append(f"ipopt did not converge ({status}); check the data covers varied speeds and steering")
    for name, value, std in zip(PARAM_NAMES, theta, param_std):
        if math.isfinite(std) and std > 0.05 * abs(value) and not (name == "lag" and value <= h * 1.0001):
            notes.append(f"{name} is poorly determined by this data (+-{std:.3g}); drive with more varied commands")

    return SysIdResult(
        params=params,
        rms_residual=dict(zip(STATE_NAMES, rms.tolist())),
        initial_rms_residual=dict(zip(STATE_NAMES, initial_rms.tolist())),
        param_std=dict(zip(PARAM_NAMES, param_std.tolist())),
        initial_params=start,
        num_transitions=n,
        dt=float(dt),
        substeps=int(substeps),
        speed_input=speed_input,
        success=success,
        solver_status=status,
        notes=notes,
    )
