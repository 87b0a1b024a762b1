"""The public model API: checked inputs, the config factory, differentiability."""

import pytest
import torch

from mbrl_ros.core.models import DynamicsModel, EnsembleDynamics, Prediction, SemiparametricDynamics
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle

build_model = get_robot("car").build_model  # the car's physics prior is the 'parametric' kind

MODELS = {
    "bicycle": lambda: KinematicBicycle(BicycleParams(lag=0.3)),
    "ensemble": lambda: EnsembleDynamics(5, 2, hidden_sizes=(16, 16), angle_dims=(2,), seed=0),
    "residual": lambda: SemiparametricDynamics(KinematicBicycle(), hidden_sizes=(16,), angle_dims=(2,), seed=0),
}


def inputs(batch=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 5, generator=g), torch.rand(batch, 2, generator=g) * 2 - 1


@pytest.mark.parametrize("name", MODELS)
def test_predict_checks_shapes_and_values(name):
    model = MODELS[name]()
    states, actions = inputs()
    prediction = model.predict(states, actions)
    assert isinstance(prediction, Prediction) and prediction.mean.shape == (4, 5)
    assert (prediction.spread is None) == (name == "bicycle")
    with pytest.raises(ValueError, match=r"states: expected shape \[\*, 5\], got \[4, 3\]"):
        model.predict(states[:, :3], actions)
    with pytest.raises(ValueError, match=r"actions: expected shape \[4, 2\], got \[3, 2\]"):
        model.predict(states, actions[:3])
    with pytest.raises(ValueError, match=r"actions: expected shape \[4, 2\], got \[4\]"):
        model.predict(states, actions[:, 0])
    bad = states.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"states: contains a non-finite value at index \[2, 1\]"):
        model.predict(bad, actions)
    bad_actions = actions.clone()
    bad_actions[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"actions: contains a non-finite value at index \[0, 0\]"):
        model.predict(states, bad_actions)
    with pytest.raises(TypeError, match="states: expected a torch.Tensor, got ndarray"):
        model.predict(states.numpy(), actions)


DIFFERENTIABLE_CASES = [("bicycle", None)] + [
    (name, mode) for name in ("ensemble", "residual") for mode in ("ts1", "tsinf", "mean")
]


@pytest.mark.parametrize("name, propagation", DIFFERENTIABLE_CASES)
def test_forward_is_differentiable(name, propagation):
    model = MODELS[name]()
    if propagation is not None:
        model.propagation = propagation
    states, actions = inputs(batch=6)
    jac_x, jac_u = torch.autograd.functional.jacobian(model, (states, actions))
    assert jac_x.shape == (6, 5, 6, 5) and jac_u.shape == (6, 5, 6, 2)
    assert bool(torch.isfinite(jac_x).all()) and bool(jac_u.abs().sum() > 0)
    # Particles are independent: no derivative across batch rows (padding must not leak).
    off_diagonal = jac_x.sum((1, 3)) * (1 - torch.eye(6))
    assert float(off_diagonal.abs().max()) == 0.0
    if propagation != "ts1":  # deterministic: compare with central differences
        model = model.double()
        s, a = states.double(), actions.double()
        jac_x = torch.autograd.functional.jacobian(lambda x: model(x, a), s)
        eps = 1e-6
        for dim in range(5):
            step = torch.zeros_like(s)
            step[:, dim] = eps
            numeric = (model(s + step, a) - model(s - step, a)) / (2 * eps)
            analytic = torch.einsum("bibj->bij", jac_x)[:, :, dim]
            torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-6)


