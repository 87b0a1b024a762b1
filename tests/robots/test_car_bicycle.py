"""The car's KinematicBicycle: its analytic Jacobians (iLQR's linearisation) against autograd."""

import numpy as np
import pytest
import torch

from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle


def autograd_jacobians(model, states, actions):
    """Per-row df/dx and df/du from torch.autograd.functional.jacobian of the whole batch (rows are independent)."""
    jac_x, jac_u = torch.autograd.functional.jacobian(model, (states, actions))
    rows = torch.arange(states.shape[0])
    return jac_x[rows, :, rows], jac_u[rows, :, rows]


def car_and_batch(speed_input, lag, substeps):
    """A float64 bicycle and 32 random states and actions."""
    params = BicycleParams(wheelbase=2.7, rear_axle_to_cg=1.2, speed_gain=3.0, steer_gain=0.5, lag=lag)
    model = KinematicBicycle(params, dt=0.1, substeps=substeps, speed_input=speed_input).double()
    g = torch.Generator().manual_seed(substeps)
    states = torch.randn(32, 5, generator=g, dtype=torch.float64) * torch.tensor([5.0, 5.0, 3.0, 4.0, 0.5],
                                                                                dtype=torch.float64)
    actions = torch.rand(32, 2, generator=g, dtype=torch.float64) * 2 - 1
    return model, states, actions


@pytest.mark.parametrize("speed_input", ["acceleration", "velocity"])
@pytest.mark.parametrize("lag, substeps", [(0.0, 1), (0.0, 3), (0.05, 3), (0.3, 3), (0.3, 1)])
def test_analytic_jacobians_match_autograd(speed_input, lag, substeps):
    model, states, actions = car_and_batch(speed_input, lag, substeps)
    A, B = model.jacobians(states, actions)
    expected_A, expected_B = autograd_jacobians(model, states, actions)
    assert A.shape == (32, 5, 5) and B.shape == (32, 5, 2)
    torch.testing.assert_close(A, expected_A, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B, expected_B, rtol=1e-12, atol=1e-12)
    # Not trivially equal: steering and speed move the pose, and the state moves itself.
    assert float(B[:, :3].abs().max()) > 1e-3 and float((A - torch.eye(5, dtype=torch.float64)).abs().max()) > 1e-2


def test_lateral_states_append_the_kinematic_cars_lateral_velocity_and_yaw_rate():
    """Issue 10 §2: the race's state ``[x, y, yaw, v, steer, v_y, yaw_rate]``. The kinematic part steps as the
    five-state bicycle does (parking's model is unchanged), whatever v_y and yaw_rate the car had; the two
    appended entries are the no-slip car's at the step's end."""
    torch.manual_seed(0)
    params = BicycleParams(wheelbase=2.58, rear_axle_to_cg=1.42, speed_gain=6.0, steer_gain=0.4, lag=0.1)
    kinematic = KinematicBicycle(params, dt=0.05, substeps=2)
    lateral = KinematicBicycle(params, dt=0.05, substeps=2, lateral_states=True)
    states = torch.randn(64, 7) * torch.tensor([10.0, 10.0, 2.0, 5.0, 0.3, 2.0, 1.0]) + torch.tensor(
        [0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0])
    actions = torch.rand(64, 2) * 2 - 1
    nxt = lateral(states, actions)
    assert lateral.state_dim == 7 and nxt.shape == (64, 7)
    torch.testing.assert_close(nxt[:, :5], kinematic(states[:, :5], actions))
    v, steer = nxt[:, 3], nxt[:, 4]
    beta = torch.atan(1.42 / 2.58 * torch.tan(steer))
    torch.testing.assert_close(nxt[:, 5], v * torch.sin(beta))
    torch.testing.assert_close(nxt[:, 6], v * torch.cos(beta) * torch.tan(steer) / 2.58)
    # The slip the car had does not change the no-slip prediction.
    other = states.clone()
    other[:, 5:] = 0.0
    torch.testing.assert_close(lateral(other, actions), nxt)
    dfdx, dfdu = lateral.jacobians(states[:4], actions[:4])
    assert dfdx.shape == (4, 7, 7) and dfdu.shape == (4, 7, 2)
    assert lateral.numpy_dynamics() is None  # iLQR plans the race car on the torch path


