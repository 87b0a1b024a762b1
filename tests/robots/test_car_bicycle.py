"""The car's KinematicBicycle: its analytic Jacobians (iLQR's linearisation) against autograd."""

import pytest
import torch

from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle


def autograd_jacobians(model, states, actions):
    """Per-row df/dx and df/du from torch.autograd.functional.jacobian of the whole batch (rows are independent)."""
    jac_x, jac_u = torch.autograd.functional.jacobian(model, (states, actions))
    rows = torch.arange(states.shape[0])
    return jac_x[rows, :, rows], jac_u[rows, :, rows]


@pytest.mark.parametrize("speed_input", ["acceleration", "velocity"])
@pytest.mark.parametrize("lag, substeps", [(0.0, 1), (0.0, 3), (0.05, 3), (0.3, 3), (0.3, 1)])
def test_analytic_jacobians_match_autograd(speed_input, lag, substeps):
    params = BicycleParams(wheelbase=2.7, rear_axle_to_cg=1.2, speed_gain=3.0, steer_gain=0.5, lag=lag)
    model = KinematicBicycle(params, dt=0.1, substeps=substeps, speed_input=speed_input).double()
    g = torch.Generator().manual_seed(substeps)
    states = torch.randn(32, 5, generator=g, dtype=torch.float64) * torch.tensor([5.0, 5.0, 3.0, 4.0, 0.5],
                                                                                dtype=torch.float64)
    actions = torch.rand(32, 2, generator=g, dtype=torch.float64) * 2 - 1
    A, B = model.jacobians(states, actions)
    expected_A, expected_B = autograd_jacobians(model, states, actions)
    assert A.shape == (32, 5, 5) and B.shape == (32, 5, 2)
    torch.testing.assert_close(A, expected_A, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B, expected_B, rtol=1e-12, atol=1e-12)
    # Not trivially equal: steering and speed move the pose, and the state moves itself.
    assert float(B[:, :3].abs().max()) > 1e-3 and float((A - torch.eye(5, dtype=torch.float64)).abs().max()) > 1e-2