def test_build_model_from_config():
    bicycle = build_model({"type": "parametric", "params": {"wheelbase": 0.33, "rear_axle_to_cg": 0.17},
                           "dt": 0.1, "speed_input": "velocity"})
    assert isinstance(bicycle, KinematicBicycle) and bicycle.params.wheelbase == 0.33 and bicycle.dt == 0.1
    ensemble = build_model({"type": "ensemble", "state_dim": 5, "action_dim": 2, "ensemble_size": 3,
                            "hidden_sizes": [32, 32], "angle_dims": [2], "propagation": "tsinf"})
    assert isinstance(ensemble, EnsembleDynamics) and ensemble.ensemble_size == 3
    assert ensemble.propagation == "tsinf" and ensemble.hidden_sizes == (32, 32)
    semi = build_model({"type": "semiparametric", "prior": {"type": "parametric"},
                        "residual": {"ensemble_size": 2, "hidden_sizes": [8]}})
    assert isinstance(semi, SemiparametricDynamics) and semi.residual.ensemble_size == 2
    assert isinstance(semi, DynamicsModel)
    # An ensemble rebuilt from its own hparams has the same structure (checkpoint reload).
    clone = build_model({"type": "ensemble", **ensemble.hparams})
    clone.load_state_dict(ensemble.state_dict())


@pytest.mark.parametrize(
    "config, message",
    [
        ({"type": "gaussian_process"}, r"model\.type: unknown model type 'gaussian_process'"),
        ({}, r"model\.type: unknown model type None"),
        ({"type": "parametric", "wheelbase": 3.0}, r"model: unknown key\(s\) \['wheelbase'\]"),
        ({"type": "parametric", "params": {"wheel_base": 3.0}}, r"model\.params: unknown key\(s\) \['wheel_base'\]"),
        ({"type": "ensemble", "state_dim": 5, "action_dim": 2, "hiden_sizes": [8]},
         r"model: unknown key\(s\) \['hiden_sizes'\]"),
        ({"type": "ensemble", "state_dim": 5}, r"model: missing key\(s\) \['action_dim'\]"),
        ({"type": "semiparametric"}, r"model: missing key 'prior'"),
        ({"type": "semiparametric", "prior": {"type": "physics"}}, r"model\.prior\.type: unknown model type 'physics'"),
        ({"type": "semiparametric", "prior": {"type": "parametric"}, "residual": {"state_dim": 5}},
         r"model\.residual: unknown key\(s\) \['state_dim'\]"),
    ],
)
def test_build_model_names_the_bad_key_or_type(config, message):
    with pytest.raises(ValueError, match=message):
        build_model(config)


@pytest.mark.parametrize("name, member", [("bicycle", None), ("ensemble", None), ("ensemble", 1),
                                          ("residual", None), ("residual", 0)])
def test_jacobians_of_the_deterministic_model_match_autograd(name, member):
    """DynamicsModel.jacobians (torch.func jacrev + vmap by default) on what iLQR plans with."""
    model = MODELS[name]().double().deterministic(member)
    states, actions = (t.double() for t in inputs(batch=8))
    A, B = model.jacobians(states, actions)
    jac_x, jac_u = torch.autograd.functional.jacobian(model, (states, actions))
    rows = torch.arange(8)
    torch.testing.assert_close(A, jac_x[rows, :, rows], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(B, jac_u[rows, :, rows], rtol=1e-10, atol=1e-12)
    assert float(B.detach().abs().max()) > 0


def test_an_ensembles_deterministic_model_is_the_mean_or_one_elite():
    ensemble = MODELS["ensemble"]().eval()
    states, actions = inputs(batch=16)
    members = ensemble.predict_members(states, actions)  # [elites, B, nx]
    with torch.no_grad():  # the folded fast path
        torch.testing.assert_close(ensemble.deterministic()(states, actions), members.mean(0))
        torch.testing.assert_close(ensemble.deterministic(2)(states, actions), members[2])
    # With autograd (the path iLQR differentiates): the same numbers.
    torch.testing.assert_close(ensemble.deterministic(2)(states, actions), members[2])
    assert ensemble.deterministic_members == ensemble.num_elites
    with pytest.raises(ValueError, match=r"member: expected an elite slot in \[0, 5\), got 5"):
        ensemble.deterministic(5)
    bicycle = MODELS["bicycle"]()
    assert bicycle.deterministic() is bicycle and bicycle.deterministic_members == 0
