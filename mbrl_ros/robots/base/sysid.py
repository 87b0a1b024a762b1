"""Identify the lagged unicycle's parameters (gains and motor lag) from driving data.

The generic least-squares solver (``mbrl_ros.core.sysid.fit_parameters``) on the
casadi form of the very step the torch model takes (``unicycle._step``). The
state holds the measured speed and yaw rate, so the gains show in where ``v``
and ``w`` settle under a command, and the lag in how fast they get there.
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np
import torch

from mbrl_ros.core.data import as_rows
from mbrl_ros.core.sysid import SysIdResult, fit_parameters
from mbrl_ros.robots.base.estimator import STATE_NAMES
from mbrl_ros.robots.base.unicycle import PARAM_NAMES, LaggedUnicycle, UnicycleParams, _step

YAW = 2
MIN_TRANSITIONS = 30


@dataclass
class UnicycleSysIdResult(SysIdResult):
    dt: float = 0.1
    substeps: int = 2

    def model(self) -> LaggedUnicycle:
        return LaggedUnicycle(self.params, self.dt, self.substeps)

    def config_params(self) -> dict[str, float]:
        return self.params.as_dict()


def unicycle_step_casadi(state, action, theta, dt: float, substeps: int):
    out = _step([state[i] for i in range(5)], [action[0], action[1]], [theta[i] for i in range(3)], dt, substeps,
                ca.cos, ca.sin, lambda h, lag: ca.fmin(h / ca.fmax(lag, 1e-6), 1.0))
    return ca.vertcat(*out)


def identify_unicycle(states, actions, next_states, dt: float, substeps: int = 2,
                      initial: UnicycleParams | None = None) -> UnicycleSysIdResult:
    """Fit UnicycleParams to ``states[N, 5]``, ``actions[N, 2]``, ``next_states[N, 5]`` at ``dt``/``substeps``."""
    states = as_rows("states", states, 5, dtype=torch.float64).numpy()
    n = states.shape[0]
    actions = as_rows("actions", actions, 2, dtype=torch.float64, rows=n).numpy()
    next_states = as_rows("next_states", next_states, 5, dtype=torch.float64, rows=n).numpy()
    if n < MIN_TRANSITIONS:
        raise ValueError(f"identify_unicycle: need at least {MIN_TRANSITIONS} transitions, got {n}")
    for column, name in ((0, "linear_x"), (1, "angular_z")):
        if np.ptp(actions[:, column]) < 1e-6:
            raise ValueError(f"actions[:, {column}] ({name}) is constant: the data cannot show how the base "
                             f"responds to it; record varied commands")
    start = initial or UnicycleParams()
    h = dt / substeps
    # Parameters as multiples of the start (gains keep their sign); the lag starts above one substep,
    # where it has an effect (a gradient), and may go to 0 or up to 5 s.
    scale = np.array([start.speed_gain or 1.0, start.yaw_rate_gain or 1.0, max(start.lag, 1.5 * h)])
    lower = np.array([0.05, 0.05, 0.0])
    upper = np.array([20.0, 20.0, 5.0 / scale[2]])
    fit = fit_parameters(lambda x, u, theta: unicycle_step_casadi(x, u, theta, dt, substeps),
                         states, actions, next_states, scale, lower, upper, angle_dims=(YAW,))
    params = UnicycleParams(**{name: float(v) for name, v in zip(PARAM_NAMES, fit.theta)})
    notes = [] if fit.success else [f"ipopt did not converge ({fit.status})"]
    return UnicycleSysIdResult(
        params=params,
        rms_residual=dict(zip(STATE_NAMES, fit.rms_residual.tolist())),
        initial_rms_residual=dict(zip(STATE_NAMES, fit.initial_rms_residual.tolist())),
        param_std=dict(zip(PARAM_NAMES, fit.param_std.tolist())),
        initial_params=start, num_transitions=n, success=fit.success, solver_status=fit.status, notes=notes,
        dt=float(dt), substeps=int(substeps))
