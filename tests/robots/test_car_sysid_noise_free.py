"""Identification on a simulator's exact data (no noise, no lag) converges and is exact."""

import numpy as np
import torch

from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle
from mbrl_ros.robots.car.sysid import identify_bicycle


def test_noise_free_data_without_lag_is_identified_exactly():
    true = BicycleParams(wheelbase=5.0, rear_axle_to_cg=2.5, speed_gain=5.0, steer_gain=0.785, lag=0.0)
    model = KinematicBicycle(true, dt=0.2, substeps=3)
    rng = np.random.default_rng(0)
    states = torch.tensor(np.column_stack([rng.uniform(-30, 30, 800), rng.uniform(-20, 20, 800),
                                           rng.uniform(-3, 3, 800), rng.uniform(-4, 4, 800),
                                           rng.uniform(-0.7, 0.7, 800)]), dtype=torch.float64)
    actions = torch.tensor(rng.uniform(-1, 1, (800, 2)), dtype=torch.float64)
    with torch.no_grad():
        next_states = model.double()(states, actions)
    result = identify_bicycle(states, actions, next_states, dt=0.2, substeps=3,
                              initial=BicycleParams(3.0, 1.0, 3.0, 0.5, 0.0))
    assert result.success, result.solver_status
    for name in ("wheelbase", "rear_axle_to_cg", "speed_gain", "steer_gain"):
        assert abs(getattr(result.params, name) / getattr(true, name) - 1) < 1e-4, name
