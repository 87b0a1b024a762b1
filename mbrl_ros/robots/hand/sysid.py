"""Identify the hand prior's per-joint lag parameters (``joint_lag``) from transitions.

Each joint's next position and velocity are linear in its parameters given the data (the
features ``[r - q, v, 1]``, ``r`` its target), so each of the 48 rows is an ordinary linear
least-squares problem with an exact answer (numpy's ``lstsq``); no iterative solver is needed.
The fingertips take no parameter (kinematics); their residuals are reported, as every state's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.core.data import as_rows
from mbrl_ros.core.sysid import SysIdResult
from mbrl_ros.robots.hand import ACTUATORS, JOINTS
from mbrl_ros.robots.hand.joint_lag import NUM_JOINTS, PARAM_NAMES, JointLagParams, LaggedJoints

MIN_TRANSITIONS = 30


@dataclass
class JointLagSysIdResult(SysIdResult):
    dt: float = 0.04
    fingertip_lag: float = 0.0
    distal_tendon: bool = False

    def model(self) -> LaggedJoints:
        return LaggedJoints(self.params, self.dt, self.fingertip_lag, self.distal_tendon)

    def config_params(self) -> dict[str, list]:
        return self.params.as_dict()


def _rms_per_state(model: LaggedJoints, states, actions, next_states) -> dict[str, float]:
    from mbrl_ros.robots.hand import ROBOT

    with torch.no_grad():
        predicted = model.double()(torch.from_numpy(states), torch.from_numpy(actions)).numpy()
    rms = np.sqrt(np.mean((predicted - next_states) ** 2, axis=0))
    return dict(zip(ROBOT.state_names, rms.tolist()))


def identify_joint_lag(states, actions, next_states, dt: float, fingertip_lag: float = 0.0,
                       initial: JointLagParams | None = None, distal_tendon: bool = False) -> JointLagSysIdResult:
    """Fit JointLagParams to ``states[N, 63]``, ``actions[N, 20]``, ``next_states[N, 63]`` at ``dt``.
    With ``distal_tendon`` the model moves the distal joints by their tendon, and their rows go unused."""
    dim = 2 * NUM_JOINTS + 15
    states = as_rows("states", states, dim, dtype=torch.float64).numpy()
    n = states.shape[0]
    actions = as_rows("actions", actions, len(ACTUATORS), dtype=torch.float64, rows=n).numpy()
    next_states = as_rows("next_states", next_states, dim, dtype=torch.float64, rows=n).numpy()
    if n < MIN_TRANSITIONS:
        raise ValueError(f"identify_joint_lag: need at least {MIN_TRANSITIONS} transitions, got {n}")
    constant = [name for name, column in zip(ACTUATORS, actions.T) if np.ptp(column) < 1e-6]
    if constant:
        raise ValueError(f"identify_joint_lag: actions {constant} are constant: the data cannot show how their joints "
                         "follow them; record varied commands")
    start = initial or JointLagParams.first_order_lag(dt)
    model = LaggedJoints(start, dt, fingertip_lag, distal_tendon)
    q, v = states[:, :NUM_JOINTS], states[:, NUM_JOINTS:2 * NUM_JOINTS]
    gap = model.double().joint_targets(torch.from_numpy(actions)).numpy() - q
    theta = np.zeros((NUM_JOINTS, len(PARAM_NAMES)))
    std = np.full_like(theta, np.nan)
    for j in range(NUM_JOINTS):
        features = np.stack([gap[:, j], v[:, j], np.ones(n)], axis=1)
        targets = (next_states[:, j] - q[:, j], next_states[:, NUM_JOINTS + j])
        gram = features.T @ features
        for k, target in enumerate(targets):
            coef, *_ = np.linalg.lstsq(features, target, rcond=None)
            theta[j, 3 * k:3 * k + 3] = coef
            sigma2 = np.sum((features @ coef - target) ** 2) / max(n - 3, 1)
            try:
                std[j, 3 * k:3 * k + 3] = np.sqrt(np.clip(np.diag(np.linalg.inv(gram)) * sigma2, 0.0, None))
            except np.linalg.LinAlgError:
                pass
    params = JointLagParams.from_array(theta)
    return JointLagSysIdResult(
        params=params,
        rms_residual=_rms_per_state(LaggedJoints(params, dt, fingertip_lag, distal_tendon), states, actions,
                                    next_states),
        initial_rms_residual=_rms_per_state(LaggedJoints(start, dt, fingertip_lag, distal_tendon), states, actions,
                                            next_states),
        param_std={f"{joint}.{name}": float(std[j, k]) for j, joint in enumerate(JOINTS)
                   for k, name in enumerate(PARAM_NAMES)},
        initial_params=start, num_transitions=n, success=True, solver_status="least squares (exact)",
        dt=float(dt), fingertip_lag=float(fingertip_lag), distal_tendon=bool(distal_tendon))
