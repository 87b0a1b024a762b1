"""Identify a physics model's parameters from transitions by weighted nonlinear least squares.

A robot's physics prior (``models.base.PhysicsModel``) gives its one-step
model as a casadi expression ``step(state, action, theta) -> next_state``;
``fit_parameters`` finds the ``theta`` whose one-step predictions best match
recorded transitions ``(state, action, next_state)``, solving with ipopt
through casadi (exact derivatives of the whole discretised model). The robot
adds what only it knows: a starting guess, bounds, constraints between
parameters, and how to read the result (``robots/car/sysid.py`` for the
kinematic bicycle).

The fit runs twice: first with each state's residual scaled by the spread of
that state's step-to-step change, then re-weighted by the residual RMS of the
first fit (an estimate of each state's noise), which is the maximum-likelihood
weighting for independent Gaussian noise per state. Parameters are optimised
as multiples of ``scale`` (the starting guess), so ipopt sees values near 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import casadi as ca
import numpy as np

from mbrl_ros.core.angles import wrap_angle

__all__ = ["LeastSquaresFit", "SysIdResult", "fit_parameters"]


@dataclass
class LeastSquaresFit:
    """The solver's answer, in the robot's own (unscaled) parameter units."""

    theta: np.ndarray  # [P] fitted parameters
    rms_residual: np.ndarray  # [nx] one-step residual RMS per state at theta (angles wrapped)
    initial_rms_residual: np.ndarray  # [nx] the same at the starting point
    param_std: np.ndarray  # [P] approx. 1-sigma from the Gauss-Newton covariance (nan if singular)
    success: bool
    status: str


@dataclass
class SysIdResult:
    """What identifying a physics model gives: parameters, how well they explain the data, the model.

    ``params`` is the robot's own parameter record; ``model()`` the identified
    model (robots implement it), ``config_params()`` its parameters as its
    config section's ``params``.
    """

    params: Any
    rms_residual: dict[str, float]  # per state name
    initial_rms_residual: dict[str, float]
    param_std: dict[str, float]  # per parameter name
    initial_params: Any
    num_transitions: int
    success: bool
    solver_status: str
    notes: list[str] = field(default_factory=list)

    def model(self):
        raise NotImplementedError

    def config_params(self) -> dict[str, float]:
        raise NotImplementedError

    def fits_at_least_as_well_as_the_start(self) -> bool:
        return all(self.rms_residual[k] <= self.initial_rms_residual[k] for k in self.rms_residual)


class _Problem:
    """The weighted least-squares problem in parameters scaled by ``scale`` (all ~1)."""

    def __init__(self, step: Callable, states, actions, next_states, scale: np.ndarray, angle_dims: Sequence[int],
                 constraint: Callable | None):
        n, nx = states.shape
        nu, p_count = actions.shape[1], len(scale)
        x, u, theta = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("theta", p_count)
        x_next = ca.SX.sym("x_next", nx)
        residual = step(x, u, theta) - x_next
        for dim in angle_dims:
            residual[dim] = wrap_angle(residual[dim])
        step_residual = ca.Function("residual", [x, u, x_next, theta], [residual])
        mapped = step_residual.map(n)

        self.scaled = ca.MX.sym("p", p_count)
        self.weights = ca.MX.sym("w", nx)
        theta_mx = self.scaled * ca.DM(scale)
        r = mapped(ca.DM(states.T), ca.DM(actions.T), ca.DM(next_states.T), theta_mx)  # [nx, N]
        weighted = r * ca.repmat(ca.sqrt(self.weights), 1, n)
        self.residuals = ca.Function("residuals", [self.scaled], [r])
        jacobian = ca.jacobian(ca.vec(weighted), self.scaled)  # [nx N, P], by forward AD
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
        problem = {"x": self.scaled, "p": self.weights, "f": objective}
        self.has_constraint = constraint is not None
        if self.has_constraint:
            problem["g"] = constraint(theta_mx)
        self.solver = ca.nlpsol(
            "sysid", "ipopt", problem,
            {"print_time": False, "hess_lag": gauss_newton,
             "ipopt": {"print_level": 0, "sb": "yes", "tol": 1e-10, "max_iter": 500}},
        )

    def rms(self, scaled: np.ndarray) -> np.ndarray:
        r = np.asarray(self.residuals(scaled))
        return np.sqrt(np.mean(r**2, axis=1))


def fit_parameters(
    step: Callable,
    states: np.ndarray,
    actions: np.ndarray,
    next_states: np.ndarray,
    scale: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    angle_dims: Sequence[int] = (),
    constraint: Callable | None = None,
) -> LeastSquaresFit:
    """Fit ``theta`` of ``step(x, u, theta)`` (casadi) to ``states[N, nx]``, ``actions[N, nu]``, ``next_states``.

    The search starts at ``theta = scale``; ``lower`` and ``upper`` bound ``theta / scale``.
    ``angle_dims``: states whose residuals are wrapped angles. ``constraint(theta) >= 0``
    (casadi), if given, must hold at the answer.
    """
    n = states.shape[0]
    scale = np.asarray(scale, dtype=float)
    problem = _Problem(step, states, actions, next_states, scale, angle_dims, constraint)
    delta = next_states - states
    for dim in angle_dims:
        delta[:, dim] = wrap_angle(delta[:, dim])
    spread = np.maximum(delta.std(axis=0), 1e-9)
    p = np.ones(len(scale))
    initial_rms = problem.rms(p)
    weights = 1.0 / spread**2
    bounds = {"lbx": lower, "ubx": upper, **({"lbg": 0.0, "ubg": np.inf} if problem.has_constraint else {})}
    status, success = "", False
    for attempt in range(2):
        solution = problem.solver(x0=p, p=weights, **bounds)
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

    # ipopt meets bounds within its tolerance (bound_relax_factor, 1e-8): a parameter bounded at 0 came back as
    # -1.4e-8 (the race's rear_axle_to_cg, fitted on slipping data), which the model then refused.
    p = np.clip(p, lower, upper)
    rms = problem.rms(p)
    # Gauss-Newton covariance of the scaled parameters, with residuals weighted by 1/noise.
    jac = np.asarray(problem.weighted_jacobian(p, weights))
    dof = max(jac.shape[0] - len(p), 1)
    sigma2 = float(np.sum(rms**2 * weights) * n / dof)
    try:
        covariance = np.linalg.inv(jac.T @ jac) * sigma2
        param_std = np.sqrt(np.clip(np.diag(covariance), 0.0, None)) * np.abs(scale)
    except np.linalg.LinAlgError:
        param_std = np.full(len(p), np.nan)
    return LeastSquaresFit(p * scale, rms, initial_rms, param_std, success, status)
