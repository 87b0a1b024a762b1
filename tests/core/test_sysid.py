"""The core's least-squares identification (casadi + ipopt)."""

from __future__ import annotations

import numpy as np

from mbrl_ros.core.sysid import fit_parameters


def test_a_parameter_whose_best_fit_lies_beyond_its_bound_comes_back_exactly_on_it():
    """ipopt satisfies bounds only within its tolerance: data that want theta = -0.3 under a bound of 0 gave
    theta = -1e-8, and the car's bicycle refused its own fit's rear_axle_to_cg of -1.4e-8 (race bags)."""
    rng = np.random.default_rng(0)
    states, actions = rng.normal(size=(200, 1)), rng.normal(size=(200, 1))
    next_states = states - 0.3 * actions
    fit = fit_parameters(lambda x, u, theta: x + theta[0] * u, states, actions, next_states,
                         scale=np.array([1.0]), lower=np.array([0.0]), upper=np.array([10.0]))
    assert fit.theta[0] == 0.0
    assert fit.success