@pytest.mark.parametrize("speed_input", ["acceleration", "velocity"])
@pytest.mark.parametrize("lag, substeps", [(0.0, 1), (0.0, 3), (0.3, 3)])
def test_numpy_form_matches_forward_and_jacobians(speed_input, lag, substeps):
    """BicycleNumpy (iLQR's fast path) is KinematicBicycle in float64 numpy: same step, same Jacobians."""
    model, states, actions = car_and_batch(speed_input, lag, substeps)
    fast = model.numpy_dynamics()
    with torch.no_grad():
        expected = model(states, actions).numpy()
    np.testing.assert_allclose(fast.step(states.numpy().T, actions.numpy().T).T, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(fast.jacobians(states.numpy(), actions.numpy()), model.jacobians(states, actions)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    # It holds the parameters it was built with; a new one reads changed ones.
    with torch.no_grad():
        model.theta[2] = 4.0
        moved = model(states, actions).numpy()
    assert not np.allclose(fast.step(states.numpy().T, actions.numpy().T).T, moved)
    np.testing.assert_allclose(model.numpy_dynamics().step(states.numpy().T, actions.numpy().T).T, moved,
                               rtol=1e-12, atol=1e-12)
    # Its symbolic step (iLQR's compiled rollouts) too, with the parameters as inputs: the new ones move it.
    import casadi

    symbolic = model.numpy_dynamics().symbolic()
    x, u, p = casadi.SX.sym("x", 5), casadi.SX.sym("u", 2), casadi.SX.sym("p", len(symbolic.parameters))
    step = casadi.Function("step", [x, u, p], [symbolic.step(x, u, p)]).map(len(states))
    np.testing.assert_allclose(np.array(step(states.numpy().T, actions.numpy().T, symbolic.parameters)).T, moved,
                               rtol=1e-12, atol=1e-12)
    assert symbolic.key == fast.symbolic().key and symbolic.key[1:3] == (model.dt / substeps, substeps)


def test_a_steering_rate_limit_makes_the_model_steer_as_the_estimator_integrates_it():
    """Issue 10 §2: the race car's steering servo slews at most 0.4 rad/s after a 0.1 s lag. The model's
    substeps follow the estimator's exact response (``d steer/dt = clip((target - steer) / lag, +-limit)``)
    to within the Euler substeps' error, where the lag alone (the model without the limit) is far off; the
    hand-written five-state forms do not model the limit, so the model gives autograd's and the generic ones."""
    from mbrl_ros.robots.car.estimator import _actuator

    params = BicycleParams(wheelbase=2.58, rear_axle_to_cg=1.42, speed_gain=6.0, steer_gain=0.4, lag=0.1)
    limited = KinematicBicycle(params, dt=0.05, substeps=2, steer_rate_limit=0.4).double()
    lag_only = KinematicBicycle(params, dt=0.05, substeps=2).double()
    rng = np.random.default_rng(0)
    steer, errors = {"limited": 0.0, "lag_only": 0.0, "exact": 0.0}, {"limited": [], "lag_only": []}
    u = 0.0
    for k in range(200):
        if k % 10 == 0:
            u = float(rng.uniform(-1.0, 1.0))
        steer["exact"] = _actuator(steer["exact"], 0.4 * u, 0.05, 0.1, 0.4)
        for name, model in (("limited", limited), ("lag_only", lag_only)):
            state = torch.tensor([[0.0, 0.0, 0.0, 5.0, steer[name]]], dtype=torch.float64)
            steer[name] = float(model(state, torch.tensor([[0.0, u]], dtype=torch.float64))[0, 4])
            errors[name].append(abs(steer[name] - steer["exact"]))
    assert max(errors["limited"]) < 0.005, max(errors["limited"])
    assert max(errors["lag_only"]) > 0.1, max(errors["lag_only"])

    states = torch.tensor([[1.0, 2.0, 0.3, 5.0, 0.0], [0.0, 0.0, -1.0, 8.0, 0.2]], dtype=torch.float64)
    actions = torch.tensor([[0.5, 1.0], [-0.2, 0.45]], dtype=torch.float64)  # saturated, then within the limit
    A, B = limited.jacobians(states, actions)
    expected_A, expected_B = autograd_jacobians(limited, states, actions)
    torch.testing.assert_close(A, expected_A)
    torch.testing.assert_close(B, expected_B)
    assert float(B[0, 4, 1]) == 0.0 and float(B[1, 4, 1]) > 0.0  # a saturated slew ignores the command
    assert limited.numpy_dynamics() is None and type(limited.time_major()).__name__ == "TimeMajorDynamics"
    with pytest.raises(ValueError, match="steer_rate_limit must be >= 0"):
        KinematicBicycle(params, steer_rate_limit=-1.0)
